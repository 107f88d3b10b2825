package transcode

import "math"

// Analysis geometry. Blocks of 102 samples (12.75 ms) with a rectangular window put the
// neighbouring row frequencies near the nulls of each other's response (the classic choice
// for 8 kHz DTMF receivers), and two consecutive blocks always fit inside a 40 ms tone
// whatever its alignment (320 samples ≥ 101 + 2·102); a digit needs both, steady, so
// bursts of 20 ms or less never operate (Q.24's non-operate range). The tone frequencies
// are then measured precisely over the two blocks from the phase advance of two
// Hann-windowed phasors 51 samples apart: unambiguous within ±78 Hz, and the Hann window
// keeps the other group's tone (≥ 268 Hz away) out of the estimate (error < 0.3 % at
// 20 dB SNR through G.711), so the ±1.5 % / ±3.5 % limits are decided on the measured
// frequency rather than on a filter's skirt.
const (
	inbandBlock    = 102
	inbandHop      = 51
	inbandPhaseWin = 2*inbandBlock - inbandHop
	// A spectral line is only judged where the tones are at least this far away (3.8 bins
	// of the 204-sample Hann window: their leakage is below -50 dB): the low group's second
	// harmonics (1394-1882 Hz), for one, fall near the high group.
	inbandLineSpacing = 150.0
)

// Thresholds as power ratios (see the Inband* constants for the dB values).
var (
	inbandMinPow    = dbPow(DBm0ToDBFS(InbandMinLevelDBm0))
	inbandNormal    = dbPow(InbandNormalTwistDB)
	inbandReverse   = dbPow(InbandReverseTwistDB)
	inbandPeak      = dbPow(-6)  // the other tones of a group must be 6 dB below its peak
	inbandHarmonic  = dbPow(-15) // second harmonic at least 15 dB below its fundamental
	inbandComb      = dbPow(-20) // speech comb lines at least 20 dB below the weaker tone
	inbandCoeffLow  [4]float64
	inbandCoeffHigh [4]float64
)

// Energy ratios: the share of the signal power the two tones must carry. A block only
// nominates a candidate (nominal-frequency measurement, scalloping of up to 1.5 dB at
// ±1.5 %); the two-block check measures at the estimated frequencies and is strict (clean
// tones score ≥ 0.98 at 20 dB SNR; espeak-ng speech whose harmonics sat on a key scored up
// to 0.88), which with the comb check is what rejects speech and music (talk-off). While a
// digit sounds, a block continues it on looser terms, so a short dropout inside a block
// does not split the digit. inbandSteady is the share of the mean power each sixth of the
// two-block span must hold (see validate).
const (
	inbandStrictShare = 0.5
	inbandValidShare  = 0.9
	inbandContShare   = 0.35
	inbandSteady      = 0.65
	inbandSixth       = 2 * inbandBlock / 6
)

func init() {
	for i := range 4 {
		inbandCoeffLow[i] = 2 * math.Cos(2*math.Pi*dtmfLow[i]/InbandRate)
		inbandCoeffHigh[i] = 2 * math.Cos(2*math.Pi*dtmfHigh[i]/InbandRate)
	}
}

func dbPow(db float64) float64 { return math.Pow(10, db/10) }

// InbandDigit is a digit event of the InbandDetector. Positions count samples (8 kHz, the
// unit of RFC 4733 durations) since the detector was created or Reset.
type InbandDigit struct {
	Code     uint8 // RFC 4733 §3.2 event code, 0-15
	Start    int64 // first sample of the tone (to within one 102-sample block)
	Duration int   // samples from Start: so far (End false) or in total (End true)
	End      bool  // false: the digit has just been recognised and still sounds; true: it ended
}

// Rune is the digit's character ('0'-'9', '*', '#', 'A'-'D').
func (e InbandDigit) Rune() rune { return DigitRune(e.Code) }

