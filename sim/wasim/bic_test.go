package wasim_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/whatsapp"
)

// TestBusinessInitiatedCall runs Meta's BIC flow (§3.3) against ponte's client and a ponte
// leg: connect with the offer, the connect webhook with Meta's answer (§2.3), RINGING and
// ACCEPTED (§2.4), audio and DTMF both ways, then the user hangs up: terminate COMPLETED with
// start_time, end_time and duration (§2.5).
func TestBusinessInitiatedCall(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "551187654321", Dialled: []string{"+55 11 98765 4321"}, BSUID: "BR.1234",
		Permission: wasim.PermissionTemporary, AnswerAfter: time.Second, ToneHz: 440})
	callee, leg, lm := g.dial(t, "5511987654321", "corr-42")
	if callee.User() != "551187654321" || callee.BizOpaque() != "corr-42" {
		t.Errorf("callee user %q opaque %q", callee.User(), callee.BizOpaque())
	}

	// The connect webhook, field by field (§2.3 plus the 2026 BSUID fields).
	g.mu.Lock()
	connect, ringing := g.hooks[0], g.hooks[1]
	g.mu.Unlock()
	contact := connect.value["contacts"].([]any)[0].(map[string]any)
	for name, got := range map[string][2]any{
		"wa_id":         {contact["wa_id"], "551187654321"},
		"user_id":       {contact["user_id"], "BR.1234"},
		"id":            {connect.elem["id"], callee.ID()},
		"to":            {connect.elem["to"], "551187654321"},
		"from":          {connect.elem["from"], "16315553601"},
		"to_user_id":    {connect.elem["to_user_id"], "BR.1234"},
		"direction":     {connect.elem["direction"], "BUSINESS_INITIATED"},
		"timestamp":     {connect.elem["timestamp"], "1772445600"},
		"opaque":        {connect.elem["biz_opaque_callback_data"], "corr-42"},
		"status id":     {ringing.elem["id"], callee.ID()},
		"status type":   {ringing.elem["type"], "call"},
		"recipient_id":  {ringing.elem["recipient_id"], "551187654321"},
		"status opaque": {ringing.elem["biz_opaque_callback_data"], "corr-42"},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %v, want %v", name, got[0], got[1])
		}
	}
	// Meta's answer (§5.2): ICE-lite, Meta the DTLS client, Opus 111 and telephone-event 126.
	ans := callee.Answer()
	for _, want := range []string{"a=ice-lite", "a=setup:active", "a=rtpmap:111 opus/48000/2", "a=rtpmap:126 telephone-event/8000", "a=sendrecv"} {
		if !hasLine(ans, want) {
			t.Errorf("answer lacks %q:\n%s", want, ans)
		}
	}
	if n := strings.Count(ans, "\r\nm="); n != 1 || callee.Offer() == "" {
		t.Errorf("answer has %d m-lines", n)
	}
	// Media flows from the user only after ACCEPTED: nothing while it rings.
	time.Sleep(300 * time.Millisecond)
	if first, _ := lm.received(); !first.IsZero() {
		t.Error("user media before ACCEPTED")
	}
	g.expect(t, "status:ACCEPTED")
	if err := callee.WaitAccepted(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	leg.EnableSend()
	t.Cleanup(lm.start(t))

	// Both directions carry the tones; digits cross both ways on PT 126 (§5.4).
	ctx := ctxT(t, 10*time.Second)
	waitTone(t, ctx, lm.heard, "gateway hears the user")
	waitTone(t, ctx, callee.Heard(), "user hears the business")
	callee.SendDTMF("19#", 100*time.Millisecond, 60*time.Millisecond)
	if err := callee.WaitDTMF(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range "*4" {
		lm.dtmf <- r
	}
	waitUntil(t, ctx, func() bool {
		_, d := lm.received()
		return string(d) == "19#" && string(runes(callee.Digits())) == "*4"
	})
	if st := callee.Stream(); len(st.SSRCs) != 1 || st.AudioPackets == 0 || st.EventPackets == 0 {
		t.Errorf("stream %+v", st)
	}

	st, _ := g.meta.User("+5511987654321")
	if st.Connected24h != 1 || st.ActiveCall != callee.ID() || !st.WindowOpen {
		t.Errorf("user state %+v", st)
	}
	g.clock.Advance(42 * time.Second)
	if err := callee.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	term := g.expect(t, "terminate")[0]
	evs, err := whatsapp.ParseWebhook(term.raw)
	if err != nil || len(evs) != 1 {
		t.Fatal(err)
	}
	ev := evs[0]
	if ev.Kind != whatsapp.EventTerminate || ev.Status != "COMPLETED" || ev.Duration != 42 ||
		ev.Direction != whatsapp.DirBusinessInitiated || ev.BizOpaque != "corr-42" || ev.CallID != callee.ID() ||
		!ev.StartTime.Equal(t0) || !ev.EndTime.Equal(t0.Add(42*time.Second)) || ev.WaID != "" && ev.WaID != "551187654321" {
		t.Errorf("terminate %+v", ev)
	}
	<-callee.Ended()
	if callee.EndReason() != "user_hangup" {
		t.Errorf("end reason %q", callee.EndReason())
	}
	if st, _ := g.meta.User("551187654321"); st.ActiveCall != "" {
		t.Errorf("call still active: %+v", st)
	}
	if err := callee.Hangup(ctx); err == nil {
		t.Error("second hangup accepted")
	}
}

// waitTone waits until the analyzer has received a second of its tone, nearly unbroken: the
// last second of audio holds at least 80 % tone windows.
func waitTone(t *testing.T, ctx context.Context, a *audio.Analyzer, what string) {
	t.Helper()
	for {
		now := time.Now()
		if r := a.Report(now.Add(-time.Second), now); r.Windows >= 40 && r.ToneRatio >= 0.8 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no tone: %+v", what, a.Report(time.Time{}, time.Now()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitUntil(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestBICConnectRefusals: Meta's errors for connect (§3.6) with their HTTP statuses.
func TestBICConnectRefusals(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionTemporary,
		PermissionExpires: t0.Add(time.Hour), Answer: "none"})
	g.meta.SetUser(wasim.UserOptions{WaID: "15550002"}) // no permission
	g.meta.SetUser(wasim.UserOptions{WaID: "15550003", BSUID: "US.3", Permission: wasim.PermissionPermanent})
	_, _, offer := g.offer(t)
	connect := func(to, recipient, sdpType, sdp, opaque string) map[string]any {
		b := map[string]any{"messaging_product": "whatsapp", "action": "connect",
			"session": map[string]any{"sdp_type": sdpType, "sdp": sdp}}
		if to != "" {
			b["to"] = to
		}
		if recipient != "" {
			b["recipient"] = recipient
		}
		if opaque != "" {
			b["biz_opaque_callback_data"] = opaque
		}
		return b
	}
	noFP := strings.Join(filterLines(offer, "a=fingerprint:"), "\r\n")
	tests := []struct {
		name    string
		body    map[string]any
		status  int
		code    float64
		details string
	}{
		{"answer sdp_type", connect("15550001", "", "answer", offer, ""), 400, 100, ""},
		{"no recipient", connect("", "", "offer", offer, ""), 400, 100, ""},
		{"active offer", connect("15550001", "", "offer", strings.Replace(offer, "a=setup:actpass", "a=setup:active", 1), ""), 400, 100, "actpass"},
		{"passive offer", connect("15550001", "", "offer", strings.Replace(offer, "a=setup:actpass", "a=setup:passive", 1), ""), 400, 100, "actpass"},
		{"no fingerprint", connect("15550001", "", "offer", noFP, ""), 400, 100, "No fingerprint"},
		{"no opus", connect("15550001", "", "offer", strings.ReplaceAll(offer, "opus/48000", "PCMU/8000"), ""), 400, 100, "opus"},
		{"opaque too long", connect("15550001", "", "offer", offer, strings.Repeat("x", 513)), 400, 100, "512"},
		{"unknown user", connect("15559999", "", "offer", offer, ""), 400, 138001, ""},
		{"unknown BSUID", connect("", "US.999", "offer", offer, ""), 400, 138001, ""},
		{"to wins over recipient", connect("15559999", "US.3", "offer", offer, ""), 400, 138001, ""},
		{"no permission", connect("15550002", "", "offer", offer, ""), 401, 138006, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, resp := g.graph(http.MethodPost, "/"+pnid+"/calls", tc.body)
			e, _ := resp["error"].(map[string]any)
			details, _ := e["error_data"].(map[string]any)["details"].(string)
			if status != tc.status || errCode(resp) != tc.code || !strings.Contains(details, tc.details) {
				t.Errorf("HTTP %d %v, want %d code %v details ~%q", status, resp, tc.status, tc.code, tc.details)
			}
		})
	}
	if n := len(g.meta.Requests()); n != len(tests) {
		t.Errorf("%d requests recorded", n)
	}

	// A running call to the user: 138003; ponte's client reports the APIError.
	ctx := ctxT(t, 10*time.Second)
	wacid, err := g.client.Connect(ctx, pnid, "15550001", "", offer, "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, offer2 := g.offer(t)
	if _, err := g.client.Connect(ctx, pnid, "+15550001", "", offer2, ""); apiCode(err) != 138003 {
		t.Errorf("duplicate: %v", err)
	}
	// pre_accept, accept and reject do not exist for business-initiated calls (§3.3).
	for _, act := range []string{"pre_accept", "accept", "reject"} {
		status, resp := g.graph(http.MethodPost, "/"+pnid+"/calls", action(wacid, act, "answer", offer))
		if status != 400 || errCode(resp) != 100 {
			t.Errorf("%s: %d %v", act, status, resp)
		}
	}
	if err := g.client.Terminate(ctx, pnid, wacid); err != nil {
		t.Fatal(err)
	}
	// The temporary permission expires: 138006 again (§2.8: no webhook when it expires).
	g.clock.Advance(time.Hour)
	if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer2, ""); apiCode(err) != 138006 {
		t.Errorf("expired permission: %v", err)
	}
	var ae *whatsapp.APIError
	if _, err := g.client.Connect(ctx, pnid, "15550002", "", offer2, ""); !errors.As(err, &ae) || ae.HTTPStatus != 401 || errors.Is(err, whatsapp.ErrAuth) {
		t.Errorf("138006 must be HTTP 401 and not an auth failure: %v", err)
	}
}

