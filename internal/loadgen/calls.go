package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// Errors of one call.
var (
	ErrNotStarted = errors.New("loadgen: call not started")
	ErrNoPBXCall  = errors.New("loadgen: the PBX was never rung for this call")
	ErrEndedEarly = errors.New("loadgen: call ended during the hold")
	ErrNoBye      = errors.New("loadgen: the PBX got no BYE after the caller hung up")
)

// Tones of the run: the caller speaks 440 Hz, the PBX answers with 1000 Hz.
const (
	callerHz = 440
	pbxHz    = 1000
)

type runner struct {
	o          Options
	meta       *wasim.Meta
	pbx        *pbx.PBX
	match      *matcher
	sides      *pbxSides
	callerLoop [][]byte      // the caller's pre-encoded voice (nil: -media=false)
	bias       time.Duration // the marker detector's (delayModel)

	active atomic.Int64 // calls between accept and hang-up
	peak   atomic.Int64 // most of them at once
}

// placeCalls starts calls, the i-th not before i/Rate seconds after the first and only when
// fewer than Concurrency are in progress, until Calls were started (if set) and for no longer
// than Duration (if set), and waits for all of them.
func (r *runner) placeCalls(ctx context.Context) []CallResult {
	var (
		mu  sync.Mutex
		res []CallResult
	)
	sem := make(chan struct{}, r.o.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
schedule:
	for i := 0; r.o.Calls == 0 || i < r.o.Calls; i++ {
		if r.o.Duration > 0 && time.Since(start) >= r.o.Duration {
			break
		}
		if r.o.Rate > 0 {
			at := start.Add(time.Duration(float64(i) / r.o.Rate * float64(time.Second)))
			t := time.NewTimer(time.Until(at))
			select {
			case <-ctx.Done():
				t.Stop()
				break schedule
			case <-t.C:
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break schedule
		}
		mu.Lock()
		res = append(res, CallResult{Index: i, Err: ErrNotStarted.Error()})
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := r.call(ctx, i)
			mu.Lock()
			res[i] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// caller is the number of the i-th call's caller (Options.Callers).
func (r *runner) caller(i int) int {
	if r.o.Callers > 0 {
		return i % r.o.Callers
	}
	return i
}

// inProgress counts a call between accept and hang-up; the returned func ends it.
func (r *runner) inProgress() func() {
	n := r.active.Add(1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { r.active.Add(-1) }
}

// call is one call: the WhatsApp user calls (440 Hz), the PBX answers (1000 Hz), both talk
// for Hold after accept, the user hangs up and the PBX must get the BYE.
func (r *runner) call(ctx context.Context, i int) (res CallResult) {
	res = CallResult{Index: i}
	fail := func(err error) CallResult {
		res.Err = err.Error()
		return res
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	media := !r.o.NoMedia
	callerTx, callerRx := newFlow(false), newFlow(media)
	caller, err := r.meta.Call(sctx, wasim.CallOptions{
		From: fmt.Sprintf("55119%08d", r.caller(i)), Name: fmt.Sprintf("Load %d", i), ToneHz: callerHz, ExpectHz: pbxHz,
		Replay: &wasim.Replay{
			Frames: r.callerLoop, OnSent: callerTx.onSent,
			OnRTP: func(h *rtp.Header, _ time.Time) { callerRx.onRTP(h) },
			Mute:  !media, NoDecode: !media,
		},
		OnAudio: callerRx.onAudio,
	})
	if err != nil {
		return fail(err)
	}
	res.WACID = caller.ID()
	var pc *pbx.Call
	defer func() {
		if res.OK {
			return
		}
		// Leave nothing ringing or talking: the caller hangs up, and the PBX too if the
		// gateway did not tell it (errors ignored: either side may be gone already).
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = caller.Hangup(cctx)
		if pc != nil {
			_ = pc.Hangup(cctx)
		}
	}()
	if pc, err = r.match.wait(sctx, caller.ID()); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrNoPBXCall, err))
	}
	defer r.sides.drop(pc)
	if err := caller.WaitAccepted(sctx); err != nil {
		return fail(err)
	}
	done := r.inProgress()
	defer done()
	// Read only now: the PBX hands the call over before it rings and answers, and the gateway
	// accepts only after the 200, which the simulator stamps before sending it.
	res.pbx200At = pc.AnsweredAt()
	res.acceptedAt = caller.AcceptRespondedAt()

	hold := time.NewTimer(time.Until(res.acceptedAt.Add(r.o.Hold)))
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-caller.Ended():
		return fail(fmt.Errorf("%w: WhatsApp side ended (%s)", ErrEndedEarly, caller.EndReason()))
	case <-pc.Ended():
		return fail(fmt.Errorf("%w: PBX side ended (%s %s)", ErrEndedEarly, pc.EndedBy(), pc.ByeReason()))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	res.hangupAt = time.Now()
	res.MediaSeconds = res.hangupAt.Sub(res.acceptedAt).Seconds()
	from := res.acceptedAt.Add(r.o.Settle)
	side := r.sides.get(pc)
	var skipPBX, skipCaller []audio.Span
	res.FlowToPBX, skipPBX = flowResult(callerTx, side.toPBX, from, res.hangupAt, r.bias)
	res.FlowToCaller, skipCaller = flowResult(side.fromPBX, callerRx, from, res.hangupAt, r.bias)
	if media {
		res.CallerHeard = check(caller.Heard(), from, res.hangupAt, skipCaller...)
		res.PBXHeard = check(pc.Received(), from, res.hangupAt, skipPBX...)
	}
	st := caller.Stream()
	res.ToCaller = StreamCheck{
		Packets: st.Packets, MaxSeqStep: st.MaxSeqStep, SeqBackwards: st.SeqBackwards,
		MaxDriftMs: math.Round(st.MaxDriftMs*10) / 10, ClockDriftMs: math.Round(st.ClockDriftMs*10) / 10,
		SSRCs: len(st.SSRCs),
	}

	ectx, cancelEnd := context.WithTimeout(ctx, endTimeout)
	defer cancelEnd()
	if err := caller.Hangup(ectx); err != nil {
		return fail(fmt.Errorf("hangup: %w", err))
	}
	select {
	case <-pc.Ended():
	case <-ectx.Done():
		return fail(fmt.Errorf("%w within %v", ErrNoBye, endTimeout))
	}
	if by := pc.EndedBy(); by != "bye" {
		return fail(fmt.Errorf("%w: the PBX call ended by %q", ErrNoBye, by))
	}
	res.OK = true
	return res
}

// profileSlice is the resolution of AudioCheck.Profile.
const profileSlice = 100 * time.Millisecond

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// check applies the audio criteria to what an analyzer received in [from, to); windows in
// skip (the delay markers) are not judged.
func check(a *audio.Analyzer, from, to time.Time, skip ...audio.Span) AudioCheck {
	rp := a.Report(from, to, skip...)
	exp := int(to.Sub(from) / audio.WindowDuration)
	c := AudioCheck{
		Windows: rp.Windows, Expected: exp, ToneWindows: rp.ToneWindows, Ratio: rp.ToneRatio,
		MeanDBFS: math.Round(rp.MeanDBFS*10) / 10, MaxGapMs: ms(rp.MaxGap),
	}
	c.Pass = rp.ToneRatio >= minToneRatio && float64(rp.Windows) >= minWindowShare*float64(exp)
	if !c.Pass {
		// Where the tone was missing: one digit per 100 ms slice, the number of its five
		// windows that had the tone ("5" = all), so a start-up glitch, a stall or a steady
		// loss look different.
		var b strings.Builder
		for t := from; t.Before(to); t = t.Add(profileSlice) {
			n := a.Report(t, minTime(t.Add(profileSlice), to), skip...).ToneWindows
			b.WriteByte(byte('0' + min(n, 9)))
		}
		c.Profile = b.String()
	}
	return c
}

// matcher hands each PBX call to the load call that caused it, by the X-WA-Call-Id header
// ponte puts on the INVITE: with concurrent calls, the PBX's arrival order says nothing.
type matcher struct {
	mu    sync.Mutex
	slots map[string]chan *pbx.Call
}

func newMatcher() *matcher { return &matcher{slots: map[string]chan *pbx.Call{}} }

// slot returns the one-call mailbox of a WACID, creating it for whichever side comes first.
func (m *matcher) slot(id string) chan *pbx.Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.slots[id]
	if ch == nil {
		ch = make(chan *pbx.Call, 1)
		m.slots[id] = ch
	}
	return ch
}

// dispatch takes every call the PBX accepts until ctx ends.
func (m *matcher) dispatch(ctx context.Context, p *pbx.PBX) {
	for {
		c, err := p.NextCall(ctx)
		if err != nil {
			return
		}
		h := c.Invite().GetHeader("X-WA-Call-Id")
		if h == nil {
			continue // not from one of our calls: the waiting call times out and says so
		}
		select {
		case m.slot(h.Value()) <- c:
		default: // a second INVITE for the same call: the first one is the call
		}
	}
}

// wait returns the PBX call of a WACID.
func (m *matcher) wait(ctx context.Context, id string) (*pbx.Call, error) {
	ch := m.slot(id)
	defer func() {
		m.mu.Lock()
		delete(m.slots, id)
		m.mu.Unlock()
	}()
	select {
	case c := <-ch:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// markerSkip is how far around a marker transition, in the receiver's time, the tone check
// looks away: pause and marker last (loopFrames-pauseFrom) frames, from (markAt-pauseFrom)
// before the transition, an analysis window is 20 ms, and codecs and jitter smear the edges
// by a few ms more.
const markerSkip = (markAt-pauseFrom)*frameDur + 2*frameDur

// unknownDelay places the marker windows of a call whose markers were not detected.
const unknownDelay = 60 * time.Millisecond

// flowResult measures one direction of a call in [from, to): packets over the whole call,
// delays of the marker transitions received in the interval, and the spans of the interval
// the tone check must skip: around each transition where it was detected, else around its
// send instant shifted by the call's median delay. Per call delays in the result have the
// detector's bias removed.
func flowResult(send, recv *flow, from, to time.Time, bias time.Duration) (FlowResult, []audio.Span) {
	sent, marks, _, _ := send.snapshot()
	_, _, found, seq := recv.snapshot()
	fr := FlowResult{Sent: sent, Received: seq.received, SeqExpected: seq.expected(), SeqLost: seq.lost()}
	if fr.SeqExpected > 0 {
		fr.LossPercent = 100 * float64(fr.SeqLost) / float64(fr.SeqExpected)
	}
	// Pairs are made over the whole call, so that markers detected before from still
	// place their skip spans; delays count only inside the interval.
	pairs, _ := matchPairs(marks, found, time.Time{}, to.Add(maxMatch))
	detected := make(map[time.Time]time.Time, len(pairs))
	for _, p := range pairs {
		detected[p.sent] = p.recv
	}
	fr.delays, fr.Unmatched = matchDelays(marks, found, from, to)
	shift := unknownDelay
	if n := len(fr.delays); n > 0 {
		s := slices.Clone(fr.delays)
		slices.Sort(s)
		shift = s[n/2]
		fr.Delays, fr.DelayP50Ms, fr.DelayMaxMs = n, ms(shift-bias), ms(s[n-1]-bias)
	}
	var skip []audio.Span
	for _, m := range marks {
		c, ok := detected[m]
		if !ok {
			c = m.Add(shift)
		}
		if c.Add(markerSkip).After(from) && c.Add(-markerSkip).Before(to) {
			skip = append(skip, audio.Span{From: c.Add(-markerSkip), To: c.Add(markerSkip)})
		}
	}
	return fr, skip
}
