package audio

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

var t0 = time.Unix(1_700_000_000, 0)

// segment is a stretch of synthetic received audio.
type segment struct {
	frames int     // 20 ms frames
	freq   float64 // 0 = silence
	dbfs   float64
	absent bool // frames that never arrive (time passes, nothing added)
	noise  float64
}

func feed(a *Analyzer, segs []segment, chunk int) {
	at := t0
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range segs {
		total := s.frames * 160
		if s.absent {
			at = at.Add(time.Duration(s.frames) * 20 * time.Millisecond)
			continue
		}
		pcm := make([]int16, total)
		if s.freq > 0 {
			transcode.NewToneGen(s.freq, 8000, transcode.AmpForDBFS(s.dbfs)).Fill(pcm)
		}
		for i := range pcm {
			pcm[i] += int16(rng.NormFloat64() * s.noise)
		}
		for i := 0; i < total; i += chunk {
			end := min(total, i+chunk)
			a.Add(pcm[i:end], at.Add(time.Duration(i)*time.Second/8000))
		}
		at = at.Add(time.Duration(total) * time.Second / 8000)
	}
}

func TestAnalyzer(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name      string
		segs      []segment
		chunk     int
		windows   int
		tone      int
		maxGap    time.Duration
		firstTone time.Duration // offset from t0; -1 for none
		meanDBFS  float64
	}{
		{
			name:  "clean tone",
			segs:  []segment{{frames: 50, freq: 440, dbfs: -10}},
			chunk: 160, windows: 50, tone: 50, maxGap: 0, firstTone: 0, meanDBFS: -10,
		},
		{
			name:  "silence gap inside, odd chunking",
			segs:  []segment{{frames: 10}, {frames: 50, freq: 440, dbfs: -10}, {frames: 10}, {frames: 50, freq: 440, dbfs: -10}},
			chunk: 37, windows: 120, tone: 100, maxGap: 200 * ms, firstTone: 200 * ms,
			meanDBFS: -10 + 10*math.Log10(100.0/120),
		},
		{
			name:  "audio stops arriving",
			segs:  []segment{{frames: 25, freq: 1000, dbfs: -10}, {frames: 15, absent: true}, {frames: 25, freq: 1000, dbfs: -10}},
			chunk: 960, windows: 50, tone: 50, maxGap: 300 * ms, firstTone: 0, meanDBFS: -10,
		},
		{
			name:  "wrong level is not the tone",
			segs:  []segment{{frames: 20, freq: 440, dbfs: -16}},
			chunk: 160, windows: 20, tone: 0, firstTone: -1, meanDBFS: -16,
		},
		{
			name:  "wrong frequency is not the tone",
			segs:  []segment{{frames: 20, freq: 600, dbfs: -10}},
			chunk: 160, windows: 20, tone: 0, firstTone: -1, meanDBFS: -10,
		},
		{
			name:  "within 3 dB counts",
			segs:  []segment{{frames: 20, freq: 440, dbfs: -12.5}},
			chunk: 160, windows: 20, tone: 20, firstTone: 0, meanDBFS: -12.5,
		},
		{
			name: "tone drowned in noise is not dominant",
			// noise sigma 3000 ≈ -20.8 dBFS; tone at -22 dBFS: the tone carries < 50 %.
			segs:  []segment{{frames: 20, freq: 440, dbfs: -22, noise: 3000}},
			chunk: 160, windows: 20, tone: 0, firstTone: -1, meanDBFS: -18.4,
		},
		{
			name:  "trailing loss of tone counts as gap",
			segs:  []segment{{frames: 10, freq: 440, dbfs: -10}, {frames: 20}},
			chunk: 160, windows: 30, tone: 10, maxGap: 400 * ms, firstTone: 0,
			meanDBFS: -10 + 10*math.Log10(10.0/30),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := NewAnalyzer(8000, 440, -10)
			if c.segs[0].freq == 1000 {
				a = NewAnalyzer(8000, 1000, -10)
			}
			feed(a, c.segs, c.chunk)
			r := a.Report(t0, t0.Add(time.Hour))
			if r.Windows != c.windows || r.ToneWindows != c.tone {
				t.Fatalf("windows %d tone %d, want %d %d", r.Windows, r.ToneWindows, c.windows, c.tone)
			}
			if want := float64(c.tone) / float64(c.windows); math.Abs(r.ToneRatio-want) > 1e-9 {
				t.Errorf("ratio %v, want %v", r.ToneRatio, want)
			}
			if d := r.MaxGap - c.maxGap; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("MaxGap %v, want %v", r.MaxGap, c.maxGap)
			}
			if c.firstTone < 0 {
				if !r.FirstTone.IsZero() {
					t.Errorf("FirstTone %v, want none", r.FirstTone)
				}
			} else if !r.FirstTone.Equal(t0.Add(c.firstTone)) {
				t.Errorf("FirstTone %v, want t0+%v", r.FirstTone.Sub(t0), c.firstTone)
			}
			if math.Abs(r.MeanDBFS-c.meanDBFS) > 0.3 {
				t.Errorf("MeanDBFS %.2f, want %.2f", r.MeanDBFS, c.meanDBFS)
			}
		})
	}
}