// InbandDetector recognises DTMF digits in 8 kHz PCM. Each key press gives one event when
// it is recognised (End false, about 25-40 ms after the tone starts) and one when it ends
// (End true, after two blocks without it, so a dropout of one block is bridged). Push does
// not allocate once its event buffer has grown to the largest number of events one Push
// produced (two for a 20 ms frame).
type InbandDetector struct {
	span    [2 * inbandBlock]int16 // previous block, then the block being filled
	fill    int                    // samples in the current block
	pos     int64                  // sample index of the current block's first sample
	prevKey int                    // row*4+col if the previous block nominated a key, else -1
	active  bool
	key     int
	start   int64
	lastHit int64 // end of the last block that carried the active digit
	misses  int
	events  []InbandDigit
}

// NewInbandDetector returns a detector for one 8 kHz stream.
func NewInbandDetector() *InbandDetector {
	return &InbandDetector{prevKey: -1, events: make([]InbandDigit, 0, 8)}
}

// Reset forgets the stream (sample positions restart at 0) without reporting anything.
func (d *InbandDetector) Reset() {
	ev := d.events[:0]
	*d = InbandDetector{prevKey: -1, events: ev}
}

// Active reports the digit currently sounding, if any.
func (d *InbandDetector) Active() (code uint8, ok bool) {
	if !d.active {
		return 0, false
	}
	return dtmfKey[d.key/4][d.key%4], true
}

// Flush ends a digit still sounding (end of stream) and returns its End event. A tone that
// goes on afterwards counts as a new key press once it has filled two fresh blocks.
func (d *InbandDetector) Flush() (InbandDigit, bool) {
	if !d.active {
		return InbandDigit{}, false
	}
	d.active, d.prevKey = false, -1
	return d.endEvent(), true
}

// Push analyses pcm (any length; blocks span calls) and returns the events it completed, in
// order. The slice is reused by the next Push.
func (d *InbandDetector) Push(pcm []int16) []InbandDigit {
	d.events = d.events[:0]
	for len(pcm) > 0 {
		n := copy(d.span[inbandBlock+d.fill:], pcm)
		d.fill += n
		pcm = pcm[n:]
		if d.fill == inbandBlock {
			d.analyse()
			copy(d.span[:inbandBlock], d.span[inbandBlock:])
			d.fill = 0
			d.pos += inbandBlock
		}
	}
	return d.events
}

func (d *InbandDetector) endEvent() InbandDigit {
	return InbandDigit{Code: dtmfKey[d.key/4][d.key%4], Start: d.start, Duration: int(d.lastHit - d.start), End: true}
}

// analyse judges the block just completed in span[inbandBlock:].
func (d *InbandDetector) analyse() {
	cur := d.span[inbandBlock:]
	var pl, ph [4]float64
	rectPower4(cur, &inbandCoeffLow, &pl)
	rectPower4(cur, &inbandCoeffHigh, &ph)
	row, col := argmax4(&pl), argmax4(&ph)
	pr, pc, e := pl[row], ph[col], meanSquare(cur)
	key := row*4 + col

	// cont: the tones are there, at a plausible twist, and carry a fair share of the block.
	// strict (implies cont): a clean candidate, single peak in each group.
	cont := pr >= inbandMinPow*dbPow(-6) && pc >= inbandMinPow*dbPow(-6) &&
		pr <= pc*inbandNormal*dbPow(3) && pc <= pr*inbandReverse*dbPow(3) &&
		pr+pc >= inbandContShare*e
	strict := cont && pr >= inbandMinPow*dbPow(-3) && pc >= inbandMinPow*dbPow(-3) &&
		pr <= pc*inbandNormal*dbPow(2) && pc <= pr*inbandReverse*dbPow(2) &&
		pr+pc >= inbandStrictShare*e && singlePeak(&pl, row) && singlePeak(&ph, col)

	blockEnd := d.pos + inbandBlock
	if d.active {
		if key == d.key && cont {
			d.misses, d.lastHit = 0, blockEnd
		} else if d.misses++; d.misses >= 2 {
			d.active = false
			d.events = append(d.events, d.endEvent())
		}
	}
	if !d.active && strict && key == d.prevKey && d.validate(row, col) {
		d.active, d.key, d.start, d.lastHit, d.misses = true, key, d.pos-inbandBlock, blockEnd, 0
		d.events = append(d.events, InbandDigit{Code: dtmfKey[row][col], Start: d.start, Duration: int(blockEnd - d.start)})
	}
	d.prevKey = -1
	if strict {
		d.prevKey = key
	}
}

