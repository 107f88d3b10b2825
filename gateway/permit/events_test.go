package permit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

func TestConnectError(t *testing.T) {
	cases := []struct {
		name    string
		err     whatsapp.APIError
		setup   func(t *testing.T, f *fixture)
		code    int
		reason  string
		retry   time.Duration
		after   store.PermissionState
		blocked time.Time // RequestsBlockedUntil afterwards
	}{
		{name: "138006 no permission", err: whatsapp.APIError{HTTPStatus: 401, Code: 138006, Message: "No approved call permission"},
			setup: func(t *testing.T, f *fixture) { f.perm(t, store.PermissionPermanent, time.Time{}, sourceAccept) },
			code:  403, reason: "No WhatsApp call permission (WhatsApp error 138006)", after: store.PermissionNone},
		{name: "138006 keeps revoked", err: whatsapp.APIError{Code: 138006},
			setup: func(t *testing.T, f *fixture) { f.perm(t, store.PermissionRevoked, time.Time{}, sourceReject) },
			code:  403, after: store.PermissionRevoked},
		{name: "138001 uncallable", err: whatsapp.APIError{Code: 138001, Message: "Receiver is uncallable"}, code: 404, reason: "138001"},
		{name: "138003 duplicate", err: whatsapp.APIError{Code: 138003}, code: 486, reason: "Call in progress"},
		{name: "138013 BIC unavailable", err: whatsapp.APIError{Code: 138013}, code: 403, reason: "not available"},
		{name: "138002 concurrency", err: whatsapp.APIError{HTTPStatus: 429, Code: 138002}, code: 480, retry: time.Minute},
		{name: "138005 rate, ledger below the limit", err: whatsapp.APIError{HTTPStatus: 429, Code: 138005}, code: 480, retry: time.Minute},
		{name: "138012 with a Unix time", err: whatsapp.APIError{Code: 138012,
			Details: fmt.Sprintf("Next call allowed at %d.", t0.Add(3*time.Hour).Unix())}, code: 480, reason: "retry in 3h", retry: 3 * time.Hour},
		{name: "138012 with RFC 3339", err: whatsapp.APIError{Code: 138012,
			Details: "next_allowed_time=" + t0.Add(90*time.Minute).Format(time.RFC3339)}, code: 480, retry: 90 * time.Minute},
		{name: "138012 without a time: the ledger's oldest connected call", err: whatsapp.APIError{Code: 138012, Details: "limit reached"},
			setup: func(t *testing.T, f *fixture) { f.called(t, user, 20*time.Hour, store.CallConnected) }, code: 480, retry: 4 * time.Hour},
		{name: "138009 blocks requests", err: whatsapp.APIError{Code: 138009}, code: 403, reason: "138009",
			after: store.PermissionNone, blocked: t0.Add(24 * time.Hour)},
		{name: "others: 500 with Meta's message", err: whatsapp.APIError{HTTPStatus: 401, Code: 138000, Message: "Calling not enabled"},
			code: 500, reason: "WhatsApp error 138000: Calling not enabled"},
		{name: "Meta's 5xx: 500 with Retry-After", err: whatsapp.APIError{HTTPStatus: 500, Code: 138004, Message: "Connection error"},
			code: 500, reason: "WhatsApp error 138004: Connection error", retry: 30 * time.Second},
		{name: "a 5xx without a code", err: whatsapp.APIError{HTTPStatus: 503}, code: 500, reason: "WhatsApp HTTP 503: error", retry: 30 * time.Second},
		{name: "another 429: 480 with Retry-After", err: whatsapp.APIError{HTTPStatus: 429, Code: 4, Message: "Application request limit reached"},
			code: 480, reason: "WhatsApp error 4: Application request limit reached", retry: time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledgers(t, func(t *testing.T, l store.Ledger) {
				f := newFixture(t, l, Limits{})
				if tc.setup != nil {
					tc.setup(t, f)
				}
				before, _, _ := l.BusinessInitiations(ctx, biz, t0.Add(-24*time.Hour))
				d := f.s.ConnectError(ctx, biz, user, &tc.err)
				if d.Allow || d.SIPCode != tc.code || !strings.Contains(d.Reason, tc.reason) || d.RetryAfter != tc.retry ||
					!strings.HasPrefix(d.Warning, `399 ponte "`) {
					t.Fatalf("decision %+v", d)
				}
				if n, _, _ := l.BusinessInitiations(ctx, biz, t0.Add(-24*time.Hour)); n != before+1 {
					t.Fatalf("refused connect not counted: %d -> %d", before, n)
				}
				p, _ := l.Permission(ctx, biz, user)
				if tc.after != "" && p.State != tc.after {
					t.Fatalf("ledger %+v, want %s", p, tc.after)
				}
				if !p.RequestsBlockedUntil.Equal(tc.blocked) {
					t.Fatalf("requests blocked until %v, want %v", p.RequestsBlockedUntil, tc.blocked)
				}
			})
		})
	}
}