func filterLines(sdp, prefix string) []string {
	var out []string
	for _, l := range strings.Split(sdp, "\r\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// TestBICConnectedLimit: start_call counts connected calls per 24 h; at the limit connect is
// refused with 138012 and the next allowed time (§3.6, §4.3).
func TestBICConnectedLimit(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent, ConnectedLimit: 1,
		AnswerAfter: -1, RingingAfter: -1})
	callee, _, _ := g.dial(t, "15550001", "")
	g.expect(t, "status:ACCEPTED")
	ctx := ctxT(t, 10*time.Second)
	if err := g.client.Terminate(ctx, pnid, callee.ID()); err != nil {
		t.Fatal(err)
	}
	g.expect(t, "terminate")
	g.clock.Advance(time.Hour)
	_, _, offer := g.offer(t)
	_, err := g.client.Connect(ctx, pnid, "15550001", "", offer, "")
	var ae *whatsapp.APIError
	next := t0.Add(24 * time.Hour)
	if !errors.As(err, &ae) || ae.Code != 138012 || ae.HTTPStatus != 400 || !strings.Contains(ae.Details, next.Format(time.RFC3339)) {
		t.Fatalf("limit: %v", err)
	}
	p, err := g.client.CallPermissions(ctx, pnid, "15550001", "")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Action("start_call")
	if p.CanStartCall() || len(a.Limits) != 1 || a.Limits[0].CurrentUsage != 1 || !a.Limits[0].Expiration.Equal(next) {
		t.Errorf("permissions %+v", p)
	}
	g.clock.Advance(23 * time.Hour)
	if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer, ""); err != nil {
		t.Errorf("after 24 h: %v", err)
	}
}

