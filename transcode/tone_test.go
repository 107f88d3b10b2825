package transcode

import (
	"math"
	"testing"
)

func TestToneGenLevelAndFrequency(t *testing.T) {
	cases := []struct {
		freq, dbfs float64
		rate       int
	}{
		{440, -3.01, 8000}, {1000, -20, 8000}, {3000, -10, 8000}, {697, -12, 8000}, {440, -10, 48000},
	}
	for _, c := range cases {
		g := NewToneGen(c.freq, c.rate, AmpForDBFS(c.dbfs))
		pcm := make([]int16, c.rate/50)
		g.Fill(pcm)
		if l := LevelDBFS(pcm); math.Abs(l-c.dbfs) > 0.1 {
			t.Errorf("%v Hz %v dBFS: LevelDBFS %.3f", c.freq, c.dbfs, l)
		}
		if l := ToneLevelDBFS(pcm, c.rate, c.freq); math.Abs(l-c.dbfs) > 0.2 {
			t.Errorf("%v Hz %v dBFS: ToneLevelDBFS %.3f", c.freq, c.dbfs, l)
		}
		// 200 Hz away (4 bins of a 20 ms block) the Hann-windowed estimate is > 40 dB down.
		if l := ToneLevelDBFS(pcm, c.rate, c.freq+200); l > c.dbfs-40 {
			t.Errorf("%v Hz: leakage at +200 Hz %.1f dBFS", c.freq, l)
		}
	}
}

func TestFullScaleSineIsMinus3dB(t *testing.T) {
	g := NewToneGen(1000, 8000, 32767)
	pcm := make([]int16, 800)
	g.Fill(pcm)
	if l := LevelDBFS(pcm); math.Abs(l+3.01) > 0.01 {
		t.Fatalf("full-scale sine LevelDBFS = %.3f, want -3.01", l)
	}
	if p := Goertzel(pcm, 8000, 1000); math.Abs(p-0.5) > 0.001 {
		t.Fatalf("Goertzel of a full-scale sine = %.4f, want 0.5", p)
	}
}

func TestToneGenPhaseContinuity(t *testing.T) {
	// Filling in odd-sized pieces, with a frequency change, must equal one continuous
	// phase accumulation: no sample jumps more than the maximum slope allows.
	g := NewToneGen(1000, 8000, 10000)
	pcm := make([]int16, 1000)
	g.Fill(pcm[:7])
	g.Fill(pcm[7:333])
	g.SetFreq(1500)
	g.Fill(pcm[333:])
	maxStep := 10000*2*math.Pi*1500/8000 + 2
	for i := 1; i < len(pcm); i++ {
		if d := math.Abs(float64(pcm[i]) - float64(pcm[i-1])); d > maxStep {
			t.Fatalf("discontinuity at %d: %d -> %d", i, pcm[i-1], pcm[i])
		}
	}
	if l := ToneLevelDBFS(pcm[500:660], 8000, 1500); math.Abs(l-LevelDBFS(pcm[500:660])) > 0.2 {
		t.Fatalf("after SetFreq tone level %.2f vs total %.2f", l, LevelDBFS(pcm[500:660]))
	}
}

func TestLevelSilenceFloor(t *testing.T) {
	for _, pcm := range [][]int16{nil, make([]int16, 160)} {
		if l := LevelDBFS(pcm); l != SilenceDBFS {
			t.Errorf("LevelDBFS(silence len %d) = %v", len(pcm), l)
		}
		if l := ToneLevelDBFS(pcm, 8000, 440); l != SilenceDBFS {
			t.Errorf("ToneLevelDBFS(silence len %d) = %v", len(pcm), l)
		}
	}
}

func TestGoertzelTwoTones(t *testing.T) {
	// DTMF '5' = 770 + 1336 Hz at -10 dBFS each: each component measured separately.
	a, b := NewToneGen(770, 8000, AmpForDBFS(-10)), NewToneGen(1336, 8000, AmpForDBFS(-10))
	x, y := make([]int16, 320), make([]int16, 320)
	a.Fill(x)
	b.Fill(y)
	for i := range x {
		x[i] += y[i]
	}
	for _, f := range []float64{770, 1336} {
		if l := ToneLevelDBFS(x, 8000, f); math.Abs(l+10) > 0.3 {
			t.Errorf("%v Hz: %.2f dBFS, want -10", f, l)
		}
	}
	if l := ToneLevelDBFS(x, 8000, 1209); l > -40 {
		t.Errorf("1209 Hz (absent) measured %.1f dBFS", l)
	}
}

func TestToneGenFillNoAlloc(t *testing.T) {
	g := NewToneGen(440, 8000, 1000)
	pcm := make([]int16, 160)
	if a := testing.AllocsPerRun(100, func() { g.Fill(pcm); _ = Goertzel(pcm, 8000, 440) }); a != 0 {
		t.Fatalf("Fill+Goertzel allocate %v per run", a)
	}
}
