package test

import (
	"context"
	"errors"
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
)

// Business-initiated calls (issue 5): the PBX simulator dials a WhatsApp
// user through ponte; the WhatsApp simulator plays Meta and the user.

const (
	bicUser    = "5511987654321" // the number agents dial
	bicUserTLS = "5511912340000"
)

// outboundUser registers a user who has given a temporary permission and
// answers after ring.
func outboundUser(env *scenario.Env, waID string, o wasim.UserOptions) {
	o.WaID = waID
	if o.Permission == "" {
		o.Permission = wasim.PermissionTemporary
	}
	if o.ToneHz == 0 {
		o.ToneHz, o.ExpectHz = 440, 1000 // the PBX simulator plays 1000 Hz and expects 440 Hz
	}
	env.Meta.SetUser(o)
}

// dialUser makes the PBX simulator call user through ponte and waits for the
// answer and the simulated user's side of the call.
func dialUser(t *testing.T, env *scenario.Env, user string, o pbx.DialOptions) (*pbx.Call, *wasim.Callee) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	if o.Target == "" {
		o.Target = env.SIPTarget("+"+user, "udp")
	}
	pc, err := env.PBX.Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	var callee *wasim.Callee
	for callee == nil {
		c, err := env.Meta.WaitCallee(ctx)
		if err != nil {
			t.Fatalf("no business-initiated call reached the WhatsApp simulator: %v", err)
		}
		select {
		case <-c.Ended(): // an earlier, refused call nobody waited for
		default:
			callee = c
		}
	}
	if err := callee.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	return pc, callee
}

// refusedDial dials and expects a final failure; it returns it.
func refusedDial(t *testing.T, env *scenario.Env, user string) *pbx.DialError {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	pc, err := env.PBX.Dial(ctx, pbx.DialOptions{Target: env.SIPTarget("+"+user, "udp")})
	var de *pbx.DialError
	if !errors.As(err, &de) {
		if pc != nil {
			_ = pc.Hangup(ctx)
		}
		t.Fatalf("dial %s: %v, want a final failure", user, err)
	}
	return de
}