// validate applies the Q.24-style acceptance to the last two blocks (span), both of which
// nominated row/col: frequency deviation, level, twist and energy share measured at the
// estimated frequencies, a steady level over the span, no speech-like harmonic comb around
// the pair and no second harmonics (speech is rich in them, a DTMF generator is not).
func (d *InbandDetector) validate(row, col int) bool {
	fr, okr := measureFreq(d.span[:], dtmfLow[row])
	fc, okc := measureFreq(d.span[:], dtmfHigh[col])
	if !okr || !okc || math.Abs(fr/dtmfLow[row]-1) > InbandFreqTolerance || math.Abs(fc/dtmfHigh[col]-1) > InbandFreqTolerance {
		return false
	}
	pr, pc := Goertzel(d.span[:], InbandRate, fr), Goertzel(d.span[:], InbandRate, fc)
	if pr < inbandMinPow || pc < inbandMinPow || pr > pc*inbandNormal || pc > pr*inbandReverse {
		return false
	}
	e := meanSquare(d.span[:])
	if pr+pc < inbandValidShare*e {
		return false
	}
	// Steadiness: each sixth (34 samples) of the span carries its share of the power. This
	// makes the two blocks a duration check (a 20 ms burst leaves 44 samples empty, so one
	// end sixth is at most a third full wherever it falls, while a 40 ms tone always fills
	// two aligned blocks) and it rejects syllables, whose energy moves within 25 ms. The
	// beat of the two tones (≥ 268 Hz apart) moves a sixth's power by at most ±21 %.
	for q := 0; q < len(d.span); q += inbandSixth {
		if meanSquare(d.span[q:q+inbandSixth]) < inbandSteady*e {
			return false
		}
	}
	if !d.combFree(fr, fc, min(pr, pc)*inbandComb) {
		return false
	}
	if Goertzel(d.span[:], InbandRate, 2*fc) > pc*inbandHarmonic {
		return false
	}
	if math.Abs(2*fr-fc) >= inbandLineSpacing && Goertzel(d.span[:], InbandRate, 2*fr) > pr*inbandHarmonic {
		return false
	}
	return true
}

// combFree reports whether the span has no line above limit on the harmonic combs the two
// tones could belong to. Voiced speech fools the other checks when two of its harmonics fall
// on a row and a column (pitch 237 Hz: the 4th and 5th sit on 941 and 1209 Hz within
// tolerance; pitch 170 Hz: the 5th and 7th on 852 and 1209). Its comb, of step
// (fc-fr)/m, then also has lines between and beside the pair; a DTMF generator has none
// there (only weak intermodulation products). Lines too close to a tone or to DC to be
// measured apart from it are skipped (for '2' and '6' the spacing itself is within 63 Hz of
// the row), as are lines above the telephone band.
func (d *InbandDetector) combFree(fr, fc, limit float64) bool {
	for m := 1; m <= 3; m++ {
		step := (fc - fr) / float64(m)
		for k := -1; k <= m+1; k++ {
			f := fr + float64(k)*step
			if k == 0 || k == m || f < inbandLineSpacing || f > 3600 ||
				math.Abs(f-fr) < inbandLineSpacing || math.Abs(f-fc) < inbandLineSpacing {
				continue
			}
			if Goertzel(d.span[:], InbandRate, f) > limit {
				return false
			}
		}
	}
	// The spacing itself: the fundamental of a comb of step fc-fr.
	if f := fc - fr; math.Abs(f-fr) >= inbandLineSpacing && Goertzel(d.span[:], InbandRate, f) > limit {
		return false
	}
	return true
}

