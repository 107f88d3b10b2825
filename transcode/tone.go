package transcode

import "math"

// SilenceDBFS is the floor returned by the level functions for digital silence, so that
// averages and comparisons never meet -Inf.
const SilenceDBFS = -120.0

const fullScale = 32768.0

// ToneGen generates a continuous sine; the phase is kept across Fill calls and frequency
// changes, so consecutive frames join without clicks.
type ToneGen struct {
	Freq  float64 // Hz
	Rate  int     // samples per second
	Amp   float64 // peak amplitude, linear 0..32767
	phase float64 // radians in [0, 2π)
}

// NewToneGen returns a generator of freq Hz at rate with peak amplitude amp (0..32767).
func NewToneGen(freq float64, rate int, amp float64) *ToneGen {
	return &ToneGen{Freq: freq, Rate: rate, Amp: amp}
}

// AmpForDBFS is the peak amplitude of a sine whose RMS level is dbfs (LevelDBFS scale:
// a full-scale sine is -3.01 dBFS).
func AmpForDBFS(dbfs float64) float64 {
	return fullScale * math.Sqrt2 * math.Pow(10, dbfs/20)
}

// Fill writes the next len(pcm) samples. It does not allocate.
func (g *ToneGen) Fill(pcm []int16) {
	step := 2 * math.Pi * g.Freq / float64(g.Rate)
	ph := g.phase
	for i := range pcm {
		v := math.Round(g.Amp * math.Sin(ph))
		pcm[i] = int16(max(-32768, min(32767, v)))
		ph += step
		if ph >= 2*math.Pi {
			ph -= 2 * math.Pi
		}
	}
	g.phase = ph
}

// SetFreq changes the frequency from the next sample on, keeping the phase continuous.
func (g *ToneGen) SetFreq(freq float64) { g.Freq = freq }

// Goertzel returns the power of the freq component in pcm, normalised to full scale: the
// mean-square value (full scale = 1.0) that component contributes, so a full-scale sine at
// freq gives 0.5 like its total mean square. A Hann window, with its coherent gain removed,
// keeps leakage from other tones and from the block edges out of the estimate (generalised
// Goertzel: freq need not fall on a DFT bin). It does not allocate.
func Goertzel(pcm []int16, rate int, freq float64) float64 {
	n := len(pcm)
	if n < 2 || rate <= 0 {
		return 0
	}
	w := 2 * math.Pi * freq / float64(rate)
	coeff := 2 * math.Cos(w)
	// Hann window w[i] = 0.5 - 0.5 cos(2πi/(n-1)), the cosine advanced by rotation to avoid
	// a math.Cos per sample.
	dw := 2 * math.Pi / float64(n-1)
	cr, ci := 1.0, 0.0
	rr, ri := math.Cos(dw), math.Sin(dw)
	var s1, s2, wsum float64
	for _, x := range pcm {
		win := 0.5 - 0.5*cr
		wsum += win
		s := float64(x)*win + coeff*s1 - s2
		s2, s1 = s1, s
		cr, ci = cr*rr-ci*ri, cr*ri+ci*rr
	}
	if wsum == 0 {
		return 0
	}
	mag2 := s1*s1 + s2*s2 - coeff*s1*s2
	if mag2 < 0 {
		mag2 = 0
	}
	// amplitude a = 2|X|/Σw, mean square a²/2 = 2|X|²/(Σw)².
	return 2 * mag2 / (wsum * wsum) / (fullScale * fullScale)
}

// LevelDBFS is the RMS level of pcm in dBFS, where a full-scale sine is -3.01 dBFS.
// Returns SilenceDBFS for empty or silent input.
func LevelDBFS(pcm []int16) float64 {
	if len(pcm) == 0 {
		return SilenceDBFS
	}
	var sum float64
	for _, x := range pcm {
		f := float64(x)
		sum += f * f
	}
	return PowerToDBFS(sum / float64(len(pcm)) / (fullScale * fullScale))
}

// ToneLevelDBFS is the level of the freq component of pcm in dBFS, on the same scale as
// LevelDBFS (a pure sine gives the same value from both).
func ToneLevelDBFS(pcm []int16, rate int, freq float64) float64 {
	return PowerToDBFS(Goertzel(pcm, rate, freq))
}

// PowerToDBFS converts a normalised mean-square power (full scale = 1) to dBFS,
// floored at SilenceDBFS.
func PowerToDBFS(p float64) float64 {
	if p <= 0 {
		return SilenceDBFS
	}
	return max(SilenceDBFS, 10*math.Log10(p))
}
