package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ponte-gw/ponte/internal/procstat"
)

// SoakOptions turn a load run into a soak (issue 8, item 7): calls run continuously and the
// gateway's RSS, goroutines and open fds are sampled over time, with quiescent points where
// new calls pause until none is in progress and a baseline is taken. A leak shows most
// clearly there: at zero calls, an idle gateway should look the same after 30 minutes of
// calls as after 5.
type SoakOptions struct {
	SampleEvery  time.Duration // default 10 s
	QuiesceEvery time.Duration // default 5 min; a final baseline is always taken at the end
	Warmup       time.Duration // samples before this are not judged (0: 2 min; negative: none)
	Window       time.Duration // span of the RSS medians at each end of the steady state (default 5 min)
	// Settle is how long a quiescent point waits after the gateway reports no call active,
	// so goroutines of calls that just ended can return (default 3 s).
	Settle time.Duration
	Limits SoakLimits // zero value: DefaultSoakLimits
	// HeapProfiles, if set, is a directory where the gateway's heap profile (after a GC) is
	// saved at each baseline, heap-<seconds>.pb.gz, after the sample: `go tool pprof -base`
	// of the first steady one against the last shows what accumulated.
	HeapProfiles string
	// OnSample, if set, sees each sample as it is taken (live progress); it must not block.
	OnSample func(SoakSample)
}

// SoakReport is the soak part of a Report.
type SoakReport struct {
	SampleEvery  string       `json:"sample_every"`
	QuiesceEvery string       `json:"quiesce_every"`
	Warmup       string       `json:"warmup"`
	Window       string       `json:"window"`
	Limits       SoakLimits   `json:"limits"`
	Samples      []SoakSample `json:"samples"`
	Verdict      SoakVerdict  `json:"verdict"`
}

// quiesceLimit bounds the wait for the gateway to report zero active calls at a quiescent
// point, after every call of the load generator ended: ponte tears a call down within
// seconds of the BYE; past this the baseline is taken anyway and judged (Active != 0 fails).
const quiesceLimit = 30 * time.Second

func (s *SoakOptions) normalize(o *Options) {
	if s.SampleEvery <= 0 {
		s.SampleEvery = 10 * time.Second
	}
	if s.QuiesceEvery <= 0 {
		s.QuiesceEvery = 5 * time.Minute
	}
	if s.Warmup < 0 {
		s.Warmup = 0
	} else if s.Warmup == 0 {
		s.Warmup = 2 * time.Minute
	}
	if s.Window <= 0 {
		s.Window = 5 * time.Minute
	}
	if s.Settle <= 0 {
		s.Settle = 3 * time.Second
	}
	if s.Limits == (SoakLimits{}) {
		s.Limits = DefaultSoakLimits
	}
	// A constant concurrency: one new call per Hold/Concurrency, so the calls ramp up over
	// one hold after each quiescent point and then replace each other as they end (the
	// semaphore caps them at Concurrency, setup time makes up the rest).
	if o.Rate == 0 {
		o.Rate = float64(o.Concurrency) / max(o.Hold.Seconds(), 1)
	}
}

// soakRun is the state of one soak.
type soakRun struct {
	r        *runner
	so       *SoakOptions
	pid      int
	admin    string
	start    time.Time
	inFlight atomic.Int64
	ok, bad  atomic.Int64

	// takeMu serializes take: the sampler's ticks and the quiescent points both sample, and
	// samples must be recorded (and handed to OnSample) one at a time, in time order.
	takeMu  sync.Mutex
	samples []SoakSample
}

