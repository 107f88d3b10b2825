package transcode

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// In-band DTMF for trunks configured with `dtmf: inband` (no telephone-event): the
// InbandGenerator turns digits relayed from Meta (RFC 4733) into dual tones in the 8 kHz PCM
// sent to the PBX, and the InbandDetector turns dual tones in the PBX's 8 kHz PCM back into
// digits for the gateway to send to Meta as RFC 4733 events.
//
// Frequencies are ITU-T Q.23 (Table 1); the receiver tolerances follow Q.24 (Annex A, the
// commonly used set): each tone within ±1.5 % operates and beyond ±3.5 % does not, the low
// group may be up to 8 dB above the high group ("normal" twist) and the high group up to 4 dB
// above the low group ("reverse" twist), tones of 40 ms operate, and interruptions of one
// analysis block are bridged. Levels are in dBm0 (ITU-T G.711: 0 dBm0 is the level of the
// digital milliwatt).

// InbandRate is the sample rate of the PCM the InbandDetector analyses.
const InbandRate = 8000

// ZeroDBm0DBFS is the level, on the LevelDBFS scale, of a 0 dBm0 sine: the A-law digital
// milliwatt (G.711 Table 6) decodes to -6.15 dBFS and the µ-law one (Table 5) to -6.22.
const ZeroDBm0DBFS = -6.15

// DBm0ToDBFS converts a level in dBm0 to the LevelDBFS scale.
func DBm0ToDBFS(dbm0 float64) float64 { return dbm0 + ZeroDBm0DBFS }

// Defaults of the generator and limits of the detector.
const (
	// InbandLowDBm0 and InbandHighDBm0 are the generated level of each tone. The high group
	// is sent 2 dB above the low group (Q.24 twist allowance, and customary because lines
	// attenuate high frequencies more).
	InbandLowDBm0  = -9.0
	InbandHighDBm0 = -7.0
	// InbandMinTone and InbandMinGap: the shortest tone and pause the generator produces,
	// the Q.24 operate limits (40 ms signal, 40 ms pause).
	InbandMinTone = 40 * time.Millisecond
	InbandMinGap  = 40 * time.Millisecond
	// InbandMinLevelDBm0 is the weakest tone (each of the pair) the detector accepts.
	InbandMinLevelDBm0 = -30.0
	// InbandNormalTwistDB and InbandReverseTwistDB are the accepted level differences:
	// low group above high group, and high group above low group.
	InbandNormalTwistDB  = 8.0
	InbandReverseTwistDB = 4.0
	// InbandFreqTolerance is the accepted relative deviation of each tone: midway between
	// Q.24's must-operate ±1.5 % and must-not-operate ±3.5 %.
	InbandFreqTolerance = 0.025
)

// Sentinel errors of the in-band generator.
var (
	ErrNotDTMF         = errors.New("inband: not a DTMF digit")
	ErrInbandQueueFull = errors.New("inband: digit queue full")
)

// Q.23 Table 1: the low (row) and high (column) group frequencies, and the RFC 4733 §3.2
// event code of each key.
var (
	dtmfLow  = [4]float64{697, 770, 852, 941}
	dtmfHigh = [4]float64{1209, 1336, 1477, 1633}
	dtmfKey  = [4][4]uint8{{1, 2, 3, 12}, {4, 5, 6, 13}, {7, 8, 9, 14}, {10, 0, 11, 15}}
)

// dtmfPair returns the row and column of an RFC 4733 DTMF event code (0-15).
func dtmfPair(code uint8) (row, col int, ok bool) {
	for r := range dtmfKey {
		for c, k := range dtmfKey[r] {
			if k == code {
				return r, c, true
			}
		}
	}
	return 0, 0, false
}

// ---- generator ----

type inbandTone struct {
	code  uint8
	start time.Time
	dur   int // samples; < 0 while the key is still held (no Stop yet)
}

