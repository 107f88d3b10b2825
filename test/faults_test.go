package test

// Issue 8 item 5: faults end to end. WhatsApp media vanishing mid-call,
// Graph API 5xx and timeouts (bounded by whatsapp.RetryTable), webhooks
// late, duplicated and out of order, and the record store going away.
// Each test asserts the Graph requests made, what the PBX saw (BYE/CANCEL
// and its Reason), the WhatsApp caller's end, and the call record.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// oneRecord waits for the gateway to be idle and returns its only record.
func oneRecord(t *testing.T, env *scenario.Env) gateway.Record {
	t.Helper()
	_ = env.WaitIdle(ctxT(t, 10*time.Second))
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 {
		t.Fatalf("%d call records, want exactly 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// countAction counts the Graph requests with action for one call.
func countAction(env *scenario.Env, callID, action string) int {
	n := 0
	for _, r := range requests(env, callID) {
		if r.Action == action {
			n++
		}
	}
	return n
}

// graphAttempts is 1 + the configured retries: whatsapp.RetryTable retries
// pre_accept, accept, reject and terminate on 5xx and timeouts.
func graphAttempts(env *scenario.Env) int { return 1 + env.Config.WhatsApp.Retries }

func repeatAction(a string, n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = a
	}
	return strings.Join(s, ",")
}

// TestFaultWhatsAppMediaStops: mid-call the WhatsApp side's network dies
// (no RTP, no RTCP, no STUN answers, no DTLS close). ponte's ICE consent
// checks go unanswered: disconnected after media.ice_disconnected_timeout,
// failed after media.ice_failed_timeout more (2 s and 4 s here; 5 s and 15 s
// by default), then ponte BYEs the PBX with Q.850 41, sends terminate to
// Meta and records media_failed.
func TestFaultWhatsAppMediaStops(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.Media.ICEDisconnectedTimeout = config.Duration(2 * time.Second)
		c.Media.ICEFailedTimeout = config.Duration(4 * time.Second)
	}})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	// Audio both ways before the cut. The cut comes after this check, never
	// on a timer: a starved machine can make listen wait past any fixed time.
	listen(t, w, time.Now().Add(500*time.Millisecond), 2*time.Second, bothWays(caller, pc, toneCriteria{ratio: 0.9}, toneCriteria{ratio: 0.9}))
	if !caller.StopMedia() {
		t.Fatal("the caller has no media to cut")
	}
	cut := caller.MediaStoppedAt()
	// 2 s disconnected + 4 s failed, plus pion's 2 s keepalive interval and
	// CPU steal (measured 23.2 s with the 5 s + 15 s defaults).
	const failAfter = 6 * time.Second
	if by := pbxEnded(t, pc, 30*time.Second); by != "bye" {
		t.Errorf("PBX leg ended by %q, want a BYE from ponte", by)
	}
	// Timed from the cut to the BYE's arrival. ICE's timers run on the wall
	// clock but are checked by pion's ticker, which a CPU stall delays.
	el, starved, tooLate := w.late(cut, pc.EndedAt(), failAfter+8*time.Second)
	t.Logf("ponte ended the call %v after the WhatsApp media stopped (%v of it starved)", el.Round(100*time.Millisecond), starved.Round(time.Millisecond))
	if el < failAfter-time.Second || tooLate {
		t.Errorf("ended %v after the media stopped (%v starved), want ICE failure after about %v (+ grace)", el, starved, failAfter)
	}
	if r := pc.ByeReason(); !strings.Contains(r, "Q.850;cause=41") {
		t.Errorf("BYE Reason %q, want Q.850 cause 41", r)
	}
	if r := callerEnded(t, caller, 5*time.Second); r != "gateway_terminate" {
		t.Errorf("caller end reason %q, want gateway_terminate", r)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,accept,terminate"); a != "pre_accept,accept,terminate" {
		t.Errorf("Graph requests %q, want pre_accept,accept,terminate", a)
	}
	if r := oneRecord(t, env); r.Outcome != "media_failed" || r.EndedBy != "ponte" {
		t.Errorf("record outcome %q ended_by %q, want media_failed by ponte", r.Outcome, r.EndedBy)
	}
}

