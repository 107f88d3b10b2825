package transcode

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

const allKeys = "123A456B789C*0#D"

func ms(d int) int { return d * InbandRate / 1000 }

func clamp16(v float64) int16 { return int16(max(-32768, min(32767, math.Round(v)))) }

// keyFreqs returns the Q.23 pair of a key, looked up independently of dtmfPair.
func keyFreqs(t testing.TB, k rune) (lo, hi float64) {
	t.Helper()
	i := strings.IndexRune(allKeys, k)
	if i < 0 {
		t.Fatalf("no key %q", k)
	}
	return []float64{697, 770, 852, 941}[i/4], []float64{1209, 1336, 1477, 1633}[i%4]
}

// dual synthesises n samples of two sines (levels in dBm0) with math.Sin, independently of
// the generator, starting at the given phases.
func dual(n int, fl, fh, lowDBm0, highDBm0, ph1, ph2 float64) []int16 {
	a1, a2 := AmpForDBFS(DBm0ToDBFS(lowDBm0)), AmpForDBFS(DBm0ToDBFS(highDBm0))
	out := make([]int16, n)
	for i := range out {
		x := float64(i) / InbandRate
		out[i] = clamp16(a1*math.Sin(2*math.Pi*fl*x+ph1) + a2*math.Sin(2*math.Pi*fh*x+ph2))
	}
	return out
}

// seq builds tone/gap sequences of independently synthesised keys at the given levels.
func seq(t testing.TB, keys string, toneMS, gapMS int, lowDBm0, highDBm0 float64, rng *rand.Rand) []int16 {
	pcm := make([]int16, ms(gapMS))
	for _, k := range keys {
		lo, hi := keyFreqs(t, k)
		pcm = append(pcm, dual(ms(toneMS), lo, hi, lowDBm0, highDBm0, rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi)...)
		pcm = append(pcm, make([]int16, ms(gapMS))...)
	}
	return pcm
}

// detect pushes pcm in chunks, flushes, checks that events pair up (recognised, then ended,
// same code and start, non-decreasing starts) and returns them.
func detect(t testing.TB, pcm []int16, chunk int) []InbandDigit {
	t.Helper()
	d := NewInbandDetector()
	var evs []InbandDigit
	for i := 0; i < len(pcm); i += chunk {
		evs = append(evs, d.Push(pcm[i:min(len(pcm), i+chunk)])...)
	}
	if e, ok := d.Flush(); ok {
		evs = append(evs, e)
	}
	if err := checkPairs(evs, int64(len(pcm))); err != nil {
		t.Fatal(err)
	}
	return evs
}

func checkPairs(evs []InbandDigit, total int64) error {
	if len(evs)%2 != 0 {
		return fmt.Errorf("unpaired events %+v", evs)
	}
	var last int64 = -1
	for i := 0; i < len(evs); i += 2 {
		b, e := evs[i], evs[i+1]
		if b.End || !e.End || b.Code != e.Code || b.Start != e.Start || e.Duration < b.Duration || b.Duration <= 0 {
			return fmt.Errorf("bad pair %+v %+v", b, e)
		}
		if b.Code > 15 || b.Start < 0 || b.Start <= last || e.Start+int64(e.Duration) > total {
			return fmt.Errorf("bad position %+v (previous start %d, %d samples)", e, last, total)
		}
		last = b.Start + int64(e.Duration)
	}
	return nil
}

func digitsOf(evs []InbandDigit) string {
	var b strings.Builder
	for _, e := range evs {
		if e.End {
			b.WriteRune(e.Rune())
		}
	}
	return b.String()
}

// ---- generator ----

// spans returns the [start, end) runs of samples the generator changed from fill,
// ignoring tone samples that happen to equal fill (single samples inside a run).
func spans(pcm []int16, fill int16) [][2]int {
	var out [][2]int
	for i := 0; i < len(pcm); i++ {
		if pcm[i] == fill {
			continue
		}
		if n := len(out); n > 0 && i-out[n-1][1] <= 2 {
			out[n-1][1] = i + 1
			continue
		}
		out = append(out, [2]int{i, i + 1})
	}
	return out
}