// InbandGenerator writes DTMF tones into outgoing PCM. Start/Stop follow a key press as
// relayed by RFC 4733 (first packet / End), Play queues a digit of known duration (SIP INFO,
// a completed RFC 4733 Digit). Digits that follow each other faster than the tones can be
// played are queued and separated by InbandMinGap; every tone lasts at least InbandMinTone,
// otherwise as long as the key was held (Stop time - Start time), however late it starts.
//
// Mix replaces the samples of the frame while a tone sounds (the caller's voice must not
// reach the PBX's receiver on top of the tone) and leaves them untouched otherwise. The
// oscillators run across Mix calls, so any frame size gives one continuous tone, with a 2 ms
// raised-cosine ramp at each end to keep the spectrum narrow. Mix does not allocate.
type InbandGenerator struct {
	rate             int
	lowAmp, highAmp  float64 // peak amplitudes
	minTone, minGap  int     // samples
	ramp             int     // samples
	queue            [16]inbandTone
	qHead, qLen      int
	playing          bool
	played           int     // samples of the head tone written so far
	gap              int     // samples since the last tone ended (saturates at minGap)
	c1, s1, cr1, sr1 float64 // low-group phasor (cos, sin) and its per-sample rotation
	c2, s2, cr2, sr2 float64 // high-group phasor
}

// NewInbandGenerator returns a generator for PCM at rate (8000 for G.711 trunks; 0 means
// 8000) with the default levels.
func NewInbandGenerator(rate int) *InbandGenerator {
	if rate <= 0 {
		rate = InbandRate
	}
	g := &InbandGenerator{
		rate:    rate,
		minTone: durSamples(InbandMinTone, rate),
		minGap:  durSamples(InbandMinGap, rate),
		ramp:    max(1, rate/500),
	}
	g.gap = g.minGap
	g.SetLevels(InbandLowDBm0, InbandHighDBm0)
	return g
}

func durSamples(d time.Duration, rate int) int {
	return int(d.Nanoseconds() * int64(rate) / int64(time.Second))
}

// SetLevels sets the level of the low and high group tones in dBm0 for digits that start
// after the call.
func (g *InbandGenerator) SetLevels(lowDBm0, highDBm0 float64) {
	g.lowAmp = AmpForDBFS(DBm0ToDBFS(lowDBm0))
	g.highAmp = AmpForDBFS(DBm0ToDBFS(highDBm0))
}

// Start queues digit ('0'-'9', '*', '#', 'A'-'D') as pressed at now; it sounds until Stop.
// A key still held is released at now first (a new key implies the previous one went up).
func (g *InbandGenerator) Start(digit rune, now time.Time) error {
	code, ok := DigitCode(digit)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotDTMF, digit)
	}
	g.Stop(now)
	return g.push(inbandTone{code: code, start: now, dur: -1})
}

// Stop releases the held key at now: its tone lasts now - its Start time, at least
// InbandMinTone. Without a held key it does nothing.
func (g *InbandGenerator) Stop(now time.Time) {
	// At most one key is held: Start releases the previous one.
	for k := range g.qLen {
		i := (g.qHead + k) % len(g.queue)
		if g.queue[i].dur < 0 {
			g.stop(i, now)
			return
		}
	}
}

func (g *InbandGenerator) stop(i int, now time.Time) {
	t := &g.queue[i]
	d := max(0, durSamples(now.Sub(t.start), g.rate))
	if i == g.qHead && g.playing {
		// Released later than intended (the tone already ran longer): end now, after the
		// ramp down.
		d = max(d, g.played+g.ramp)
	}
	t.dur = max(d, g.minTone)
}

// Play queues digit with a known duration d (at least InbandMinTone). It queues behind a
// held key, which still ends with Stop.
func (g *InbandGenerator) Play(digit rune, d time.Duration) error {
	code, ok := DigitCode(digit)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotDTMF, digit)
	}
	return g.push(inbandTone{code: code, dur: max(durSamples(d, g.rate), g.minTone)})
}

func (g *InbandGenerator) push(t inbandTone) error {
	if g.qLen == len(g.queue) {
		return fmt.Errorf("%w: %d digits pending", ErrInbandQueueFull, g.qLen)
	}
	g.queue[(g.qHead+g.qLen)%len(g.queue)] = t
	g.qLen++
	return nil
}

// Active reports whether a tone is sounding or digits are queued.
func (g *InbandGenerator) Active() bool { return g.qLen > 0 }

// Reset drops the queue and silences the generator at once.
func (g *InbandGenerator) Reset() {
	g.qHead, g.qLen, g.playing, g.played, g.gap = 0, 0, false, 0, g.minGap
}