// TestFaultGraphAccept5xx: accept is retried on 5xx and timeouts at most
// 1+retries times; a call that gets through connects, one that does not is
// torn down cleanly on both sides.
func TestFaultGraphAccept5xx(t *testing.T) {
	t.Run("500_twice_then_ok", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		env.Meta.InjectFailure("accept", 500, "", 2)
		caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
		if n := countAction(env, caller.ID(), "accept"); n != 3 {
			t.Errorf("%d accept requests, want 3 (two 500s, then success)", n)
		}
		hangupAndWait(t, env, caller, pc)
		if a := actions(requests(env, caller.ID())); a != "pre_accept,accept,accept,accept" {
			t.Errorf("Graph requests %q", a)
		}
		if r := oneRecord(t, env); r.Outcome != "completed" || r.EndedBy != "caller" {
			t.Errorf("record outcome %q ended_by %q, want completed by caller", r.Outcome, r.EndedBy)
		}
	})
	t.Run("503_always", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		env.Meta.InjectFailure("accept", 503, "", 100)
		ctx := ctxT(t, 20*time.Second)
		caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{})
		if by := pbxEnded(t, pc, 15*time.Second); by != "bye" {
			t.Errorf("PBX leg ended by %q, want a BYE", by)
		}
		if r := pc.ByeReason(); !strings.HasPrefix(r, "SIP;cause=500") || !strings.Contains(r, "accept failed") {
			t.Errorf("BYE Reason %q, want SIP;cause=500 naming the accept failure", r)
		}
		if r := callerEnded(t, caller, 5*time.Second); r != "gateway_reject" {
			t.Errorf("caller end reason %q, want gateway_reject", r)
		}
		want := "pre_accept," + repeatAction("accept", graphAttempts(env)) + ",reject"
		if a := waitActions(env, caller.ID(), want); a != want {
			t.Errorf("Graph requests %q, want %q", a, want)
		}
		if r := oneRecord(t, env); r.Outcome != "accept_failed" || r.EndedBy != "ponte" {
			t.Errorf("record outcome %q ended_by %q, want accept_failed by ponte", r.Outcome, r.EndedBy)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// Every accept takes longer than whatsapp.request_timeout (3 s
		// here). Meta still acts on a request the client gave up on, so
		// the first accept takes effect after ponte stopped waiting: ponte
		// cannot know, and must still leave no call up at Meta.
		w := startStallWatch(t)
		env := startEnv(t, scenario.Options{})
		env.Meta.DelayAction("accept", 4*time.Second)
		ctx := ctxT(t, 40*time.Second)
		caller, pc := rung(t, ctx, env.Meta, env.PBX, wasim.CallOptions{})
		start := time.Now()
		if by := pbxEnded(t, pc, 20*time.Second); by != "bye" {
			t.Errorf("PBX leg ended by %q, want a BYE", by)
		}
		// 3 attempts of 3 s plus 0.2 s and 0.4 s of backoff.
		if el, starved, late := w.late(start, pc.EndedAt(), 15*time.Second); late {
			t.Errorf("gave up after %v (%v starved), want about 3 attempts x 3 s", el, starved)
		}
		if r := pc.ByeReason(); !strings.HasPrefix(r, "SIP;cause=500") {
			t.Errorf("BYE Reason %q, want SIP;cause=500 (accept failed)", r)
		}
		// The delayed accepts are recorded by the simulator when it
		// answers them, after the client gave up.
		waitFor(8*time.Second, func() bool { return countAction(env, caller.ID(), "accept") >= graphAttempts(env) })
		if n := countAction(env, caller.ID(), "accept"); n != graphAttempts(env) {
			t.Errorf("%d accept requests, want %d", n, graphAttempts(env))
		}
		// No call may stay up at Meta (billed, the user in a dead call):
		// it must end well before Meta's own 20 s no-media timer.
		select {
		case <-caller.Ended():
			if r := caller.EndReason(); r != "gateway_reject" && r != "gateway_terminate" {
				t.Errorf("caller end reason %q, want ponte's reject or terminate", r)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("the WhatsApp call is still up at Meta after ponte gave up; Graph requests %q", actions(requests(env, caller.ID())))
		}
		if nr, nt := countAction(env, caller.ID(), "reject"), countAction(env, caller.ID(), "terminate"); nr != 1 || nt > 1 {
			t.Errorf("%d rejects and %d terminates, want one reject (and one terminate if Meta refused it): %q", nr, nt, actions(requests(env, caller.ID())))
		}
		if r := oneRecord(t, env); r.Outcome != "accept_failed" {
			t.Errorf("record outcome %q, want accept_failed", r.Outcome)
		}
	})
}