func header(de *pbx.DialError, name string) string {
	if de == nil || de.Response == nil {
		return ""
	}
	if h := de.Response.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// graphActions lists the Graph requests about one business-initiated call
// (by ponte's id in biz_opaque_callback_data, or its wacid).
func graphActions(env *scenario.Env, wacid, id string) string {
	var out []string
	for _, r := range env.Meta.Requests() {
		if (wacid != "" && r.CallID == wacid) || (id != "" && r.BizOpaque == id) {
			out = append(out, r.Action)
		}
	}
	return strings.Join(out, ",")
}

// waitRecords waits for n ended calls.
func waitRecords(t *testing.T, env *scenario.Env, n int) []gateway.Record {
	t.Helper()
	if !waitFor(10*time.Second, func() bool { return len(env.Server.Gateway.Records()) >= n }) {
		t.Fatalf("%d call records, want %d", len(env.Server.Gateway.Records()), n)
	}
	return env.Server.Gateway.Records()
}

// TestOutboundCall: for a PCMU and a PCMA PBX, an agent's INVITE reaches the
// WhatsApp user: 180 on RINGING, 200 on ACCEPTED; over 5 s each end hears
// the other's tone in >= 98 % of 20 ms windows with no gap over 40 ms; DTMF
// both ways; the connect offer is actpass with Opus 111 and telephone-event
// 126 and carries ponte's id; the agent's BYE sends terminate and the
// record says outbound, answered on Meta's ACCEPTED.
func TestOutboundCall(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA"} {
		t.Run(codec, func(t *testing.T) {
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{Codecs: []string{codec}})
			outboundUser(env, bicUser, wasim.UserOptions{})
			pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{From: "2001"})
			var rang bool
			for _, p := range pc.Provisionals() {
				rang = rang || p.Code == 180
			}
			if !rang {
				t.Errorf("provisionals %+v: want a 180 when the user's phone rang", pc.Provisionals())
			}
			listen(t, w, time.Now().Add(700*time.Millisecond), 5*time.Second, func(from, to time.Time, skip []audio.Span) string {
				var msg []string
				heard := callee.Heard().Report(from, to, skip...)
				if heard.ToneRatio < 0.98 || heard.MaxGap > 40*time.Millisecond || heard.Windows < 240 {
					msg = append(msg, fmt.Sprintf("user heard the agent's 1000 Hz in %.1f%% of %d windows, longest gap %v", heard.ToneRatio*100, heard.Windows, heard.MaxGap))
				}
				got := pc.Received().Report(from, to, skip...)
				if got.ToneRatio < 0.98 || got.MaxGap > 40*time.Millisecond || got.Windows < 240 {
					msg = append(msg, fmt.Sprintf("agent heard the user's 440 Hz in %.1f%% of %d windows, longest gap %v", got.ToneRatio*100, got.Windows, got.MaxGap))
				}
				return strings.Join(msg, "; ")
			})
			if !strings.EqualFold(pc.Codec().Name, codec) {
				t.Errorf("negotiated %q, want %q", pc.Codec().Name, codec)
			}

			// DTMF both ways.
			pc.SendDTMF("19#", 100*time.Millisecond, 100*time.Millisecond)
			callee.SendDTMF("*05", 100*time.Millisecond, 100*time.Millisecond)
			if !waitFor(5*time.Second, func() bool {
				return callerDigitString(callee.Digits()) == "19#" && digitString(pc.Digits()) == "*05"
			}) {
				t.Errorf("digits: user got %q (want 19#), agent got %q (want *05)", callerDigitString(callee.Digits()), digitString(pc.Digits()))
			}

			// What ponte asked of Meta.
			var connect *wasim.GraphRequest
			for _, r := range env.Meta.Requests() {
				if r.Action == "connect" {
					connect = &r
					break
				}
			}
			if connect == nil {
				t.Fatal("no connect request")
			}
			if connect.To != bicUser || connect.SDPType != "offer" || !strings.HasPrefix(connect.BizOpaque, "pc-") {
				t.Errorf("connect to=%q sdp_type=%q biz_opaque=%q", connect.To, connect.SDPType, connect.BizOpaque)
			}
			for _, want := range []string{"a=setup:actpass", "a=rtpmap:111 opus/48000/2", "a=rtpmap:126 telephone-event/8000", "a=ptime:20"} {
				if !strings.Contains(connect.SDP, want) {
					t.Errorf("connect offer lacks %q", want)
				}
			}

			ctx := ctxT(t, 10*time.Second)
			if err := pc.Hangup(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-callee.Ended():
			case <-ctx.Done():
				t.Fatal("the WhatsApp user's call did not end after the agent hung up")
			}
			recs := waitRecords(t, env, 1)
			r := recs[0]
			if got := graphActions(env, r.WACID, r.ID); got != "connect,terminate" {
				t.Errorf("Graph requests %q, want connect,terminate", got)
			}
			if r.Direction != "outbound" || r.AnswerSignal != "accepted" || r.EndedBy != "pbx" || r.Outcome != "completed" ||
				r.AnsweredBy != "2001" || r.From != bicUser || r.Codec != codec {
				t.Errorf("record: direction %q signal %q ended_by %q outcome %q agent %q user %q codec %q",
					r.Direction, r.AnswerSignal, r.EndedBy, r.Outcome, r.AnsweredBy, r.From, r.Codec)
			}
			if st, ok := env.Meta.User(bicUser); !ok || st.Connected24h != 1 || st.Unanswered != 0 {
				t.Errorf("Meta's view of the user after the call: %+v", st)
			}
		})
	}
}

// TestOutboundUserHangsUp: the user ends the call; the agent gets a BYE and
// ponte sends no terminate (Meta ended it).
func TestOutboundUserHangsUp(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	outboundUser(env, bicUser, wasim.UserOptions{})
	pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{})
	time.Sleep(500 * time.Millisecond)
	ctx := ctxT(t, 10*time.Second)
	if err := callee.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pc.Ended():
	case <-ctx.Done():
		t.Fatal("the agent got no BYE after the user hung up")
	}
	if pc.EndedBy() != "bye" {
		t.Errorf("agent's call ended by %q, want bye", pc.EndedBy())
	}
	r := waitRecords(t, env, 1)[0]
	if got := graphActions(env, r.WACID, r.ID); got != "connect" {
		t.Errorf("Graph requests %q: after the user's hang-up nothing more is owed", got)
	}
	if r.EndedBy != "caller" || r.MetaStatus != "COMPLETED" {
		t.Errorf("record ended_by %q meta_status %q", r.EndedBy, r.MetaStatus)
	}
}

