package loadgen

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

func TestSummarize(t *testing.T) {
	msd := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	cases := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one", msd(7), Latency{N: 1, P50Ms: 7, P99Ms: 7, MaxMs: 7}},
		{"two", msd(9, 3), Latency{N: 2, P50Ms: 3, P99Ms: 9, MaxMs: 9}},
		{"odd", msd(5, 1, 4, 2, 3), Latency{N: 5, P50Ms: 3, P99Ms: 5, MaxMs: 5}},
		{"hundred", msd(hundred...), Latency{N: 100, P50Ms: 50, P99Ms: 99, MaxMs: 100}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := summarize(c.in); got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
	in := msd(3, 1, 2)
	summarize(in)
	if in[0] != 3*time.Millisecond {
		t.Fatal("summarize sorted its input in place")
	}
}

// feed gives an analyzer n 20 ms frames from t0, each of tone or silence by pattern.
func feed(a *audio.Analyzer, t0 time.Time, tone func(i int) bool, n int) {
	gen := transcode.NewToneGen(1000, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	for i := range n {
		gen.Fill(pcm)
		if !tone(i) {
			clear(pcm)
		}
		a.Add(pcm, t0.Add(time.Duration(i)*audio.WindowDuration))
	}
}

func TestCheck(t *testing.T) {
	t0 := time.Unix(1000, 0)
	to := t0.Add(2 * time.Second) // 100 windows expected
	cases := []struct {
		name    string
		frames  int
		tone    func(int) bool
		pass    bool
		profile string
	}{
		{"all tone", 100, func(int) bool { return true }, true, ""},
		{"two lost windows", 100, func(i int) bool { return i != 10 && i != 50 }, true, ""},
		{"three lost windows", 100, func(i int) bool { return i%40 != 5 }, false, "54555555545555555455"},
		{"audio stopped half way", 50, func(int) bool { return true }, false, "55555555550000000000"},
		{"silence", 100, func(int) bool { return false }, false, "00000000000000000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := audio.NewAnalyzer(8000, 1000, -12)
			feed(a, t0, c.tone, c.frames)
			got := check(a, t0, to)
			if got.Pass != c.pass || got.Expected != 100 || got.Windows != c.frames || got.Profile != c.profile {
				t.Fatalf("got %+v, want pass=%v expected=100 windows=%d profile %q", got, c.pass, c.frames, c.profile)
			}
		})
	}
}

func TestWriteTableNamesFailures(t *testing.T) {
	r := &Report{Codec: "PCMU", Transcoding: true, Calls: 2, Failed: 1, OK: 1, Hold: "1s", Settle: "500ms",
		Results: []CallResult{
			{Index: 0, WACID: "wacid.A", OK: true, CallerHeard: AudioCheck{Pass: true}, PBXHeard: AudioCheck{Pass: true}},
			{Index: 1, WACID: "wacid.B", Err: "loadgen: the PBX was never rung for this call"},
		}}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"ok 1   failed 1", "call 1 wacid.B: FAILED: loadgen: the PBX was never rung", "(transcoding)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "wacid.A") {
		t.Errorf("table lists a call that passed:\n%s", out)
	}
}