// Mix writes the tones due in the next len(pcm) samples over pcm and reports whether it
// wrote any. Samples outside tones are left as they are.
func (g *InbandGenerator) Mix(pcm []int16) bool {
	wrote := false
	for i := 0; i < len(pcm); {
		if !g.playing {
			if g.qLen == 0 {
				g.gap = min(g.minGap, g.gap+len(pcm)-i)
				break
			}
			if g.gap < g.minGap {
				k := min(g.minGap-g.gap, len(pcm)-i)
				g.gap += k
				i += k
				continue
			}
			g.begin()
		}
		t := &g.queue[g.qHead]
		k := len(pcm) - i
		if t.dur >= 0 {
			k = min(k, t.dur-g.played)
		}
		g.render(pcm[i:i+k], t.dur)
		wrote = wrote || k > 0
		i += k
		if t.dur >= 0 && g.played >= t.dur {
			g.playing = false
			g.gap = 0
			g.qHead = (g.qHead + 1) % len(g.queue)
			g.qLen--
		}
	}
	g.renormalise()
	return wrote
}

func (g *InbandGenerator) begin() {
	row, col, _ := dtmfPair(g.queue[g.qHead].code)
	w1 := 2 * math.Pi * dtmfLow[row] / float64(g.rate)
	w2 := 2 * math.Pi * dtmfHigh[col] / float64(g.rate)
	g.c1, g.s1, g.cr1, g.sr1 = 1, 0, math.Cos(w1), math.Sin(w1)
	g.c2, g.s2, g.cr2, g.sr2 = 1, 0, math.Cos(w2), math.Sin(w2)
	g.playing, g.played = true, 0
}

// render writes the next len(out) samples of the head tone; end is its length in samples,
// or < 0 while unknown.
func (g *InbandGenerator) render(out []int16, end int) {
	for j := range out {
		v := g.lowAmp*g.s1 + g.highAmp*g.s2
		n := g.played + j
		if n < g.ramp {
			v *= rampGain(n, g.ramp)
		} else if end >= 0 && end-n <= g.ramp {
			v *= rampGain(end-n-1, g.ramp)
		}
		out[j] = int16(max(-32768, min(32767, math.Round(v))))
		// Rotate both phasors one sample on (exact recurrence, no per-sample trig).
		g.c1, g.s1 = g.c1*g.cr1-g.s1*g.sr1, g.c1*g.sr1+g.s1*g.cr1
		g.c2, g.s2 = g.c2*g.cr2-g.s2*g.sr2, g.c2*g.sr2+g.s2*g.cr2
	}
	g.played += len(out)
}

// rampGain is the raised-cosine gain of sample n (0-based) of a ramp of r samples.
func rampGain(n, r int) float64 {
	if n < 0 {
		return 0
	}
	return 0.5 - 0.5*math.Cos(math.Pi*(float64(n)+0.5)/float64(r))
}

// renormalise pulls the phasors back onto the unit circle: rounding drift of the
// recurrence is ~1e-16 per sample, corrected once per frame with a first-order step.
func (g *InbandGenerator) renormalise() {
	k1 := 1.5 - 0.5*(g.c1*g.c1+g.s1*g.s1)
	k2 := 1.5 - 0.5*(g.c2*g.c2+g.s2*g.s2)
	g.c1, g.s1, g.c2, g.s2 = g.c1*k1, g.s1*k1, g.c2*k2, g.s2*k2
}

// ---- detector ----

// Analysis geometry. Blocks of 102 samples (12.75 ms) with a rectangular window put the
// neighbouring row frequencies near the nulls of each other's response (the classic choice
// for 8 kHz DTMF receivers), and two consecutive blocks always fit inside a 40 ms tone
// whatever its alignment (320 samples ≥ 101 + 2·102); a digit needs both, steady, so
// bursts of 20 ms or less never operate (Q.24's non-operate range). The tone frequencies are then measured precisely over the two blocks from the
// phase advance of two Hann-windowed phasors 51 samples apart: unambiguous within ±78 Hz,
// and the Hann window keeps the other group's tone (≥ 268 Hz away) out of the estimate.
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
// ±1.5 %); the two-block check measures at the estimated frequencies and is strict, which
// is what rejects speech and music (talk-off). While a digit sounds, a block continues it
// on looser terms, so a short dropout inside a block does not split the digit.
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

// Flush ends a digit still sounding (end of stream, hold) and returns its End event.
func (d *InbandDetector) Flush() (InbandDigit, bool) {
	if !d.active {
		return InbandDigit{}, false
	}
	d.active = false
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
// estimated frequencies, a steady level over the span, and the absence of second harmonics (speech is rich in them, a
// DTMF generator is not).
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
