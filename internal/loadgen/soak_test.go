package loadgen

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// TestSoakSmoke runs a 12-second soak through a real ponte child: two calls at a time,
// a baseline before the first call and at each quiescent point 5 s apart, a sample a second.
// It asserts that the sampler sees the gateway (RSS, goroutines, fds, active calls), that
// calls raise goroutines and fds over the idle baseline and that every baseline is at zero
// calls, and that the verdict is the judge's over the samples taken. Flatness itself needs
// minutes (the warm-up alone is two) and is not asserted here.
func TestSoakSmoke(t *testing.T) {
	bin := buildPonte(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	var live int
	so := &SoakOptions{
		SampleEvery: time.Second, QuiesceEvery: 5 * time.Second, Warmup: -1, Window: 2 * time.Second,
		OnSample: func(SoakSample) { live++ },
	}
	rep, err := Run(ctx, Options{Ponte: bin, Duration: 12 * time.Second, Concurrency: 2, Hold: 2 * time.Second, Codec: "pcmu", Dir: dir, Soak: so})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.OK < 4 {
		log, _ := os.ReadFile(filepath.Join(dir, "ponte.log"))
		t.Fatalf("ok %d failed %d: %+v\ngateway log:\n%s", rep.OK, rep.Failed, rep.Results, log)
	}
	if rep.Rate != 1 { // Concurrency / Hold in seconds
		t.Errorf("rate %v, want 1 call/s", rep.Rate)
	}
	sr := rep.Soak
	if sr == nil {
		t.Fatal("no soak report")
	}
	if live != len(sr.Samples) {
		t.Errorf("OnSample saw %d samples, the report has %d", live, len(sr.Samples))
	}
	var base, loaded []SoakSample
	for i, s := range sr.Samples {
		if i > 0 && s.AtS < sr.Samples[i-1].AtS {
			t.Errorf("sample %d at %v s before the previous one at %v s", i, s.AtS, sr.Samples[i-1].AtS)
		}
		if s.RSSKiB <= 0 || s.FDs <= 0 || s.Goroutines <= 0 || s.Active < 0 {
			t.Errorf("sample %d not filled: %+v", i, s)
		}
		if s.Quiescent {
			base = append(base, s)
		} else if s.Active > 0 {
			loaded = append(loaded, s)
		}
	}
	// 0 s, then after the phases ending at ~5, ~10+ and 12+ s (each waits for its calls).
	if len(base) < 3 || base[0].AtS != 0 || base[0].Completed != 0 {
		t.Fatalf("baselines %+v: want one at 0 s and at least two more", base)
	}
	for _, b := range base {
		if b.Active != 0 || b.InFlight != 0 {
			t.Errorf("baseline at %v s with calls in progress: %+v", b.AtS, b)
		}
	}
	if last := base[len(base)-1]; last.Completed != rep.OK || last.Failed != 0 || last.AtS < 12 {
		t.Errorf("final baseline %+v: want %d completed after 12 s", last, rep.OK)
	}
	if len(loaded) == 0 {
		t.Fatal("no sample saw a call in progress")
	}
	// A call holds goroutines (its legs' readers and timers) and fds (its RTP sockets): while
	// calls run, the gateway must show more of both than idle. The maxima over the loaded
	// samples are compared, since a single sample may catch calls half set up or torn down.
	idle := base[len(base)-1]
	var maxG, maxF int
	for _, s := range loaded {
		maxG, maxF = max(maxG, s.Goroutines), max(maxF, s.FDs)
	}
	if maxG <= idle.Goroutines || maxF <= idle.FDs {
		t.Errorf("with calls: at most %d goroutines, %d fds; idle: %d, %d", maxG, maxF, idle.Goroutines, idle.FDs)
	}
	want := JudgeSoak(sr.Samples, 0, 2*time.Second, DefaultSoakLimits)
	if sr.Verdict.Baselines != want.Baselines || sr.Verdict.Pass != want.Pass || sr.Verdict.GoroutineDelta != want.GoroutineDelta {
		t.Errorf("verdict %+v, judge over the samples %+v", sr.Verdict, want)
	}
	if sr.Verdict.Baselines != len(base) {
		t.Errorf("verdict has %d baselines, samples %d", sr.Verdict.Baselines, len(base))
	}
}

// TestStoreAndCallers checks the two options a soak sets: the records file in the config
// the child loads, and the cycled caller numbers.
func TestStoreAndCallers(t *testing.T) {
	for _, file := range []bool{false, true} {
		dir := t.TempDir()
		path, err := writeConfig(dir, gatewayConf{
			Public: "127.0.0.1:1", Admin: "127.0.0.1:2", WebRTCPort: 3, GraphURL: "http://127.0.0.1:4",
			PBXAddr: "127.0.0.1:5", Codec: "PCMU", LogLevel: "warn", StoreDSN: storeDSN(file, dir),
		})
		if err != nil {
			t.Fatalf("file %v: %v", file, err)
		}
		c, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		want := config.Store{Driver: "memory"}
		if file {
			want = config.Store{Driver: "sqlite", DSN: filepath.Join(dir, "ponte.db")}
		}
		// The memory driver ignores the DSN (config fills in a default).
		if c.Store.Driver != want.Driver || (file && c.Store.DSN != want.DSN) {
			t.Errorf("file %v: store %+v, want %+v", file, c.Store, want)
		}
	}
	for _, c := range []struct{ pool, i, want int }{{0, 7, 7}, {0, 123456, 123456}, {50, 7, 7}, {50, 57, 7}, {50, 100, 0}, {1, 9, 0}} {
		r := &runner{o: Options{Callers: c.pool}}
		if got := r.caller(c.i); got != c.want {
			t.Errorf("callers %d: call %d from number %d, want %d", c.pool, c.i, got, c.want)
		}
	}
}
