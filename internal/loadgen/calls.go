package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

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
	o     Options
	meta  *wasim.Meta
	pbx   *pbx.PBX
	match *matcher
}

// placeCalls starts o.Calls calls, the i-th not before i/Rate seconds after the first and only
// when fewer than Concurrency are in progress, and waits for all of them.
func (r *runner) placeCalls(ctx context.Context) []CallResult {
	res := make([]CallResult, r.o.Calls)
	for i := range res {
		res[i] = CallResult{Index: i, Err: ErrNotStarted.Error()}
	}
	sem := make(chan struct{}, r.o.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
schedule:
	for i := range res {
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res[i] = r.call(ctx, i)
		}()
	}
	wg.Wait()
	return res
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
	caller, err := r.meta.Call(sctx, wasim.CallOptions{
		From: fmt.Sprintf("55119%08d", i), Name: fmt.Sprintf("Load %d", i), ToneHz: callerHz, ExpectHz: pbxHz,
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
	if err := caller.WaitAccepted(sctx); err != nil {
		return fail(err)
	}
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
	res.CallerHeard = check(caller.Heard(), from, res.hangupAt)
	res.PBXHeard = check(pc.Received(), from, res.hangupAt)
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

// check applies the audio criteria to what an analyzer received in [from, to).
func check(a *audio.Analyzer, from, to time.Time) AudioCheck {
	rp := a.Report(from, to)
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
			n := a.Report(t, minTime(t.Add(profileSlice), to)).ToneWindows
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
