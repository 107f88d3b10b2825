package test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/permit"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// fakeClock is the shared time of ponte's ledger and the simulator's
// permissions: tests jump it across Meta's 24 h and 7-day windows.
type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// permissionEnv is a gateway whose number asks for permission by itself:
// the interactive message inside the window, the template outside.
func permissionEnv(t *testing.T, clk *fakeClock, adjust func(*config.Config)) *scenario.Env {
	return startEnv(t, scenario.Options{Clock: clk.Now, Configure: func(c *config.Config) {
		c.WhatsApp.Numbers[0].PermissionRequest = &config.PermissionRequest{
			Auto: true, Body: "May we call you about your order?",
			Template: &config.PermissionTemplate{Name: "cpr_v1", Language: "pt_BR"},
		}
		c.Outbound.Limits.CacheTTL = config.Duration(time.Millisecond) // every dial asks Meta
		if adjust != nil {
			adjust(c)
		}
	}})
}

func status(t *testing.T, env *scenario.Env, user string) permit.Status {
	t.Helper()
	v, err := env.Server.Gateway.Permission(ctxT(t, 5*time.Second), "", user)
	if err != nil {
		t.Fatal(err)
	}
	return v.(permit.Status)
}

// messageKinds lists the permission requests Meta received for user:
// "interactive" or "template".
func messageKinds(env *scenario.Env, user string) []string {
	var out []string
	for _, r := range env.Meta.Messages() {
		if r.To != user {
			continue
		}
		switch {
		case strings.Contains(string(r.Body), `"type":"template"`):
			out = append(out, "template")
		case strings.Contains(string(r.Body), `"call_permission_request"`):
			out = append(out, "interactive")
		}
	}
	return out
}

// TestOutboundPermission walks one user through the permission states:
// none (403 with a Warning, the template request sent outside the window),
// none again within 24 h (403, no second request), a reply webhook granting
// a temporary permission lets the next dial through, its expiry 7 days on
// gives 403 again, and a user who declines is not asked again. A second user
// who wrote to the business gets the interactive request.
func TestOutboundPermission(t *testing.T) {
	clk := &fakeClock{}
	env := permissionEnv(t, clk, nil)
	const user, chatty = "5511933330001", "5511933330002"
	env.Meta.SetUser(wasim.UserOptions{WaID: user, ToneHz: 440, ExpectHz: 1000})
	env.Meta.SetUser(wasim.UserOptions{WaID: chatty, ToneHz: 440, ExpectHz: 1000})

	de := refusedDial(t, env, user)
	if de.Code != 403 || !strings.Contains(strings.ToLower(de.Reason), "template") || !strings.HasPrefix(header(de, "Warning"), "399 ") {
		t.Errorf("no permission, outside the window: %d %q Warning %q; want 403 saying the template was sent, with a 399 Warning",
			de.Code, de.Reason, header(de, "Warning"))
	}
	if k := messageKinds(env, user); len(k) != 1 || k[0] != "template" {
		t.Errorf("permission requests %v, want one template", k)
	}

	clk.Advance(2 * time.Hour)
	de = refusedDial(t, env, user)
	if de.Code != 403 {
		t.Errorf("second dial within 24 h: %d %q, want 403", de.Code, de.Reason)
	}
	if k := messageKinds(env, user); len(k) != 1 {
		t.Errorf("permission requests %v: a second one within 24 h breaks Meta's limit", k)
	}
	if st := status(t, env, user); st.Requests.Last24h != 1 || st.Requests.NextAllowed.IsZero() {
		t.Errorf("ledger requests %+v", st.Requests)
	}

	// The user accepts (temporary, 7 days): the next dial goes through.
	if err := env.Meta.SendPermissionReply(ctxT(t, 5*time.Second), user, wasim.PermissionReplyOptions{Expiration: clk.Now().Add(7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return status(t, env, user).State == "temporary" }) {
		t.Fatalf("ledger after the reply webhook: %+v", status(t, env, user))
	}
	pc, callee := dialUser(t, env, user, pbx.DialOptions{})
	ctx := ctxT(t, 10*time.Second)
	_ = pc.Hangup(ctx)
	<-callee.Ended()
	if st := status(t, env, user); st.ConnectedLast24h != 1 || st.Requests.Last24h != 0 {
		t.Errorf("after a connected call: connected %d, requests %+v (a connected call resets the request limits)", st.ConnectedLast24h, st.Requests)
	}

	// Eight days on, the temporary permission has expired (no webhook says so).
	clk.Advance(8 * 24 * time.Hour)
	de = refusedDial(t, env, user)
	if de.Code != 403 {
		t.Errorf("expired permission: %d %q, want 403", de.Code, de.Reason)
	}

	// Declined: no automatic request afterwards.
	if err := env.Meta.SendPermissionReply(ctxT(t, 5*time.Second), user, wasim.PermissionReplyOptions{Response: "reject"}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return status(t, env, user).State == "revoked" }) {
		t.Fatalf("ledger after the reject webhook: %+v", status(t, env, user))
	}
	clk.Advance(25 * time.Hour)
	before := len(messageKinds(env, user))
	if de = refusedDial(t, env, user); de.Code != 403 {
		t.Errorf("declined user: %d %q, want 403", de.Code, de.Reason)
	}
	if after := len(messageKinds(env, user)); after != before {
		t.Errorf("a request was sent to a user who declined")
	}

	// A user who wrote to the business is inside the window: interactive.
	if err := env.Meta.SendUserMessage(ctxT(t, 5*time.Second), chatty, "hello"); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return status(t, env, chatty).Window.Open }) {
		t.Fatalf("window not open after the user's message: %+v", status(t, env, chatty).Window)
	}
	de = refusedDial(t, env, chatty)
	if de.Code != 403 || !strings.Contains(strings.ToLower(de.Reason), "interactive") {
		t.Errorf("no permission inside the window: %d %q, want 403 saying the interactive request was sent", de.Code, de.Reason)
	}
	if k := messageKinds(env, chatty); len(k) != 1 || k[0] != "interactive" {
		t.Errorf("permission requests %v, want one interactive", k)
	}
}