func TestParseNextTime(t *testing.T) {
	at := time.Date(2026, 11, 21, 12, 30, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		fmt.Sprint(at.Unix()):                          at,
		fmt.Sprintf("(%d)", at.UnixMilli()):            at,
		"retry after " + at.Format(time.RFC3339) + ".": at,
		"no time here 12345":                           {},
		"":                                             {},
	} {
		if got := parseNextTime(in); !got.Equal(want) {
			t.Errorf("parseNextTime(%q) = %v, want %v", in, got, want)
		}
	}
}

// outcomeSpy records the request outcomes written to the ledger.
type outcomeSpy struct {
	store.Ledger
	outcomes map[string]string
}

func (o *outcomeSpy) SetRequestOutcome(ctx context.Context, wamid, outcome string) error {
	if err := o.Ledger.SetRequestOutcome(ctx, wamid, outcome); err != nil {
		return err
	}
	o.outcomes[wamid] = outcome
	return nil
}

func TestOnPermissionReply(t *testing.T) {
	exp := t0.Add(7 * 24 * time.Hour).Add(-time.Minute)
	cases := []struct {
		name    string
		prior   *store.Permission
		reply   whatsapp.PermissionReply
		state   store.PermissionState
		source  string
		expires time.Time
		window  bool   // the reply opened the customer-service window
		outcome string // of the request wamid.req1
	}{
		{name: "temporary accept", reply: whatsapp.PermissionReply{Response: "accept", Expiration: exp, Source: "user_action", ContextID: "wamid.req1"},
			state: store.PermissionTemporary, source: sourceAccept, expires: exp, window: true, outcome: "accepted"},
		{name: "temporary accept without expiration: 7 days", reply: whatsapp.PermissionReply{Response: "accept", Source: "user_action"},
			state: store.PermissionTemporary, source: sourceAccept, expires: t0.Add(7 * 24 * time.Hour), window: true, outcome: "sent"},
		{name: "permanent accept", reply: whatsapp.PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action", ContextID: "wamid.req1"},
			state: store.PermissionPermanent, source: sourceAccept, window: true, outcome: "accepted"},
		{name: "automatic callback permission", reply: whatsapp.PermissionReply{Response: "accept", Expiration: exp, Source: "automatic", ContextID: "wacid.ABC"},
			state: store.PermissionTemporary, source: sourceAcceptAuto, expires: exp, outcome: "sent"},
		{name: "user rejects", reply: whatsapp.PermissionReply{Response: "reject", Source: "user_action", ContextID: "wamid.req1"},
			state: store.PermissionRevoked, source: sourceReject, window: true, outcome: "rejected"},
		{name: "Meta revokes after 4 unanswered", reply: whatsapp.PermissionReply{Response: "reject", Source: "automatic"},
			state: store.PermissionRevoked, source: sourceRevokeAuto, outcome: "sent"},
		{name: "an older reply does not undo a newer one",
			prior: &store.Permission{State: store.PermissionPermanent, Source: sourceAccept, Updated: t0.Add(time.Minute)},
			reply: whatsapp.PermissionReply{Response: "reject", Source: "user_action"},
			state: store.PermissionPermanent, source: sourceAccept, outcome: "sent"},
		{name: "unknown response ignored", reply: whatsapp.PermissionReply{Response: "maybe", Source: "user_action"},
			state: store.PermissionNone, outcome: "sent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledgers(t, func(t *testing.T, base store.Ledger) {
				spy := &outcomeSpy{Ledger: base, outcomes: map[string]string{"wamid.req1": "sent"}}
				var l store.Ledger = spy
				f := newFixture(t, l, Limits{})
				if err := l.AddPermissionRequest(ctx, store.PermissionRequest{Business: biz, User: user, At: t0.Add(-time.Hour),
					Kind: store.RequestTemplate, WAMID: "wamid.req1"}); err != nil {
					t.Fatal(err)
				}
				if tc.prior != nil {
					p := *tc.prior
					p.Business, p.User = biz, user
					if err := l.SetPermission(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				f.s.OnPermissionReply(ctx, biz, user, tc.reply, t0)
				p, _ := l.Permission(ctx, biz, user)
				if p.State != tc.state || p.Source != tc.source || !p.Expires.Equal(tc.expires) {
					t.Fatalf("ledger %+v", p)
				}
				if w, _ := l.WindowLastInbound(ctx, biz, user); w.Equal(t0) != tc.window {
					t.Fatalf("window %v, want opened=%v", w, tc.window)
				}
				if got := spy.outcomes["wamid.req1"]; got != tc.outcome {
					t.Fatalf("request outcome %q, want %q", got, tc.outcome)
				}
			})
		})
	}
}

