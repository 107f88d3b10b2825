package test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// Hostile input end to end (issue 8 item 1): malformed SDP from either
// side is refused at the door, with a reason, and never rings the other.

// dropLines removes the SDP lines matching re.
func dropLines(sdp, re string) string {
	r := regexp.MustCompile(re)
	var out []string
	for _, l := range strings.Split(sdp, "\r\n") {
		if !r.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\r\n")
}

// TestHostileOfferFromMetaRejected: a connect webhook whose SDP offer ponte
// cannot use is answered with Graph `reject` (Meta's reject takes no reason,
// reference §3.2; the reason is in ponte's record, outcome bad_offer), no
// pre_accept, and the PBX is never rung.
func TestHostileOfferFromMetaRejected(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	ref, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	hangupAndWait(t, env, ref, pc)
	good := ref.Offer()
	if !strings.Contains(good, "a=fingerprint:") || !strings.Contains(good, "a=ice-ufrag:") {
		t.Fatalf("the simulator's offer lacks what the cases remove:\n%s", good)
	}
	noOpus := regexp.MustCompile(`(?m)^a=rtpmap:(\d+) opus/48000/2`).ReplaceAllString(good, "a=rtpmap:$1 PCMU/8000")
	huge := strings.Replace(good, "a=ice-ufrag:", strings.Repeat("a=x-pad:"+strings.Repeat("z", 90)+"\r\n", 3000)+"a=ice-ufrag:", 1)
	cases := []struct{ name, sdp string }{
		{"garbage", "\x00\xff not an SDP \r\n\r\n"},
		{"empty", ""},
		{"no audio m-line", dropLines(good, `^m=audio`)},
		{"video only", strings.Replace(good, "m=audio", "m=video", 1)},
		{"no opus", noOpus},
		{"no fingerprint", dropLines(good, `^a=fingerprint:`)},
		{"no ice credentials", dropLines(good, `^a=ice-(ufrag|pwd):`)},
		{"huge", huge},
	}
	ctx := ctxT(t, 60*time.Second)
	for i, tc := range cases {
		wacid := fmt.Sprintf("wacid.hostile-offer-%d", i)
		if st, err := env.Meta.SendWebhook(ctx, connectBody(wacid, tc.sdp, time.Now()), true); st != 200 {
			t.Fatalf("%s: webhook got %d (%v)", tc.name, st, err)
		}
		if a := waitActions(env, wacid, "reject"); a != "reject" {
			t.Errorf("%s: Graph requests %q, want reject", tc.name, a)
		}
		var rec *gateway.Record
		waitFor(3*time.Second, func() bool {
			for _, r := range env.Server.Gateway.Records() {
				if r.WACID == wacid {
					rec = &r
					return true
				}
			}
			return false
		})
		switch {
		case rec == nil:
			t.Errorf("%s: no call record", tc.name)
		case rec.Outcome != "bad_offer" || rec.Target != "" || !rec.PreAccepted.IsZero():
			t.Errorf("%s: record outcome %q target %q pre_accepted %v, want bad_offer and no PBX leg", tc.name, rec.Outcome, rec.Target, rec.PreAccepted)
		}
	}
	noInvite(t, env, 2*time.Second)
}

// sendInvite sends one INVITE with body as application/sdp from a fresh
// loopback UDP socket (an address of the scenario's inbound trunk) to
// ponte, and returns the final response's status line and Warning header.
func sendInvite(t *testing.T, env *scenario.Env, user, callID, body string) (status, warning string) {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(env.Server.UA.ListenAddr("udp")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	msg := fmt.Sprintf("INVITE sip:+%s@%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: \"Agent\" <sip:1001@127.0.0.1>;tag=t-%s\r\nTo: <sip:+%s@127.0.0.1>\r\n"+
		"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@%s>\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		user, env.Server.UA.ListenAddr("udp"), la, callID, callID, user, callID, la, len(body), body)
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no final response to the INVITE: %v", err)
		}
		res := string(buf[:n])
		line, _, _ := strings.Cut(res, "\r\n")
		var code int
		if _, err := fmt.Sscanf(line, "SIP/2.0 %d", &code); err != nil || code < 200 {
			continue
		}
		// ACK the failure (RFC 3261 §17.1.1.3) so ponte stops retransmitting.
		ack := fmt.Sprintf("ACK sip:+%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: \"Agent\" <sip:1001@127.0.0.1>;tag=t-%s\r\n%s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
			user, env.Server.UA.ListenAddr("udp"), la, callID, callID, headerLine(res, "To"), callID)
		_, _ = c.Write([]byte(ack))
		return line, headerValueOf(res, "Warning")
	}
}

func headerLine(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return l
		}
	}
	return name + ": <sip:x@127.0.0.1>"
}

func headerValueOf(msg, name string) string {
	l := headerLine(msg, name)
	_, v, _ := strings.Cut(l, ":")
	if !strings.Contains(msg, name+":") {
		return ""
	}
	return strings.TrimSpace(v)
}

