package gateway

import (
	"testing"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

type sent struct {
	ev     transcode.Event
	ts     uint32
	marker bool
}

// drive feeds packets (one per 20 ms tick, as a sender would) and collects
// what the relay emits, with the outgoing stream timestamp advancing 960 per
// tick (Opus toward Meta).
func drive(r *eventRelay, in []struct {
	ts uint32
	ev transcode.Event
}, extraTicks int) []sent {
	var out []sent
	now := time.Unix(0, 0)
	outTS := uint32(100000)
	tick := func() {
		if ev, ts, m, ok := r.Next(now, outTS, 160); ok {
			out = append(out, sent{ev, ts, m})
		}
		now = now.Add(20 * time.Millisecond)
		outTS += 960
	}
	for _, p := range in {
		r.Push(p.ts, p.ev, now)
		tick()
	}
	for i := 0; i < extraTicks; i++ {
		tick()
	}
	return out
}

func pkts(ts uint32, code uint8, durs []uint16, ends int) []struct {
	ts uint32
	ev transcode.Event
} {
	var p []struct {
		ts uint32
		ev transcode.Event
	}
	for _, d := range durs {
		p = append(p, struct {
			ts uint32
			ev transcode.Event
		}{ts, transcode.Event{Code: code, Duration: d, Volume: 10}})
	}
	last := durs[len(durs)-1]
	for i := 0; i < ends; i++ {
		p = append(p, struct {
			ts uint32
			ev transcode.Event
		}{ts, transcode.Event{Code: code, Duration: last, End: true, Volume: 10}})
	}
	return p
}

func TestRelayOneDigit(t *testing.T) {
	r := &eventRelay{endTimeout: relayEnd}
	out := drive(r, pkts(5000, 7, []uint16{160, 320, 480, 640, 800}, 3), 5)
	if len(out) != 8 {
		t.Fatalf("want 5 updates + 3 End packets, got %d: %+v", len(out), out)
	}
	for i, s := range out {
		if s.ts != 100000 {
			t.Errorf("packet %d: event timestamp %d, want constant 100000 (stream ts at event start)", i, s.ts)
		}
		if s.ev.Code != 7 || (i == 0) != s.marker {
			t.Errorf("packet %d: %+v marker=%v", i, s.ev, s.marker)
		}
	}
	ends := 0
	for _, s := range out[5:] {
		if s.ev.End && s.ev.Duration == 800 {
			ends++
		}
	}
	if ends != 3 || r.emitted != 1 {
		t.Fatalf("ends=%d emitted=%d", ends, r.emitted)
	}
	// Late End retransmissions of the finished event are not replayed.
	r.Push(5000, transcode.Event{Code: 7, Duration: 800, End: true}, time.Unix(10, 0))
	if r.Active() {
		t.Fatal("a late End restarted the event")
	}
}

func TestRelayEndsLost(t *testing.T) {
	r := &eventRelay{endTimeout: relayEnd}
	out := drive(r, pkts(7000, 1, []uint16{160, 320, 480, 640}, 0), 20)
	var ends []sent
	for _, s := range out {
		if s.ev.End {
			ends = append(ends, s)
		}
	}
	if len(ends) != 3 || ends[0].ev.Duration != 640 || r.emitted != 1 {
		t.Fatalf("want 3 End packets with the last duration after the timeout, got %+v (emitted %d)", ends, r.emitted)
	}
}

func TestRelayNextDigitBeforeEnd(t *testing.T) {
	r := &eventRelay{endTimeout: relayEnd}
	in := append(pkts(1000, 1, []uint16{160, 320}, 0), pkts(2000, 2, []uint16{160, 320, 480}, 3)...)
	out := drive(r, in, 10)
	// A receiver tells events apart by timestamp (RFC 4733 §2.5.2).
	var codes []uint8
	seen := map[uint32]bool{}
	for _, s := range out {
		if s.ev.End && !seen[s.ts] {
			seen[s.ts] = true
			codes = append(codes, s.ev.Code)
		}
	}
	if r.emitted != 2 || len(codes) != 2 || codes[0] != 1 || codes[1] != 2 {
		t.Fatalf("digits %v emitted %d", codes, r.emitted)
	}
}

func TestRelayMarkerlessNewTimestamp(t *testing.T) {
	// Two presses of the same digit: only the timestamp tells them apart.
	r := &eventRelay{endTimeout: relayEnd}
	in := append(pkts(1000, 5, []uint16{160, 320}, 3), pkts(3000, 5, []uint16{160, 320}, 3)...)
	drive(r, in, 10)
	if r.emitted != 2 {
		t.Fatalf("emitted %d, want 2", r.emitted)
	}
}

// TestRelayWholeEventBeforeTick: every packet of a digit arrives before the
// playout tick (a short digit, or the tick held back by a CPU stall). The
// relay still sends a start packet (marker, no End) and then the three Ends,
// so a receiver that reports digits on their start sees this one.
func TestRelayWholeEventBeforeTick(t *testing.T) {
	r := &eventRelay{endTimeout: relayEnd}
	now := time.Unix(0, 0)
	for _, p := range pkts(9000, 5, []uint16{160, 320, 480, 640, 800}, 3) {
		r.Push(p.ts, p.ev, now)
	}
	var out []sent
	for range 6 {
		if ev, ts, m, ok := r.Next(now, 100000, 160); ok {
			out = append(out, sent{ev, ts, m})
		}
		now = now.Add(20 * time.Millisecond)
	}
	if len(out) != 4 {
		t.Fatalf("want a start and 3 Ends, got %d packets: %+v", len(out), out)
	}
	if s := out[0]; !s.marker || s.ev.End || s.ev.Code != 5 || s.ev.Duration != 800 {
		t.Errorf("first packet %+v marker=%v: want the start (marker, no End) with the full duration", s.ev, s.marker)
	}
	for i, s := range out[1:] {
		if s.marker || !s.ev.End || s.ev.Duration != 800 || s.ts != 100000 {
			t.Errorf("End %d: %+v marker=%v ts=%d", i, s.ev, s.marker, s.ts)
		}
	}
	if r.emitted != 1 || r.Active() {
		t.Errorf("emitted %d, active %v: want 1 digit relayed and the relay idle", r.emitted, r.Active())
	}
}
