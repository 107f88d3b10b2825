package loadgen

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// SoakSample is one measurement of the gateway during a soak, every SoakOptions.SampleEvery
// while calls run and once at each quiescent point (no call in progress anywhere).
type SoakSample struct {
	AtS        float64 `json:"at_s"`      // seconds since the soak started
	Quiescent  bool    `json:"quiescent"` // a baseline: new calls paused, none in progress
	RSSKiB     int64   `json:"rss_kib"`   // the gateway's VmRSS
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`            // entries of /proc/<pid>/fd
	Active     int     `json:"gateway_active"` // ponte_calls_active, summed over directions
	InFlight   int     `json:"loadgen_in_flight"`
	Completed  int     `json:"calls_completed"` // calls that ended OK so far
	Failed     int     `json:"calls_failed"`
	HostLoad1  float64 `json:"host_loadavg_1m"`
}

// SoakLimits are the flatness criteria (docs/soak.md says why these numbers).
type SoakLimits struct {
	// RSS under load: the median of the last Window may exceed the median of the first
	// steady Window by at most this percentage...
	RSSGrowthPercent float64
	// ... and the least-squares slope over the loaded steady samples may be at most this.
	RSSSlopeKiBPer10Min float64
	// At zero calls, the last steady baseline may exceed the first by at most these.
	GoroutineDelta, FDDelta int
}

// DefaultSoakLimits: see docs/soak.md. At the default load (~0.6 calls/s, ~360 calls per
// 10 minutes) 2 MiB per 10 min is under 6 KiB per call: a leaked peer connection, jitter
// buffer or codec state (tens to hundreds of KiB each) shows many times over, while the Go
// runtime's heap sizing and scavenger move RSS by a few MiB with no trend. An idle gateway's
// goroutines and fds differ between two quiet moments only by pooled keep-alive HTTP
// connections (2 goroutines and 1 fd each, a handful at most); a per-call leak adds hundreds.
var DefaultSoakLimits = SoakLimits{RSSGrowthPercent: 10, RSSSlopeKiBPer10Min: 2048, GoroutineDelta: 10, FDDelta: 5}

// SoakVerdict is the judge's result.
type SoakVerdict struct {
	Pass    bool     `json:"pass"`
	Reasons []string `json:"reasons,omitempty"` // each criterion that failed or could not be judged

	SteadyFromS   float64 `json:"steady_from_s"`            // warm-up end
	SteadySamples int     `json:"steady_full_load_samples"` // the samples the RSS figures use
	// FullLoadActive is the active call count of those samples (the most common one).
	FullLoadActive int `json:"full_load_active_calls"`
	// RSS under load.
	RSSFirstMedianKiB   int64   `json:"rss_first_window_median_kib"`
	RSSLastMedianKiB    int64   `json:"rss_last_window_median_kib"`
	RSSGrowthPercent    float64 `json:"rss_growth_percent"`
	RSSSlopeKiBPer10Min float64 `json:"rss_slope_kib_per_10min"`
	// Goroutines and fds at full load, as a slope (reported, not judged: the baselines are
	// the test for them).
	GoroutineSlopePer10Min float64 `json:"goroutine_slope_per_10min"`
	FDSlopePer10Min        float64 `json:"fd_slope_per_10min"`
	// Baselines: quiescent samples after the warm-up.
	Baselines      int        `json:"steady_baselines"`
	FirstBaseline  SoakSample `json:"first_steady_baseline"`
	LastBaseline   SoakSample `json:"last_steady_baseline"`
	GoroutineDelta int        `json:"baseline_goroutine_delta"`
	FDDelta        int        `json:"baseline_fd_delta"`
	RSSDeltaKiB    int64      `json:"baseline_rss_delta_kib"` // reported, not judged
}

// JudgeSoak decides whether the samples are flat. The steady state starts warmup after the
// first sample; window is the span of each median (the first and last window minutes of the
// steady samples at full load). Samples whose goroutine scrape failed (-1) are left out of the
// goroutine figures.
func JudgeSoak(samples []SoakSample, warmup, window time.Duration, lim SoakLimits) SoakVerdict {
	v := SoakVerdict{SteadyFromS: warmup.Seconds()}
	fail := func(f string, a ...any) { v.Reasons = append(v.Reasons, fmt.Sprintf(f, a...)) }
	var loaded, base []SoakSample
	for _, s := range samples {
		if s.AtS < v.SteadyFromS {
			continue
		}
		if s.Quiescent {
			base = append(base, s)
		} else {
			loaded = append(loaded, s)
		}
	}
	// RSS is compared at equal load: only the samples at the most common number of active
	// calls (the full load; the higher on a tie) count. The ramps after each quiescent point
	// carry fewer calls, and the runtime returns freed pages to the kernel during the pause,
	// so they sit megabytes lower and would tilt the slope by where they fall.
	v.FullLoadActive = modeActive(loaded)
	full := loaded[:0:0]
	for _, s := range loaded {
		if s.Active == v.FullLoadActive {
			full = append(full, s)
		}
	}
	loaded = full
	v.SteadySamples = len(loaded)

	// RSS under load: two medians and a slope.
	switch {
	case len(loaded) < 3:
		fail("only %d loaded samples after the %v warm-up: too few to judge RSS", len(loaded), warmup)
	case loaded[len(loaded)-1].AtS-loaded[0].AtS < 2*window.Seconds():
		// Two windows that overlap compare a period with itself.
		fail("the steady state lasted %.0f s, less than two %v windows: RSS not judged",
			loaded[len(loaded)-1].AtS-loaded[0].AtS, window)
	default:
		first, last := loaded[0].AtS, loaded[len(loaded)-1].AtS
		var head, tail []float64
		ts := make([]float64, 0, len(loaded))
		rss := make([]float64, 0, len(loaded))
		var gts, gor, fds []float64
		for _, s := range loaded {
			if s.AtS < first+window.Seconds() {
				head = append(head, float64(s.RSSKiB))
			}
			if s.AtS > last-window.Seconds() {
				tail = append(tail, float64(s.RSSKiB))
			}
			ts, rss = append(ts, s.AtS), append(rss, float64(s.RSSKiB))
			if s.Goroutines >= 0 {
				gts, gor = append(gts, s.AtS), append(gor, float64(s.Goroutines))
			}
			fds = append(fds, float64(s.FDs))
		}
		v.RSSFirstMedianKiB, v.RSSLastMedianKiB = int64(median(head)), int64(median(tail))
		if v.RSSFirstMedianKiB > 0 {
			v.RSSGrowthPercent = round1(100 * float64(v.RSSLastMedianKiB-v.RSSFirstMedianKiB) / float64(v.RSSFirstMedianKiB))
		}
		v.RSSSlopeKiBPer10Min = round1(600 * slope(ts, rss))
		v.GoroutineSlopePer10Min = round1(600 * slope(gts, gor))
		v.FDSlopePer10Min = round1(600 * slope(ts, fds))
		if v.RSSGrowthPercent >= lim.RSSGrowthPercent {
			fail("RSS median grew %.1f %% (%d -> %d KiB), limit %.0f %%", v.RSSGrowthPercent, v.RSSFirstMedianKiB, v.RSSLastMedianKiB, lim.RSSGrowthPercent)
		}
		if v.RSSSlopeKiBPer10Min >= lim.RSSSlopeKiBPer10Min {
			fail("RSS slope %.0f KiB per 10 min, limit %.0f", v.RSSSlopeKiBPer10Min, lim.RSSSlopeKiBPer10Min)
		}
	}

	// Baselines: at zero calls, nothing may have accumulated.
	v.Baselines = len(base)
	if len(base) < 2 {
		fail("only %d quiescent baselines after the warm-up: need 2 to compare", len(base))
	} else {
		a, b := base[0], base[len(base)-1]
		v.FirstBaseline, v.LastBaseline = a, b
		v.FDDelta, v.RSSDeltaKiB = b.FDs-a.FDs, b.RSSKiB-a.RSSKiB
		if a.Goroutines < 0 || b.Goroutines < 0 {
			fail("goroutines unknown at a baseline (scrape failed)")
		} else {
			v.GoroutineDelta = b.Goroutines - a.Goroutines
			if v.GoroutineDelta > lim.GoroutineDelta {
				fail("goroutines at zero calls grew by %d (%d -> %d), limit %d", v.GoroutineDelta, a.Goroutines, b.Goroutines, lim.GoroutineDelta)
			}
		}
		if v.FDDelta > lim.FDDelta {
			fail("open fds at zero calls grew by %d (%d -> %d), limit %d", v.FDDelta, a.FDs, b.FDs, lim.FDDelta)
		}
		// Every baseline must be at zero calls, or it measures calls, not leftovers.
		var busy []string
		for _, s := range base {
			if s.Active != 0 {
				busy = append(busy, fmt.Sprintf("%d at %.0f s", s.Active, s.AtS))
			}
		}
		if len(busy) > 0 {
			fail("the gateway reported calls active at the baselines: %s", strings.Join(busy, ", "))
		}
	}
	v.Pass = len(v.Reasons) == 0
	return v
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// slope is the ordinary least-squares slope of y over t: cov(t, y) / var(t); 0 when t does
// not vary.
func slope(t, y []float64) float64 {
	n := float64(len(t))
	if len(t) < 2 || len(t) != len(y) {
		return 0
	}
	var mt, my float64
	for i := range t {
		mt += t[i]
		my += y[i]
	}
	mt, my = mt/n, my/n
	var cov, vt float64
	for i := range t {
		cov += (t[i] - mt) * (y[i] - my)
		vt += (t[i] - mt) * (t[i] - mt)
	}
	if vt == 0 {
		return 0
	}
	return cov / vt
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// modeActive is the most common Active among samples (the higher of equals); -1 for none.
func modeActive(samples []SoakSample) int {
	n := map[int]int{}
	best := -1
	for _, s := range samples {
		n[s.Active]++
		if c := n[s.Active]; best < 0 || c > n[best] || (c == n[best] && s.Active > best) {
			best = s.Active
		}
	}
	return best
}
