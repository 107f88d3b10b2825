package transcode

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Ringback ("ringing tone", "tonalité de retour d'appel") played toward a WhatsApp caller in
// queue mode (answer_then_hunt): the call is already answered, so WhatsApp's own ringing
// has stopped and the caller must hear the network's ringing tone from us.

// ErrUnknownCountry is returned by NewRingback for a country without a known cadence.
var ErrUnknownCountry = errors.New("transcode: no ringback cadence for country")

// RingbackLevelDBm0 is the total level of the ringing tone while on: -13 dBm0, a customary
// level for network tones (national plans in E.180 Supplement 2 mostly lie between -10 and
// -20 dBm0). A tone of two frequencies has each at 3 dB less, so the sum is at this level.
const RingbackLevelDBm0 = -13.0

// rampDur shapes each burst's start and end with a raised cosine so the bursts do not
// click; short enough (4 ms) to leave the cadence intact to the millisecond.
const rampDur = 4 * time.Millisecond

// Cadence describes a ringing tone: the frequencies sounded together while on, and the
// on/off pattern that repeats, starting with a tone period.
type Cadence struct {
	Freqs   []float64       // Hz, summed
	Pattern []time.Duration // on, off, on, off, ...: even length, the cycle
}

// Cycle is the length of one repetition of the pattern.
func (c Cadence) Cycle() time.Duration {
	var d time.Duration
	for _, p := range c.Pattern {
		d += p
	}
	return d
}

// ringbackCadences, from ITU-T E.180 Supplement 2 ("Various tones used in national
// networks") and the national specifications it summarises.
var ringbackCadences = map[string]Cadence{
	// Brazil: 425 Hz, 1 s on, 4 s off.
	"br": {Freqs: []float64{425}, Pattern: []time.Duration{time.Second, 4 * time.Second}},
	// North America (the "precise tone plan" audible ringing): 440+480 Hz, 2 s on, 4 s off.
	"us": {Freqs: []float64{440, 480}, Pattern: []time.Duration{2 * time.Second, 4 * time.Second}},
	// CEPT/ETSI harmonised European ringing tone: 425 Hz, 1 s on, 4 s off; also the national
	// tone of Germany and Italy.
	"eu": {Freqs: []float64{425}, Pattern: []time.Duration{time.Second, 4 * time.Second}},
	// United Kingdom: 400+450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
	"uk": {Freqs: []float64{400, 450}, Pattern: []time.Duration{
		400 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 2 * time.Second}},
	// France: 440 Hz, 1.5 s on, 3.5 s off.
	"fr": {Freqs: []float64{440}, Pattern: []time.Duration{1500 * time.Millisecond, 3500 * time.Millisecond}},
	// Spain: 425 Hz, 1.5 s on, 3 s off.
	"es": {Freqs: []float64{425}, Pattern: []time.Duration{1500 * time.Millisecond, 3 * time.Second}},
}

// Aliases accepted by NewRingback (ISO 3166-1 alpha-2 codes that share a cadence above).
var ringbackAliases = map[string]string{"ca": "us", "gb": "uk", "de": "eu", "it": "eu"}

// RingbackCountries lists the country codes NewRingback accepts, sorted.
func RingbackCountries() []string {
	var out []string
	for k := range ringbackCadences {
		out = append(out, k)
	}
	for k := range ringbackAliases {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// RingbackCadence returns the cadence for country (case-insensitive code).
func RingbackCadence(country string) (Cadence, error) {
	_, c, err := ringbackLookup(country)
	return Cadence{Freqs: slices.Clone(c.Freqs), Pattern: slices.Clone(c.Pattern)}, err
}

// ringbackLookup resolves aliases and returns the canonical key with its cadence.
func ringbackLookup(country string) (string, Cadence, error) {
	k := strings.ToLower(strings.TrimSpace(country))
	if a, ok := ringbackAliases[k]; ok {
		k = a
	}
	c, ok := ringbackCadences[k]
	if !ok {
		return "", Cadence{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownCountry, country, strings.Join(RingbackCountries(), ", "))
	}
	return k, c, nil
}

// One cycle of each country's tone is synthesised once and shared, read-only, by every
// Ringback: a call's ringback then costs a copy per frame and no memory of its own.
var (
	ringbackMu    sync.Mutex
	ringbackClips = map[string]*Clip{}
)

// RingbackClip returns one cycle of the ringing tone for country as a Clip at ClipRate.
func RingbackClip(country string) (*Clip, error) {
	key, c, err := ringbackLookup(country)
	if err != nil {
		return nil, err
	}
	ringbackMu.Lock()
	defer ringbackMu.Unlock()
	if clip, ok := ringbackClips[key]; ok {
		return clip, nil
	}
	clip := &Clip{PCM: SynthCadence(c, ClipRate, RingbackLevelDBm0), Format: "ringback " + key}
	ringbackClips[key] = clip
	return clip, nil
}

// SynthCadence renders one cycle of c at rate with a total on-level of levelDBm0. Each tone
// period starts at phase zero and is shaped by rampDur raised-cosine edges.
func SynthCadence(c Cadence, rate int, levelDBm0 float64) []int16 {
	total := FrameSamples(rate, c.Cycle())
	out := make([]int16, total)
	if len(c.Freqs) == 0 {
		return out
	}
	// Each component gets an equal share of the power.
	amp := AmpForDBFS(DBm0ToDBFS(levelDBm0) - 10*math.Log10(float64(len(c.Freqs))))
	ramp := FrameSamples(rate, rampDur)
	var at time.Duration
	for i, d := range c.Pattern {
		start := FrameSamples(rate, at)
		at += d
		if i%2 == 1 {
			continue // off period: already zero
		}
		n := FrameSamples(rate, at) - start
		for j := range n {
			var v float64
			for _, f := range c.Freqs {
				v += math.Sin(2 * math.Pi * f * float64(j) / float64(rate))
			}
			g := 1.0
			if k := min(j, n-1-j); k < ramp {
				g = 0.5 - 0.5*math.Cos(math.Pi*float64(k)/float64(ramp))
			}
			out[start+j] = clampRound(amp * g * v)
		}
	}
	return out
}

// Ringback plays a country's ringing tone, repeating its cadence from the start of a tone
// period. Not safe for concurrent use: one per call leg.
type Ringback struct {
	p ClipPlayer
}

// NewRingback returns a ringback generator for country: "br", "us" (or "ca"), "eu" (or
// "de", "it"), "uk" (or "gb"), "fr", "es". Case-insensitive.
func NewRingback(country string) (*Ringback, error) {
	c, err := RingbackClip(country)
	if err != nil {
		return nil, err
	}
	return &Ringback{p: ClipPlayer{clip: c, Loop: true}}, nil
}

// Fill writes the next len(pcm) samples of ringing tone at ClipRate. It never allocates.
func (r *Ringback) Fill(pcm []int16) { r.p.Fill(pcm) }

// Reset restarts the cadence at the beginning of a tone period.
func (r *Ringback) Reset() { r.p.Reset() }
