package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
)

// The bridge's real-time checks (tone in 20 ms frames, media time against
// wall time) measure ponte's playout clock, but on a 2-core VM a scheduler
// stall of the whole test process (CPU steal, another process) breaks them
// just the same. As in the end-to-end package, a failure is excused only by
// a stall measured while it happened: such an attempt is run again, one that
// fails without a stall fails the test. Starved attempts are run again for
// up to realTimeStarved (at least three attempts): a CPU-steal episode on a
// shared CI machine lasts tens of seconds, longer than three attempts.

// tester is the part of *testing.T the real-time checks use.
type tester interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Fatal(args ...any)
}

// stallLimit is the wake-up delay that excuses a failed attempt.
const stallLimit = audio.StallLimit

var errAttemptFatal = errors.New("attempt failed")

// attemptT collects an attempt's failures instead of failing the test.
type attemptT struct {
	t      *testing.T
	failed []string
}

func (a *attemptT) Helper()                    {}
func (a *attemptT) Logf(f string, args ...any) { a.t.Logf(f, args...) }
func (a *attemptT) Errorf(f string, args ...any) {
	a.failed = append(a.failed, fmt.Sprintf(f, args...))
}
func (a *attemptT) Fatalf(f string, args ...any) {
	a.Errorf(f, args...)
	panic(errAttemptFatal)
}
func (a *attemptT) Fatal(args ...any) {
	a.failed = append(a.failed, fmt.Sprint(args...))
	panic(errAttemptFatal)
}

// realTimeStarved is how long realTime goes on measuring again while every
// attempt fails during a stall.
const realTimeStarved = 60 * time.Second

// realTime runs check until an attempt passes, fails without a stall, or the
// machine stays starved past realTimeStarved (see above).
func realTime(t *testing.T, check func(tt tester)) {
	t.Helper()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		a := &attemptT{t: t}
		w := audio.StartStallWatch()
		func() {
			defer func() {
				if r := recover(); r != nil && r != errAttemptFatal {
					panic(r)
				}
			}()
			check(a)
		}()
		worst := w.Stop()
		if len(a.failed) == 0 {
			return
		}
		msg := strings.Join(a.failed, "; ")
		if worst < stallLimit {
			t.Fatalf("%s (worst scheduling stall %v)", msg, worst)
		}
		if attempt >= 3 && time.Since(start) > realTimeStarved {
			t.Fatalf("%d attempts over %v starved of CPU (last stall %v): %s", attempt, time.Since(start).Round(time.Second), worst, msg)
		}
		t.Logf("attempt %d failed during a %v scheduling stall: %s; measuring again", attempt, worst, msg)
	}
}
