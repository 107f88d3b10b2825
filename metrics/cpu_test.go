package metrics

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	for _, c := range []struct {
		name, in    string
		busy, total uint64
		err         bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{"linux 5.x", "cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1 2\n", 161, 981, false},
		{"old kernel (4 fields)", "cpu 10 0 10 80\n", 20, 100, false},
		{"no aggregate line", "cpu0 1 2 3 4 5\n", 0, 0, true},
		{"too few fields", "cpu 1 2 3\n", 0, 0, true},
		{"not a number", "cpu 1 2 x 4 5\n", 0, 0, true},
		{"overflow", "cpu 18446744073709551615 1 0 0 0\n", 0, 0, true},
		{"empty", "", 0, 0, true},
	} {
		s, err := ParseProcStat([]byte(c.in))
		if (err != nil) != c.err || (err != nil && !errors.Is(err, ErrProcStat)) {
			t.Errorf("%s: err %v, want error %v", c.name, err, c.err)
			continue
		}
		if s.Busy != c.busy || s.Total != c.total {
			t.Errorf("%s: busy %d total %d, want %d %d", c.name, s.Busy, s.Total, c.busy, c.total)
		}
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n"))
	f.Add([]byte("cpu 1 2 3 4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseProcStat(b)
		if err == nil && s.Busy > s.Total {
			t.Fatalf("busy %d > total %d", s.Busy, s.Total)
		}
	})
}

// fakeCPU returns scripted cumulative samples.
type fakeCPU struct {
	mu sync.Mutex
	s  CPUSample
}

func (f *fakeCPU) add(busy, idle uint64) {
	f.mu.Lock()
	f.s.Busy += busy
	f.s.Total += busy + idle
	f.mu.Unlock()
}

func (f *fakeCPU) read() (CPUSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s, nil
}

// The load covers exactly the window: window 2 intervals, so the ring holds
// 3 samples, and older busy time drops out. The interval is an hour so the
// ticker never fires: Sample drives the test.
// Cumulative samples (busy, total): s0 (0,0) at New, then per step.
func TestCPULoadWindow(t *testing.T) {
	f := &fakeCPU{}
	c := NewCPULoad(2*time.Hour, time.Hour, f.read)
	defer c.Close()
	if c.Load() != 0 {
		t.Fatalf("initial load %v", c.Load())
	}
	for i, st := range []struct {
		busy, idle uint64
		want       float64
	}{
		{100, 0, 1},     // s1 (100,100): s0..s1 = 100 of 100
		{0, 100, 0.5},   // s2 (100,200): s0..s2 = 100 of 200
		{0, 100, 0},     // s3 (100,300): s1..s3 = 0 of 200 (s0 left the window)
		{0, 100, 0},     // s4 (100,400): s2..s4 = 0 of 200
		{300, 100, 0.6}, // s5 (400,800): s3..s5 = 300 of 500
	} {
		f.add(st.busy, st.idle)
		c.Sample()
		if got := c.Load(); math.Abs(got-st.want) > 1e-9 {
			t.Errorf("step %d: load %v, want %v", i, got, st.want)
		}
	}
}

func TestCPULoadUnreadableKeepsLast(t *testing.T) {
	n := 0
	c := NewCPULoad(2*time.Hour, time.Hour, func() (CPUSample, error) {
		n++
		switch n {
		case 1:
			return CPUSample{0, 0}, nil
		case 2:
			return CPUSample{90, 100}, nil
		}
		return CPUSample{}, errors.New("gone")
	})
	defer c.Close()
	c.Sample()
	c.Sample()
	if got := c.Load(); got != 0.9 {
		t.Errorf("load after a failed read %v, want the last 0.9", got)
	}
}

// The host sampler works here (Linux /proc/stat) and stays in [0, 1].
func TestHostCPU(t *testing.T) {
	read := hostCPU()
	a, err := read()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	b, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if b.Total < a.Total || b.Busy < a.Busy || b.Busy > b.Total {
		t.Errorf("samples not cumulative: %+v then %+v", a, b)
	}
}
