package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/store"
)

// deptToneHz is the default department's tone, so the caller can tell which
// PBX it is hearing.
const deptToneHz = 1500

// huntEnv starts the gateway with its PBX simulator as the first target
// (behaving as first says) and a second PBX simulator, on a trunk of its own,
// as the route's default department.
func huntEnv(t *testing.T, first pbx.Config, firstRing time.Duration) (*scenario.Env, *pbx.PBX) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dept, err := pbx.Start(ctx, pbx.Config{
		Listen: "127.0.0.1:0", ToneHz: deptToneHz, ExpectToneHz: 440, Logger: logger().With("sim", "dept"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dept.Close() })
	env := startEnv(t, scenario.Options{
		PBX:         first,
		RingTimeout: firstRing,
		Configure: func(c *config.Config) {
			c.SIP.Trunks = append(c.SIP.Trunks, config.Trunk{Name: "dept", Address: dept.Addr().String(), Transport: "udp", Codecs: []string{"PCMU"}})
			c.Routes["support"].DefaultDepartment = &config.Target{
				URI: "sip:reception@" + dept.Addr().String(), Trunk: "dept", RingTimeout: config.Duration(10 * time.Second),
			}
		},
	})
	return env, dept
}

// attempts renders a record's hunt as "target:result,..." for assertions.
func attempts(r gateway.Record) string {
	var s []string
	for _, a := range r.Attempts {
		user, _, _ := strings.Cut(strings.TrimPrefix(a.Target, "sip:"), "@")
		s = append(s, user+":"+a.Result)
	}
	return strings.Join(s, ",")
}

// TestHuntMovesOnToDefaultDepartment: the first target never answers (its
// ring timeout passes) or answers 486 Busy; the call moves on, the second
// target rings and answers, and tones flow both ways with the second PBX.
// The record lists both attempts with their results and timing.
func TestHuntMovesOnToDefaultDepartment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  pbx.Config
		ring   time.Duration
		result string
	}{
		{"ring timeout", pbx.Config{AnswerDelay: time.Minute}, 3 * time.Second, "ring_timeout"},
		{"486 busy", pbx.Config{AnswerCode: 486}, 10 * time.Second, "486"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startStallWatch(t)
			env, dept := huntEnv(t, tc.first, tc.ring)
			ctx := ctxT(t, 30*time.Second)
			start := time.Now()
			caller, err := env.Meta.Call(ctx, wasim.CallOptions{ExpectHz: deptToneHz})
			if err != nil {
				t.Fatal(err)
			}
			first, err := env.PBX.NextCall(ctx)
			if err != nil {
				t.Fatalf("first target never rung: %v", err)
			}
			pc, err := dept.NextCall(ctx)
			if err != nil {
				t.Fatalf("default department never rung: %v", err)
			}
			rungAfter := time.Since(start)
			select {
			case <-first.Ended():
			case <-time.After(5 * time.Second):
				t.Error("the first target's INVITE was never ended (CANCEL) after moving on")
			}
			if tc.result == "ring_timeout" && (rungAfter < tc.ring || rungAfter > tc.ring+3*time.Second) {
				t.Errorf("default department rung %v after the call, want just after the first target's %v ring timeout", rungAfter, tc.ring)
			}
			if err := caller.WaitAccepted(ctx); err != nil {
				t.Fatalf("never accepted: %v (%s)", err, caller.EndReason())
			}
			acc := caller.AcceptRespondedAt()
			listen(t, w, acc.Add(500*time.Millisecond), 3*time.Second, func(from, to time.Time, skip []audio.Span) string {
				var msg []string
				if r := caller.Heard().Report(from, to, skip...); r.ToneRatio < 0.95 {
					msg = append(msg, fmt.Sprintf("caller heard the department's %d Hz in %.1f%% of windows", deptToneHz, r.ToneRatio*100))
				}
				if r := pc.Received().Report(from, to, skip...); r.ToneRatio < 0.95 {
					msg = append(msg, fmt.Sprintf("department heard the caller's 440 Hz in %.1f%% of windows", r.ToneRatio*100))
				}
				return strings.Join(msg, "; ")
			})
			if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
				t.Errorf("Graph requests %q, want pre_accept,accept (one accept, whichever target answers)", a)
			}
			hangupAndWait(t, env, caller, pc)
			recs := env.Server.Gateway.Records()
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			r := recs[0]
			if got, want := attempts(r), "agent:"+tc.result+",reception:answered"; got != want {
				t.Errorf("record attempts %q, want %q", got, want)
			}
			for i, a := range r.Attempts {
				if a.Started.IsZero() || a.Ended.Before(a.Started) || a.SIPCallID == "" || a.Trunk == "" {
					t.Errorf("attempt %d incomplete: %+v", i, a)
				}
			}
			if r.Outcome != "completed" || !strings.Contains(r.Target, "reception") {
				t.Errorf("record outcome %q target %q", r.Outcome, r.Target)
			}
		})
	}
}

