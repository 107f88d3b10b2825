package transcode

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// measureCadence splits pcm into 5 ms blocks, calls a block "on" when its level is above
// -45 dBFS (30 dB under the tone, yet above the dips where two tones beat), and returns the
// lengths of the alternating on/off runs, starting with the first run.
func measureCadence(pcm []int16) (runs []time.Duration, firstOn bool) {
	const blk = 40 // 5 ms at 8 kHz
	cur, n := false, 0
	for i := 0; i+blk <= len(pcm); i += blk {
		on := LevelDBFS(pcm[i:i+blk]) > -45
		if i == 0 {
			cur, firstOn = on, on
		}
		if on != cur {
			runs = append(runs, time.Duration(n)*5*time.Millisecond)
			cur, n = on, 0
		}
		n++
	}
	return append(runs, time.Duration(n)*5*time.Millisecond), firstOn
}

func TestRingbackCadence(t *testing.T) {
	cases := []struct {
		country string
		freqs   []float64
		pattern []time.Duration
	}{
		{"br", []float64{425}, []time.Duration{time.Second, 4 * time.Second}},
		{"us", []float64{440, 480}, []time.Duration{2 * time.Second, 4 * time.Second}},
		{"CA", []float64{440, 480}, []time.Duration{2 * time.Second, 4 * time.Second}},
		{"eu", []float64{425}, []time.Duration{time.Second, 4 * time.Second}},
		{"de", []float64{425}, []time.Duration{time.Second, 4 * time.Second}},
		{"uk", []float64{400, 450}, []time.Duration{400 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 2 * time.Second}},
		{" GB ", []float64{400, 450}, []time.Duration{400 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 2 * time.Second}},
		{"fr", []float64{440}, []time.Duration{1500 * time.Millisecond, 3500 * time.Millisecond}},
		{"es", []float64{425}, []time.Duration{1500 * time.Millisecond, 3 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.country, func(t *testing.T) {
			r, err := NewRingback(c.country)
			if err != nil {
				t.Fatal(err)
			}
			var cycle time.Duration
			for _, d := range c.pattern {
				cycle += d
			}
			// Two and a half cycles in 20 ms frames.
			pcm := playSource(r, FrameSamples(8000, cycle*5/2), 160)
			runs, firstOn := measureCadence(pcm)
			if !firstOn {
				t.Fatal("ringback does not start with tone")
			}
			want := slices.Concat(c.pattern, c.pattern)
			if len(runs) < len(want) {
				t.Fatalf("runs %v, want %v", runs, want)
			}
			for i, w := range want {
				if d := runs[i] - w; d < -20*time.Millisecond || d > 20*time.Millisecond {
					t.Errorf("run %d (%s) lasts %v, want %v ±20ms", i, map[bool]string{true: "off", false: "on"}[i%2 == 1], runs[i], w)
				}
			}
			// Level and spectrum in the middle of the first tone period.
			on := FrameSamples(8000, c.pattern[0])
			m := pcm[on/2-800 : on/2+800]
			total := LevelDBFS(m)
			if want := DBm0ToDBFS(RingbackLevelDBm0); math.Abs(total-want) > 0.3 {
				t.Errorf("level %.2f dBFS, want %.2f (-13 dBm0)", total, want)
			}
			var sum float64
			each := DBm0ToDBFS(RingbackLevelDBm0) - 10*math.Log10(float64(len(c.freqs)))
			for _, f := range c.freqs {
				if l := ToneLevelDBFS(m, 8000, f); math.Abs(l-each) > 0.3 {
					t.Errorf("%v Hz at %.2f dBFS, want %.2f", f, l, each)
				}
				sum += Goertzel(m, 8000, f)
			}
			if rest := PowerToDBFS(math.Pow(10, total/10) - sum); rest > total-40 {
				t.Errorf("energy outside %v Hz at %.1f dBFS", c.freqs, rest)
			}
		})
	}
}

func TestRingbackFrameIndependence(t *testing.T) {
	a, _ := NewRingback("uk")
	b, _ := NewRingback("uk")
	n := 8000 * 7
	if !slices.Equal(playSource(a, n, 160), playSource(b, n, 1, 77, 333, 160, 4000)) {
		t.Fatal("output depends on the frame sizes")
	}
	a.Reset()
	first := make([]int16, 800)
	a.Fill(first)
	if !slices.Equal(first, playSource(newUKRingback(t), 800, 160)) {
		t.Fatal("Reset does not restart the cadence")
	}
}

func newUKRingback(t *testing.T) *Ringback {
	r, err := NewRingback("uk")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRingbackNoClick: bursts start and end on a ramp, so no sample-to-sample step exceeds
// what the tone itself produces.
func TestRingbackNoClick(t *testing.T) {
	for _, country := range []string{"br", "us", "uk"} {
		r, _ := NewRingback(country)
		pcm := playSource(r, 8000*7, 160)
		c, _ := RingbackCadence(country)
		amp := AmpForDBFS(DBm0ToDBFS(RingbackLevelDBm0) - 10*math.Log10(float64(len(c.Freqs))))
		var slope float64
		for _, f := range c.Freqs {
			slope += amp * 2 * math.Pi * f / 8000
		}
		for i := 1; i < len(pcm); i++ {
			if d := math.Abs(float64(pcm[i]) - float64(pcm[i-1])); d > slope+2 {
				t.Fatalf("%s: step %v at sample %d exceeds the tone's slope %.0f", country, d, i, slope)
			}
		}
	}
}

func TestRingbackUnknown(t *testing.T) {
	for _, c := range []string{"", "zz", "usa"} {
		_, err := NewRingback(c)
		if !errors.Is(err, ErrUnknownCountry) || !strings.Contains(err.Error(), "br, ca, de, es, eu, fr, gb, it, uk, us") {
			t.Errorf("%q: %v", c, err)
		}
	}
}

func TestRingbackSharedAndNoAlloc(t *testing.T) {
	a, _ := RingbackClip("eu")
	b, _ := RingbackClip("DE")
	if a != b {
		t.Error("aliases do not share one synthesised cycle")
	}
	c, _ := RingbackCadence("us")
	c.Freqs[0] = 1 // a caller's copy: must not change the table
	if d, _ := RingbackCadence("us"); d.Freqs[0] != 440 {
		t.Error("RingbackCadence exposes the shared table")
	}
	r, _ := NewRingback("us")
	buf := make([]int16, 160)
	if n := testing.AllocsPerRun(1000, func() { r.Fill(buf) }); n != 0 {
		t.Fatalf("Fill allocates %v per call", n)
	}
}

func BenchmarkRingbackFill160(b *testing.B) {
	r, err := NewRingback("uk")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]int16, 160)
	b.ReportAllocs()
	for b.Loop() {
		r.Fill(buf)
	}
}