// TestOutboundMetaErrors: Meta's connect errors map to honest SIP answers
// with Meta's message in the reason phrase (issue 5 §5): 138006 → 403,
// 138001 → 404, 138003 → 486, 138002/138005/138012 → 480 with Retry-After,
// 138013 → 403, others → 500. No second connect follows any of them.
func TestOutboundMetaErrors(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	outboundUser(env, bicUser, wasim.UserOptions{})
	cases := []struct {
		code, http int
		sip        int
		retry      bool
	}{
		{138006, 401, 403, false},
		{138001, 400, 404, false},
		{138003, 400, 486, false},
		{138002, 429, 480, true},
		{138005, 429, 480, true},
		{138012, 400, 480, true},
		{138013, 400, 403, false},
		{131044, 400, 500, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			before := len(env.Meta.Requests())
			msg := fmt.Sprintf("Simulated error %d", tc.code)
			body := fmt.Sprintf(`{"error":{"message":%q,"type":"OAuthException","code":%d,"error_data":{"details":"%d"},"fbtrace_id":"AbC"}}`,
				msg, tc.code, time.Now().Add(2*time.Hour).Unix())
			env.Meta.InjectFailure("connect", tc.http, body, 1)
			de := refusedDial(t, env, bicUser)
			if de.Code != tc.sip || !strings.Contains(de.Reason, fmt.Sprint(tc.code)) || !strings.Contains(de.Reason, msg) {
				t.Errorf("answer %d %q, want %d with Meta's code and message", de.Code, de.Reason, tc.sip)
			}
			if ra := header(de, "Retry-After"); tc.retry != (ra != "") {
				t.Errorf("Retry-After %q (want one: %v)", ra, tc.retry)
			}
			n := 0
			for _, r := range env.Meta.Requests()[before:] {
				if r.Action == "connect" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d connect requests, want exactly 1", n)
			}
		})
	}
	if err := env.WaitIdle(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestOutboundEndings: a CANCEL while the user's phone rings sends
// terminate; the user declining gives 603; nobody answering within
// outbound.no_answer_timeout gives 480 and a terminate.
func TestOutboundEndings(t *testing.T) {
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.Outbound.NoAnswerTimeout = config.Duration(6 * time.Second)
	}})
	t.Run("cancel", func(t *testing.T) {
		outboundUser(env, "5511911110001", wasim.UserOptions{AnswerAfter: 20 * time.Second})
		ctx, cancel := context.WithCancel(ctxT(t, 20*time.Second))
		_, err := env.PBX.Dial(ctx, pbx.DialOptions{Target: env.SIPTarget("+5511911110001", "udp"),
			OnProvisional: func(p pbx.ProvisionalInfo) {
				if p.Code == 180 {
					cancel()
				}
			}})
		var de *pbx.DialError
		if !errors.As(err, &de) || de.Code != 487 {
			t.Fatalf("dial: %v, want 487 after the CANCEL", err)
		}
		r := waitRecords(t, env, 1)[0]
		if got := graphActions(env, r.WACID, r.ID); got != "connect,terminate" {
			t.Errorf("Graph requests %q, want connect,terminate", got)
		}
		if r.Outcome != "cancelled" || r.EndedBy != "pbx" {
			t.Errorf("record outcome %q ended_by %q", r.Outcome, r.EndedBy)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		outboundUser(env, "5511911110002", wasim.UserOptions{Answer: "reject", AnswerAfter: 300 * time.Millisecond})
		de := refusedDial(t, env, "5511911110002")
		if de.Code != 603 {
			t.Errorf("answer %d %q, want 603", de.Code, de.Reason)
		}
		r := waitRecords(t, env, 2)[1]
		if got := graphActions(env, r.WACID, r.ID); got != "connect" {
			t.Errorf("Graph requests %q: Meta ended the declined call itself", got)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		outboundUser(env, "5511911110003", wasim.UserOptions{Answer: "none"})
		start := time.Now()
		de := refusedDial(t, env, "5511911110003")
		if de.Code != 480 {
			t.Errorf("answer %d %q, want 480", de.Code, de.Reason)
		}
		if el := time.Since(start); el < 5*time.Second {
			t.Errorf("480 after %v, before the 6 s no-answer timer", el)
		}
		r := waitRecords(t, env, 3)[2]
		if got := graphActions(env, r.WACID, r.ID); got != "connect,terminate" {
			t.Errorf("Graph requests %q, want connect,terminate", got)
		}
	})
}

// TestOutboundConnectTimeout: connect's HTTP answer never comes in time, but
// Meta placed the call: ponte never sends a second connect, finds the call
// from the webhooks (biz_opaque_callback_data) and bridges it.
func TestOutboundConnectTimeout(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.Outbound.ConnectTimeout = config.Duration(time.Second)
		c.WhatsApp.Retries = 2
	}})
	outboundUser(env, bicUser, wasim.UserOptions{AnswerAfter: 2 * time.Second})
	env.Meta.DelayAction("connect", 3*time.Second)
	pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{})
	listen(t, w, time.Now().Add(300*time.Millisecond), 700*time.Millisecond, func(from, to time.Time, skip []audio.Span) string {
		if got := pc.Received().Report(from, to, skip...); got.ToneRatio < 0.9 {
			return fmt.Sprintf("agent heard the user's tone in %.0f%% of windows", got.ToneRatio*100)
		}
		return ""
	})
	n := 0
	for _, r := range env.Meta.Requests() {
		if r.Action == "connect" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d connect requests, want exactly 1", n)
	}
	ctx := ctxT(t, 10*time.Second)
	_ = pc.Hangup(ctx)
	select {
	case <-callee.Ended():
	case <-ctx.Done():
		t.Fatal("the user's call was not terminated")
	}
}