// TestHuntDeclineStops: 603 Decline is the callee's "no" (RFC 3261 §21.6.2):
// the hunt stops, the call is rejected toward Meta and the next target never
// rings.
func TestHuntDeclineStops(t *testing.T) {
	env, dept := huntEnv(t, pbx.Config{AnswerCode: 603}, 10*time.Second)
	caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_reject" {
		t.Errorf("caller end reason %q, want gateway_reject", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if pc, err := dept.NextCall(ctx); err == nil {
		t.Errorf("the next target rang after a 603 (call %s)", pc.Invite().CallID().Value())
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 || attempts(recs[0]) != "agent:603" || recs[0].Outcome != "target_603" {
		t.Errorf("record %+v (attempts %q), want one attempt agent:603 and outcome target_603", recs, attempts(recs[0]))
	}
}

// TestClosedHours: on a holiday the route is closed. With no closed action
// the call is rejected at once (no pre_accept, no INVITE); with a closed-hours
// target (a callbot) that target takes the call and the agents never ring.
func TestClosedHours(t *testing.T) {
	today := time.Now().UTC().Format("2006-01-02")
	for _, tc := range []struct {
		name    string
		closed  bool // a closed-hours target
		actions string
	}{
		{"reject", false, "reject"},
		{"closed target", true, "pre_accept,accept"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bot, err := pbx.Start(ctx, pbx.Config{Listen: "127.0.0.1:0", ToneHz: deptToneHz, ExpectToneHz: 440, Logger: logger().With("sim", "bot")})
			if err != nil {
				t.Fatal(err)
			}
			defer bot.Close()
			env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
				c.API.Token = apiToken
				c.SIP.Trunks = append(c.SIP.Trunks, config.Trunk{Name: "bots", Address: bot.Addr().String(), Transport: "udp", Codecs: []string{"PCMU"}})
				r := c.Routes["support"]
				r.Hours = &config.Hours{Timezone: "UTC", Weekly: map[string][]string{"daily": {"00:00-23:59"}}, Holidays: []config.Holiday{{Date: today}}}
				if tc.closed {
					r.Closed = &config.Closed{Action: "target", URI: "sip:callbot@" + bot.Addr().String(), Trunk: "bots"}
				}
			}})
			caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{ExpectHz: deptToneHz})
			if err != nil {
				t.Fatal(err)
			}
			if tc.closed {
				pc, err := bot.NextCall(ctxT(t, 10*time.Second))
				if err != nil {
					t.Fatalf("the closed-hours target never rang: %v", err)
				}
				if err := caller.WaitAccepted(ctxT(t, 10*time.Second)); err != nil {
					t.Fatal(err)
				}
				acc := caller.AcceptRespondedAt()
				if !waitFor(5*time.Second, func() bool {
					return caller.Heard().Report(acc.Add(300*time.Millisecond), time.Now()).ToneWindows >= 50
				}) {
					t.Errorf("the caller never heard the callbot's %d Hz", deptToneHz)
				}
				hangupAndWait(t, env, caller, pc)
			} else if r := callerEnded(t, caller, 5*time.Second); r != "gateway_reject" {
				t.Errorf("caller end reason %q, want gateway_reject", r)
			}
			if a := waitActions(env, caller.ID(), tc.actions); a != tc.actions {
				t.Errorf("Graph requests %q, want %q", a, tc.actions)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel2()
			if pc, err := env.PBX.NextCall(ctx2); err == nil {
				t.Errorf("an agent rang while the route was closed (%s)", pc.Invite().CallID().Value())
			}
			_ = env.WaitIdle(ctxT(t, 5*time.Second))
			recs := env.Server.Gateway.Records()
			if len(recs) != 1 || !strings.Contains(recs[0].Hours, "holiday") {
				t.Fatalf("records %+v, want one whose hours note names the holiday", recs)
			}
			want := "closed"
			if tc.closed {
				want = "completed"
			}
			if recs[0].Outcome != want {
				t.Errorf("outcome %q, want %q", recs[0].Outcome, want)
			}
			if tc.closed {
				return
			}
			// The rejected call's stored record, as supervisors see it.
			code, body := apiGet(t, env, "/api/calls?outcome=rejected")
			var page struct {
				Calls []store.Call `json:"calls"`
			}
			if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Calls) != 1 {
				t.Fatalf("rejected calls: %d %v %s", code, err, body)
			}
			if c := page.Calls[0]; c.EndReason != "closed" || c.Route != "support" || c.Protocol == "" || c.Offered.IsZero() || c.Ended.IsZero() ||
				len(c.Attempts) != 0 || c.EndedBy != store.EndedBySystem || c.WACID != caller.ID() {
				t.Errorf("closed-hours record: %+v", c)
			}
		})
	}
}