func TestAnalyzerReportRange(t *testing.T) {
	a := NewAnalyzer(8000, 440, -10)
	feed(a, []segment{{frames: 50, freq: 440, dbfs: -10}, {frames: 50}}, 160)
	r := a.Report(t0.Add(500*time.Millisecond), t0.Add(1500*time.Millisecond))
	if r.Windows != 50 || r.ToneWindows != 25 {
		t.Fatalf("range report %+v", r)
	}
	if !r.FirstTone.Equal(t0.Add(500 * time.Millisecond)) {
		t.Fatalf("FirstTone %v", r.FirstTone.Sub(t0))
	}
	if r := a.Report(t0.Add(time.Hour), t0.Add(2*time.Hour)); r.Windows != 0 || r.MeanDBFS != transcode.SilenceDBFS {
		t.Fatalf("empty range %+v", r)
	}
}

// Windows inside a skip span are neither judged nor a gap; outside it, a
// missing tone still counts.
func TestAnalyzerReportSkip(t *testing.T) {
	a := NewAnalyzer(8000, 440, -10)
	// 1 s of tone, 200 ms of silence, 1 s of tone, 100 ms of silence, 1 s of tone.
	feed(a, []segment{{frames: 50, freq: 440, dbfs: -10}, {frames: 10}, {frames: 50, freq: 440, dbfs: -10},
		{frames: 5}, {frames: 50, freq: 440, dbfs: -10}}, 160)
	end := t0.Add(10 * time.Second)
	r := a.Report(t0, end)
	if r.Windows != 165 || r.ToneWindows != 150 || r.MaxGap != 200*time.Millisecond {
		t.Fatalf("no skip: %+v", r)
	}
	// Skipping the first silence (with a margin) leaves the second one judged.
	r = a.Report(t0, end, Span{From: t0.Add(980 * time.Millisecond), To: t0.Add(1300 * time.Millisecond)})
	if r.Windows != 165 || r.Skipped != 16 || r.ToneWindows != 144 || r.MaxGap != 100*time.Millisecond {
		t.Fatalf("first silence skipped: %+v", r)
	}
	if want := 144.0 / 149; math.Abs(r.ToneRatio-want) > 1e-9 {
		t.Fatalf("ratio %v, want %v", r.ToneRatio, want)
	}
	// Both skipped: everything judged is tone.
	r = a.Report(t0, end, Span{From: t0.Add(time.Second), To: t0.Add(1200 * time.Millisecond)},
		Span{From: t0.Add(2200 * time.Millisecond), To: t0.Add(2300 * time.Millisecond)})
	if r.Skipped != 15 || r.ToneRatio != 1 || r.MaxGap != 0 {
		t.Fatalf("both skipped: %+v", r)
	}
}

// A G.711 path with packet loss concealed by the decoder: the analyzer sees the tone
// through, the lost frames' fade shows as missing tone windows.
func TestAnalyzerThroughG711WithLoss(t *testing.T) {
	enc, _ := transcode.NewEncoder("PCMA", 8000, transcode.EncoderOptions{})
	dec, _ := transcode.NewDecoder("PCMA", 8000)
	g := transcode.NewToneGen(1004, 8000, transcode.AmpForDBFS(-15))
	a := NewAnalyzer(8000, 1004, -15)
	in, out := make([]int16, 160), make([]int16, 160)
	pay := make([]byte, 160)
	at := t0
	for i := range 100 {
		g.Fill(in)
		enc.Encode(in, pay)
		if i >= 40 && i < 45 { // 5 lost in a row: 100 ms
			dec.Conceal(out)
		} else {
			dec.Decode(pay, out)
		}
		a.Add(out, at)
		at = at.Add(20 * time.Millisecond)
	}
	r := a.Report(t0, at)
	// The first concealed frame fades from full level, so it may still count; the rest do not.
	if r.ToneWindows < 95 || r.ToneWindows > 96 {
		t.Fatalf("tone windows %d, want 95-96", r.ToneWindows)
	}
	if r.MaxGap < 80*time.Millisecond || r.MaxGap > 100*time.Millisecond {
		t.Fatalf("MaxGap %v, want 80-100 ms", r.MaxGap)
	}
}

