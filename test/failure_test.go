package test

import (
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// callerEnded waits for the simulated caller to see its call end.
func callerEnded(t *testing.T, c *wasim.Caller, d time.Duration) string {
	t.Helper()
	select {
	case <-c.Ended():
		return c.EndReason()
	case <-time.After(d):
		t.Fatalf("the WhatsApp call never ended (state: %q)", c.EndReason())
		return ""
	}
}

func pbxEnded(t *testing.T, pc *pbx.Call, d time.Duration) string {
	t.Helper()
	select {
	case <-pc.Ended():
		return pc.EndedBy()
	case <-time.After(d):
		t.Fatal("the PBX leg never ended")
		return ""
	}
}

func TestInboundPBXBusyRejects(t *testing.T) {
	env := startEnv(t, scenario.Options{PBX: pbx.Config{AnswerCode: 486}})
	caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_reject" {
		t.Errorf("caller end reason %q, want gateway_reject", r)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,reject"); a != "pre_accept,reject" {
		t.Errorf("Graph requests %q, want pre_accept,reject", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].Outcome != "target_486" || recs[0].EndedBy != "pbx" {
		t.Errorf("record %+v", recs)
	}
}

func TestInboundAcceptDeadlineCancelsAndRejects(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{
		AcceptDeadline: 5 * time.Second, RingTimeout: 5 * time.Second,
		PBX: pbx.Config{AnswerDelay: 20 * time.Second},
	})
	ctx := ctxT(t, 20*time.Second)
	caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{})
	start := time.Now()
	if by := pbxEnded(t, pc, 10*time.Second); by != "cancel" || !strings.Contains(pc.ByeReason(), "Q.850;cause=19") {
		t.Errorf("PBX leg ended by %q with Reason %q, want a CANCEL with Q.850 cause 19 (no answer)", by, pc.ByeReason())
	}
	if el, starved, late := w.late(start, pc.EndedAt(), 6*time.Second); late {
		t.Errorf("gave up after %v (%v starved), want about the 5 s deadline", el, starved)
	}
	if r := callerEnded(t, caller, 5*time.Second); r != "gateway_reject" {
		t.Errorf("caller end reason %q, want gateway_reject", r)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,reject"); a != "pre_accept,reject" {
		t.Errorf("Graph requests %q, want pre_accept,reject", a)
	}
}

func TestInboundPBXByeTerminates(t *testing.T) {
	env := startEnv(t, scenario.Options{PBX: pbx.Config{HangupAfter: 2 * time.Second}})
	caller, _ := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_terminate" {
		t.Errorf("caller end reason %q, want gateway_terminate", r)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,accept,terminate"); a != "pre_accept,accept,terminate" {
		t.Errorf("Graph requests %q", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].EndedBy != "pbx" || recs[0].Outcome != "completed" {
		t.Errorf("record %+v", recs)
	}
}

func TestInboundAcceptFailsByesPBX(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	env.Meta.InjectFailure("accept", 400, `{"error":{"message":"Invalid connection info","type":"OAuthException","code":100,"fbtrace_id":"AbCdEf"}}`, 10)
	ctx := ctxT(t, 20*time.Second)
	caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{})
	if by := pbxEnded(t, pc, 10*time.Second); by != "bye" {
		t.Fatalf("PBX leg ended by %q, want a BYE", by)
	}
	if r := pc.ByeReason(); !strings.Contains(r, "accept failed") || !strings.HasPrefix(r, "SIP;cause=500") {
		t.Errorf("BYE Reason %q, want SIP;cause=500 with the accept failure", r)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if a := waitActions(env, caller.ID(), "pre_accept,accept,reject"); a != "pre_accept,accept,reject" {
		t.Errorf("Graph requests %q, want pre_accept,accept,reject (accept is not retried on a 4xx)", a)
	}
}

func TestInboundCallerHangupWhileRingingCancels(t *testing.T) {
	env := startEnv(t, scenario.Options{PBX: pbx.Config{AnswerDelay: 15 * time.Second}})
	ctx := ctxT(t, 20*time.Second)
	caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{})
	time.Sleep(500 * time.Millisecond) // ringing
	if err := caller.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "cancel" || !strings.Contains(pc.ByeReason(), "Q.850;cause=16") {
		t.Errorf("PBX leg ended by %q with Reason %q, want a CANCEL with Q.850 cause 16", by, pc.ByeReason())
	}
	_ = env.WaitIdle(ctx)
	if a := waitActions(env, caller.ID(), "pre_accept"); a != "pre_accept" {
		t.Errorf("Graph requests %q: after the user hung up nothing more is owed", a)
	}
}