// TestStickyAgent: the agent who answered a caller (here from the 200's
// Contact user, "pbx") is rung first on that caller's next call, through the
// route's URI template (which points at the second PBX, so the test can tell);
// once the window has passed, the normal targets ring first again.
func TestStickyAgent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wait   time.Duration
		sticky bool
	}{
		{"inside window", 0, true},
		{"outside window", 2500 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			agentPBX, err := pbx.Start(ctx, pbx.Config{Listen: "127.0.0.1:0", ToneHz: deptToneHz, ExpectToneHz: 440, Logger: logger().With("sim", "agent")})
			if err != nil {
				t.Fatal(err)
			}
			defer agentPBX.Close()
			env := startEnv(t, scenario.Options{RingTimeout: 15 * time.Second, Configure: func(c *config.Config) {
				c.SIP.Trunks = append(c.SIP.Trunks, config.Trunk{Name: "agents", Address: agentPBX.Addr().String(), Transport: "udp", Codecs: []string{"PCMU"}})
				c.Routes["support"].StickyAgent = &config.StickyAgent{
					Window: config.Duration(2 * time.Second), URITemplate: "sip:{agent}@" + agentPBX.Addr().String(), Trunk: "agents",
				}
			}})
			first, pc := connected(t, env, wasim.CallOptions{From: "5511911112222"})
			hangupAndWait(t, env, first, pc)
			recs := env.Server.Gateway.Records()
			if len(recs) != 1 || recs[0].AnsweredBy != "pbx" || recs[0].AgentSource != "Contact" {
				t.Fatalf("first call's record: answered by %q from %q", recs[0].AnsweredBy, recs[0].AgentSource)
			}
			time.Sleep(tc.wait)
			second, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{From: "5511911112222"})
			if err != nil {
				t.Fatal(err)
			}
			ring, other := env.PBX, agentPBX
			if tc.sticky {
				ring, other = agentPBX, env.PBX
			}
			pc2, err := ring.NextCall(ctxT(t, 10*time.Second))
			if err != nil {
				t.Fatalf("the expected PBX never rang first: %v", err)
			}
			short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancelShort()
			if _, err := other.NextCall(short); err == nil {
				t.Error("the other PBX rang too")
			}
			if err := second.WaitAccepted(ctxT(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			hangupAndWait(t, env, second, pc2)
			recs = env.Server.Gateway.Records()
			if len(recs) != 2 {
				t.Fatalf("%d records", len(recs))
			}
			kind := recs[1].Attempts[0].Kind
			if tc.sticky && (kind != "sticky_agent" || recs[1].Attempts[0].Agent != "pbx") {
				t.Errorf("second call's first attempt %+v, want the sticky agent pbx", recs[1].Attempts[0])
			}
			if !tc.sticky && kind != "target" {
				t.Errorf("second call's first attempt %+v, want the route's target", recs[1].Attempts[0])
			}
		})
	}
}

