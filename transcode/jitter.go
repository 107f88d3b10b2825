package transcode

import "sync"

// JitterConfig sizes a JitterBuffer. Zero values select the defaults in brackets.
type JitterConfig struct {
	Capacity    int // ring slots, i.e. the widest span of sequence numbers held [64]
	MaxPayload  int // largest payload accepted; larger ones are dropped (Stats.Oversize) [1500]
	TargetDepth int // packets buffered before playout (re)starts; the floor for any adaptive depth [1]
	MaxDepth    int // beyond this many buffered packets the oldest are dropped (Stats.Overflow) [Capacity]
}

// PopStatus says what Pop produced.
type PopStatus int

const (
	// PopEmpty: nothing to play (playout not started, or underrun). Caller plays
	// concealment/silence and keeps its clock running.
	PopEmpty PopStatus = iota
	// PopOK: payload is the next packet in sequence.
	PopOK
	// PopLost: the expected packet is missing but later ones exist: the caller conceals one
	// frame, with FEC from PeekNext when the codec has it.
	PopLost
)

func (s PopStatus) String() string {
	switch s {
	case PopEmpty:
		return "empty"
	case PopOK:
		return "ok"
	case PopLost:
		return "lost"
	}
	return "invalid"
}

// JitterStats are cumulative counters (not cleared by Reset).
type JitterStats struct {
	Pushed    uint64 // packets offered to Push
	Late      uint64 // arrived after their playout point (or too far behind to fit), dropped
	Duplicate uint64 // same sequence number already buffered, dropped
	Lost      uint64 // sequence numbers never played: PopLost returns and gaps skipped on resync/overflow
	Overflow  uint64 // buffered packets dropped to respect MaxDepth/Capacity
	Oversize  uint64 // payloads larger than MaxPayload, dropped
	Underrun  uint64 // Pop found the buffer empty after playout had started
	Resync    uint64 // sequence jumps that restarted the buffer
}

type jbSlot struct {
	ext   int64 // extended sequence number
	ts    uint32
	valid bool
	buf   []byte // len is the payload length; grows (once) up to MaxPayload
}

// JitterBuffer orders RTP packets of one source by sequence number and releases one per
// playout tick. Payloads are stored encoded (copied into preallocated slots, no allocation
// per packet) and decoded by the caller at playout, so codec PLC/FEC can run on loss.
//
// Sequence numbers are extended to 64 bits (RFC 3550 §A.1 style) so the 65535 -> 0 wrap is
// seamless. A jump of more than Capacity in either direction (sender restart, or a new SSRC
// the caller did not Reset for) is confirmed by a second packet following it and then
// resyncs the buffer, so a single stray packet cannot flush good audio and a real jump cannot
// stall playout.
//
// The methods are safe for concurrent use (a receive goroutine pushing, a playout ticker
// popping). A payload returned by Pop or PeekNext aliases the buffer's slot: it stays valid
// until the next Push or Pop. Use PopInto to copy it out under the lock instead.
type JitterBuffer struct {
	mu    sync.Mutex
	cfg   JitterConfig
	slots []jbSlot
	count int

	hasRef  bool
	maxExt  int64 // highest extended seq accepted
	head    int64 // next to play once playSet; lowest buffered before that
	playSet bool  // a playout point exists (late detection is active)
	started bool  // releasing packets (false before the first start and after an underrun)

	lastTS   uint32 // timestamp of the last packet played, for PopLost estimates
	lastExt  int64
	tsStep   uint32
	haveLast bool

	probeValid bool
	probeSeq   uint16
	probeTS    uint32
	probeBuf   []byte

	stats JitterStats
}

