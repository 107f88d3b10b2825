package loadgen

import (
	"fmt"
	"slices"
	"time"

	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

// The voice of each simulated side is a pre-encoded one-second loop (issue 7: the load
// generator replays pre-encoded Opus/G.711 so that its own CPU stays small): 42 frames of the
// side's tone, a 40 ms pause, then a delay marker, 3 frames of markF1Hz and 3 of markF2Hz.
// The pause is speech's: without any, a gateway that wins back a backlog (from a sender's
// burst, or PBX audio held during the accept wait) only by dropping silent frames, as ponte
// does, could never do so, and the delay would measure the load generator's stalls. The f1 -> f2
// switch is at sample 0 of frame markAt, so its send instant is the send instant of that
// frame's packet. Timestamps cannot ride in a transcoded payload, so the delay through ponte
// is measured from the audio, as sim/audio's marker sequence does: the receiver finds the
// instant the two marker tones are equally strong (markerDetector), in arrival time.
const (
	loopFrames   = 50 // 1 s
	pauseFrom    = 42 // first frame of the pause
	markFrom     = 44 // first frame of f1
	markAt       = 47 // first frame of f2: the transition
	frameSamples = 160
	frameDur     = 20 * time.Millisecond
	toneDBFS     = -12.0
	markF1Hz     = wasim.MarkerF1Hz // 700 Hz and 1300 Hz: far from both tones (440, 1000 Hz)
	markF2Hz     = wasim.MarkerF2Hz // and >= 300 Hz apart (sim/audio/marker.go)
	// maxMatch: a detected transition is matched with the latest one sent before it, up to
	// half a loop earlier; the next earlier one is a whole loop (1 s) away, so no other fits.
	maxMatch = loopFrames * frameDur / 2
	// matchSlack admits a detection up to this much before its send instant (detector
	// resolution: its 2.5 ms hop and interpolation).
	matchSlack = frameDur
)

// loopPCM is one loop of the voice at 8 kHz: toneHz, then the marker, phase-continuous.
func loopPCM(toneHz float64) []int16 {
	pcm := make([]int16, loopFrames*frameSamples)
	g := transcode.NewToneGen(toneHz, 8000, transcode.AmpForDBFS(toneDBFS))
	g.Fill(pcm[:pauseFrom*frameSamples]) // pcm[pauseFrom*frameSamples:markFrom*frameSamples] stays silent
	g.SetFreq(markF1Hz)
	g.Fill(pcm[markFrom*frameSamples : markAt*frameSamples])
	g.SetFreq(markF2Hz)
	g.Fill(pcm[markAt*frameSamples:])
	return pcm
}

// encodeLoop encodes a loop frame by frame. It encodes it twice and keeps the second round,
// so the encoder state at the loop's start is the one its end leaves: replayed round and
// round, the frames join as a continuous stream would.
func encodeLoop(codec string, pcm []int16, o transcode.EncoderOptions) ([][]byte, error) {
	enc, err := transcode.NewEncoder(codec, 8000, o)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(pcm)/frameSamples)
	buf := make([]byte, 1500)
	for round := range 2 {
		for i := range out {
			n, err := enc.Encode(pcm[i*frameSamples:(i+1)*frameSamples], buf)
			if err != nil {
				return nil, fmt.Errorf("loadgen: encode %s loop: %w", codec, err)
			}
			if round == 1 {
				out[i] = slices.Clone(buf[:n])
			}
		}
	}
	return out, nil
}

// markerDetector finds the f1 -> f2 transitions in received 8 kHz PCM. It slides a 20 ms
// window in 2.5 ms hops and measures both marker tones with Goertzel (Hann-windowed). The
// window is centred on the switch when the tones are equally strong, so that crossing,
// interpolated in dB between hops, is the arrival time of the transition (the method of
// sim/audio/marker.go). Unlike sim/audio's MarkerReceiver, which expects the two tones to
// alternate without pause, it re-arms on a confirmed f1 after every transition: the voice
// between markers is another tone. Not safe for concurrent use (one reader per stream).
type markerDetector struct {
	ring     [frameSamples]int16
	ringAt   [frameSamples]int64 // arrival time (unix ns) of each sample in ring
	pos      int                 // oldest sample
	filled   int
	sinceHop int
	scratch  [frameSamples]int16

	armed    bool // f1 confirmed: the next switch to f2 is a transition
	prevD    float64
	prevT    int64
	havePrev bool
	cross    int64

	found []time.Time
}