func TestRequestPermission(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		// Outside the window, no template.
		if _, _, err := f.s.RequestPermission(ctx, biz, user, RequestConfig{InteractiveBody: "hi"}); !errors.Is(err, ErrNoTemplate) {
			t.Fatalf("no template: %v", err)
		}
		f.s.OnUserActivity(ctx, biz, user, t0.Add(-time.Hour))
		kind, wamid, err := f.s.RequestPermission(ctx, biz, user, RequestConfig{InteractiveBody: "hi"})
		if err != nil || kind != "interactive" || wamid != "wamid.req1" {
			t.Fatalf("first: %q %q %v", kind, wamid, err)
		}
		f.ck.Add(2 * time.Hour)
		_, _, err = f.s.RequestPermission(ctx, biz, user, auto)
		var le *LimitError
		if !errors.As(err, &le) || !errors.Is(err, ErrRequestLimit) || le.RetryAfter != 22*time.Hour || !le.Until.Equal(t0.Add(24*time.Hour)) {
			t.Fatalf("second within 24 h: %v", err)
		}
		st, err := f.s.Status(ctx, biz, user)
		if err != nil || st.Requests.Last24h != 1 || !st.Requests.NextAllowed.Equal(t0.Add(24*time.Hour)) || st.Requests.Limit != "1 per 24 h" {
			t.Fatalf("status %+v %v", st.Requests, err)
		}
		// Meta's 138009: blocked for a day even though ponte counted fewer.
		f.ck.Add(23 * time.Hour)
		f.g.sendErr = &whatsapp.APIError{Code: 138009, Message: "limit"}
		if _, _, err := f.s.RequestPermission(ctx, biz, user, auto); !errors.As(err, &le) || le.Limit != "meta" {
			t.Fatalf("138009: %v", err)
		}
		f.g.sendErr = nil
		f.ck.Add(2 * time.Hour)
		if _, _, err := f.s.RequestPermission(ctx, biz, user, auto); !errors.As(err, &le) || le.Limit != "meta" {
			t.Fatalf("after 138009: %v", err)
		}
		// A connected call resets everything.
		f.s.CallEnded(ctx, biz, user, "wacid.uic", store.CallConnected)
		if kind, _, err := f.s.RequestPermission(ctx, biz, user, auto); err != nil || kind != "interactive" { // the call opened the window
			t.Fatalf("after a connected call: %q %v", kind, err)
		}
		_, sends := f.g.counts()
		if sends != 2 {
			t.Fatalf("%d sends, want 2", sends)
		}
	})
}

func TestRequestPermissionPermanentAndLostAnswers(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.sendErr = &whatsapp.APIError{Code: 138017, Message: "Permanent permission already exists"}
		if _, _, err := f.s.RequestPermission(ctx, biz, user, auto); !errors.Is(err, ErrAlreadyPermanent) {
			t.Fatalf("138017: %v", err)
		}
		if p, _ := l.Permission(ctx, biz, user); p.State != store.PermissionPermanent {
			t.Fatalf("ledger after 138017: %+v", p)
		}
		// Known permanent: nothing is sent.
		f.g.sendErr = nil
		if _, _, err := f.s.RequestPermission(ctx, biz, "5511900000001", auto); err != nil {
			t.Fatal(err)
		}
		_, before := f.g.counts()
		f.g.set(user, granted("permanent", time.Time{}))
		f.ck.Add(time.Minute)
		if _, _, err := f.s.RequestPermission(ctx, biz, user, auto); !errors.Is(err, ErrAlreadyPermanent) {
			t.Fatalf("permanent: %v", err)
		}
		if _, after := f.g.counts(); after != before {
			t.Fatal("a request went to a user with a permanent permission")
		}
		// No answer from Meta: the request may have gone out, so it counts.
		const u2 = "5511900000002"
		f.g.sendErr = fmt.Errorf("context deadline exceeded")
		if _, _, err := f.s.RequestPermission(ctx, biz, u2, auto); err == nil || errors.Is(err, ErrRequestLimit) {
			t.Fatalf("lost answer: %v", err)
		}
		f.g.sendErr = nil
		var le *LimitError
		if _, _, err := f.s.RequestPermission(ctx, biz, u2, auto); !errors.As(err, &le) {
			t.Fatalf("after a lost answer: %v", err)
		}
		// A refusal by Meta (not 138009) does not count.
		const u3 = "5511900000003"
		f.g.sendErr = &whatsapp.APIError{Code: 131030, Message: "Recipient not in allowed list"}
		if _, _, err := f.s.RequestPermission(ctx, biz, u3, auto); err == nil || errors.Is(err, ErrRequestLimit) {
			t.Fatalf("131030: %v", err)
		}
		f.g.sendErr = nil
		if _, _, err := f.s.RequestPermission(ctx, biz, u3, auto); err != nil {
			t.Fatalf("after a refusal: %v", err)
		}
	})
}