// pbxHostileOffers are SDP offers a PBX might send that ponte cannot
// bridge; warn is what the Warning must contain.
func pbxHostileOffers() []struct{ name, body, warn string } {
	sdp := func(m string, lines ...string) string {
		return strings.Join(append([]string{"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", m}, lines...), "\r\n") + "\r\n"
	}
	return []struct{ name, body, warn string }{
		{"garbage", "\x00\xffgarbage", "SDP"},
		{"video only", sdp("m=video 20000 RTP/AVP 96", "a=rtpmap:96 H264/90000"), ""},
		{"no common codec", sdp("m=audio 20000 RTP/AVP 18", "a=rtpmap:18 G729/8000"), ""},
		{"bad port", sdp("m=audio 99999 RTP/AVP 0"), ""},
		{"no connection address", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n", ""},
	}
}

// TestHostileOfferFromPBXRefused: a PBX INVITE toward a WhatsApp user whose
// SDP ponte cannot use gets 488 Not Acceptable Here with a Warning saying
// why (RFC 3261 §21.4.26, §20.43).
func TestHostileOfferFromPBXRefused(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	for i, tc := range pbxHostileOffers() {
		user := fmt.Sprintf("55119876501%02d", i)
		outboundUser(env, user, wasim.UserOptions{})
		status, warn := sendInvite(t, env, user, fmt.Sprintf("hostile-pbx-%d", i), tc.body)
		t.Logf("%s: %s, Warning: %s", tc.name, status, warn)
		if !strings.HasPrefix(status, "SIP/2.0 488") {
			t.Errorf("%s: %q, want 488", tc.name, status)
			continue
		}
		if warn == "" || !regexp.MustCompile(`^3\d\d `).MatchString(warn) || !strings.Contains(warn, tc.warn) {
			t.Errorf("%s: Warning %q, want a 3xx warn-code with a reason", tc.name, warn)
		}
	}
}

// TestHostileOfferFromPBXNeverReachesMeta: an offer ponte cannot bridge is
// refused before Graph `connect`: otherwise Meta rings the user (and counts
// a business-initiated call against the permission, reference §6) for a
// call that can never carry audio.
func TestHostileOfferFromPBXNeverReachesMeta(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	for i, tc := range pbxHostileOffers() {
		user := fmt.Sprintf("55119876502%02d", i)
		outboundUser(env, user, wasim.UserOptions{})
		_, _ = sendInvite(t, env, user, fmt.Sprintf("hostile-pbx-meta-%d", i), tc.body)
		for _, r := range env.Meta.Requests() {
			if r.Action == "connect" && r.To == user {
				t.Errorf("%s: Meta was asked to connect to %s", tc.name, user)
			}
		}
	}
}

// errorLog keeps the Error records of a logger (goroutine-safe).
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }
func (l *errorLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// TestMediaPanicEndsOnlyThatCall: with two calls up, a panic injected into
// one call's media goroutine (gateway.SetMediaFault) ends that call cleanly
// (BYE to its PBX leg, terminate to Meta, a failed record, the panic
// logged) while the other call keeps its audio both ways, and the gateway
// takes a new call afterwards.
func TestMediaPanicEndsOnlyThatCall(t *testing.T) {
	w := startStallWatch(t)
	logs := &errorLog{}
	env := startEnv(t, scenario.Options{Logger: slog.New(logs)})
	type leg struct {
		caller *wasim.Caller
		pc     *pbx.Call
	}
	var calls [2]leg
	for i := range calls {
		calls[i].caller, calls[i].pc = connected(t, env, wasim.CallOptions{From: fmt.Sprintf("551198765430%d", i), ExpectHz: 1000})
		// ponte sends media toward Meta only once it has accept's 200: from
		// then on the call is surely accepted and a panic ends it with
		// terminate. (Before, a reject then terminate: see
		// TestInboundPBXHangupWhileAcceptAnswerInFlight.)
		c := calls[i].caller
		if !waitFor(5*time.Second, func() bool { return !c.Stream().FirstRTP.IsZero() }) {
			t.Fatalf("call %d: no media from ponte", i)
		}
	}
	var victim atomic.Uint64
	gateway.SetMediaFault(func(call, _ uint64) {
		if victim.CompareAndSwap(0, call) {
			panic("injected media fault")
		}
	})
	defer gateway.SetMediaFault(nil)

	var dead, alive leg
	select {
	case <-calls[0].pc.Ended():
		dead, alive = calls[0], calls[1]
	case <-calls[1].pc.Ended():
		dead, alive = calls[1], calls[0]
	case <-time.After(10 * time.Second):
		t.Fatal("neither call ended after the injected panic")
	}
	gateway.SetMediaFault(nil)
	if by := dead.pc.EndedBy(); by != "bye" {
		t.Errorf("the panicked call's PBX leg ended by %q, want a BYE", by)
	}
	if a := waitActions(env, dead.caller.ID(), "pre_accept,accept,terminate"); a != "pre_accept,accept,terminate" {
		t.Errorf("the panicked call's Graph requests %q, want pre_accept,accept,terminate", a)
	}
	var rec *gateway.Record
	waitFor(5*time.Second, func() bool {
		for _, r := range env.Server.Gateway.Records() {
			if r.WACID == dead.caller.ID() {
				rec = &r
				return true
			}
		}
		return false
	})
	if rec == nil || rec.Outcome != "failed" {
		t.Errorf("the panicked call's record: %+v, want outcome failed", rec)
	}
	if n := logs.count("media goroutine panicked; ending the call"); n != 1 {
		t.Errorf("%d panic log lines, want 1", n)
	}

	// The other call goes on: 3 s of tone both ways.
	select {
	case <-alive.pc.Ended():
		t.Fatalf("the other call ended too (by %s)", alive.pc.EndedBy())
	default:
	}
	listen(t, w, time.Now().Add(200*time.Millisecond), 3*time.Second, bothWays(alive.caller, alive.pc, whole(140), whole(140)))
	hangupAndWait(t, env, alive.caller, alive.pc)

	// And a new call is taken.
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	hangupAndWait(t, env, caller, pc)
}
