package loadgen

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedianSlope(t *testing.T) {
	cases := []struct {
		name      string
		t, y      []float64
		med, slop float64
	}{
		{"line", []float64{0, 1, 2, 3}, []float64{1, 4, 7, 10}, 5.5, 3},
		{"odd, unsorted", []float64{0, 10, 20}, []float64{9, 1, 5}, 5, -0.2},
		{"flat", []float64{0, 5, 10, 15, 20}, []float64{7, 7, 7, 7, 7}, 7, 0},
		{"one point", []float64{3}, []float64{2}, 2, 0},
		{"t constant", []float64{4, 4}, []float64{1, 9}, 5, 0},
		{"none", nil, nil, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := median(c.y); got != c.med {
				t.Errorf("median = %v, want %v", got, c.med)
			}
			if got := slope(c.t, c.y); math.Abs(got-c.slop) > 1e-9 {
				t.Errorf("slope = %v, want %v", got, c.slop)
			}
		})
	}
}

// series builds a synthetic 30-minute soak: a loaded sample every 10 s whose RSS is
// rss(t) plus a deterministic ±1.5 MiB wobble (GC cycles), goroutines and fds that follow
// the 20 calls in progress, and a baseline every 5 minutes from base(t).
func series(rss func(at float64) float64, base func(at float64) (gor, fds, active int)) []SoakSample {
	var out []SoakSample
	wobble := []float64{0, 1536, -1024, 512, -1536, 1024}
	for i := 0; i <= 180; i++ {
		at := float64(10 * i)
		if i%30 == 0 {
			g, f, a := base(at)
			out = append(out, SoakSample{AtS: at, Quiescent: true, RSSKiB: int64(rss(at)) - 4096, Goroutines: g, FDs: f, Active: a})
			continue
		}
		active := 20 - i%3 // calls come and go
		out = append(out, SoakSample{
			AtS: at, RSSKiB: int64(rss(at) + wobble[i%len(wobble)]),
			Goroutines: 21 + 25*active, FDs: 17 + 2*active, Active: active,
		})
	}
	return out
}

func TestJudgeSoak(t *testing.T) {
	const mib = 1024.0
	flatRSS := func(float64) float64 { return 60 * mib }
	idle := func(float64) (int, int, int) { return 21, 17, 0 }
	cases := []struct {
		name    string
		samples []SoakSample
		want    []string // substrings of the reasons; none: pass
	}{
		{"flat", series(flatRSS, idle), nil},
		{"warm-up growth only", series(func(at float64) float64 {
			return 60*mib - 20*mib*math.Exp(-at/30) // settles within the 2 minute warm-up
		}, idle), nil},
		{"ramps after each baseline sit lower", rampSeries(), nil},
		{"pooled connections vary at idle", series(flatRSS, func(at float64) (int, int, int) {
			n := int(at/300) % 3 // 0..2 idle keep-alive connections
			return 19 + 2*n, 16 + n, 0
		}), nil},
		{"RSS leak 5 MiB per 10 min", series(func(at float64) float64 {
			return 60*mib + 5*mib*at/600
		}, idle), []string{"RSS median grew", "RSS slope"}},
		{"slow leak on a big heap: slope only", series(func(at float64) float64 {
			return 600*mib + 3*mib*at/600
		}, idle), []string{"RSS slope"}},
		{"goroutine per call leak", series(flatRSS, func(at float64) (int, int, int) {
			return 21 + int(at/10), 17, 0
		}), []string{"goroutines at zero calls grew"}},
		{"socket leak", series(flatRSS, func(at float64) (int, int, int) {
			return 21, 17 + int(at/60), 0
		}), []string{"open fds at zero calls grew"}},
		{"call never torn down", series(flatRSS, func(at float64) (int, int, int) {
			if at >= 900 {
				return 23, 18, 1
			}
			return 21, 17, 0
		}), []string{"calls active at the baseline"}},
		{"too short", series(flatRSS, idle)[:20], []string{"less than two", "quiescent baselines"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := JudgeSoak(c.samples, 2*time.Minute, 5*time.Minute, DefaultSoakLimits)
			if v.Pass != (len(c.want) == 0) {
				t.Fatalf("pass = %v, reasons %q; want reasons %q", v.Pass, v.Reasons, c.want)
			}
			all := strings.Join(v.Reasons, "\n")
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("reasons %q lack %q", v.Reasons, w)
				}
			}
			if len(v.Reasons) != len(c.want) {
				t.Errorf("reasons %q, want exactly %d", v.Reasons, len(c.want))
			}
		})
	}
}

