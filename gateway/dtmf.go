package gateway

import (
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

// eventRelay carries RFC 4733 telephone-events from one leg to the other.
//
// The reader goroutine Pushes what arrives; the playout tick calls Next, so the
// outgoing event packets are paced by the same clock as the audio and share its
// sequence counter and SSRC (RFC 4733 §2.1). The outgoing event timestamp is
// the outgoing stream's timestamp when the event starts and stays constant for
// every packet of the event, including the three End repeats (§2.5.1.2,
// §2.5.1.4). Duration is copied, never scaled: both WhatsApp (Meta: "DTMF clock
// 8000 only") and the PBX count it in 8 kHz units.
//
// A new event is recognised by a new RTP timestamp, not by the marker bit
// (§2.5.2; some carriers never set it). An event whose End packets are all lost
// is ended after endTimeout without packets.
type eventRelay struct {
	endTimeout time.Duration

	cur     relayEvent
	pending relayEvent // an event that started while cur was still being closed

	done    bool   // doneTS holds the source timestamp of the last finished event
	doneTS  uint32 // so its late End retransmissions are not replayed
	emitted uint64 // digits relayed (for metrics and tests)

	synthTS uint32 // source timestamps for injected events
	dropped uint64 // injected events refused: two already waiting
}

// Inject queues a whole event known in advance: a SIP INFO digit, a digit
// detected in the audio. It is sent like a relayed one, its duration growing
// by one packet per tick until dur, then three End packets (RFC 4733
// §2.5.1.3-4). It reports false when two events are already waiting.
func (r *eventRelay) Inject(code uint8, dur uint16, now time.Time) bool {
	r.synthTS++
	e := relayEvent{active: true, synth: true, total: max(dur, 160), srcTS: r.synthTS | 1<<31,
		ev: transcode.Event{Code: code, Volume: 10}, lastRx: now}
	switch {
	case !r.cur.active:
		r.cur = e
	case !r.pending.active:
		r.pending = e
	default:
		r.dropped++
		return false
	}
	return true
}

type relayEvent struct {
	active   bool
	synth    bool   // injected whole (SIP INFO, in-band detection): no packets to wait for
	total    uint16 // synth: the event's full duration, 8 kHz units
	srcTS    uint32
	ev       transcode.Event
	ended    bool
	started  bool   // first packet sent
	outTS    uint32 // outgoing event timestamp, fixed at start
	endsSent int
	lastRx   time.Time
}

// Push records one received event packet.
func (r *eventRelay) Push(ts uint32, ev transcode.Event, now time.Time) {
	if r.done && ts == r.doneTS {
		return // End retransmission of an event already relayed
	}
	switch {
	case r.cur.active && ts == r.cur.srcTS:
		r.cur.update(ev, now)
	case r.pending.active && ts == r.pending.srcTS:
		r.pending.update(ev, now)
	case r.cur.active:
		// A new event while the current one has not ended: its End packets were
		// lost. Close the current one with its last duration, queue the new one.
		r.cur.ended = true
		r.pending = relayEvent{active: true, srcTS: ts, ev: ev, ended: ev.End, lastRx: now}
	default:
		r.cur = relayEvent{active: true, srcTS: ts, ev: ev, ended: ev.End, lastRx: now}
	}
}

func (e *relayEvent) update(ev transcode.Event, now time.Time) {
	if ev.Duration >= e.ev.Duration {
		e.ev.Duration = ev.Duration
	}
	e.ev.Volume = ev.Volume
	if ev.End {
		e.ended = true
	}
	e.lastRx = now
}

// Active reports whether an event is being sent (audio is muted meanwhile).
func (r *eventRelay) Active() bool { return r.cur.active }

// Next returns the event packet for this tick. outTS is the outgoing stream's
// current timestamp; it becomes the event timestamp on the first packet. step
// is one packet's duration in 8 kHz units, for injected events.
func (r *eventRelay) Next(now time.Time, outTS uint32, step uint16) (ev transcode.Event, ts uint32, marker, ok bool) {
	if !r.cur.active {
		return ev, 0, false, false
	}
	c := &r.cur
	if !c.started {
		c.started = true
		c.outTS = outTS
		marker = true
	}
	if marker && c.ended {
		// The whole event arrived before this tick (a 40 ms digit, or the
		// playout held back by a CPU stall): send its start first anyway,
		// then the three Ends on the next ticks. Receivers such as baresip
		// report a digit on its start packet and would miss one whose
		// first packet is already an End (RFC 4733 §2.5.1.2-4).
		ev = c.ev
		ev.End = false
		return ev, c.outTS, true, true
	}
	if c.synth && !c.ended {
		// One packet's worth more per tick (RFC 4733 §2.5.1.3), in 8 kHz units.
		c.ev.Duration = min(c.total, c.ev.Duration+step)
		c.ended = c.ev.Duration >= c.total
	}
	if !c.ended && !c.synth && now.Sub(c.lastRx) > r.endTimeout {
		c.ended = true // every End packet was lost (RFC 4733 §2.5.2.2 timeout)
	}
	ev, ts = c.ev, c.outTS
	if c.ended {
		ev.End = true
		c.endsSent++
		if c.endsSent >= 3 {
			r.done, r.doneTS = true, c.srcTS
			r.emitted++
			r.cur = r.pending
			r.pending = relayEvent{}
		}
	}
	return ev, ts, marker, true
}

// Reset drops any event in flight (e.g. the source changed SSRC).
func (r *eventRelay) Reset() { r.cur, r.pending = relayEvent{}, relayEvent{} }