func TestInbandGeneratorTones(t *testing.T) {
	for _, k := range allKeys {
		g := NewInbandGenerator(InbandRate)
		if err := g.Play(k, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		pcm := make([]int16, ms(200))
		for i := range pcm {
			pcm[i] = 1111
		}
		for i := 0; i < len(pcm); i += 160 {
			g.Mix(pcm[i : i+160])
		}
		if sp := spans(pcm, 1111); len(sp) != 1 || sp[0][0] > 1 || sp[0][1] < ms(100)-1 || sp[0][1] > ms(100) {
			t.Fatalf("%q: tone spans %v, want [0,800)", k, sp)
		}
		if g.Active() {
			t.Fatalf("%q: still active after the tone", k)
		}
		steady := pcm[ms(5):ms(95)]
		lo, hi := keyFreqs(t, k)
		for _, c := range []struct{ f, want float64 }{{lo, InbandLowDBm0}, {hi, InbandHighDBm0}} {
			if got := ToneLevelDBFS(steady, InbandRate, c.f) - ZeroDBm0DBFS; math.Abs(got-c.want) > 0.2 {
				t.Errorf("%q %v Hz: %.2f dBm0, want %v", k, c.f, got, c.want)
			}
			if h := ToneLevelDBFS(steady, InbandRate, 2*c.f) - ZeroDBm0DBFS; h > c.want-45 {
				t.Errorf("%q: 2nd harmonic of %v Hz at %.1f dBm0", k, c.f, h)
			}
		}
		for _, f := range []float64{697, 770, 852, 941, 1209, 1336, 1477, 1633} {
			if f != lo && f != hi {
				if l := ToneLevelDBFS(steady, InbandRate, f) - ZeroDBm0DBFS; l > InbandLowDBm0-40 {
					t.Errorf("%q: %v Hz present at %.1f dBm0", k, f, l)
				}
			}
		}
	}
}

// Any framing gives the same samples as one continuous Mix: phase and envelope run across
// frames; and the continuous output has no jumps beyond the tones' slope.
func TestInbandGeneratorFrameContinuity(t *testing.T) {
	render := func(frame int) []int16 {
		g := NewInbandGenerator(InbandRate)
		for _, k := range "15#D" {
			if err := g.Play(k, 73*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		pcm := make([]int16, ms(600))
		for i := 0; i < len(pcm); i += frame {
			g.Mix(pcm[i:min(len(pcm), i+frame)])
		}
		return pcm
	}
	want := render(len(render(1)))
	maxStep := AmpForDBFS(DBm0ToDBFS(InbandLowDBm0))*2*math.Pi*941/InbandRate +
		AmpForDBFS(DBm0ToDBFS(InbandHighDBm0))*2*math.Pi*1633/InbandRate + 2
	for i := 1; i < len(want); i++ {
		if d := math.Abs(float64(want[i]) - float64(want[i-1])); d > maxStep {
			t.Fatalf("jump of %v at %d", d, i)
		}
	}
	for _, frame := range []int{80, 160, 240, 7, 1} {
		got := render(frame)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("frame %d: sample %d = %d, continuous %d", frame, i, got[i], want[i])
			}
		}
	}
	if sp := spans(want, 0); len(sp) != 4 || sp[1][0]-sp[0][1] < ms(40)-2 {
		t.Fatalf("tones %v: want 4 separated by ≥ 40 ms", sp)
	}
}

// Start/Stop follow key presses; times are on the sample clock (frame f starts at f·20 ms),
// and each action is applied before the frame that starts at or after its time.
func TestInbandGeneratorKeyTiming(t *testing.T) {
	type act struct {
		atMS int
		key  rune // 0: Stop
	}
	// A release that arrives when the tone has already played that long ends it after the
	// 2 ms ramp down (the ramp cannot start in the past): hence the 62 ms below.
	cases := []struct {
		name string
		acts []act
		want [][2]int // tone spans in ms
	}{
		{"held 100 ms", []act{{0, '5'}, {100, 0}}, [][2]int{{0, 102}}},
		{"short press gets 40 ms", []act{{0, '5'}, {20, 0}}, [][2]int{{0, 40}}},
		{"fast keys queue with 40 ms gaps", []act{{0, '1'}, {20, 0}, {20, '2'}, {40, 0}, {40, '3'}, {60, 0}},
			[][2]int{{0, 40}, {80, 120}, {160, 200}}},
		{"new key releases the held one", []act{{0, '1'}, {60, '2'}, {120, 0}}, [][2]int{{0, 62}, {102, 162}}},
		{"natural gap kept", []act{{0, '1'}, {60, 0}, {200, '2'}, {260, 0}}, [][2]int{{0, 62}, {200, 262}}},
		{"long press", []act{{0, '#'}, {1000, 0}}, [][2]int{{0, 1002}}},
		{"queued key keeps its held time", []act{{0, '1'}, {20, '2'}, {130, 0}}, [][2]int{{0, 40}, {80, 190}}},
	}
	t0 := time.Unix(1000, 0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewInbandGenerator(InbandRate)
			pcm := make([]int16, ms(1200))
			for i := range pcm {
				pcm[i] = -7
			}
			next := 0
			for f := 0; f*160 < len(pcm); f++ {
				for next < len(c.acts) && c.acts[next].atMS <= f*20 {
					a := c.acts[next]
					now := t0.Add(time.Duration(a.atMS) * time.Millisecond)
					if a.key == 0 {
						g.Stop(now)
					} else if err := g.Start(a.key, now); err != nil {
						t.Fatal(err)
					}
					next++
				}
				g.Mix(pcm[f*160 : f*160+160])
			}
			sp := spans(pcm, -7)
			if len(sp) != len(c.want) {
				t.Fatalf("spans %v, want %v ms", sp, c.want)
			}
			for i, w := range c.want {
				// The first and last samples of a ramp may round to the fill value.
				if abs(sp[i][0]-ms(w[0])) > 1 || abs(sp[i][1]-ms(w[1])) > 1 {
					t.Errorf("tone %d: samples %v, want %v ms", i, sp[i], w)
				}
			}
		})
	}
}