// measureFreq estimates the frequency of the tone near f0 in x (2·inbandBlock samples) from
// the phase advance between Hann-windowed phasors of x[:153] and x[51:]: for a tone at ω the
// phasor turns by ω·hop between them. ok is false without a measurable tone.
func measureFreq(x []int16, f0 float64) (f float64, ok bool) {
	w := 2 * math.Pi * f0 / InbandRate
	r1, i1 := hannPhasor(x[:inbandPhaseWin], w)
	r2, i2 := hannPhasor(x[inbandHop:inbandHop+inbandPhaseWin], w)
	zr, zi := r2*r1+i2*i1, i2*r1-r2*i1 // y2·conj(y1)
	if zr == 0 && zi == 0 {
		return 0, false
	}
	dphi := math.Remainder(math.Atan2(zi, zr)-w*inbandHop, 2*math.Pi)
	return f0 + dphi*InbandRate/(2*math.Pi*inbandHop), true
}

// hannPhasor is the Goertzel output y = Σ h[n]·x[n]·e^{jω(N-1-n)} with a Hann window h. Only
// phase differences between equal-length windows are used, so the e^{jω(N-1)} factor
// cancels.
func hannPhasor(x []int16, w float64) (re, im float64) {
	coeff := 2 * math.Cos(w)
	dw := 2 * math.Pi / float64(len(x)-1)
	cr, ci := 1.0, 0.0
	rr, ri := math.Cos(dw), math.Sin(dw)
	var s1, s2 float64
	for _, v := range x {
		s := float64(v)*(0.5-0.5*cr) + coeff*s1 - s2
		s2, s1 = s1, s
		cr, ci = cr*rr-ci*ri, cr*ri+ci*rr
	}
	return s1 - math.Cos(w)*s2, math.Sin(w) * s2
}

// rectPower4 computes the rectangular-window Goertzel power of x at the four frequencies
// whose coefficients (2cos ω) are in c, normalised like Goertzel (a full-scale sine gives
// 0.5). The four recurrences run in one loop so they overlap in the CPU pipeline.
func rectPower4(x []int16, c *[4]float64, p *[4]float64) {
	c0, c1, c2, c3 := c[0], c[1], c[2], c[3]
	var a1, a2, b1, b2, d1, d2, e1, e2 float64
	for _, v := range x {
		f := float64(v)
		a1, a2 = f+c0*a1-a2, a1
		b1, b2 = f+c1*b1-b2, b1
		d1, d2 = f+c2*d1-d2, d1
		e1, e2 = f+c3*e1-e2, e1
	}
	k := 2 / (float64(len(x)) * float64(len(x))) / (fullScale * fullScale)
	p[0] = k * max(0, a1*a1+a2*a2-c0*a1*a2)
	p[1] = k * max(0, b1*b1+b2*b2-c1*b1*b2)
	p[2] = k * max(0, d1*d1+d2*d2-c2*d1*d2)
	p[3] = k * max(0, e1*e1+e2*e2-c3*e1*e2)
}

// meanSquare is the normalised mean-square power of x (full scale = 1).
func meanSquare(x []int16) float64 {
	var sum float64
	for _, v := range x {
		f := float64(v)
		sum += f * f
	}
	return sum / float64(len(x)) / (fullScale * fullScale)
}

func argmax4(p *[4]float64) int {
	best := 0
	for i := 1; i < 4; i++ {
		if p[i] > p[best] {
			best = i
		}
	}
	return best
}

// singlePeak reports whether every other tone of the group is well below the peak at best
// (a chord, or speech formants, light up several).
func singlePeak(p *[4]float64, best int) bool {
	for i, v := range p {
		if i != best && v > p[best]*inbandPeak {
			return false
		}
	}
	return true
}