// NewJitterBuffer allocates all slots up front.
func NewJitterBuffer(cfg JitterConfig) *JitterBuffer {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 64
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 1500
	}
	if cfg.MaxDepth <= 0 || cfg.MaxDepth > cfg.Capacity {
		cfg.MaxDepth = cfg.Capacity
	}
	cfg.TargetDepth = clampDepth(cfg.TargetDepth, cfg.MaxDepth)
	j := &JitterBuffer{cfg: cfg, slots: make([]jbSlot, cfg.Capacity)}
	// One backing array for all payloads: one allocation, good locality. Each slot starts
	// with room for a typical voice packet, not MaxPayload: 64 slots of 1500 bytes were
	// 96 KiB per buffer, two per call, and nearly all of it resident (every page holds a
	// slot's first bytes), for 20 ms packets of 60-240 bytes. A larger payload grows its
	// slot once (store appends) and the slot keeps that room, so a stream of any packet
	// size is allocation-free once each slot has held one of its packets.
	size := min(cfg.MaxPayload, jbSlotInit)
	back := make([]byte, cfg.Capacity*size)
	for i := range j.slots {
		j.slots[i].buf = back[i*size : i*size : (i+1)*size]
	}
	j.probeBuf = make([]byte, 0, size)
	return j
}

// jbSlotInit is a slot's initial room: a 20 ms Opus packet at up to ~100 kbps, or 30 ms of
// G.711 (240 bytes) plus the one-byte tag the bridge prefixes.
const jbSlotInit = 256

func clampDepth(d, maxDepth int) int {
	return max(1, min(d, maxDepth))
}

// SetTargetDepth changes the number of packets buffered before playout (re)starts,
// clamped to [1, MaxDepth]. It takes effect at the next (re)start.
func (j *JitterBuffer) SetTargetDepth(d int) {
	j.mu.Lock()
	j.cfg.TargetDepth = clampDepth(d, j.cfg.MaxDepth)
	j.mu.Unlock()
}

// TargetDepth returns the current target depth.
func (j *JitterBuffer) TargetDepth() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cfg.TargetDepth
}

// Len is the number of packets buffered.
func (j *JitterBuffer) Len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.count
}

// Stats returns the cumulative counters.
func (j *JitterBuffer) Stats() JitterStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stats
}

// Reset empties the buffer and forgets the sequence space, e.g. on a source SSRC change.
// Counters are kept.
func (j *JitterBuffer) Reset() {
	j.mu.Lock()
	j.reset()
	j.mu.Unlock()
}

func (j *JitterBuffer) reset() {
	for i := range j.slots {
		j.slots[i].valid = false
	}
	j.count = 0
	j.hasRef, j.playSet, j.started, j.haveLast, j.probeValid = false, false, false, false, false
	j.tsStep = 0
}

func (j *JitterBuffer) slot(ext int64) *jbSlot {
	return &j.slots[ext%int64(len(j.slots))]
}

// Push stores a copy of payload. Duplicates, packets older than the playout point (late)
// and oversize payloads are counted and dropped.
func (j *JitterBuffer) Push(seq uint16, ts uint32, payload []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stats.Pushed++
	if len(payload) > j.cfg.MaxPayload {
		j.stats.Oversize++
		return
	}
	j.push(seq, ts, payload)
}

func (j *JitterBuffer) push(seq uint16, ts uint32, payload []byte) {
	capN := int64(len(j.slots))
	if !j.hasRef {
		// Start the extended space high so it never goes negative.
		ext := int64(1)<<32 + int64(seq)
		j.hasRef, j.maxExt, j.head = true, ext, ext
		j.store(ext, ts, payload)
		return
	}
	ext := j.maxExt + int64(int16(seq-uint16(j.maxExt)))
	if ext > j.maxExt+capN || ext < j.head-capN {
		j.jump(seq, ts, payload)
		return
	}
	if ext < j.head {
		// Before the first playout an earlier packet becomes the new head (in store) if
		// the span still fits; after it, it missed its playout point.
		if j.playSet || j.maxExt-ext >= capN {
			j.stats.Late++
			return
		}
	}
	if s := j.slot(ext); s.valid && s.ext == ext {
		j.stats.Duplicate++
		return
	}
	// Make room in the ring: the window is [head, head+Capacity).
	for ext >= j.head+capN {
		j.dropFront()
	}
	j.store(ext, ts, payload)
	for j.count > j.cfg.MaxDepth {
		j.dropFront()
	}
}