// TestBICUnanswered: a rejected call (REJECTED then terminate FAILED) and an unanswered one
// (terminate FAILED after RingTimeout); the fourth in a row revokes the permission with an
// automatic reject reply (§2.4, §2.5, §2.8, §4.3).
func TestBICUnanswered(t *testing.T) {
	g := newBIC(t, func(c *wasim.Config) { c.RingTimeout = 400 * time.Millisecond })
	user := wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionTemporary, Answer: "reject",
		AnswerAfter: 50 * time.Millisecond, RingingAfter: 10 * time.Millisecond}
	g.meta.SetUser(user)
	ctx := ctxT(t, 20*time.Second)
	place := func() *wasim.Callee {
		t.Helper()
		_, _, offer := g.offer(t)
		if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer, "x"); err != nil {
			t.Fatal(err)
		}
		c, err := g.meta.WaitCallee(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := place()
	hs := g.expect(t, "connect", "status:RINGING", "status:REJECTED", "terminate")
	if hs[3].elem["status"] != "FAILED" || hs[3].elem["duration"] != nil || hs[3].elem["start_time"] != nil ||
		hs[3].elem["biz_opaque_callback_data"] != "x" {
		t.Errorf("terminate after reject: %s", hs[3].raw)
	}
	<-c.Ended()
	if c.EndReason() != "user_reject" {
		t.Errorf("reason %q", c.EndReason())
	}

	user.Answer = "none"
	g.meta.SetUser(user)
	c = place()
	hs = g.expect(t, "connect", "status:RINGING", "terminate")
	if hs[2].elem["status"] != "FAILED" || c.EndReason() != "ring_timeout" {
		t.Errorf("no answer: %s, reason %q", hs[2].raw, c.EndReason())
	}
	if st, _ := g.meta.User("15550001"); st.Unanswered != 2 || st.Permission != wasim.PermissionTemporary {
		t.Errorf("after 2: %+v", st)
	}
	place()
	g.expect(t, "connect", "status:RINGING", "terminate")
	place()
	hs = g.expect(t, "connect", "status:RINGING", "terminate", "permission_reply")
	evs, err := whatsapp.ParseWebhook(hs[3].raw)
	if err != nil || len(evs) != 1 || evs[0].Kind != whatsapp.EventPermissionReply {
		t.Fatalf("revocation %v %v", evs, err)
	}
	if p := evs[0].Permission; p.Response != "reject" || p.Source != "automatic" || p.ContextID != "" || evs[0].WaID != "15550001" {
		t.Errorf("revocation %+v", p)
	}
	if st, _ := g.meta.User("15550001"); st.Permission != wasim.PermissionNone {
		t.Errorf("after 4: %+v", st)
	}
	_, _, offer := g.offer(t)
	if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer, ""); apiCode(err) != 138006 {
		t.Errorf("after revocation: %v", err)
	}
}

