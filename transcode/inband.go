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
// Frequencies are ITU-T Q.23; the receiver limits are the usual ones of ITU-T Q.24 (whose
// tables list them per administration): each tone within ±1.5 % operates and beyond ±3.5 % does not, the low
// group may be up to 8 dB above the high group ("normal" twist) and the high group up to 4 dB
// above the low group ("reverse" twist), tones of 40 ms operate, and interruptions of one
// analysis block are bridged. Levels are in dBm0 (ITU-T G.711: 0 dBm0 is the level of the
// digital milliwatt).

// InbandRate is the sample rate of the PCM the InbandDetector analyses.
const InbandRate = 8000

// ZeroDBm0DBFS is the level, on the LevelDBFS scale, of a 0 dBm0 sine: G.711's A-law
// digital milliwatt sequence decodes to -6.15 dBFS and the µ-law one to -6.22.
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

// Q.23: the low (row) and high (column) group frequencies, and the RFC 4733 §3.2
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
// InbandMinTone; if it has already sounded that long it ends after the 2 ms ramp down.
// Without a held key it does nothing. The caller must Stop every Start (the RFC 4733
// Detector completes an event whose End packets were lost, so its completion is the cue):
// a held key sounds until then.
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