// The messages response names the wa_id: learned, and the request counted
// under it.
func TestRequestLearnsAlias(t *testing.T) {
	const dialled, waID = "5215512345678", "525512345678" // Mexico's 521 vs 52
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.waID[dialled] = waID
		if _, _, err := f.s.RequestPermission(ctx, biz, dialled, auto); err != nil {
			t.Fatal(err)
		}
		if u, _, _ := f.s.Normalize("+52 1 55 1234 5678", ""); u != waID {
			t.Fatalf("alias not learned: %q", u)
		}
		c, _ := l.PairCounters(ctx, biz, waID, t0)
		if c.RequestsLast24h != 1 {
			t.Fatalf("request not under the wa_id: %+v", c)
		}
	})
}

func TestCallEndedOutcomes(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		if err := f.s.CallStarted(ctx, biz, user, "wacid.1"); err != nil {
			t.Fatal(err)
		}
		if err := f.s.CallStarted(ctx, biz, user, "wacid.1"); !errors.Is(err, store.ErrExists) {
			t.Fatalf("same wacid twice: %v", err)
		}
		f.ck.Add(time.Minute)
		f.s.CallEnded(ctx, biz, user, "wacid.1", "bogus") // ignored
		c, _ := l.PairCounters(ctx, biz, user, f.ck.Now())
		if !c.InProgress {
			t.Fatal("an unknown outcome ended the call")
		}
		f.s.CallEnded(ctx, biz, user, "wacid.1", store.CallRejected)
		f.s.CallEnded(ctx, biz, user, "", store.CallFailed) // no wacid: nothing to update
		c, _ = l.PairCounters(ctx, biz, user, f.ck.Now())
		if c.InProgress || c.ConsecutiveUnanswered != 1 {
			t.Fatalf("after rejected: %+v", c)
		}
		// A user-initiated call (no BIC row) resets the run and opens the window.
		f.s.CallEnded(ctx, biz, user, "wacid.uic", store.CallConnected)
		c, _ = l.PairCounters(ctx, biz, user, f.ck.Now())
		w, _ := l.WindowLastInbound(ctx, biz, user)
		if c.ConsecutiveUnanswered != 0 || c.ConnectedLast24h != 0 || !w.Equal(f.ck.Now()) {
			t.Fatalf("after a UIC: %+v window %v", c, w)
		}
	})
}

func TestStatusJSON(t *testing.T) {
	f := newFixture(t, store.NewMemoryLedger(), Limits{})
	f.g.set(user, granted("temporary", t0.Add(48*time.Hour)))
	f.s.Check(ctx, biz, user, RequestConfig{})
	f.s.OnUserActivity(ctx, biz, user, t0.Add(-2*time.Hour))
	f.ck.Add(2 * time.Minute)
	st, err := f.s.Status(ctx, biz, user)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	meta := got["meta"].(map[string]any)
	window := got["window"].(map[string]any)
	if got["state"] != "temporary" || got["source"] != "meta" || got["expires"] != "2026-11-23T09:00:00Z" ||
		meta["status"] != "temporary" || meta["fresh"] != false || meta["can_start_call"] != true ||
		window["open"] != true || window["until"] != "2026-11-22T07:00:00Z" || got["in_progress"] != false {
		t.Fatalf("status %s", b)
	}
	// Expired by time: no webhook says so.
	f.ck.Add(48 * time.Hour)
	st, _ = f.s.Status(ctx, biz, user)
	if st.State != "expired" || st.Window.Open {
		t.Fatalf("after 48 h: %+v", st)
	}
}