// jump handles a packet far outside the window: remember it, and resync when the next
// packet confirms a new sequence space.
func (j *JitterBuffer) jump(seq uint16, ts uint32, payload []byte) {
	if d := int16(seq - j.probeSeq); j.probeValid && d > 0 && int(d) <= len(j.slots)/2 {
		pseq, pts := j.probeSeq, j.probeTS
		j.stats.Resync++
		j.stats.Overflow += uint64(j.count)
		j.reset()
		j.push(pseq, pts, j.probeBuf)
		j.push(seq, ts, payload)
		return
	}
	j.probeValid, j.probeSeq, j.probeTS = true, seq, ts
	j.probeBuf = append(j.probeBuf[:0], payload...)
}

func (j *JitterBuffer) store(ext int64, ts uint32, payload []byte) {
	if !j.playSet && (j.count == 0 || ext < j.head) {
		j.head = ext // before the first playout the head is the oldest packet buffered
	}
	s := j.slot(ext)
	s.ext, s.ts, s.valid = ext, ts, true
	s.buf = append(s.buf[:0], payload...)
	j.count++
	if ext > j.maxExt {
		j.maxExt = ext
	}
	if !j.started && j.count >= j.cfg.TargetDepth {
		j.start()
	}
}

// start begins (or resumes after an underrun) playout at the oldest buffered packet. On a
// resume, the sequence numbers skipped meanwhile were never received in time: they were
// already "played" as the underrun and are counted lost rather than concealed again.
func (j *JitterBuffer) start() {
	if j.playSet {
		for !j.slot(j.head).valid || j.slot(j.head).ext != j.head {
			j.head++
			j.stats.Lost++
		}
	}
	j.started, j.playSet = true, true
}

// dropFront discards the packet (or gap) at the head of the window.
func (j *JitterBuffer) dropFront() {
	s := j.slot(j.head)
	if s.valid && s.ext == j.head {
		s.valid = false
		j.count--
		j.stats.Overflow++
	} else if j.playSet {
		j.stats.Lost++
	}
	j.head++
	if !j.playSet && j.count > 0 { // keep the head on the oldest buffered packet
		for !j.slot(j.head).valid || j.slot(j.head).ext != j.head {
			j.head++
		}
	}
}

// Pop releases the next packet in sequence order. See PopStatus. For PopLost, ts is an
// estimate (last played timestamp plus the observed step; 0 if not yet known).
func (j *JitterBuffer) Pop() (payload []byte, ts uint32, st PopStatus) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pop()
}

// PopInto is Pop copying the payload into dst (truncated to len(dst)); it returns the
// payload length copied.
func (j *JitterBuffer) PopInto(dst []byte) (n int, ts uint32, st PopStatus) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p, ts, st := j.pop()
	return copy(dst, p), ts, st
}

func (j *JitterBuffer) pop() ([]byte, uint32, PopStatus) {
	if !j.started {
		return nil, 0, PopEmpty
	}
	if j.count == 0 {
		j.started = false
		j.stats.Underrun++
		return nil, 0, PopEmpty
	}
	s := j.slot(j.head)
	if s.valid && s.ext == j.head {
		s.valid = false
		j.count--
		if j.haveLast && s.ext == j.lastExt+1 {
			j.tsStep = s.ts - j.lastTS
		}
		j.lastTS, j.lastExt, j.haveLast = s.ts, s.ext, true
		j.head++
		return s.buf, s.ts, PopOK
	}
	j.stats.Lost++
	var ts uint32
	if j.haveLast && j.tsStep != 0 {
		ts = j.lastTS + j.tsStep
		j.lastTS, j.lastExt = ts, j.head
	}
	j.head++
	return nil, ts, PopLost
}

// PeekNext returns the packet the next Pop will release, if it is buffered — after a
// PopLost that is the packet following the missing one, whose in-band FEC (Opus LBRR)
// recovers the lost frame (Decoder.DecodeFEC).
func (j *JitterBuffer) PeekNext() ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.playSet {
		return nil, false
	}
	s := j.slot(j.head)
	if s.valid && s.ext == j.head {
		return s.buf, true
	}
	return nil, false
}