// TestFaultGraphTerminate5xx: the PBX hangs up; terminate to Meta fails
// with 5xx. It is retried at most 1+retries times and the record is
// written whatever Meta answers.
func TestFaultGraphTerminate5xx(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fails int
	}{{"502_twice_then_ok", 2}, {"502_always", 100}} {
		t.Run(tc.name, func(t *testing.T) {
			env := startEnv(t, scenario.Options{PBX: pbx.Config{HangupAfter: 2 * time.Second}})
			env.Meta.InjectFailure("terminate", 502, "", tc.fails)
			caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
			if by := pbxEnded(t, pc, 10*time.Second); by != "local" {
				t.Errorf("PBX leg ended by %q, want its own BYE", by)
			}
			n := min(tc.fails+1, graphAttempts(env))
			want := "pre_accept,accept," + repeatAction("terminate", n)
			if a := waitActions(env, caller.ID(), want); a != want {
				t.Errorf("Graph requests %q, want %q", a, want)
			}
			if tc.fails < graphAttempts(env) {
				if r := callerEnded(t, caller, 5*time.Second); r != "gateway_terminate" {
					t.Errorf("caller end reason %q, want gateway_terminate", r)
				}
			} else {
				time.Sleep(time.Second) // a further terminate would show here
				if a := actions(requests(env, caller.ID())); a != want {
					t.Errorf("Graph requests %q after giving up, want %q", a, want)
				}
				// Meta never learnt: the user hangs up (Meta's own timer would).
				_ = caller.Hangup(ctxT(t, 5*time.Second))
			}
			if r := oneRecord(t, env); r.Outcome != "completed" || r.EndedBy != "pbx" {
				t.Errorf("record outcome %q ended_by %q, want completed by pbx", r.Outcome, r.EndedBy)
			}
		})
	}
}

// TestFaultOutboundConnect5xx: an agent's call whose connect gets 5xx is
// refused with 500 and a Retry-After (Meta's side is temporarily failing;
// not 503, which a proxy takes as ponte being down), naming Meta's error;
// connect is never repeated (a repeat could place a second call, RetryTable).
func TestFaultOutboundConnect5xx(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	outboundUser(env, bicUser, wasim.UserOptions{})
	env.Meta.InjectFailure("connect", 503, "", 1)
	de := refusedDial(t, env, bicUser)
	if ra := header(de, "Retry-After"); de.Code != 500 || ra != "30" || !strings.Contains(de.Reason, "WhatsApp") {
		t.Errorf("answer %d %q Retry-After %q, want 500 naming Meta's error, with Retry-After: 30", de.Code, de.Reason, ra)
	}
	n := 0
	for _, r := range env.Meta.Requests() {
		if r.Action == "connect" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d connect requests, want exactly 1", n)
	}
	if r := oneRecord(t, env); !strings.HasPrefix(r.Outcome, "meta_") || r.Direction != "outbound" {
		t.Errorf("record outcome %q direction %q, want meta_<code>, outbound", r.Outcome, r.Direction)
	}
	t.Logf("connect 503 -> SIP %d %q", de.Code, de.Reason)
}

