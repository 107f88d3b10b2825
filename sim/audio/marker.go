package audio

import (
	"math"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

// Delay measurement with a marker sequence: the sender alternates between two frequencies
// every period; the receiver detects each transition and the delay of a transition is its
// receive time minus its send time. Each sent transition is paired with the first one
// detected after it (matchSlack early at most) and less than a period later, so a
// transition lost in an outage, or a spurious detection, costs only itself; delays of a
// period or more cannot be measured (choose period longer than the delay under test).
// Choose f1 and f2 at least 300 Hz apart (the 20 ms analysis window resolves ~100 Hz).

// MarkerSender generates the marker tone and records when each transition was sent.
// Safe for concurrent use with a MarkerReceiver reading its transitions.
type MarkerSender struct {
	mu          sync.Mutex
	rate        int
	f1, f2      float64
	gen         *transcode.ToneGen
	period      int64 // samples
	pos         int64 // samples generated so far
	switched    int64 // sample index of the last transition made
	onF2        bool
	transitions []time.Time
}

// NewMarkerSender alternates f1 and f2 (starting with f1) every period at peak amp.
func NewMarkerSender(rate int, f1, f2 float64, amp float64, period time.Duration) *MarkerSender {
	p := int64(rate) * int64(period) / int64(time.Second)
	return &MarkerSender{rate: rate, f1: f1, f2: f2, gen: transcode.NewToneGen(f1, rate, amp), period: max(p, 1)}
}

// Fill writes the next len(pcm) samples; at is the send time of pcm[0] (sample k is sent at
// at + k/rate). A transition inside pcm is recorded with its exact sample time.
func (s *MarkerSender) Fill(pcm []int16, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(pcm); {
		// A transition is recorded when the first sample of the new tone is generated.
		if s.pos > 0 && s.pos%s.period == 0 && s.switched != s.pos {
			s.switched = s.pos
			s.onF2 = !s.onF2
			if s.onF2 {
				s.gen.SetFreq(s.f2)
			} else {
				s.gen.SetFreq(s.f1)
			}
			s.transitions = append(s.transitions, at.Add(sampleOffset(i, s.rate)))
		}
		next := (s.pos/s.period + 1) * s.period // sample index of the next transition
		k := int(min(int64(len(pcm)-i), next-s.pos))
		s.gen.Fill(pcm[i : i+k])
		lo, hi := s.period/2-s.period/10, s.period/2+s.period/10
		for j := range int64(k) {
			if ph := (s.pos + j) % s.period; ph >= lo && ph < hi {
				pcm[i+int(j)] = 0
			}
		}
		i += k
		s.pos += int64(k)
	}
}

// Transitions returns the send times of the transitions so far (a copy).
func (s *MarkerSender) Transitions() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.transitions...)
}

// MarkerReceiver detects the transitions of a marker sequence in received PCM.
type MarkerReceiver struct {
	mu     sync.Mutex
	rate   int
	f1, f2 float64
	win    int // window length (20 ms)
	hop    int // analysis hop (2.5 ms)

	ring     []int16 // last win samples, circular
	ringAt   []int64 // arrival time (unix ns) of each sample in ring
	ringPos  int
	filled   int
	sinceHop int
	scratch  []int16

	state    int // 0 unknown, 1 on f1, 2 on f2
	prevD    float64
	prevT    int64
	havePrev bool
	cross    int64 // interpolated time where the other tone became the stronger, 0 if none

	sender      *MarkerSender
	transitions []time.Time
}

// Detection thresholds.
const (
	confirmDB   = 6.0   // the new tone must lead by this much to confirm a transition
	minToneDBFS = -50.0 // below this the window is treated as silence
	// markerShare: the two marker tones together must carry this share of the window's
	// power. A window straddling a transition splits power between the tones and codecs
	// smear it, so this is looser than the Analyzer's dominance.
	markerShare = 0.25
)

// NewMarkerReceiver detects alternations between f1 and f2 in PCM at rate.
func NewMarkerReceiver(rate int, f1, f2 float64) *MarkerReceiver {
	win := rate / 50
	return &MarkerReceiver{
		rate: rate, f1: f1, f2: f2, win: win, hop: max(1, rate/400),
		ring: make([]int16, win), ringAt: make([]int64, win), scratch: make([]int16, win),
	}
}

// Attach links the sender whose transitions Delays matches against (same process).
func (r *MarkerReceiver) Attach(s *MarkerSender) {
	r.mu.Lock()
	r.sender = s
	r.mu.Unlock()
}

// Add consumes received pcm; at is the arrival time of pcm[0] (sample k at at + k/rate).
func (r *MarkerReceiver) Add(pcm []int16, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	base := at.UnixNano()
	for k, x := range pcm {
		r.ring[r.ringPos] = x
		r.ringAt[r.ringPos] = base + int64(k)*int64(time.Second)/int64(r.rate)
		r.ringPos = (r.ringPos + 1) % r.win
		if r.filled < r.win {
			r.filled++
		}
		r.sinceHop++
		if r.filled == r.win && r.sinceHop >= r.hop {
			r.sinceHop = 0
			r.analyse()
		}
	}
}

