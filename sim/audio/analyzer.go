// Package audio measures received audio for ponte's simulators and tests: whether an
// expected tone came through (level, continuity, gaps) and the one-way delay of a
// two-frequency marker sequence. It is test tooling: it allocates as it records and must
// not be imported by production packages.
package audio

import (
	"math"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

// Tone window criteria.
const (
	// ToleranceDB is how far a window's tone level may be from the expected level.
	ToleranceDB = 3.0
	// dominance: the expected tone must carry at least this share of the window's power
	// (-3 dB), so speech, noise or a wrong tone at the right level does not count.
	dominance = 0.5
	// WindowDuration is the analysis window.
	WindowDuration = 20 * time.Millisecond
)

type window struct {
	at    time.Time // arrival time of the window's first sample
	tone  bool
	power float64 // normalised mean square
}

// Analyzer consumes received PCM with its arrival time and measures how well an expected
// tone came through, in 20 ms windows. Safe for concurrent use.
type Analyzer struct {
	mu         sync.Mutex
	rate       int
	freq, dbfs float64
	buf        []int16 // partial window
	bufAt      time.Time
	windows    []window
}

// NewAnalyzer expects a tone of expectFreq Hz at expectDBFS (LevelDBFS scale) in PCM at rate.
func NewAnalyzer(rate int, expectFreq float64, expectDBFS float64) *Analyzer {
	n := rate * int(WindowDuration) / int(time.Second)
	return &Analyzer{rate: rate, freq: expectFreq, dbfs: expectDBFS, buf: make([]int16, 0, n)}
}

// Add consumes pcm of any length; at is the arrival time of pcm[0], and sample k is taken
// to arrive at at + k/rate. Windows span calls.
func (a *Analyzer) Add(pcm []int16, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := cap(a.buf)
	for i := 0; i < len(pcm); {
		if len(a.buf) == 0 {
			a.bufAt = at.Add(sampleOffset(i, a.rate))
		}
		k := min(n-len(a.buf), len(pcm)-i)
		a.buf = append(a.buf, pcm[i:i+k]...)
		i += k
		if len(a.buf) == n {
			a.windows = append(a.windows, a.measure(a.buf, a.bufAt))
			a.buf = a.buf[:0]
		}
	}
}

func sampleOffset(k, rate int) time.Duration {
	return time.Duration(int64(k) * int64(time.Second) / int64(rate))
}

func (a *Analyzer) measure(w []int16, at time.Time) window {
	var sum float64
	for _, x := range w {
		f := float64(x)
		sum += f * f
	}
	total := sum / float64(len(w)) / (32768 * 32768)
	tp := transcode.Goertzel(w, a.rate, a.freq)
	tl := transcode.PowerToDBFS(tp)
	tone := total > 0 && tp >= dominance*total && math.Abs(tl-a.dbfs) <= ToleranceDB
	return window{at: at, tone: tone, power: total}
}

// Report summarises the tone reception.
type Report struct {
	Windows     int           // 20 ms windows that arrived in [from, to), skipped ones included
	Skipped     int           // windows that arrived inside a skip span: neither tone nor gap
	ToneWindows int           // windows where the expected tone is dominant and within ±3 dB of the expected level
	ToneRatio   float64       // ToneWindows/(Windows-Skipped)
	MaxGap      time.Duration // longest time without the tone after the first tone window (see Report)
	FirstTone   time.Time     // arrival time of the first tone window (zero if none)
	LastTone    time.Time     // arrival time of the last tone window (zero if none)
	MeanDBFS    float64       // power-averaged level of all windows (silence floor -120)
}

// Span is the time interval [From, To).
type Span struct{ From, To time.Time }

func inAny(spans []Span, t time.Time) bool {
	for _, s := range spans {
		if !t.Before(s.From) && t.Before(s.To) {
			return true
		}
	}
	return false
}

// Report covers the windows arriving in [from, to). MaxGap is measured between the starts
// of consecutive tone windows minus one window (so back-to-back windows give 0 and windows
// that never arrived count as gap), and for a trailing run without tone from the last tone
// window to the last window received. Compare Windows with the expected count
// ((to-from)/20 ms) to detect audio that stopped arriving altogether.
//
// Windows arriving inside a skip span are not judged: they count in Windows and Skipped
// only, and a gap that reaches into one is not a gap. Tests pass the spans during which
// the machine provably starved the process (a CPU stall measured by a watcher), so what
// is judged is the gateway, not the scheduler; the caller decides how much skipping it
// accepts.
func (a *Analyzer) Report(from, to time.Time, skip ...Span) Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	var r Report
	var psum float64
	var lastTone, gapFrom, last time.Time
	for _, w := range a.windows {
		if w.at.Before(from) || !w.at.Before(to) {
			continue
		}
		r.Windows++
		psum += w.power
		last = w.at
		if inAny(skip, w.at) {
			r.Skipped++
			if !gapFrom.IsZero() {
				gapFrom = w.at // the gap restarts after the skipped stretch
			}
			continue
		}
		if !w.tone {
			continue
		}
		r.ToneWindows++
		if r.FirstTone.IsZero() {
			r.FirstTone = w.at
		} else if g := w.at.Sub(gapFrom) - WindowDuration; g > r.MaxGap {
			r.MaxGap = g
		}
		lastTone, gapFrom = w.at, w.at
	}
	if !gapFrom.IsZero() && last.After(gapFrom) {
		if g := last.Sub(gapFrom); g > r.MaxGap {
			r.MaxGap = g
		}
	}
	r.LastTone = lastTone
	if n := r.Windows - r.Skipped; n > 0 {
		r.ToneRatio = float64(r.ToneWindows) / float64(n)
	}
	if r.Windows > 0 {
		r.MeanDBFS = transcode.PowerToDBFS(psum / float64(r.Windows))
	} else {
		r.MeanDBFS = transcode.SilenceDBFS
	}
	return r
}