const (
	detHop       = 20   // samples: 2.5 ms
	confirmDB    = 6.0  // the leading tone must lead by this much
	minMarkDBFS  = -50  // below: silence
	minMarkShare = 0.25 // the two marker tones carry at least this share of the window's power
)

// add consumes pcm; at is the arrival time of pcm[0], sample k arrives at at + k/8000.
func (d *markerDetector) add(pcm []int16, at time.Time) {
	base := at.UnixNano()
	for k, x := range pcm {
		d.ring[d.pos] = x
		d.ringAt[d.pos] = base + int64(k)*int64(time.Second)/8000
		d.pos = (d.pos + 1) % frameSamples
		d.filled = min(d.filled+1, frameSamples)
		d.sinceHop++
		if d.filled == frameSamples && d.sinceHop >= detHop {
			d.sinceHop = 0
			d.analyse()
		}
	}
}

func (d *markerDetector) analyse() {
	n := copy(d.scratch[:], d.ring[d.pos:])
	copy(d.scratch[n:], d.ring[:d.pos])
	mid := d.ringAt[(d.pos+frameSamples/2)%frameSamples] // first sample of the second half
	p1 := transcode.Goertzel(d.scratch[:], 8000, markF1Hz)
	p2 := transcode.Goertzel(d.scratch[:], 8000, markF2Hz)
	if transcode.PowerToDBFS(p1+p2) < minMarkDBFS || p1+p2 < minMarkShare*meanSquare(d.scratch[:]) {
		d.armed, d.havePrev, d.cross = false, false, 0 // not the marker: wait for f1 again
		return
	}
	v := transcode.PowerToDBFS(p2) - transcode.PowerToDBFS(p1) // > 0: f2 stronger
	if !d.armed {
		if v <= -confirmDB {
			d.armed = true
			d.prevD, d.prevT, d.havePrev = v, mid, true
		}
		return
	}
	if d.havePrev && d.prevD < 0 && v >= 0 {
		d.cross = d.prevT + int64(float64(mid-d.prevT)*(-d.prevD)/(v-d.prevD))
	} else if v < 0 {
		d.cross = 0
	}
	if v >= confirmDB {
		t := d.cross
		if t == 0 {
			t = mid
		}
		d.found = append(d.found, time.Unix(0, t))
		d.armed, d.havePrev, d.cross = false, false, 0
		return
	}
	d.prevD, d.prevT, d.havePrev = v, mid, true
}

func meanSquare(pcm []int16) float64 {
	var s float64
	for _, x := range pcm {
		f := float64(x)
		s += f * f
	}
	return s / float64(len(pcm)) / (32768 * 32768)
}

// matchDelays pairs each detected transition in [from, to) with the latest transition sent
// no later than matchSlack after it and at most maxMatch before it (both sorted). It returns
// receive minus send per pair and how many detections found no partner.
func matchDelays(sent, recv []time.Time, from, to time.Time) (ds []time.Duration, unmatched int) {
	pairs, unmatched := matchPairs(sent, recv, from, to)
	for _, p := range pairs {
		ds = append(ds, p.recv.Sub(p.sent))
	}
	return ds, unmatched
}

type markPair struct{ sent, recv time.Time }

// matchPairs is matchDelays with the pairs themselves.
func matchPairs(sent, recv []time.Time, from, to time.Time) (pairs []markPair, unmatched int) {
	j := 0
	for _, r := range recv {
		if r.Before(from) || !r.Before(to) {
			continue
		}
		for j+1 < len(sent) && !sent[j+1].After(r.Add(matchSlack)) {
			j++
		}
		if j < len(sent) {
			if d := r.Sub(sent[j]); d >= -matchSlack && d <= maxMatch {
				pairs = append(pairs, markPair{sent: sent[j], recv: r})
				continue
			}
		}
		unmatched++
	}
	return pairs, unmatched
}
