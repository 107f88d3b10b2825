package transcode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// RFC 4733 telephone-event payloads, the receive-side Detector and the send-side Generator.
//
// Clocks: ponte negotiates telephone-event/8000 on both legs (Meta offers it at 8000 and the
// PBX side uses 8000), so Event.Duration and Digit.Duration are always 8 kHz units and are
// never scaled. The RTP timestamp of an event belongs to the stream that carries it (48 kHz
// units toward Meta when it shares the Opus stream's clock) and is owned by the caller.

// Sentinel errors for RFC 4733 parsing.
var (
	ErrShortPayload     = errors.New("rfc4733: payload shorter than 4 bytes")
	ErrMalformedPayload = errors.New("rfc4733: payload length not a multiple of 4")
)

// Event is one RFC 4733 §2.3 event block.
type Event struct {
	Code     uint8  // event code (§3.2: DTMF 0-9, *=10, #=11, A-D=12-15)
	End      bool   // E bit (§2.3.2): this packet reports the end of the event
	Volume   uint8  // power level, 0..63, meaning -0..-63 dBm0 (§2.3.4)
	Duration uint16 // §2.3.5: in the RTP clock of the payload type; 8 kHz units in ponte
}

// EventSize is the size of one event block on the wire.
const EventSize = 4

// ParseEvent decodes the first event block of an RFC 4733 payload (§2.3):
//
//	0                   1                   2                   3
//	0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	|     event     |E|R| volume    |          duration             |
//
// The R bit is ignored as §2.3.3 requires. Payloads of several blocks (§2.5.1.5 packing)
// are accepted and the first block is returned; a length that is not a multiple of 4 is
// malformed.
func ParseEvent(p []byte) (Event, error) {
	if len(p) < EventSize {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrShortPayload, len(p))
	}
	if len(p)%EventSize != 0 {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrMalformedPayload, len(p))
	}
	return Event{
		Code:     p[0],
		End:      p[1]&0x80 != 0,
		Volume:   p[1] & 0x3f,
		Duration: binary.BigEndian.Uint16(p[2:4]),
	}, nil
}

// Put writes the event's 4 bytes into b (R bit zero, volume masked to 6 bits) and returns 4.
// b must hold at least 4 bytes.
func (e Event) Put(b []byte) int {
	_ = b[3]
	b[0] = e.Code
	b[1] = e.Volume & 0x3f
	if e.End {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:4], e.Duration)
	return EventSize
}

// DigitCode maps a DTMF character to its RFC 4733 §3.2 event code: '0'-'9' -> 0-9,
// '*' -> 10, '#' -> 11, 'A'-'D' (or 'a'-'d') -> 12-15.
func DigitCode(r rune) (uint8, bool) {
	switch {
	case r >= '0' && r <= '9':
		return uint8(r - '0'), true
	case r == '*':
		return 10, true
	case r == '#':
		return 11, true
	case r >= 'A' && r <= 'D':
		return uint8(r-'A') + 12, true
	case r >= 'a' && r <= 'd':
		return uint8(r-'a') + 12, true
	}
	return 0, false
}

// DigitRune is the inverse of DigitCode; codes above 15 (non-DTMF events) give '?'.
func DigitRune(code uint8) rune {
	switch {
	case code <= 9:
		return rune('0' + code)
	case code == 10:
		return '*'
	case code == 11:
		return '#'
	case code <= 15:
		return rune('A' + code - 12)
	}
	return '?'
}

// Digit is a completed event as reported by Detector.
type Digit struct {
	Code     uint8
	Duration uint16 // 8 kHz units; saturates at 0xFFFF for segmented long events
	TS       uint32 // RTP timestamp of the event start (first segment), in the sender's clock
}

// Detector reassembles events from telephone-event packets of one stream.
//
// An event is identified by its RTP timestamp (§2.5.2.2 / §2.5.1.2: all packets of an event
// carry the timestamp of its start), never by the marker bit, which some carriers never set.
// The E bit completes an event; its retransmissions (§2.5.1.4) and any late packet of an
// event already reported are ignored, so each digit is reported once. If all End packets are
// lost the event completes when the next event starts or, at the latest, timeout after its
// last packet (Expire) — §2.5.2.5 soft-state style.
//
// Push and Expire return at most one digit; when one packet completes two events (a new
// event whose first packet already carries E while the previous one never ended), the
// second is queued and returned by the next Push or Expire. Call Expire periodically (e.g.
// every playout tick). Detector does not allocate.
type Detector struct {
	timeout time.Duration

	active   bool
	curTS    uint32 // timestamp of the current segment
	startTS  uint32 // timestamp of the event's first segment
	curCode  uint8
	curDur   uint32 // accumulated over §2.5.1.3 segments
	segDur   uint16 // duration of the current segment
	lastSeen time.Time

	doneValid bool
	doneTS    uint32 // start timestamp of the last completed event (or segment)

	queue  [4]Digit
	qHead  int
	qCount int
}

// NewDetector returns a Detector that completes a stalled event timeout after its last
// packet. A value of about 3 × the packet interval plus jitter (e.g. 200–500 ms) suits DTMF.
func NewDetector(timeout time.Duration) *Detector {
	return &Detector{timeout: timeout}
}

// Reset forgets all state, e.g. on a new SSRC.
func (d *Detector) Reset() {
	t := d.timeout
	*d = Detector{timeout: t}
}