// markerRun sends a marker sequence for dur and delivers each 20 ms frame after a delay
// (plus optional per-frame jitter), optionally through a codec, and returns the measured
// delays.
func markerRun(t *testing.T, codec string, delay, jitter time.Duration, period time.Duration, dur time.Duration) []time.Duration {
	t.Helper()
	s := NewMarkerSender(8000, 700, 1300, transcode.AmpForDBFS(-12), period)
	r := NewMarkerReceiver(8000, 700, 1300)
	r.Attach(s)
	var enc transcode.Encoder
	var dec transcode.Decoder
	if codec != "" {
		var err error
		if enc, err = transcode.NewEncoder(codec, 8000, transcode.EncoderOptions{}); err != nil {
			t.Fatal(err)
		}
		if dec, err = transcode.NewDecoder(codec, 8000); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	pcm, out := make([]int16, 160), make([]int16, 160)
	pay := make([]byte, 400)
	for at := t0; at.Before(t0.Add(dur)); at = at.Add(20 * time.Millisecond) {
		s.Fill(pcm, at)
		rx := pcm
		if enc != nil {
			n, err := enc.Encode(pcm, pay)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Decode(pay[:n], out); err != nil {
				t.Fatal(err)
			}
			rx = out
		}
		j := time.Duration(0)
		if jitter > 0 {
			j = time.Duration(rng.Int64N(int64(2*jitter))) - jitter
		}
		r.Add(rx, at.Add(delay+j))
	}
	// Every transition sent early enough to be fully received must be detected, and
	// nothing extra.
	sent, got := s.Transitions(), len(r.Transitions())
	want := 0
	for _, x := range sent {
		if x.Before(t0.Add(dur - 40*time.Millisecond - jitter)) {
			want++
		}
	}
	if got < want || got > len(sent) {
		t.Fatalf("%s: detected %d transitions, sent %d (%d complete)", codec, got, len(sent), want)
	}
	return r.Delays()
}

func TestMarkerDelay(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name          string
		codec         string
		delay, jitter time.Duration
		period        time.Duration
		lo, hi        time.Duration // every measured delay must fall in [lo, hi]
		maxSpread     time.Duration
	}{
		{"pure delay, frame-aligned period", "", 87 * ms, 0, 200 * ms, 87*ms - 300*time.Microsecond, 87*ms + 300*time.Microsecond, 300 * time.Microsecond},
		{"pure delay, unaligned period", "", 143 * ms, 0, 237 * ms, 143*ms - 300*time.Microsecond, 143*ms + 300*time.Microsecond, 300 * time.Microsecond},
		{"zero delay", "", 0, 0, 250 * ms, -300 * time.Microsecond, 300 * time.Microsecond, 300 * time.Microsecond},
		{"PCMU", "PCMU", 60 * ms, 0, 200 * ms, 60*ms - ms, 60*ms + ms, ms},
		// The Opus path adds its own algorithmic delay (a few ms at 8 kHz); it must be
		// constant across transitions.
		{"opus 8k", "opus", 60 * ms, 0, 200 * ms, 60 * ms, 80 * ms, 2 * ms},
		{"arrival jitter ±5 ms", "", 100 * ms, 5 * ms, 200 * ms, 94 * ms, 106 * ms, 11 * ms},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := markerRun(t, c.codec, c.delay, c.jitter, c.period, 3*time.Second)
			if len(d) < 10 {
				t.Fatalf("only %d delays", len(d))
			}
			lo, mean, hi := DelayStats(d)
			t.Logf("%d transitions: min %v mean %v max %v", len(d), lo, mean, hi)
			if lo < c.lo || hi > c.hi {
				t.Fatalf("delays [%v, %v] outside [%v, %v]", lo, hi, c.lo, c.hi)
			}
			if hi-lo > c.maxSpread {
				t.Fatalf("spread %v > %v", hi-lo, c.maxSpread)
			}
		})
	}
}