// TestOutboundLimits: the connected-call and initiation limits give 480 with
// Retry-After; two unanswered calls in a row are flagged, and after the
// fourth Meta's automatic revoke (a reply webhook) makes the next dial 403.
func TestOutboundLimits(t *testing.T) {
	clk := &fakeClock{}
	env := permissionEnv(t, clk, func(c *config.Config) {
		c.Outbound.Limits.ConnectedPer24h = 1
		c.Outbound.Limits.InitiationsPer24h = 6
	})
	const a, b = "5511944440001", "5511944440002"
	outboundUser(env, a, wasim.UserOptions{AnswerAfter: 200 * time.Millisecond})
	pc, callee := dialUser(t, env, a, pbx.DialOptions{})
	_ = pc.Hangup(ctxT(t, 5*time.Second))
	<-callee.Ended()
	de := refusedDial(t, env, a)
	if de.Code != 480 || header(de, "Retry-After") == "" {
		t.Errorf("second connected call within 24 h (limit 1): %d %q Retry-After %q, want 480 with Retry-After", de.Code, de.Reason, header(de, "Retry-After"))
	}

	outboundUser(env, b, wasim.UserOptions{Answer: "reject", AnswerAfter: 100 * time.Millisecond})
	for i := 1; i <= 4; i++ {
		if de := refusedDial(t, env, b); de.Code != 603 {
			t.Fatalf("declined call %d: %d %q, want 603", i, de.Code, de.Reason)
		}
		if i == 2 {
			if st := status(t, env, b); st.ConsecutiveUnanswered != 2 {
				t.Errorf("after 2 declined calls the ledger counts %d", st.ConsecutiveUnanswered)
			}
		}
	}
	if !waitFor(5*time.Second, func() bool { return status(t, env, b).State == "revoked" }) {
		t.Errorf("after 4 declined calls: ledger %+v, want Meta's automatic revoke recorded", status(t, env, b))
	}
	if de := refusedDial(t, env, b); de.Code != 403 {
		t.Errorf("after the automatic revoke: %d %q, want 403", de.Code, de.Reason)
	}
	// Five connects so far (ponte's own refusals send none). A third user
	// takes the sixth; the seventh is over the number's limit of 6.
	const c = "5511944440003"
	outboundUser(env, c, wasim.UserOptions{AnswerAfter: 100 * time.Millisecond})
	pc, callee = dialUser(t, env, c, pbx.DialOptions{})
	_ = pc.Hangup(ctxT(t, 5*time.Second))
	<-callee.Ended()
	if err := env.WaitIdle(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	const d = "5511944440004"
	outboundUser(env, d, wasim.UserOptions{})
	de = refusedDial(t, env, d)
	if de.Code != 480 || !strings.Contains(de.Reason, "initiation") || header(de, "Retry-After") == "" {
		t.Errorf("seventh connect of the day (limit 6): %d %q Retry-After %q, want 480 naming the initiation limit, with Retry-After",
			de.Code, de.Reason, header(de, "Retry-After"))
	}
}

// TestOutboundAlias: agents dial 5511987654321 but WhatsApp knows the user as
// 551187654321 (Brazil's ninth digit): once Meta's answer taught ponte the
// alias, both spellings are one ledger entry.
func TestOutboundAlias(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	env.Meta.SetUser(wasim.UserOptions{WaID: "551187654321", Dialled: []string{"5511987654321"},
		Permission: wasim.PermissionTemporary, ToneHz: 440, ExpectHz: 1000, AnswerAfter: 200 * time.Millisecond})
	for i := 0; i < 2; i++ {
		pc, callee := dialUser(t, env, "5511987654321", pbx.DialOptions{})
		_ = pc.Hangup(ctxT(t, 5*time.Second))
		<-callee.Ended()
		if err := env.WaitIdle(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	dialled, waID := status(t, env, "+5511987654321"), status(t, env, "551187654321")
	if dialled.User != "551187654321" || waID.User != "551187654321" || waID.ConnectedLast24h != 2 {
		t.Errorf("ledger: dialled spelling -> %q (%d connected), wa_id -> %q (%d connected); want one entry 551187654321 with 2",
			dialled.User, dialled.ConnectedLast24h, waID.User, waID.ConnectedLast24h)
	}
}