// Push feeds one telephone-event packet: ts is its RTP timestamp. It returns a digit when
// one completes.
func (d *Detector) Push(ts uint32, ev Event, now time.Time) (Digit, bool) {
	d.push(ts, ev, now)
	return d.dequeue()
}

func (d *Detector) push(ts uint32, ev Event, now time.Time) {
	if d.active && ts == d.curTS {
		if ev.Duration > d.segDur {
			d.curDur += uint32(ev.Duration - d.segDur)
			d.segDur = ev.Duration
		}
		d.lastSeen = now
		if ev.End {
			d.complete()
		}
		return
	}
	// Anything at or before the last completed event is an End retransmit or a late packet.
	// A timestamp far behind it is not late but a restarted stream (same SSRC, new clock).
	if d.doneValid && isBehind(ts, d.doneTS) {
		return
	}
	if d.active {
		if isBehind(ts, d.curTS) && ts != d.curTS {
			return // a reordered packet from before the current event
		}
		// §2.5.1.3: a long event continues in a new segment whose timestamp is the previous
		// segment's plus its (maximal) duration; it is the same event, not a new digit.
		if ev.Code == d.curCode && d.segDur == 0xffff && ts-d.curTS == 0xffff {
			d.curTS, d.segDur, d.lastSeen = ts, 0, now
			d.push(ts, ev, now)
			return
		}
		// A new timestamp starts a new event: the previous one lost its End packets.
		d.complete()
	}
	d.active = true
	d.curTS, d.startTS, d.curCode, d.curDur, d.segDur, d.lastSeen = ts, ts, ev.Code, uint32(ev.Duration), ev.Duration, now
	if ev.End {
		d.complete()
	}
}

// restartDistance: a timestamp this far behind a known event (~21 s at 48 kHz) cannot be a
// late packet; it means the sender restarted its RTP clock.
const restartDistance = 1 << 20

// isBehind reports whether ts is at or before ref in RTP serial arithmetic (RFC 3550 §A.1
// style wrap handling), but not so far behind that it must be a restart.
func isBehind(ts, ref uint32) bool {
	back := ref - ts
	return int32(back) >= 0 && back < restartDistance
}

// Expire completes the current event if nothing arrived for it within the timeout, and
// hands out queued digits.
func (d *Detector) Expire(now time.Time) (Digit, bool) {
	if d.active && now.Sub(d.lastSeen) >= d.timeout {
		d.complete()
	}
	return d.dequeue()
}

// Active reports whether an event has started and not yet completed.
func (d *Detector) Active() bool { return d.active }

func (d *Detector) complete() {
	dur := min(d.curDur, 0xffff)
	d.enqueue(Digit{Code: d.curCode, Duration: uint16(dur), TS: d.startTS})
	d.active = false
	d.doneValid, d.doneTS = true, d.curTS
}

func (d *Detector) enqueue(g Digit) {
	if d.qCount == len(d.queue) { // cannot happen with ≤2 per push unless never drained; drop oldest
		d.qHead = (d.qHead + 1) % len(d.queue)
		d.qCount--
	}
	d.queue[(d.qHead+d.qCount)%len(d.queue)] = g
	d.qCount++
}

func (d *Detector) dequeue() (Digit, bool) {
	if d.qCount == 0 {
		return Digit{}, false
	}
	g := d.queue[d.qHead]
	d.qHead = (d.qHead + 1) % len(d.queue)
	d.qCount--
	return g, true
}

// Generator produces the per-packet event payloads for one digit, one packet per
// packetisation tick (§2.5.1.2). The caller owns RTP sequence numbers, timestamps and the
// marker: all packets of the event, including the three End repeats (§2.5.1.4), carry the
// stream timestamp of the event start, and the first packet has the marker set (§2.5.1.2).
// The zero value is idle.
type Generator struct {
	active   bool
	started  bool
	code     uint8
	volume   uint8
	total    uint16
	cur      uint16
	endsSent int
}

// EndRepeats is how many times the final packet is sent (§2.5.1.4 recommends three).
const EndRepeats = 3

// Start begins a digit of duration (8 kHz units, e.g. 100 ms = 800) at volume (0..63,
// -dBm0; 10 is common). A digit in progress is abandoned.
func (g *Generator) Start(code uint8, duration uint16, volume uint8) {
	*g = Generator{active: true, code: code, volume: volume & 0x3f, total: duration}
}

// Active reports whether packets remain to be sent for the current digit.
func (g *Generator) Active() bool { return g.active }

// Next returns the next packet's event; step is the tick in 8 kHz units (20 ms = 160).
// first is true for the event's first packet. Durations grow by step (capped at the digit's
// duration) while below it; then the final duration is sent with End set three times, after
// which Active() is false. Calling Next while inactive returns a zero Event and false.
func (g *Generator) Next(step uint16) (ev Event, first bool) {
	if !g.active {
		return Event{}, false
	}
	first = !g.started
	g.started = true
	if g.endsSent == 0 && step > 0 && g.total-g.cur > step {
		g.cur += step
		return Event{Code: g.code, Volume: g.volume, Duration: g.cur}, first
	}
	g.cur = g.total
	g.endsSent++
	if g.endsSent >= EndRepeats {
		g.active = false
	}
	return Event{Code: g.code, End: true, Volume: g.volume, Duration: g.total}, first
}