func TestInboundCallerHangupAnsweredByes(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	if err := caller.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "bye" || !strings.Contains(pc.ByeReason(), "Q.850;cause=16") {
		t.Errorf("PBX leg ended by %q with Reason %q, want a BYE with Q.850 cause 16", by, pc.ByeReason())
	}
}

// TestInboundEarlyMedia: with early_media: ignore, the PBX's 183 audio never
// reaches the caller and accept waits for the 200; with answer, ponte accepts
// on the 183 and the caller hears the PBX before its 200.
func TestInboundEarlyMedia(t *testing.T) {
	for _, mode := range []string{"ignore", "answer"} {
		t.Run(mode, func(t *testing.T) {
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{EarlyMedia: mode, PBX: pbx.Config{EarlyMedia: true, EarlyToneHz: 1500, AnswerDelay: 3 * time.Second}})
			ctx := ctxT(t, 20*time.Second)
			early := audio.NewAnalyzer(8000, 1500, -12)
			caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{ExpectHz: 1000, OnAudio: early.Add})
			if err := caller.WaitAccepted(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(5*time.Second, func() bool { return !pc.AnsweredAt().IsZero() })
			time.Sleep(time.Second)
			answered := pc.AnsweredAt()
			if !pc.EarlyMediaSent() || answered.IsZero() {
				t.Fatalf("PBX early media %v, answered %v", pc.EarlyMediaSent(), answered)
			}
			acc := caller.AcceptRespondedAt()
			first := caller.Stream().FirstWireRTP
			heardEarly := early.Report(acc.Add(-time.Minute), time.Now())
			switch mode {
			case "ignore":
				if acc.Before(answered) {
					t.Errorf("accepted at %v, before the PBX's 200 at %v", acc, answered)
				}
				if !first.After(answered) {
					t.Errorf("caller got media at %v, before the PBX's 200 at %v", first, answered)
				}
				// Known defect (noted on issue 3): an early-media packet sent
				// just before the 200 can be read from the RTP socket after the
				// 200 was processed from the SIP socket, so at most that one
				// in-flight frame can reach the caller; kernel receive
				// timestamps (SO_TIMESTAMP) are the fix. More than one is a bug.
				if heardEarly.ToneWindows > 1 {
					t.Errorf("caller heard %d windows of the PBX's early media (1500 Hz), the first %v after the PBX's 200 (accept answered %v after it)",
						heardEarly.ToneWindows, heardEarly.FirstTone.Sub(answered), acc.Sub(answered))
				}
				if r := caller.Heard().Report(answered.Add(500*time.Millisecond), answered.Add(time.Second)); r.ToneRatio < 0.9 {
					if st := w.worst(answered, answered.Add(time.Second)); st >= stallLimit {
						t.Logf("after the 200 the caller heard the PBX in %.0f%% of windows, excused by a measured %v CPU stall", r.ToneRatio*100, st)
					} else {
						t.Errorf("after the 200 the caller heard the PBX in %.0f%% of windows", r.ToneRatio*100)
					}
				}
			case "answer":
				if !acc.Before(answered.Add(-time.Second)) {
					t.Errorf("accept answered at %v, want on the 183 (PBX 200 at %v)", acc, answered)
				}
				if heardEarly.ToneWindows < 50 {
					t.Errorf("caller heard %d tone windows of early media, want the PBX's announcement", heardEarly.ToneWindows)
				}
			}
			hangupAndWait(t, env, caller, pc)
		})
	}
}

// TestInboundFirstWordsReachCaller: the PBX answers at once and says
// "hello" (a 1500 Hz greeting for 400 ms) while accept is still in flight;
// the caller hears all of it, then the PBX's 1000 Hz.
func TestInboundFirstWordsReachCaller(t *testing.T) {
	for _, codec := range []string{"PCMU", "opus"} {
		t.Run(codec, func(t *testing.T) {
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{Codecs: []string{codec}, PBX: pbx.Config{GreetingHz: 1500, GreetingDur: 400 * time.Millisecond}})
			greeting := audio.NewAnalyzer(8000, 1500, -12)
			caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000, OnAudio: greeting.Add})
			time.Sleep(2 * time.Second)
			wait := caller.AcceptRespondedAt().Sub(pc.AnsweredAt())
			r := greeting.Report(time.Now().Add(-time.Minute), time.Now())
			// 400 ms of greeting is 19-20 of the PBX's ticks; one window at the
			// end mixes greeting and tone.
			if r.ToneWindows < 18 {
				// The same rule as every real-time check here: a shortfall is
				// excused only by a measured CPU stall while the greeting played.
				if st := w.worst(pc.AnsweredAt(), caller.AcceptRespondedAt().Add(time.Second)); st >= stallLimit {
					t.Logf("caller heard %d of the 20 greeting frames, excused by a measured %v CPU stall", r.ToneWindows, st)
				} else {
					t.Errorf("caller heard %d of the 20 greeting frames (accept came %v after the PBX's 200, worst stall %v)", r.ToneWindows, wait, st)
				}
			}
			t.Logf("accept answered %v after the PBX's 200; greeting frames heard: %d", wait, r.ToneWindows)
			hangupAndWait(t, env, caller, pc)
		})
	}
}