func abs(x int) int { return max(x, -x) }

// A Stop that arrives after the tone already ran longer than the key was held ends it at
// once, with the ramp down.
func TestInbandGeneratorLateStop(t *testing.T) {
	g := NewInbandGenerator(InbandRate)
	t0 := time.Unix(0, 0)
	if err := g.Start('9', t0); err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, ms(300))
	g.Mix(pcm[:ms(100)])
	g.Stop(t0.Add(50 * time.Millisecond))
	if !g.Mix(pcm[ms(100):]) {
		t.Fatal("no ramp down written")
	}
	if sp := spans(pcm, 0); len(sp) != 1 || sp[0][1] > ms(102) || sp[0][1] < ms(100) {
		t.Fatalf("spans %v, want end within 2 ms of 100 ms", sp)
	}
	if g.Active() {
		t.Fatal("still active")
	}
}

func TestInbandGeneratorErrors(t *testing.T) {
	g := NewInbandGenerator(0)
	for _, r := range []rune{'E', 'x', ' ', '5' + 100} {
		if err := g.Start(r, time.Now()); !errors.Is(err, ErrNotDTMF) {
			t.Errorf("Start(%q): %v", r, err)
		}
		if err := g.Play(r, time.Second); !errors.Is(err, ErrNotDTMF) {
			t.Errorf("Play(%q): %v", r, err)
		}
	}
	var err error
	n := 0
	for ; err == nil; n++ {
		err = g.Play('1', 0)
	}
	if !errors.Is(err, ErrInbandQueueFull) || n != 17 {
		t.Fatalf("queue: %v after %d", err, n)
	}
	g.Reset()
	if g.Active() || g.Mix(make([]int16, 160)) {
		t.Fatal("Reset did not clear the queue")
	}
}

func TestInbandNoAllocs(t *testing.T) {
	g := NewInbandGenerator(InbandRate)
	_ = g.Start('7', time.Now())
	frame := make([]int16, 160)
	if a := testing.AllocsPerRun(200, func() { g.Mix(frame) }); a != 0 {
		t.Errorf("Mix allocates %v per frame", a)
	}
	pcm := seq(t, "159#", 70, 50, -9, -7, rand.New(rand.NewPCG(1, 2)))
	d := NewInbandDetector()
	i := 0
	if a := testing.AllocsPerRun(500, func() {
		off := (i * 160) % (len(pcm) - 160)
		d.Push(pcm[off : off+160])
		i++
	}); a != 0 {
		t.Errorf("Push allocates %v per frame", a)
	}
}

// ---- signals ----