// TestBICBusinessTerminate: the business hangs up while it rings (FAILED, no times) and after
// the answer (COMPLETED with duration); a second terminate is refused.
func TestBICBusinessTerminate(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent, Answer: "none"})
	ctx := ctxT(t, 10*time.Second)
	c, _, _ := g.dial(t, "15550001", "")
	if err := g.client.Terminate(ctx, pnid, c.ID()); err != nil {
		t.Fatal(err)
	}
	h := g.expect(t, "terminate")[0]
	if h.elem["status"] != "FAILED" || h.elem["duration"] != nil || c.EndReason() != "gateway_terminate" {
		t.Errorf("terminate while ringing: %s (%s)", h.raw, c.EndReason())
	}
	status, resp := g.graph(http.MethodPost, "/"+pnid+"/calls", action(c.ID(), "terminate", "", ""))
	if status != 400 || errCode(resp) != 100 {
		t.Errorf("second terminate: %d %v", status, resp)
	}
	if st, _ := g.meta.User("15550001"); st.Unanswered != 0 {
		t.Errorf("a call the business ended is not unanswered: %+v", st)
	}

	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent, AnswerAfter: -1})
	c, _, _ = g.dial(t, "15550001", "")
	g.expect(t, "status:ACCEPTED")
	g.clock.Advance(7 * time.Second)
	if err := g.client.Terminate(ctx, pnid, c.ID()); err != nil {
		t.Fatal(err)
	}
	h = g.expect(t, "terminate")[0]
	if h.elem["status"] != "COMPLETED" || h.elem["duration"] != float64(7) {
		t.Errorf("terminate after answer: %s", h.raw)
	}
}