// analyse looks at the last window. The transition instant is where the two tones are
// equally strong: then the window is centred on the switch, so its midpoint time is the
// transition's arrival time. That crossing is interpolated between hops (in dB), and
// confirmed once the new tone leads by confirmDB.
func (r *MarkerReceiver) analyse() {
	n := copy(r.scratch, r.ring[r.ringPos:])
	copy(r.scratch[n:], r.ring[:r.ringPos])
	// The Hann window is symmetric about (win-1)/2: with old tone in samples [0, win/2) and
	// new tone from sample win/2 on, both weigh equally, so the crossing time is the time
	// of sample win/2 — the first sample of the new tone.
	mid := r.ringAt[(r.ringPos+r.win/2)%r.win]

	p1 := transcode.Goertzel(r.scratch, r.rate, r.f1)
	p2 := transcode.Goertzel(r.scratch, r.rate, r.f2)
	if transcode.PowerToDBFS(p1+p2) < minToneDBFS {
		r.havePrev = false // silence: no interpolation across it
		return
	}
	if p1+p2 < markerShare*meanSquare(r.scratch) {
		return // mostly something else (noise, codec smear): skip, keep the last point
	}
	d := transcode.PowerToDBFS(p2) - transcode.PowerToDBFS(p1) // > 0: f2 stronger
	switch r.state {
	case 0:
		if d <= -confirmDB {
			r.state = 1
		} else if d >= confirmDB {
			r.state = 2 // joined late: transitions will be off by one (documented)
		}
	default:
		if r.state == 2 {
			d = -d // d > 0 now always means "the other tone is stronger"
		}
		if r.havePrev && r.prevD < 0 && d >= 0 {
			r.cross = r.prevT + int64(float64(mid-r.prevT)*(-r.prevD)/(d-r.prevD))
		} else if d < 0 {
			r.cross = 0
		}
		if d >= confirmDB {
			t := r.cross
			if t == 0 {
				t = mid
			}
			r.transitions = append(r.transitions, time.Unix(0, t))
			r.state = 3 - r.state
			r.cross = 0
			d = -d // relative to the new state
		}
	}
	r.prevD, r.prevT, r.havePrev = d, mid, true
}

func meanSquare(pcm []int16) float64 {
	var s float64
	for _, x := range pcm {
		f := float64(x)
		s += f * f
	}
	return s / float64(len(pcm)) / (32768 * 32768)
}

// Transitions returns the detected transition arrival times (a copy).
func (r *MarkerReceiver) Transitions() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.transitions...)
}

// Delays returns receive minus send time for every transition of the attached sender that
// was detected (see the pairing rule above). Without an attached sender it returns nil.
func (r *MarkerReceiver) Delays() []time.Duration {
	d, _ := r.DelaysBetween(time.Time{}, time.Unix(1<<40, 0))
	return d
}

// DelaysBetween is Delays for the transitions sent in [from, to); missed counts those
// of them no detection was paired with.
func (r *MarkerReceiver) DelaysBetween(from, to time.Time) (d []time.Duration, missed int) {
	r.mu.Lock()
	s := r.sender
	recv := append([]time.Time(nil), r.transitions...)
	r.mu.Unlock()
	if s == nil {
		return nil, 0
	}
	period := time.Duration(s.period) * time.Second / time.Duration(s.rate) // fixed at construction
	return MatchDelays(s.Transitions(), recv, from, to, period-matchSlack)
}

// matchSlack: how early a detection may be and still pair with a transition (the
// detector interpolates the crossing between 2.5 ms hops).
const matchSlack = 5 * time.Millisecond

// MatchDelays pairs each sent transition in [from, to) with the first detection in
// [sent-matchSlack, sent+maxLag) not paired already (both lists in time order), and
// returns the delays of the pairs and how many sent transitions found none.
func MatchDelays(sent, recv []time.Time, from, to time.Time, maxLag time.Duration) (d []time.Duration, missed int) {
	j := 0
	for _, x := range sent {
		for j < len(recv) && recv[j].Before(x.Add(-matchSlack)) {
			j++
		}
		if x.Before(from) || !x.Before(to) {
			continue
		}
		if j < len(recv) && recv[j].Before(x.Add(maxLag)) {
			d = append(d, recv[j].Sub(x))
			j++
			continue
		}
		missed++
	}
	return d, missed
}

// DelayStats summarises delays: min, mean, max (zero for none).
func DelayStats(d []time.Duration) (lo, mean, hi time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	lo, hi = time.Duration(math.MaxInt64), time.Duration(math.MinInt64)
	var sum time.Duration
	for _, x := range d {
		lo, hi = min(lo, x), max(hi, x)
		sum += x
	}
	return lo, sum / time.Duration(len(d)), hi
}