func TestMarkerSenderSchedule(t *testing.T) {
	s := NewMarkerSender(8000, 700, 1300, 10000, 250*time.Millisecond)
	pcm := make([]int16, 160)
	at := t0
	for range 50 { // 1 s
		s.Fill(pcm, at)
		at = at.Add(20 * time.Millisecond)
	}
	tr := s.Transitions()
	if len(tr) != 3 { // at 250, 500, 750 ms (1000 ms is the first sample after the run)
		t.Fatalf("%d transitions: %v", len(tr), tr)
	}
	for i, x := range tr {
		if want := t0.Add(time.Duration(i+1) * 250 * time.Millisecond); !x.Equal(want) {
			t.Errorf("transition %d at %v, want %v", i, x.Sub(t0), want.Sub(t0))
		}
	}
	// The tone right after the first transition is f2.
	s2 := NewMarkerSender(8000, 700, 1300, 10000, 250*time.Millisecond)
	buf := make([]int16, 4000)
	s2.Fill(buf, t0)
	if transcode.ToneLevelDBFS(buf[2000:2160], 8000, 1300) < transcode.LevelDBFS(buf[2000:2160])-0.5 {
		t.Error("f2 not playing after the first transition")
	}
	if transcode.ToneLevelDBFS(buf[1800:1960], 8000, 700) < transcode.LevelDBFS(buf[1800:1960])-0.5 {
		t.Error("f1 not playing before the first transition")
	}
	// The pause: a fifth of the period at the middle of each tone.
	for k, x := range buf[800:1200] {
		if x != 0 {
			t.Fatalf("sample %d = %d, want the mid-tone pause (samples 800-1199)", 800+k, x)
		}
	}
	if transcode.ToneLevelDBFS(buf[600:760], 8000, 700) < -20 || transcode.ToneLevelDBFS(buf[1240:1400], 8000, 700) < -20 {
		t.Error("f1 not playing either side of the pause")
	}
	if r := NewMarkerReceiver(8000, 700, 1300); r.Delays() != nil {
		t.Error("Delays without a sender must be nil")
	}
}

// TestMatchDelays: each sent transition pairs with the first detection in
// [sent-5ms, sent+maxLag); a lost or spurious detection costs only itself
// (pairing by index would shift every later delay by a period), and only
// transitions sent in [from, to) count.
func TestMatchDelays(t *testing.T) {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sent := []time.Time{at(0), at(500), at(1000), at(1500)}
	far := at(1 << 30)
	for _, c := range []struct {
		name     string
		recv     []time.Time
		from, to time.Time
		want     []int // ms
		missed   int
	}{
		{"each", []time.Time{at(40), at(541), at(1039), at(1540)}, t0, far, []int{40, 41, 39, 40}, 0},
		{"one lost", []time.Time{at(40), at(1045), at(1540)}, t0, far, []int{40, 45, 40}, 1},
		{"spurious before", []time.Time{at(-200), at(40), at(541), at(1039), at(1540)}, t0, far, []int{40, 41, 39, 40}, 0},
		{"spurious between", []time.Time{at(40), at(300), at(541), at(1039), at(1540)}, t0, far, []int{40, 41, 39, 40}, 0},
		{"spurious instead of one", []time.Time{at(40), at(300), at(1039), at(1540)}, t0, far, []int{40, 39, 40}, 1},
		{"slightly early", []time.Time{at(-3), at(497)}, t0, far, []int{-3, -3}, 2},
		{"a period late is none", []time.Time{at(600), at(1100), at(1600)}, t0, far, []int{100, 100, 100}, 1},
		{"window", []time.Time{at(40), at(541), at(1039), at(1540)}, at(500), at(1500), []int{41, 39}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, missed := MatchDelays(sent, c.recv, c.from, c.to, 495*time.Millisecond)
			if len(d) != len(c.want) || missed != c.missed {
				t.Fatalf("got %v missed %d, want %v ms missed %d", d, missed, c.want, c.missed)
			}
			for i, w := range c.want {
				if d[i] != time.Duration(w)*time.Millisecond {
					t.Fatalf("got %v, want %v ms", d, c.want)
				}
			}
		})
	}
}