// soak places calls like placeCalls but continuously for Duration, pausing at each quiescent
// point, and samples the gateway meanwhile.
func (r *runner) soak(ctx context.Context, pid int, admin string) ([]CallResult, *SoakReport) {
	so := r.o.Soak
	s := &soakRun{r: r, so: so, pid: pid, admin: admin, start: time.Now()}
	s.take(ctx, true) // the idle gateway before any call (inside the warm-up: not judged)

	sampCtx, stopSampling := context.WithCancel(ctx)
	var sampWG sync.WaitGroup
	sampWG.Add(1)
	go func() {
		defer sampWG.Done()
		t := time.NewTicker(so.SampleEvery)
		defer t.Stop()
		for {
			select {
			case <-sampCtx.Done():
				return
			case <-t.C:
				s.take(sampCtx, false)
			}
		}
	}()

	var (
		mu  sync.Mutex
		res []CallResult
	)
	sem := make(chan struct{}, r.o.Concurrency)
	end := s.start.Add(r.o.Duration)
	i := 0
	for ctx.Err() == nil {
		// One phase: calls at Rate until the next quiescent point (or the end), then wait
		// for all of them and take a baseline.
		phaseStart := time.Now()
		stopAt := phaseStart.Add(so.QuiesceEvery)
		if r.o.Duration > 0 && end.Before(stopAt) {
			stopAt = end
		}
		var wg sync.WaitGroup
	phase:
		for j := 0; r.o.Calls == 0 || i < r.o.Calls; j++ {
			at := phaseStart.Add(time.Duration(float64(j) / r.o.Rate * float64(time.Second)))
			if !at.Before(stopAt) || !wait(ctx, at) {
				break
			}
			t := time.NewTimer(time.Until(stopAt))
			select {
			case sem <- struct{}{}:
				t.Stop()
			case <-t.C:
				break phase
			case <-ctx.Done():
				t.Stop()
				break phase
			}
			mu.Lock()
			res = append(res, CallResult{Index: i, Err: ErrNotStarted.Error()})
			mu.Unlock()
			s.inFlight.Add(1)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				c := r.call(ctx, i)
				if c.OK {
					s.ok.Add(1)
				} else {
					s.bad.Add(1)
				}
				s.inFlight.Add(-1)
				mu.Lock()
				res[i] = c
				mu.Unlock()
			}(i)
			i++
		}
		wg.Wait()
		s.quiesce(ctx)
		if (r.o.Duration > 0 && !time.Now().Before(end)) || (r.o.Calls > 0 && i >= r.o.Calls) {
			break
		}
	}
	stopSampling()
	sampWG.Wait()

	rep := &SoakReport{
		SampleEvery: so.SampleEvery.String(), QuiesceEvery: so.QuiesceEvery.String(),
		Warmup: so.Warmup.String(), Window: so.Window.String(), Limits: so.Limits, Samples: s.samples,
	}
	rep.Verdict = JudgeSoak(s.samples, so.Warmup, so.Window, so.Limits)
	return res, rep
}

// wait sleeps until at; false if ctx ended first.
func wait(ctx context.Context, at time.Time) bool {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// quiesce waits (all load calls have ended) for the gateway to report none active, lets
// their goroutines finish for Settle, and takes a baseline.
func (s *soakRun) quiesce(ctx context.Context) {
	deadline := time.Now().Add(quiesceLimit)
	for time.Now().Before(deadline) {
		if m, err := scrape(ctx, s.admin); err == nil {
			if n, ok := m.sum("ponte_calls_active"); ok && n == 0 {
				break
			}
		}
		if !wait(ctx, time.Now().Add(200*time.Millisecond)) {
			return
		}
	}
	if !wait(ctx, time.Now().Add(s.so.Settle)) {
		return
	}
	s.take(ctx, true)
	s.saveHeap(ctx)
}

// saveHeap fetches /debug/pprof/heap?gc=1 into HeapProfiles (errors only logged: a
// missing profile does not spoil the soak).
func (s *soakRun) saveHeap(ctx context.Context) {
	if s.so.HeapProfiles == "" {
		return
	}
	err := func() error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.admin+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(s.so.HeapProfiles, 0o755); err != nil {
			return err
		}
		name := fmt.Sprintf("heap-%04.0f.pb.gz", time.Since(s.start).Seconds())
		return os.WriteFile(filepath.Join(s.so.HeapProfiles, name), b, 0o644)
	}()
	if err != nil {
		s.r.o.Logger.Warn("soak: heap profile", "err", err)
	}
}