// TestInboundICENeverCompletes: the offer points at a relay that never
// answers ICE. Within media.connect_timeout ponte gives up even though the
// PBX is still ringing: CANCEL toward the PBX, reject toward Meta.
func TestInboundICENeverCompletes(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{ConnectTimeout: 3 * time.Second, PBX: pbx.Config{AnswerDelay: 20 * time.Second}})
	ctx := ctxT(t, 20*time.Second)
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{DeadMedia: true})
	if err != nil {
		t.Fatal(err)
	}
	pc2, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if by := pbxEnded(t, pc2, 10*time.Second); by != "cancel" {
		t.Errorf("PBX leg ended by %q, want cancel", by)
	}
	if el, starved, late := w.late(start, pc2.EndedAt(), 5*time.Second); late {
		t.Errorf("gave up after %v (%v starved), want about the 3 s connect timeout", el, starved)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,reject"); a != "pre_accept,reject" {
		t.Errorf("Graph requests %q, want pre_accept,reject", a)
	}
}

// TestInboundDeadTargetGivesUpFast: a target that never answers (not even
// 100 Trying) is given up after no_provisional_timeout (default 3 s), not
// after Timer B's 32 s: reject toward Meta, recorded as unreachable.
func TestInboundDeadTargetGivesUpFast(t *testing.T) {
	w := startStallWatch(t)
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	env := startEnv(t, scenario.Options{PBXAddr: dead.LocalAddr().String()})
	start := time.Now()
	caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_reject" {
		t.Errorf("caller end reason %q, want gateway_reject", r)
	}
	if el, starved, late := w.late(start, time.Now(), 5*time.Second); el < 2500*time.Millisecond || late {
		t.Errorf("gave up after %v (%v starved), want about the 3 s no_provisional_timeout", el, starved)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,reject"); a != "pre_accept,reject" {
		t.Errorf("Graph requests %q", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].Outcome != "target_unreachable" {
		t.Errorf("record %+v", recs)
	}
}

// TestInboundTrunkDownSkipped: a trunk whose OPTIONS go unanswered is marked
// down; a call to it is refused at once and no INVITE is sent.
func TestInboundTrunkDownSkipped(t *testing.T) {
	w := startStallWatch(t)
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	var mu sync.Mutex
	var methods []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := dead.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m, _, _ := strings.Cut(string(buf[:n]), " ")
			mu.Lock()
			methods = append(methods, m)
			mu.Unlock()
		}
	}()
	env := startEnv(t, scenario.Options{
		PBXAddr:   dead.LocalAddr().String(),
		Configure: func(c *config.Config) { c.SIP.Trunks[0].OptionsInterval = config.Duration(500 * time.Millisecond) },
	})
	if !waitFor(5*time.Second, func() bool { return !env.Server.Gateway.TrunkUp("pbx") }) {
		t.Fatal("the trunk was never marked down")
	}
	start := time.Now()
	caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, caller, 5*time.Second); r != "gateway_reject" {
		t.Errorf("caller end reason %q, want gateway_reject", r)
	}
	if el, starved, late := w.late(start, time.Now(), time.Second); late {
		t.Errorf("refused after %v (%v starved), want at once", el, starved)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	mu.Lock()
	defer mu.Unlock()
	for _, m := range methods {
		if m != "OPTIONS" {
			t.Errorf("the dead trunk received %s; only OPTIONS pings were expected", m)
		}
	}
	if len(methods) < 2 {
		t.Errorf("the trunk saw %d OPTIONS", len(methods))
	}
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].Outcome != "trunk_down" {
		t.Errorf("record %+v", recs)
	}
}

