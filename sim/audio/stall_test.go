package audio

import (
	"testing"
	"time"
)

// TestStallWatchSkips: stalls of StallLimit or more become skip spans from a
// frame before they began to StallRecovery after they ended, overlapping
// ones merge, short ones only count in Worst, and covered is clipped to the
// window asked about.
func TestStallWatchSkips(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &StallWatch{stalls: []stall{
		{end: t0.Add(100 * time.Millisecond), late: 12 * time.Millisecond}, // noted, not skipped
		{end: t0.Add(1 * time.Second), late: 30 * time.Millisecond},
		{end: t0.Add(1200 * time.Millisecond), late: 25 * time.Millisecond}, // overlaps the previous span
		{end: t0.Add(3 * time.Second), late: 60 * time.Millisecond},
	}}
	spans, covered := w.Skips(t0, t0.Add(3100*time.Millisecond))
	want := []Span{
		{From: t0.Add(950 * time.Millisecond), To: t0.Add(1500 * time.Millisecond)},
		{From: t0.Add(2920 * time.Millisecond), To: t0.Add(3300 * time.Millisecond)},
	}
	if len(spans) != len(want) {
		t.Fatalf("spans %v, want %v", spans, want)
	}
	for i := range want {
		if !spans[i].From.Equal(want[i].From) || !spans[i].To.Equal(want[i].To) {
			t.Errorf("span %d = %v, want %v", i, spans[i], want[i])
		}
	}
	if wantCov := 550*time.Millisecond + 180*time.Millisecond; covered != wantCov {
		t.Errorf("covered %v, want %v (the second span clipped at 3.1 s)", covered, wantCov)
	}
	if got := w.Worst(t0, t0.Add(500*time.Millisecond)); got != 12*time.Millisecond {
		t.Errorf("Worst over the first 500 ms = %v, want the 12 ms stall", got)
	}
	if got := w.Worst(t0.Add(1500*time.Millisecond), t0.Add(2900*time.Millisecond)); got != 0 {
		t.Errorf("Worst between stalls = %v, want 0", got)
	}
}

// TestStallWatchStarved: every noted stall's lateness counts, short ones
// too, and one straddling an edge counts only its part inside.
func TestStallWatchStarved(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &StallWatch{stalls: []stall{
		{end: t0.Add(100 * time.Millisecond), late: 12 * time.Millisecond},
		{end: t0.Add(1 * time.Second), late: 30 * time.Millisecond},
		{end: t0.Add(3 * time.Second), late: 400 * time.Millisecond}, // began at 2.6 s
	}}
	for _, tc := range []struct {
		from, to time.Duration
		want     time.Duration
	}{
		{0, 5 * time.Second, 442 * time.Millisecond},
		{0, 2800 * time.Millisecond, 242 * time.Millisecond},
		{500 * time.Millisecond, 2 * time.Second, 30 * time.Millisecond},
		{1500 * time.Millisecond, 2 * time.Second, 0},
	} {
		if got := w.Starved(t0.Add(tc.from), t0.Add(tc.to)); got != tc.want {
			t.Errorf("Starved(%v, %v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

// TestStallWatchRuns: the goroutine starts and stops (twice is harmless).
func TestStallWatchRuns(t *testing.T) {
	w := StartStallWatch()
	time.Sleep(30 * time.Millisecond)
	w.Stop()
	w.Stop()
}