// take measures the gateway now and records the sample. A failed /metrics scrape leaves
// Goroutines and Active at -1 (the judge skips them); a failed /proc read leaves 0.
func (s *soakRun) take(ctx context.Context, quiescent bool) {
	s.takeMu.Lock()
	defer s.takeMu.Unlock()
	x := SoakSample{
		AtS: round1(time.Since(s.start).Seconds()), Quiescent: quiescent, Goroutines: -1, Active: -1,
		InFlight: int(s.inFlight.Load()), Completed: int(s.ok.Load()), Failed: int(s.bad.Load()),
		HostLoad1: procstat.LoadAvg1(),
	}
	x.RSSKiB, _ = procstat.StatusKiB(s.pid, "VmRSS")
	x.FDs, _ = procstat.OpenFDs(s.pid)
	if m, err := scrape(ctx, s.admin); err == nil {
		if g, ok := m.sum("go_goroutines"); ok {
			x.Goroutines = int(g)
		}
		if a, ok := m.sum("ponte_calls_active"); ok {
			x.Active = int(a)
		}
	}
	s.samples = append(s.samples, x)
	if s.so.OnSample != nil {
		s.so.OnSample(x)
	}
}

// SoakHeader and WriteSoakSample print the soak's samples as a table, one line each (the
// command prints them live).
func SoakHeader(w io.Writer) {
	fmt.Fprintf(w, "%8s %9s %10s %5s %6s %8s %9s %6s %6s\n",
		"t(s)", "RSS(MiB)", "goroutines", "fds", "active", "inflight", "completed", "failed", "load1")
}

// WriteSoakSample prints one sample; a baseline is marked "baseline".
func WriteSoakSample(w io.Writer, s SoakSample) {
	mark := ""
	if s.Quiescent {
		mark = "  baseline"
	}
	fmt.Fprintf(w, "%8.0f %9.1f %10d %5d %6d %8d %9d %6d %6.2f%s\n",
		s.AtS, kib(s.RSSKiB), s.Goroutines, s.FDs, s.Active, s.InFlight, s.Completed, s.Failed, s.HostLoad1, mark)
}

// WriteVerdict prints the verdict (the samples are printed by the caller, live or not).
func (r *SoakReport) WriteVerdict(w io.Writer) {
	v := r.Verdict
	fmt.Fprintf(w, "soak: sample every %s, baseline every %s, warm-up %s, RSS windows %s\n",
		r.SampleEvery, r.QuiesceEvery, r.Warmup, r.Window)
	fmt.Fprintf(w, "RSS at full load: first-window median %.1f MiB, last-window median %.1f MiB, growth %.1f %% (limit %.0f %%)\n",
		kib(v.RSSFirstMedianKiB), kib(v.RSSLastMedianKiB), v.RSSGrowthPercent, r.Limits.RSSGrowthPercent)
	fmt.Fprintf(w, "RSS slope over the %d steady samples at full load (%d calls): %.0f KiB per 10 min (limit %.0f); goroutines %+.1f, fds %+.1f per 10 min (not judged)\n",
		v.SteadySamples, v.FullLoadActive, v.RSSSlopeKiBPer10Min, r.Limits.RSSSlopeKiBPer10Min, v.GoroutineSlopePer10Min, v.FDSlopePer10Min)
	fmt.Fprintf(w, "baselines at zero calls (%d after warm-up): first at %.0f s: %d goroutines, %d fds, %.1f MiB; last at %.0f s: %d goroutines, %d fds, %.1f MiB\n",
		v.Baselines, v.FirstBaseline.AtS, v.FirstBaseline.Goroutines, v.FirstBaseline.FDs, kib(v.FirstBaseline.RSSKiB),
		v.LastBaseline.AtS, v.LastBaseline.Goroutines, v.LastBaseline.FDs, kib(v.LastBaseline.RSSKiB))
	fmt.Fprintf(w, "baseline deltas: goroutines %+d (limit %d), fds %+d (limit %d), RSS %+.1f MiB (not judged)\n",
		v.GoroutineDelta, r.Limits.GoroutineDelta, v.FDDelta, r.Limits.FDDelta, kib(v.RSSDeltaKiB))
	if v.Pass {
		fmt.Fprintln(w, "verdict: FLAT")
		return
	}
	fmt.Fprintln(w, "verdict: NOT FLAT")
	for _, s := range v.Reasons {
		fmt.Fprintln(w, "  -", s)
	}
}