func g711RoundTrip(pcm []int16, alaw bool) []int16 {
	enc, out := make([]byte, len(pcm)), make([]int16, len(pcm))
	if alaw {
		ALawEncode(enc, pcm)
		ALawDecode(out, enc)
	} else {
		ULawEncode(enc, pcm)
		ULawDecode(out, enc)
	}
	return out
}

// addNoise adds white Gaussian noise snrDB below the mean power of the tone segments
// (samples with |x| > 0) — the SNR of the digits as a receiver sees them.
func addNoise(pcm []int16, snrDB float64, rng *rand.Rand) []int16 {
	var sum float64
	var n int
	for _, x := range pcm {
		if x != 0 {
			sum += float64(x) * float64(x)
			n++
		}
	}
	sigma := math.Sqrt(sum / float64(n) / math.Pow(10, snrDB/10))
	out := make([]int16, len(pcm))
	for i, x := range pcm {
		out[i] = clamp16(float64(x) + rng.NormFloat64()*sigma)
	}
	return out
}

type formant struct{ freq, bw float64 }

// voiced synthesises a vowel-like signal: the harmonics of a pitch contour f0(t) up to
// 3.8 kHz with the -6 dB/octave slope of a glottal source, shaped by formant resonances
// (Lorentzian magnitude per formant), under a syllabic envelope, scaled to rmsDBm0.
func voiced(n int, f0 func(t float64) float64, formants []formant, syllableHz, rmsDBm0 float64, rng *rand.Rand) []int16 {
	const maxH = 60
	var ph [maxH + 1]float64
	for k := range ph {
		ph[k] = rng.Float64() * 2 * math.Pi
	}
	x := make([]float64, n)
	for i := range x {
		t := float64(i) / InbandRate
		f := f0(t)
		var v float64
		for k := 1; k <= maxH && float64(k)*f < 3800; k++ {
			fk := float64(k) * f
			ph[k] += 2 * math.Pi * fk / InbandRate
			g := 0.02
			for _, fm := range formants {
				r := (fk - fm.freq) / (fm.bw / 2)
				g += 1 / math.Sqrt(1+r*r)
			}
			v += g / float64(k) * math.Sin(ph[k])
		}
		env := 1.0
		if syllableHz > 0 {
			env = 0.05 + 0.95*math.Abs(math.Sin(math.Pi*syllableHz*t))
		}
		x[i] = v * env
	}
	return scaleTo(x, rmsDBm0)
}

func scaleTo(x []float64, rmsDBm0 float64) []int16 {
	var sum float64
	for _, v := range x {
		sum += v * v
	}
	k := AmpForDBFS(DBm0ToDBFS(rmsDBm0)) / math.Sqrt2 / math.Sqrt(sum/float64(len(x)))
	out := make([]int16, len(x))
	for i, v := range x {
		out[i] = clamp16(v * k)
	}
	return out
}

// notes sounds plucked/struck notes together: harmonics with 1/k² amplitudes under an
// exponential decay.
func notes(n int, freqs []float64, rmsDBm0 float64) []int16 {
	x := make([]float64, n)
	for i := range x {
		t := float64(i) / InbandRate
		for j, f := range freqs {
			for k := 1.0; k*f < 3800 && k <= 8; k++ {
				x[i] += math.Exp(-3*t) / (k * k) * math.Sin(2*math.Pi*k*f*t+float64(j))
			}
		}
	}
	return scaleTo(x, rmsDBm0)
}

func mixdown(a, b []int16) []int16 {
	out := make([]int16, len(a))
	for i := range out {
		out[i] = clamp16(float64(a[i]) + float64(b[i]))
	}
	return out
}

func dc(n int, v int16) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func noise(n int, rmsDBm0 float64, rng *rand.Rand) []int16 {
	x := make([]float64, n)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return scaleTo(x, rmsDBm0)
}

func tones(n int, level float64, freqs ...float64) []int16 {
	x := make([]float64, n)
	for i := range x {
		for j, f := range freqs {
			x[i] += math.Sin(2*math.Pi*f*float64(i)/InbandRate + float64(j))
		}
	}
	return scaleTo(x, level)
}

func BenchmarkInbandGeneratorMix160(b *testing.B) {
	g := NewInbandGenerator(InbandRate)
	_ = g.Start('5', time.Now())
	frame := make([]int16, 160)
	b.ReportAllocs()
	for b.Loop() {
		g.Mix(frame)
	}
}