// TestFaultWebhooksOutOfOrder: webhooks late, duplicated and out of order.
func TestFaultWebhooksOutOfOrder(t *testing.T) {
	t.Run("terminate_before_connect", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		// A real offer, so only the order makes the connect void.
		ref, rpc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
		hangupAndWait(t, env, ref, rpc)
		ctx := ctxT(t, 10*time.Second)
		now := time.Now()
		const wacid = "wacid.fault-term-first"
		if st, err := env.Meta.SendWebhook(ctx, terminateBody(wacid, now), true); st != 200 {
			t.Fatalf("terminate got %d (%v)", st, err)
		}
		if st, err := env.Meta.SendWebhook(ctx, connectBody(wacid, ref.Offer(), now.Add(-time.Second)), true); st != 200 {
			t.Fatalf("connect got %d (%v)", st, err)
		}
		noInvite(t, env, 2*time.Second)
		if rs := requests(env, wacid); len(rs) != 0 {
			t.Errorf("Graph requests for a call already terminated: %q", actions(rs))
		}
		if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].WACID != ref.ID() {
			t.Errorf("records %+v, want only the reference call's", recs)
		}
	})
	t.Run("duplicate_terminate", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
		hangupAndWait(t, env, caller, pc)
		var term []byte
		for _, w := range env.Meta.Webhooks() {
			if w.CallID == caller.ID() && w.Event == "terminate" {
				term = w.Body
			}
		}
		if term == nil {
			t.Fatal("no terminate webhook recorded")
		}
		if st, err := env.Meta.SendWebhook(ctxT(t, 5*time.Second), term, true); st != 200 {
			t.Fatalf("redelivered terminate got %d (%v)", st, err)
		}
		noInvite(t, env, time.Second)
		if by := pc.EndedBy(); by != "bye" || !strings.Contains(pc.ByeReason(), "cause=16") {
			t.Errorf("PBX leg ended by %q (%q), want one BYE with Q.850 16", by, pc.ByeReason())
		}
		if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
			t.Errorf("Graph requests %q, want pre_accept,accept (Meta already knows)", a)
		}
		if r := oneRecord(t, env); r.Outcome != "completed" || r.EndedBy != "caller" {
			t.Errorf("record outcome %q ended_by %q", r.Outcome, r.EndedBy)
		}
	})
	t.Run("status_after_terminate", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		outboundUser(env, bicUser, wasim.UserOptions{})
		pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{From: "2001"})
		if err := pc.Hangup(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-callee.Ended():
		case <-time.After(10 * time.Second):
			t.Fatal("the WhatsApp user's call never ended")
		}
		before := oneRecord(t, env)
		var statuses [][]byte
		for _, w := range env.Meta.Webhooks() {
			if w.CallID == callee.ID() && w.Event == "status" {
				statuses = append(statuses, w.Body)
			}
		}
		if len(statuses) < 2 {
			t.Fatalf("%d status webhooks recorded, want RINGING and ACCEPTED", len(statuses))
		}
		nreq := len(env.Meta.Requests())
		// Late RINGING/ACCEPTED for a call that is over.
		for _, b := range statuses {
			if st, err := env.Meta.SendWebhook(ctxT(t, 5*time.Second), b, true); st != 200 {
				t.Fatalf("late status got %d (%v)", st, err)
			}
		}
		time.Sleep(time.Second)
		if rs := env.Meta.Requests()[nreq:]; len(rs) != 0 {
			t.Errorf("Graph requests after late status webhooks: %q", actions(rs))
		}
		if env.Server.Gateway.Active() != 0 {
			t.Error("a late status webhook revived a call")
		}
		after := oneRecord(t, env)
		if after.Outcome != before.Outcome || after.EndedBy != before.EndedBy || !after.Ended.Equal(before.Ended) {
			t.Errorf("record changed by late status webhooks: %+v -> %+v", before, after)
		}
	})
}

// flakyStore is the record store with a switch: while down, every record
// write fails as a locked or unreachable database would.
type flakyStore struct {
	store.Store
	down   atomic.Bool
	failed atomic.Int64
}

var errStoreDown = errors.New("test: database unavailable")

func (f *flakyStore) Create(ctx context.Context, c *store.Call, ev ...store.EventType) error {
	if f.down.Load() {
		f.failed.Add(1)
		return errStoreDown
	}
	return f.Store.Create(ctx, c, ev...)
}

func (f *flakyStore) Update(ctx context.Context, c *store.Call, ev ...store.EventType) error {
	if f.down.Load() {
		f.failed.Add(1)
		return errStoreDown
	}
	return f.Store.Update(ctx, c, ev...)
}

