package audio

import (
	"sync"
	"time"
)

// StallLimit is the wake-up delay that excuses a failed audio check: one
// whole 20 ms frame period, enough to underrun a one-frame playout depth.
const StallLimit = 20 * time.Millisecond

// StallRecovery is how long audio may stay disturbed after a stall ends: the
// burst of queued packets passes through a jitter buffer whose depth
// re-converges, and the playout clock catches up.
const StallRecovery = 300 * time.Millisecond

// stallNoted is the smallest lateness recorded; shorter ones are routine
// scheduling noise on a loaded 2-vCPU machine.
const stallNoted = 10 * time.Millisecond

// StallWatch measures CPU starvation of this process while a test runs: a
// goroutine sleeps 5 ms at a time and notes how late it wakes up. Media
// clocks of the code under test and of the simulators run in the same
// process, so a wake-up late by StallLimit means the machine, not the code,
// held the audio back. Stop it.
type StallWatch struct {
	mu     sync.Mutex
	stalls []stall
	stop   chan struct{}
	done   chan struct{}
}

type stall struct {
	end  time.Time // when the sleeper finally ran
	late time.Duration
}

// StartStallWatch starts the watching goroutine.
func StartStallWatch() *StallWatch {
	w := &StallWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *StallWatch) run() {
	defer close(w.done)
	const tick = 5 * time.Millisecond
	tm := time.NewTimer(tick)
	defer tm.Stop()
	last := time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-tm.C:
			// The time of receipt, not the timer's value: the delay is in being run.
			now := time.Now()
			if late := now.Sub(last) - tick; late >= stallNoted {
				w.mu.Lock()
				w.stalls = append(w.stalls, stall{end: now, late: late})
				w.mu.Unlock()
			}
			last = now
			tm.Reset(tick)
		}
	}
}

// Stop ends the watch and returns the worst stall seen over its whole life.
// It may be called more than once.
func (w *StallWatch) Stop() time.Duration {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return w.Worst(time.Time{}, time.Now().Add(time.Hour))
}

// Worst returns the longest stall overlapping [from, to).
func (w *StallWatch) Worst(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m time.Duration
	for _, s := range w.stalls {
		if s.end.After(from) && s.end.Add(-s.late).Before(to) {
			m = max(m, s.late)
		}
	}
	return m
}

// Starved returns how long this process was measurably held back in
// [from, to): the sum of the lateness of every stall noted there (a stall
// straddling an edge counts only its part inside). A timer in the code
// under test fires late by at most that much, so a test timing the
// gateway's reaction may excuse it.
func (w *StallWatch) Starved(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var sum time.Duration
	for _, s := range w.stalls {
		sum += overlap(s.end.Add(-s.late), s.end, from, to)
	}
	return sum
}

// overlap is how much of [a, b) lies inside [from, to).
func overlap(a, b, from, to time.Time) time.Duration {
	if a.Before(from) {
		a = from
	}
	if b.After(to) {
		b = to
	}
	if b.After(a) {
		return b.Sub(a)
	}
	return 0
}

// Skips returns the spans of [from, to) during which audio is not judged
// because this process was measurably starved: each stall of StallLimit or
// more, from a frame before it began to StallRecovery after it ended.
// covered is how much of [from, to) they cover together.
func (w *StallWatch) Skips(from, to time.Time) (spans []Span, covered time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.stalls {
		if s.late < StallLimit {
			continue
		}
		sp := Span{From: s.end.Add(-s.late - 20*time.Millisecond), To: s.end.Add(StallRecovery)}
		if !sp.To.After(from) || !sp.From.Before(to) {
			continue
		}
		if n := len(spans); n > 0 && !sp.From.After(spans[n-1].To) {
			spans[n-1].To = sp.To // overlapping: merge (stalls are in time order)
			continue
		}
		spans = append(spans, sp)
	}
	for _, sp := range spans {
		covered += overlap(sp.From, sp.To, from, to)
	}
	return spans, covered
}