// TestJudgeSoakFigures checks the reported numbers of a known series: RSS rising 1 MiB per
// 10 minutes from 100 MiB, with baselines 21 -> 24 goroutines and 17 -> 19 fds.
func TestJudgeSoakFigures(t *testing.T) {
	var s []SoakSample
	for i := 0; i <= 180; i++ {
		at := float64(10 * i)
		q := i%30 == 0
		g, f := 200, 40
		if q {
			g, f = 21+i/60, 17+i/90
		}
		s = append(s, SoakSample{AtS: at, Quiescent: q, RSSKiB: int64(102400 + 1024*at/600), Goroutines: g, FDs: f})
	}
	v := JudgeSoak(s, 2*time.Minute, 5*time.Minute, DefaultSoakLimits)
	if !v.Pass {
		t.Fatalf("reasons %q", v.Reasons)
	}
	if v.RSSSlopeKiBPer10Min != 1024 || v.GoroutineSlopePer10Min != 0 || v.FDSlopePer10Min != 0 {
		t.Errorf("slopes %v %v %v, want 1024 0 0", v.RSSSlopeKiBPer10Min, v.GoroutineSlopePer10Min, v.FDSlopePer10Min)
	}
	// Loaded steady samples: 120 s .. 1790 s (168) without the baselines at 300, 600, ...
	// 1500 s (5).
	if v.SteadySamples != 163 {
		t.Errorf("steady samples %d, want 163", v.SteadySamples)
	}
	// First window: 120 <= t < 420 s without 300 (29 samples), median the 15th, 260 s:
	// 102400 + int(1024*260/600) = 102843. Last window: 1490 < t <= 1790 without 1500 (29),
	// median 1650 s: 102400 + 2816.
	if v.RSSFirstMedianKiB != 102843 || v.RSSLastMedianKiB != 105216 {
		t.Errorf("medians %d, %d; want 102843, 105216", v.RSSFirstMedianKiB, v.RSSLastMedianKiB)
	}
	// Baselines at 300 .. 1800 s: i = 30 and 180, goroutines 21 -> 24, fds 17 -> 19.
	if v.Baselines != 6 || v.FirstBaseline.AtS != 300 || v.LastBaseline.AtS != 1800 {
		t.Errorf("baselines %d from %v to %v, want 6 from 300 to 1800", v.Baselines, v.FirstBaseline.AtS, v.LastBaseline.AtS)
	}
	if v.GoroutineDelta != 3 || v.FDDelta != 2 {
		t.Errorf("deltas goroutines %d fds %d, want 3 and 2", v.GoroutineDelta, v.FDDelta)
	}
}

func TestModeActive(t *testing.T) {
	at := func(active ...int) []SoakSample {
		var s []SoakSample
		for _, a := range active {
			s = append(s, SoakSample{Active: a})
		}
		return s
	}
	cases := []struct {
		name    string
		samples []SoakSample
		want    int
	}{
		{"full load most common", at(5, 12, 20, 20, 19, 20, 20, 7), 20},
		{"tie goes to the higher", at(3, 3, 9, 9, 1), 9},
		{"tie, higher first", at(9, 9, 3, 3), 9},
		{"one", at(0), 0},
		{"none", nil, -1},
	}
	for _, c := range cases {
		if got := modeActive(c.samples); got != c.want {
			t.Errorf("%s: modeActive = %d, want %d", c.name, got, c.want)
		}
	}
}

// rampSeries is a flat soak at 20 calls whose samples in the 150 s after each baseline (the
// ramp: fewer calls, and pages returned to the kernel during the pause) sit 10 MiB lower.
// Baselines come at 150, 450, 750 and 1050 s and at the end: the ramps fill the first
// window (120-420 s) and none is in the last, so comparing all loaded samples would find
// 20 % growth; at equal load there is none.
func rampSeries() []SoakSample {
	var out []SoakSample
	last := -1000
	for i := 0; i <= 180; i++ {
		at := float64(10 * i)
		if i == 15 || i == 45 || i == 75 || i == 105 || i == 180 {
			out = append(out, SoakSample{AtS: at, Quiescent: true, RSSKiB: 45 << 10, Goroutines: 19, FDs: 16})
			last = i
			continue
		}
		s := SoakSample{AtS: at, RSSKiB: 60 << 10, Goroutines: 520, FDs: 56, Active: 20}
		if i-last <= 15 {
			s.RSSKiB, s.Active = 50<<10, min(19, 2*(i-last))
		}
		out = append(out, s)
	}
	return out
}