// TestFaultStoreOutage: the SQLite store fails mid-call; that call and two
// more proceed (tones both ways), their records wait in the spool and land
// in SQLite with the right outcomes once the store is back; nothing dropped.
func TestFaultStoreOutage(t *testing.T) {
	w := startStallWatch(t)
	flaky := &flakyStore{}
	env := startEnv(t, scenario.Options{
		Configure: func(c *config.Config) {
			c.Store = config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "ponte.db")}
		},
		WrapStore: func(s store.Store) store.Store { flaky.Store = s; return flaky },
		PBX:       pbx.Config{AnswerDelay: time.Second}, // call 3 hangs up while it rings
	})
	if flaky.Store == nil {
		t.Fatal("the store fault seam was not used")
	}
	// Call 1 starts with the store up, then the store goes down.
	c1, p1 := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	flaky.down.Store(true)
	listen(t, w, time.Now().Add(300*time.Millisecond), 2*time.Second, func(from, to time.Time, skip []audio.Span) string {
		var msg []string
		if r := c1.Heard().Report(from, to, skip...); r.ToneRatio < 0.9 {
			msg = append(msg, fmt.Sprintf("caller heard the PBX in %.0f%% of windows", r.ToneRatio*100))
		}
		if r := p1.Received().Report(from, to, skip...); r.ToneRatio < 0.9 {
			msg = append(msg, fmt.Sprintf("PBX heard the caller in %.0f%% of windows", r.ToneRatio*100))
		}
		return strings.Join(msg, "; ")
	})
	hangupAndWait(t, env, c1, p1)
	// Call 2 connects and ends during the outage.
	c2, p2 := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	hangupAndWait(t, env, c2, p2)
	// Call 3: the caller gives up while the PBX rings.
	ctx := ctxT(t, 20*time.Second)
	c3, err := env.Meta.Call(ctx, wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p3, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c3.Hangup(ctx); err != nil { // before the PBX answers (1 s)
		t.Fatal(err)
	}
	pbxEnded(t, p3, 5*time.Second)
	_ = env.WaitIdle(ctx)
	if flaky.failed.Load() == 0 {
		t.Fatal("no record write reached the failing store: the outage was not exercised")
	}
	m := scrape(t, env.Server.AdminURL())
	if q := m["ponte_store_spool_records{}"]; q < 1 {
		t.Errorf("ponte_store_spool_records %v during the outage, want the queued records", q)
	}
	recs := env.Server.Gateway.Records()
	if len(recs) != 3 {
		t.Fatalf("%d gateway records, want 3", len(recs))
	}

	flaky.down.Store(false)
	// The spool retries with backoff (1 s doubling, 30 s at most).
	var got []*store.Call
	if !waitFor(45*time.Second, func() bool {
		got = got[:0]
		for _, r := range recs {
			c, err := env.Server.Store.Get(context.Background(), r.ID)
			if err != nil || c.Ended.IsZero() {
				return false
			}
			got = append(got, c)
		}
		return true
	}) {
		t.Fatalf("only %d of 3 records reached SQLite after the store came back", len(got))
	}
	want := map[string]string{c1.ID(): "completed", c2.ID(): "completed", c3.ID(): ""}
	for i, c := range got {
		if c.EndReason != recs[i].Outcome || c.WACID != recs[i].WACID {
			t.Errorf("SQLite has %s end_reason %q wacid %q, the gateway recorded %q %q", c.ID, c.EndReason, c.WACID, recs[i].Outcome, recs[i].WACID)
		}
		if w, ok := want[c.WACID]; !ok {
			t.Errorf("unexpected record for %q", c.WACID)
		} else if w != "" && c.EndReason != w {
			t.Errorf("call %s end_reason %q, want %q", c.WACID, c.EndReason, w)
		}
		if c.Protocol == "" {
			t.Errorf("call %s has no protocol number", c.WACID)
		}
	}
	if c, _ := env.Server.Store.Get(context.Background(), recs[2].ID); c != nil && c.Outcome != store.OutcomeAbandoned {
		t.Errorf("the unanswered call's outcome %q, want %q", c.Outcome, store.OutcomeAbandoned)
	}
	if !waitFor(5*time.Second, func() bool { return scrape(t, env.Server.AdminURL())["ponte_store_spool_records{}"] == 0 }) {
		t.Error("ponte_store_spool_records did not return to 0")
	}
	if d := scrape(t, env.Server.AdminURL())["ponte_store_spool_dropped_total{}"]; d != 0 {
		t.Errorf("ponte_store_spool_dropped_total %v, want 0", d)
	}
}