// TestQueueMode: answer_then_hunt. ponte accepts the WhatsApp call at once
// and the caller hears the queue's music (a 600 Hz WAV) while the agent's
// phone rings for 90 s, far past Meta's 30 s accept window; when the agent
// answers, the caller hears the agent (1000 Hz) in the same stream.
func TestQueueMode(t *testing.T) {
	w := startStallWatch(t)
	music := t.TempDir() + "/music.wav"
	toneWAV(t, music, 600, -12, 3)
	const agentAfter = 90 * time.Second
	env := startEnv(t, scenario.Options{
		PBX:         pbx.Config{AnswerDelay: agentAfter},
		RingTimeout: 120 * time.Second,
		Configure: func(c *config.Config) {
			r := c.Routes["support"]
			r.Mode = config.ModeAnswerThenHunt
			r.Queue = &config.Queue{Music: music, MaxWait: config.Duration(3 * time.Minute)}
		},
	})
	agent := audio.NewAnalyzer(8000, 1000, -12)
	ctx := ctxT(t, agentAfter+30*time.Second)
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{ExpectHz: 600, OnAudio: agent.Add})
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitAccepted(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("queue mode did not accept at once: %v", err)
	}
	acc := caller.AcceptRespondedAt()
	pc, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for !pc.AnsweredAt().After(acc) {
		select {
		case <-ctx.Done():
			t.Fatal("the agent never answered")
		case <-caller.Ended():
			t.Fatalf("the call ended while queued: %s", caller.EndReason())
		case <-time.After(200 * time.Millisecond):
		}
	}
	ans := pc.AnsweredAt()
	if wait := ans.Sub(acc); wait < agentAfter-5*time.Second {
		t.Fatalf("the agent answered %v after accept, want about %v", wait, agentAfter)
	}
	// The music, in 10 s windows over the whole wait.
	for from := acc.Add(time.Second); from.Add(10 * time.Second).Before(ans); from = from.Add(10 * time.Second) {
		to := from.Add(10 * time.Second)
		if r := caller.Heard().Report(from, to); r.ToneRatio < 0.95 {
			if st := w.worst(from, to); st >= stallLimit {
				t.Logf("music window at +%v: %.1f%%, excused by a measured %v CPU stall", from.Sub(acc).Round(time.Second), r.ToneRatio*100, st)
				continue
			}
			t.Errorf("music window at +%v: the caller heard the queue music in %.1f%% of %d windows", from.Sub(acc).Round(time.Second), r.ToneRatio*100, r.Windows)
		}
	}
	time.Sleep(3 * time.Second)
	listen(t, w, ans.Add(500*time.Millisecond), 2*time.Second, func(from, to time.Time, skip []audio.Span) string {
		if r := agent.Report(from, to, skip...); r.ToneRatio < 0.95 {
			return fmt.Sprintf("after the answer the caller heard the agent's 1000 Hz in %.1f%% of windows", r.ToneRatio*100)
		}
		if r := caller.Heard().Report(from, to, skip...); r.ToneWindows > 0 {
			return fmt.Sprintf("the queue music went on after the answer (%d windows)", r.ToneWindows)
		}
		return ""
	})
	st := caller.Stream()
	if len(st.SSRCs) != 1 || st.MaxSeqStep != 1 {
		t.Errorf("toward Meta: SSRCs %v, max sequence step %d", st.SSRCs, st.MaxSeqStep)
	}
	if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
		t.Errorf("Graph requests %q, want pre_accept,accept", a)
	}
	hangupAndWait(t, env, caller, pc)
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 || recs[0].Mode != config.ModeAnswerThenHunt || recs[0].Outcome != "completed" || !strings.Contains(recs[0].Queue, "queued") {
		t.Errorf("record %+v", recs)
	}
}