// TestInboundPBXMediaTimeout: a PBX that stops sending RTP without a BYE
// (crashed, unplugged) is given media.rtp_timeout; then ponte ends the call:
// BYE to the PBX with a Q.850 reason, terminate toward Meta.
func TestInboundPBXMediaTimeout(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{
		PBX:       pbx.Config{SilentAfter: 2 * time.Second},
		Configure: func(c *config.Config) { c.Media.RTPTimeout = config.Duration(3 * time.Second) },
	})
	caller, pc := connected(t, env, wasim.CallOptions{})
	if r := callerEnded(t, caller, 15*time.Second); r == "" {
		t.Fatal("the call did not end")
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "bye" {
		t.Errorf("PBX leg ended by %q, want a BYE from ponte", by)
	}
	// Timed from the PBX's answer (its send loop starts there) to ponte's
	// BYE; the timer is checked by a ticker a CPU stall delays.
	if el, starved, late := w.late(pc.AnsweredAt(), pc.EndedAt(), 9*time.Second); el < 3*time.Second || late {
		t.Errorf("ended %v after answer (%v starved), want about 2 s of audio + the 3 s timeout", el, starved)
	}
	if !strings.Contains(pc.ByeReason(), "cause=41") {
		t.Errorf("BYE Reason %q, want Q.850 cause 41", pc.ByeReason())
	}
	if a := waitActions(env, caller.ID(), "pre_accept,accept,terminate"); a != "pre_accept,accept,terminate" {
		t.Errorf("Graph requests %q", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].Outcome != "pbx_media_timeout" {
		t.Errorf("record %+v", recs)
	}
}

// TestInboundHangupWhileAcceptInFlight: the user hangs up while ponte's
// accept is in flight (the Graph API is slow). ponte does not retry the
// accept, BYEs the PBX that already answered (Q.850 16), and sends Meta
// nothing more: the terminate webhook already told it.
func TestInboundHangupWhileAcceptInFlight(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	env.Meta.DelayAction("accept", 2*time.Second)
	caller, pc := rung(t, ctxT(t, 10*time.Second), env.Meta, env.PBX, wasim.CallOptions{})
	if !waitFor(5*time.Second, func() bool { return !pc.AckedAt().IsZero() }) {
		t.Fatal("the PBX never answered")
	}
	time.Sleep(500 * time.Millisecond) // accept is now in flight (the Graph API takes 2 s)
	if err := caller.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "bye" || !strings.Contains(pc.ByeReason(), "cause=16") {
		t.Errorf("PBX leg ended by %q with Reason %q, want ponte's BYE with Q.850 cause 16", by, pc.ByeReason())
	}
	_ = env.WaitIdle(ctxT(t, 10*time.Second))
	time.Sleep(2 * time.Second) // a retried accept or a terminate would show up here
	if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
		t.Errorf("Graph requests %q, want pre_accept,accept (no retry, no terminate)", a)
	}
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].EndedBy != "caller" {
		t.Errorf("record %+v", recs)
	}
}

// TestInboundPBXHangupWhileAcceptAnswerInFlight: Meta has carried out
// ponte's accept but its answer is still on the way when the PBX hangs up.
// ponte cannot know whether the accept took effect (ref §3.2: a request the
// client gave up on may still be carried out). Its reject is refused
// ("already in progress"), so it must send terminate: otherwise the user
// stays in a dead, billed call until Meta's no-media timer.
func TestInboundPBXHangupWhileAcceptAnswerInFlight(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	env.Meta.DelayResponse("accept", 3*time.Second)
	caller, pc := rung(t, ctxT(t, 10*time.Second), env.Meta, env.PBX, wasim.CallOptions{})
	if !waitFor(5*time.Second, func() bool { return !caller.AcceptedAt().IsZero() }) {
		t.Fatal("Meta never carried out an accept")
	}
	if err := pc.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_terminate" {
		t.Errorf("caller end reason %q, want gateway_terminate", r)
	}
	// The simulator records the held accept when ponte gives up on it,
	// which may come just after the reject: compare in any order, once.
	const want = "accept,pre_accept,reject,terminate"
	var got string
	waitFor(5*time.Second, func() bool {
		a := strings.Split(actions(requests(env, caller.ID())), ",")
		sort.Strings(a)
		got = strings.Join(a, ",")
		return got == want
	})
	if got != want {
		t.Errorf("Graph requests (sorted) %q, want %q: no accept retry, and terminate after the refused reject", got, want)
	}
	if r := oneRecord(t, env); r.EndedBy != "pbx" {
		t.Errorf("record ended_by %q, want pbx", r.EndedBy)
	}
}
