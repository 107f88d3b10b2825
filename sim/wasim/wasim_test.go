package wasim_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/wasim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestUserInitiatedCall runs Meta's UIC flow against a bare webrtc.Leg: signed connect webhook
// in Meta's shape, pre_accept, ICE+DTLS, accept, then audio and DTMF both ways, then terminate.
func TestUserInitiatedCall(t *testing.T) {
	g := newGW(t, nil)
	ts := time.Unix(1671644824, 0)
	c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{
		From: "16315553602", Name: "Maria", CTAPayload: "cta-1", DeeplinkPayload: "deep-1", Timestamp: ts,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The connect webhook, field by field (§2.2).
	h := g.nextHook("connect")
	if !strings.HasPrefix(h.sig, "sha256=") {
		t.Fatalf("signature header %q", h.sig)
	}
	if h.body["object"] != "whatsapp_business_account" {
		t.Fatalf("object %v", h.body["object"])
	}
	v := value0(t, h.body)
	md := v["metadata"].(map[string]any)
	contact := v["contacts"].([]any)[0].(map[string]any)
	call := call0(t, h.body)
	session := call["session"].(map[string]any)
	for name, got := range map[string][2]any{
		"messaging_product":    {v["messaging_product"], "whatsapp"},
		"display_phone_number": {md["display_phone_number"], "16315553601"},
		"phone_number_id":      {md["phone_number_id"], pnid},
		"profile.name":         {contact["profile"].(map[string]any)["name"], "Maria"},
		"wa_id":                {contact["wa_id"], "16315553602"},
		"id":                   {call["id"], c.ID()},
		"from":                 {call["from"], "16315553602"},
		"to":                   {call["to"], "16315553601"},
		"timestamp":            {call["timestamp"], "1671644824"},
		"direction":            {call["direction"], "USER_INITIATED"},
		"cta_payload":          {call["cta_payload"], "cta-1"},
		"deeplink_payload":     {call["deeplink_payload"], "deep-1"},
		"sdp_type":             {session["sdp_type"], "offer"},
		"sdp":                  {session["sdp"], c.Offer()},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %v, want %v", name, got[0], got[1])
		}
	}
	if !strings.HasPrefix(c.ID(), "wacid.") {
		t.Errorf("id %q", c.ID())
	}
	offer := c.Offer()
	for _, want := range []string{"a=ice-lite", "a=setup:actpass", "a=group:BUNDLE audio", "a=mid:audio",
		"a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:126 telephone-event/8000"} {
		if !strings.Contains(offer, want+"\r\n") {
			t.Errorf("offer lacks %q", want)
		}
	}

	leg, err := g.eng.NewLeg(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	lm := newLegMedia(t, leg)
	answer, err := leg.Answer(offer)
	if err != nil {
		t.Fatal(err)
	}
	st, resp := g.graph(token, action(c.ID(), "pre_accept", "answer", answer))
	g.expectOK("pre_accept", st, resp)
	if err := leg.WaitConnected(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Connected but not accepted: the caller hears nothing (no RTP, no RTCP), and the caller
	// sends nothing either (media starts on accept, §3.2).
	time.Sleep(300 * time.Millisecond)
	if s := c.Stream(); s.WireRTP+s.WireRTCP+s.Packets != 0 {
		t.Fatalf("caller received media before accept: %+v", s)
	}
	if first, _ := lm.received(); !first.IsZero() {
		t.Fatal("caller sent media before accept")
	}

	acc := action(c.ID(), "accept", "answer", answer)
	acc["biz_opaque_callback_data"] = "opaque-42"
	st, resp = g.graph(token, acc)
	g.expectOK("accept", st, resp)
	if err := c.WaitAccepted(ctxT(t, 2*time.Second)); err != nil {
		t.Fatal(err)
	}
	enabledAt := time.Now()
	leg.EnableSend()
	stopSend := lm.start(t)
	defer stopSend()
	time.Sleep(1500 * time.Millisecond)
	lm.dtmf <- '1'
	lm.dtmf <- '#'
	c.SendDTMF("59", 100*time.Millisecond, 60*time.Millisecond)
	if err := c.WaitDTMF(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1 * time.Second)
	end := time.Now()

	// Caller side: one SSRC (the leg's), no gaps, nothing before EnableSend, a 440 Hz tone.
	s := c.Stream()
	if len(s.SSRCs) != 1 || s.SSRCs[0] != leg.SSRC() || s.MaxSeqStep != 1 || s.SeqBackwards != 0 {
		t.Errorf("stream %+v (leg SSRC %d)", s, leg.SSRC())
	}
	if s.FirstWireRTP.Before(enabledAt) || s.FirstRTP.Before(enabledAt) {
		t.Errorf("first RTP %v before EnableSend %v", s.FirstWireRTP, enabledAt)
	}
	if s.WireRTCP > 0 && s.FirstWireRTCP.Before(enabledAt) {
		t.Errorf("first RTCP %v before EnableSend %v", s.FirstWireRTCP, enabledAt)
	}
	if s.MinPPS < 45 || s.EventPackets == 0 {
		t.Errorf("pps %v min %d, events %d", s.PPS, s.MinPPS, s.EventPackets)
	}
	// RTCP both ways once media flows: the leg's SR reached the caller's interceptor after the
	// gate opened, and the caller's SR reached the leg.
	if s.WireRTCP == 0 || s.FirstRTCP.IsZero() || s.FirstRTCP.Before(enabledAt) {
		t.Errorf("caller RTCP: wire %d, first %v (enabled %v)", s.WireRTCP, s.FirstRTCP, enabledAt)
	}
	if ls := leg.Stats(); ls.RTCPIn == 0 || ls.RTCPOut == 0 || ls.PacketsIn == 0 || ls.Lost != 0 {
		t.Errorf("leg stats %+v", ls)
	}
	rep := c.Heard().Report(enabledAt.Add(200*time.Millisecond), end)
	if rep.ToneRatio < 0.8 {
		t.Errorf("caller heard the 440 Hz tone in %.0f%% of windows: %+v", 100*rep.ToneRatio, rep)
	}
	digits := c.Digits()
	if got := fmt.Sprintf("%c", runes(digits)); got != "[1 #]" {
		t.Errorf("caller digits %s, want [1 #]", got)
	}
	for _, d := range digits {
		if d.PT != 126 || d.Duration != 100*time.Millisecond {
			t.Errorf("digit %+v, want PT 126 and 100ms", d)
		}
	}

	// Gateway side: the caller's tone, its digits, and nothing before the accept response.
	first, legDigits := lm.received()
	if first.Before(c.AcceptRespondedAt()) {
		t.Errorf("leg got the caller's first packet at %v, before the accept response %v", first, c.AcceptRespondedAt())
	}
	if string(legDigits) != "59" {
		t.Errorf("leg digits %q, want 59", string(legDigits))
	}
	rep = lm.heard.Report(c.AcceptRespondedAt().Add(200*time.Millisecond), end)
	if rep.ToneRatio < 0.8 {
		t.Errorf("leg heard the caller's tone in %.0f%% of windows: %+v", 100*rep.ToneRatio, rep)
	}

	st, resp = g.graph(token, action(c.ID(), "terminate", "", ""))
	g.expectOK("terminate", st, resp)
	th := g.nextHook("terminate")
	tc := call0(t, th.body)
	if tc["status"] != "COMPLETED" || tc["id"] != c.ID() || tc["biz_opaque_callback_data"] != "opaque-42" ||
		tc["cta_payload"] != "cta-1" || tc["start_time"] == nil || tc["end_time"] == nil {
		t.Errorf("terminate webhook %s", th.raw)
	}
	if d, ok := tc["duration"].(float64); !ok || d < 3 || d > 5 {
		t.Errorf("duration %v", tc["duration"])
	}
	<-c.Ended()
	if c.EndReason() != "gateway_terminate" {
		t.Errorf("end reason %q", c.EndReason())
	}
	select {
	case <-leg.Done():
	case <-time.After(10 * time.Second):
		t.Error("leg not done after Meta ended the call")
	}
	st, resp = g.graph(token, action(c.ID(), "terminate", "", ""))
	if st != 400 || !strings.Contains(fmt.Sprint(resp), "already") {
		t.Errorf("second terminate: %d %v", st, resp)
	}
}

func runes(ds []wasim.ReceivedDigit) []rune {
	out := make([]rune, len(ds))
	for i, d := range ds {
		out[i] = d.Rune
	}
	return out
}

// TestEarlyMediaDetected: a gateway that opens its send gate before accept is caught: the
// caller records RTP arriving before the accept response.
func TestEarlyMediaDetected(t *testing.T) {
	g := newGW(t, nil)
	c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.nextHook("connect")
	leg, err := g.eng.NewLeg(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	lm := newLegMedia(t, leg)
	answer, err := leg.Answer(c.Offer())
	if err != nil {
		t.Fatal(err)
	}
	st, resp := g.graph(token, action(c.ID(), "pre_accept", "answer", answer))
	g.expectOK("pre_accept", st, resp)
	if err := leg.WaitConnected(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	leg.EnableSend() // the bug under test
	defer lm.start(t)()
	time.Sleep(200 * time.Millisecond)
	st, resp = g.graph(token, action(c.ID(), "accept", "answer", answer))
	g.expectOK("accept", st, resp)
	if err := c.WaitAccepted(ctxT(t, 2*time.Second)); err != nil {
		t.Fatal(err)
	}
	s := c.Stream()
	if s.FirstWireRTP.IsZero() || !s.FirstWireRTP.Before(c.AcceptRespondedAt()) ||
		s.FirstRTP.IsZero() || !s.FirstRTP.Before(c.AcceptRespondedAt()) {
		t.Fatalf("early media not detected: first wire RTP %v, interceptor %v, accept responded %v",
			s.FirstWireRTP, s.FirstRTP, c.AcceptRespondedAt())
	}
}

// answerFor returns a valid answer for c (a leg that is never connected).
func answerFor(t *testing.T, g *testGW, c *wasim.Caller) string {
	t.Helper()
	leg, err := g.eng.NewLeg(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	a, err := leg.Answer(c.Offer())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestGraphValidation(t *testing.T) {
	g := newGW(t, nil)
	newCall := func(t *testing.T) (*wasim.Caller, string) {
		g.drainHooks()
		c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g.nextHookT(t, "connect")
		return c, answerFor(t, g, c)
	}
	type step struct {
		auth       string
		body       func(id, answer string) map[string]any
		wantStatus int
		wantCode   float64
		wantText   string
	}
	ok := func(act string) step {
		return step{token, func(id, a string) map[string]any { return action(id, act, "answer", a) }, 200, 0, ""}
	}
	okNoSDP := func(act string) step {
		return step{token, func(id, _ string) map[string]any { return action(id, act, "", "") }, 200, 0, ""}
	}
	bad := func(act, sdpType string, mangle func(string) string, code float64, text string) step {
		return step{token, func(id, a string) map[string]any { return action(id, act, sdpType, mangle(a)) }, 400, code, text}
	}
	same := func(s string) string { return s }
	tests := []struct {
		name  string
		steps []step
	}{
		{"wrong token", []step{{"nope", func(id, a string) map[string]any { return action(id, "pre_accept", "answer", a) }, 401, 190, "OAuth"}}},
		{"sdp_type offer on pre_accept", []step{bad("pre_accept", "offer", same, 100, "sdp_type")}},
		{"sdp_type offer on accept", []step{bad("accept", "offer", same, 100, "sdp_type")}},
		{"no fingerprint", []step{bad("pre_accept", "answer", func(s string) string {
			return strings.ReplaceAll(s, "a=fingerprint:", "a=x-fingerprint:")
		}, 100, "No fingerprint found in SDP")}},
		{"two m-lines", []step{bad("pre_accept", "answer", func(s string) string {
			return s + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\n"
		}, 100, "exactly one media section")}},
		{"setup passive", []step{bad("accept", "answer", func(s string) string {
			return strings.Replace(s, "a=setup:active", "a=setup:passive", 1)
		}, 100, "setup:active")}},
		{"accept SDP differs from pre_accept", []step{ok("pre_accept"), bad("accept", "answer", func(s string) string {
			return strings.Replace(s, "a=ptime:20", "a=ptime:20\r\na=maxptime:20", 1)
		}, 100, "does not match")}},
		{"pre_accept twice", []step{ok("pre_accept"), bad("pre_accept", "answer", same, 100, "already")}},
		{"accept after terminate", []step{okNoSDP("terminate"), bad("accept", "answer", same, 100, "already ended")}},
		{"reject after accept", []step{ok("accept"), {token, func(id, _ string) map[string]any { return action(id, "reject", "", "") }, 400, 100, "in progress"}}},
		{"reject twice", []step{okNoSDP("reject"), {token, func(id, _ string) map[string]any { return action(id, "reject", "", "") }, 400, 100, "already"}}},
		{"unknown call id", []step{{token, func(_, a string) map[string]any { return action("wacid.nope", "accept", "answer", a) }, 400, 100, "Invalid call id"}}},
		{"no messaging_product", []step{{token, func(id, a string) map[string]any {
			b := action(id, "pre_accept", "answer", a)
			delete(b, "messaging_product")
			return b
		}, 400, 100, "messaging_product"}}},
		{"accept without pre_accept", []step{ok("accept")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, answer := newCall(t)
			for i, s := range tc.steps {
				st, resp := g.graph(s.auth, s.body(c.ID(), answer))
				if st != s.wantStatus || errCode(resp) != s.wantCode || !strings.Contains(fmt.Sprint(resp), s.wantText) {
					t.Fatalf("step %d: %d %v, want %d code %v containing %q", i, st, resp, s.wantStatus, s.wantCode, s.wantText)
				}
			}
		})
	}
	// Every request was logged with its outcome.
	reqs := g.meta.Requests()
	if len(reqs) == 0 || reqs[0].Status != 401 || reqs[0].Auth != "Bearer nope" || reqs[0].Action != "pre_accept" {
		t.Fatalf("requests log %+v", reqs[:1])
	}
}

func TestWrongPhoneNumberID(t *testing.T) {
	g := newGW(t, nil)
	st, resp := g.graphPath("/999/calls", action("wacid.x", "terminate", "", ""))
	if st != 400 || errCode(resp) != 100 {
		t.Fatalf("%d %v", st, resp)
	}
}

func TestInjectFailure(t *testing.T) {
	g := newGW(t, nil)
	c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.nextHook("connect")
	answer := answerFor(t, g, c)
	g.meta.InjectFailure("accept", 500, `{"error":{"message":"boom","code":138004}}`, 1)
	st, resp := g.graph(token, action(c.ID(), "accept", "answer", answer))
	if st != 500 || errCode(resp) != 138004 {
		t.Fatalf("injected: %d %v", st, resp)
	}
	st, resp = g.graph(token, action(c.ID(), "accept", "answer", answer))
	g.expectOK("accept after injection", st, resp)
}

// TestTimers covers Meta's clocks: the accept window and the two media timeouts (§3.2, §5.5).
func TestTimers(t *testing.T) {
	tests := []struct {
		name       string
		accept     bool
		sendFor    time.Duration // business media after accept; 0 = none
		closeLeg   bool          // then the business leg disappears (Meta cannot transmit)
		wantReason string
		wantCode   float64
		wantStatus string
		picked     bool
	}{
		{"accept window", false, 0, false, "accept_timeout", 0, "FAILED", false},
		{"no media at start", true, 0, false, "no_media_138021", 138021, "FAILED", true},
		{"media stops mid-call", true, 400 * time.Millisecond, false, "no_media_138021", 138021, "FAILED", true},
		{"business leg gone", true, 400 * time.Millisecond, true, "no_media_138022", 138022, "FAILED", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGW(t, func(c *wasim.Config) {
				c.AcceptWindow, c.NoMediaStart, c.NoMediaMid = 400*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond
			})
			c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{})
			if err != nil {
				t.Fatal(err)
			}
			g.nextHook("connect")
			if tc.accept {
				leg, err := g.eng.NewLeg(c.ID())
				if err != nil {
					t.Fatal(err)
				}
				lm := newLegMedia(t, leg)
				answer, err := leg.Answer(c.Offer())
				if err != nil {
					t.Fatal(err)
				}
				st, resp := g.graph(token, action(c.ID(), "accept", "answer", answer))
				g.expectOK("accept", st, resp)
				if tc.sendFor > 0 {
					if err := leg.WaitConnected(ctxT(t, 5*time.Second)); err != nil {
						t.Fatal(err)
					}
					leg.EnableSend()
					stop := lm.start(t)
					time.Sleep(tc.sendFor)
					stop() // the business goes silent, RTCP too (first SR due at 1.5 s)
					if tc.closeLeg {
						_ = leg.Close()
					}
				}
			}
			h := g.nextHook("terminate")
			call := call0(t, h.body)
			if call["status"] != tc.wantStatus || (call["duration"] != nil) != tc.picked || (call["start_time"] != nil) != tc.picked {
				t.Errorf("terminate %s", h.raw)
			}
			errs, _ := value0(t, h.body)["errors"].([]any)
			var code float64
			if len(errs) == 1 {
				code = errs[0].(map[string]any)["code"].(float64)
			}
			if code != tc.wantCode || (tc.wantCode == 0) != (errs == nil) {
				t.Errorf("errors %v, want code %v", errs, tc.wantCode)
			}
			<-c.Ended()
			if c.EndReason() != tc.wantReason {
				t.Errorf("reason %q, want %q", c.EndReason(), tc.wantReason)
			}
			if !tc.accept {
				answer := answerFor(t, g, c)
				if st, _ := g.graph(token, action(c.ID(), "accept", "answer", answer)); st != 400 {
					t.Errorf("accept after the window: %d", st)
				}
			}
		})
	}
}

func TestHangupAndStatusArray(t *testing.T) {
	g := newGW(t, func(c *wasim.Config) { c.StatusAsArray = true })
	c, err := g.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{BSUID: "US.13491208655302741918", From: ""})
	if err != nil {
		t.Fatal(err)
	}
	h := g.nextHook("connect")
	call := call0(t, h.body)
	if call["from"] != "" || call["from_user_id"] != "US.13491208655302741918" {
		t.Errorf("BSUID connect %s", h.raw)
	}
	if err := c.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	th := g.nextHook("terminate")
	if st := fmt.Sprint(call0(t, th.body)["status"]); st != "[Failed]" {
		t.Errorf("status %s, want [Failed] (never accepted)", st)
	}
	if c.EndReason() != "user_hangup" {
		t.Errorf("reason %q", c.EndReason())
	}
	if err := c.Hangup(ctxT(t, time.Second)); err == nil {
		t.Error("second hangup succeeded")
	}
}

func TestSendWebhookSigning(t *testing.T) {
	g := newGW(t, nil)
	body := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"calls","value":{"calls":[{"event":"terminate"}]}}]}]}`)
	st, err := g.meta.SendWebhook(ctxT(t, 5*time.Second), body, true)
	if err != nil || st != 200 {
		t.Fatalf("signed: %d %v", st, err)
	}
	h := g.nextHook("terminate")
	if h.sig != wasim.Sign(body, secret) || string(h.raw) != string(body) {
		t.Fatalf("sig %q raw %s", h.sig, h.raw)
	}
	// The well-known HMAC-SHA256 vector (key "key").
	if got := wasim.Sign([]byte("The quick brown fox jumps over the lazy dog"), "key"); got !=
		"sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" {
		t.Fatalf("Sign = %s", got)
	}
	// A gateway that rejects the webhook surfaces as ErrWebhookRejected.
	g.meta.Close()
	g2 := newGW(t, func(c *wasim.Config) { c.AppSecret = "other" })
	if _, err := g2.meta.Call(ctxT(t, 5*time.Second), wasim.CallOptions{}); !errors.Is(err, wasim.ErrWebhookRejected) {
		t.Fatalf("Call with a bad signature: %v", err)
	}
}

// TestMarkerDelay: with CallOptions.Marker the caller speaks the two-frequency marker
// sequence; a receiver on the business side attached to the caller's sender measures the
// one-way delay of each transition (a sanity bound only: loopback plus Opus framing).
func TestMarkerDelay(t *testing.T) {
	g := newGW(t, nil)
	var rx *audio.MarkerReceiver
	c, _, _ := g.acceptedCall(t, wasim.CallOptions{Marker: true}, func(lm *legMedia) {
		rx = audio.NewMarkerReceiver(8000, wasim.MarkerF1Hz, wasim.MarkerF2Hz)
		lm.markers = rx
	})
	if c.MarkerSender() == nil {
		t.Fatal("no marker sender")
	}
	rx.Attach(c.MarkerSender())
	time.Sleep(2300 * time.Millisecond)
	d := rx.Delays()
	if len(d) < 3 {
		t.Fatalf("%d marker transitions matched (sent %d, seen %d)", len(d), len(c.MarkerSender().Transitions()), len(rx.Transitions()))
	}
	for i, x := range d {
		if x <= 0 || x > time.Second {
			t.Errorf("delay %d = %s", i, x)
		}
	}
	lo, mean, hi := audio.DelayStats(d)
	t.Logf("caller->leg marker delay min %s mean %s max %s over %d transitions", lo, mean, hi, len(d))
}

// TestUserHangupAfterAccept: the user hangs up a running call: terminate COMPLETED with
// start_time, end_time and duration; the business leg sees the relay leave.
func TestUserHangupAfterAccept(t *testing.T) {
	g := newGW(t, nil)
	c, leg, _ := g.acceptedCall(t, wasim.CallOptions{}, nil)
	time.Sleep(1200 * time.Millisecond)
	if err := c.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	h := g.nextHook("terminate")
	call := call0(t, h.body)
	if call["status"] != "COMPLETED" || call["start_time"] == nil || call["end_time"] == nil {
		t.Errorf("terminate %s", h.raw)
	}
	if d, _ := call["duration"].(float64); d < 1 || d > 2 {
		t.Errorf("duration %v, want 1", call["duration"])
	}
	if c.EndReason() != "user_hangup" {
		t.Errorf("reason %q", c.EndReason())
	}
	select {
	case <-leg.Done():
	case <-time.After(10 * time.Second):
		t.Error("leg not done after the user hung up")
	}
}
