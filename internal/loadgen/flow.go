package loadgen

import (
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/pbx"
)

// flow is one direction of one call as its two ends see it: what the sender sent (packets,
// marker send instants) and what the receiver got (RTP sequence numbers, marker arrivals).
// The sender's and the receiver's hooks run on their own goroutines; the runner reads at
// the end of the call.
type flow struct {
	mu    sync.Mutex
	sent  int
	marks []time.Time // send instants of the f1 -> f2 transitions
	seq   seqCount
	det   *markerDetector // nil: audio not analysed (-media=false)
}

func newFlow(analyse bool) *flow {
	f := &flow{}
	if analyse {
		f.det = &markerDetector{}
	}
	return f
}

// onSent is the sender's hook for the n-th frame of its loop.
func (f *flow) onSent(n int, at time.Time) {
	f.mu.Lock()
	f.sent++
	if n%loopFrames == markAt {
		f.marks = append(f.marks, at)
	}
	f.mu.Unlock()
}

// onRTP is the receiver's hook for every RTP packet.
func (f *flow) onRTP(h *rtp.Header) {
	f.mu.Lock()
	f.seq.add(h.SequenceNumber)
	f.mu.Unlock()
}

// onAudio is the receiver's hook for every decoded frame.
func (f *flow) onAudio(pcm []int16, at time.Time) {
	if f.det == nil {
		return
	}
	f.mu.Lock()
	f.det.add(pcm, at)
	f.mu.Unlock()
}

// snapshot copies what the flow holds.
func (f *flow) snapshot() (sent int, marks, found []time.Time, seq seqCount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	marks = slices.Clone(f.marks)
	if f.det != nil {
		found = slices.Clone(f.det.found)
	}
	return f.sent, marks, found, f.seq
}

// seqCount counts received packets against the sequence numbers they carry (RFC 3550
// appendix A.1, A.3): expected = extended highest - first + 1, lost = expected - received
// (duplicates can make it negative; it is reported as 0 then).
type seqCount struct {
	have       bool
	first, max int64 // extended sequence numbers
	received   int
}

func (s *seqCount) add(seq uint16) {
	if !s.have {
		s.have, s.first, s.max = true, int64(seq), int64(seq)
		s.received = 1
		return
	}
	ext := s.max + int64(int16(seq-uint16(s.max))) // nearest to the highest so far: wraps extend
	if ext > s.max {
		s.max = ext
	}
	if ext < s.first {
		s.first = ext // reordered ahead of the first
	}
	s.received++
}

func (s seqCount) expected() int {
	if !s.have {
		return 0
	}
	return int(s.max - s.first + 1)
}

func (s seqCount) lost() int { return max(0, s.expected()-s.received) }

// pbxSide is the PBX end of a call's two flows, found from the pbx.Call the simulator's
// hooks get: its packets may arrive before the runner has matched the call.
type pbxSide struct {
	toPBX   *flow // received by the PBX
	fromPBX *flow // sent by the PBX
}

type pbxSides struct {
	analyse bool
	m       sync.Map // *pbx.Call -> *pbxSide
}

func (s *pbxSides) get(c *pbx.Call) *pbxSide {
	if v, ok := s.m.Load(c); ok {
		return v.(*pbxSide)
	}
	v, _ := s.m.LoadOrStore(c, &pbxSide{toPBX: newFlow(s.analyse), fromPBX: newFlow(false)})
	return v.(*pbxSide)
}

func (s *pbxSides) drop(c *pbx.Call) { s.m.Delete(c) }