// TestBICConnectWebhookAtAnswer: with ConnectWebhook "accepted" the answer arrives only when
// the user picks up: RINGING, connect, ACCEPTED.
func TestBICConnectWebhookAtAnswer(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent,
		ConnectWebhook: "accepted", AnswerAfter: 300 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	leg, lm, offer := g.offer(t)
	if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer, ""); err != nil {
		t.Fatal(err)
	}
	hs := g.expect(t, "status:RINGING", "connect", "status:ACCEPTED")
	if err := leg.SetAnswer(sessionSDP(t, hs[1])); err != nil {
		t.Fatal(err)
	}
	if err := leg.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	waitTone(t, ctx, lm.heard, "gateway hears the user")
}

// TestBICEarlyMedia: the user's side may send audio while it rings (UNCONFIRMED, §2.3).
func TestBICEarlyMedia(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent,
		EarlyMedia: true, AnswerAfter: 3 * time.Second})
	_, _, lm := g.dial(t, "15550001", "")
	waitUntil(t, ctxT(t, 2*time.Second), func() bool { first, _ := lm.received(); return !first.IsZero() })
	g.expect(t, "status:ACCEPTED")
}

// TestBICNoBusinessMedia: after ACCEPTED Meta's media timer runs as for user-initiated calls
// (§5.5): no business RTP -> terminate FAILED with 138021.
func TestBICNoBusinessMedia(t *testing.T) {
	g := newBIC(t, func(c *wasim.Config) { c.NoMediaStart = 300 * time.Millisecond })
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent, AnswerAfter: -1})
	c, _, _ := g.dial(t, "15550001", "")
	g.expect(t, "status:ACCEPTED")
	h := g.expect(t, "terminate")[0]
	errs, _ := h.value["errors"].([]any)
	if len(errs) != 1 || errs[0].(map[string]any)["code"] != float64(wasim.CodeMediaReceiveTimeout) || c.EndReason() != "no_media_138021" {
		t.Errorf("terminate %s reason %q", h.raw, c.EndReason())
	}
}

// TestBICSlowConnectAndInjected: a connect the gateway gave up on still creates the call and its
// webhooks (so ponte must never send a second connect); an injected failure creates nothing.
func TestBICSlowConnectAndInjected(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Permission: wasim.PermissionPermanent, Answer: "none"})
	ctx := ctxT(t, 10*time.Second)
	_, _, offer := g.offer(t)

	g.meta.InjectFailure("connect", 500, "", 1)
	if _, err := g.client.Connect(ctx, pnid, "15550001", "", offer, "c1"); !errors.Is(err, whatsapp.ErrUnavailable) {
		t.Fatalf("injected: %v", err)
	}
	g.none(t, 300*time.Millisecond)

	g.meta.DelayAction("connect", 800*time.Millisecond)
	slow := whatsapp.NewClient(whatsapp.ClientConfig{BaseURL: g.meta.GraphURL(), AccessToken: token, Timeout: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	defer slow.CloseIdleConnections()
	if _, err := slow.Connect(ctx, pnid, "15550001", "", offer, "c2"); !errors.Is(err, whatsapp.ErrTimeout) {
		t.Fatalf("slow connect: %v", err)
	}
	c, err := g.meta.WaitCallee(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs := g.expect(t, "connect", "status:RINGING")
	if hs[0].elem["biz_opaque_callback_data"] != "c2" || hs[0].elem["id"] != c.ID() {
		t.Errorf("connect webhook %s", hs[0].raw)
	}
	var connects []string
	for _, r := range g.meta.Requests() {
		if r.Action == "connect" {
			connects = append(connects, r.CallID)
		}
	}
	if len(connects) != 2 || connects[0] != "" || connects[1] != c.ID() {
		t.Errorf("connect requests %q", connects)
	}
}
