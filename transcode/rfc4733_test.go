package transcode

import (
	"errors"
	"testing"
	"time"
)

func TestEventParsePutRoundTrip(t *testing.T) {
	cases := []struct {
		wire []byte
		ev   Event
	}{
		{[]byte{0x05, 0x0a, 0x00, 0xa0}, Event{Code: 5, Volume: 10, Duration: 160}},
		{[]byte{0x0b, 0x8a, 0x03, 0x20}, Event{Code: 11, End: true, Volume: 10, Duration: 800}},
		{[]byte{0x00, 0xbf, 0xff, 0xff}, Event{Code: 0, End: true, Volume: 63, Duration: 0xffff}},
		{[]byte{0x10, 0x00, 0x00, 0x00}, Event{Code: 16}},
	}
	for _, c := range cases {
		ev, err := ParseEvent(c.wire)
		if err != nil {
			t.Fatalf("%x: %v", c.wire, err)
		}
		if ev != c.ev {
			t.Errorf("%x: parsed %+v, want %+v", c.wire, ev, c.ev)
		}
		var b [4]byte
		if n := ev.Put(b[:]); n != 4 || b != [4]byte(c.wire) {
			t.Errorf("%+v: put %x (n=%d), want %x", ev, b, n, c.wire)
		}
	}
	// R bit is ignored on receive and never sent.
	ev, _ := ParseEvent([]byte{0x03, 0x4a, 0x00, 0x50})
	if ev != (Event{Code: 3, Volume: 10, Duration: 80}) {
		t.Errorf("R bit set: parsed %+v", ev)
	}
	var b [4]byte
	Event{Code: 1, Volume: 0xff}.Put(b[:])
	if b[1] != 0x3f {
		t.Errorf("volume not masked to 6 bits: %#02x", b[1])
	}
}

func TestParseEventErrors(t *testing.T) {
	for _, c := range []struct {
		p    []byte
		want error
	}{
		{nil, ErrShortPayload}, {[]byte{1, 2, 3}, ErrShortPayload}, {[]byte{1, 2, 3, 4, 5}, ErrMalformedPayload},
		{[]byte{1, 0x80, 0, 160, 2, 0x80, 0, 160}, nil},
	} {
		_, err := ParseEvent(c.p)
		if !errors.Is(err, c.want) {
			t.Errorf("%x: err %v, want %v", c.p, err, c.want)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte{0x05, 0x0a, 0x00, 0xa0})
	f.Add([]byte{0x0b, 0x8a, 0x03, 0x20})
	f.Add([]byte{0x01})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		ev, err := ParseEvent(p)
		if err != nil {
			if len(p) >= 4 && len(p)%4 == 0 {
				t.Fatalf("valid length %d rejected: %v", len(p), err)
			}
			return
		}
		var b [4]byte
		ev.Put(b[:])
		// Put reproduces the block except the R bit, which receivers ignore.
		want := [4]byte{p[0], p[1] &^ 0x40, p[2], p[3]}
		if b != want {
			t.Fatalf("round trip %x -> %+v -> %x", p[:4], ev, b)
		}
		// The detector must accept any parsed event without panicking.
		d := NewDetector(time.Second)
		now := time.Unix(0, 0)
		d.Push(1000, ev, now)
		d.Push(1000, ev, now)
		d.Expire(now.Add(2 * time.Second))
	})
}

func TestDigitCodeRune(t *testing.T) {
	for _, r := range "0123456789*#ABCD" {
		c, ok := DigitCode(r)
		if !ok || DigitRune(c) != r {
			t.Errorf("%q -> %d,%v -> %q", r, c, ok, DigitRune(c))
		}
	}
	if c, ok := DigitCode('b'); !ok || c != 13 {
		t.Errorf("'b' -> %d,%v", c, ok)
	}
	if c, ok := DigitCode('#'); !ok || c != 11 {
		t.Errorf("'#' -> %d", c)
	}
	for _, r := range "EeX+ 9\u00e9" {
		if r == '9' {
			continue
		}
		if _, ok := DigitCode(r); ok {
			t.Errorf("%q accepted", r)
		}
	}
	if DigitRune(16) != '?' || DigitRune(255) != '?' {
		t.Error("non-DTMF codes must map to '?'")
	}
}

// pkt is one received telephone-event packet in a scenario.
type pkt struct {
	ts  uint32
	ev  Event
	at  time.Duration // arrival time since scenario start
	exp bool          // call Expire at `at` instead of Push
}

// senderPackets simulates a compliant sender for one digit: step 160, durations growing,
// 3 End repeats, all with timestamp ts (48 kHz stream clock: ts advances 960/packet).
func senderPackets(ts uint32, code uint8, dur uint16, start time.Duration) []pkt {
	var g Generator
	g.Start(code, dur, 10)
	var out []pkt
	at := start
	for g.Active() {
		ev, _ := g.Next(160)
		out = append(out, pkt{ts: ts, ev: ev, at: at})
		at += 20 * time.Millisecond
	}
	return out
}

func concat(ps ...[]pkt) []pkt {
	var out []pkt
	for _, p := range ps {
		out = append(out, p...)
	}
	return out
}

func without(ps []pkt, drop func(i int, p pkt) bool) []pkt {
	var out []pkt
	for i, p := range ps {
		if !drop(i, p) {
			out = append(out, p)
		}
	}
	return out
}

func TestDetector(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		pkts []pkt
		want string
		durs []uint16
	}{
		{
			name: "three digits once each",
			pkts: concat(senderPackets(1000, 1, 800, 0), senderPackets(20000, 5, 800, 300*ms), senderPackets(40000, 11, 480, 600*ms)),
			want: "15#", durs: []uint16{800, 800, 480},
		},
		{
			name: "same digit twice is two events (distinct timestamps)",
			pkts: concat(senderPackets(1000, 7, 800, 0), senderPackets(9000, 7, 800, 300*ms)),
			want: "77", durs: []uint16{800, 800},
		},
		{
			name: "all End packets lost: completes by timeout",
			pkts: append(without(senderPackets(1000, 9, 800, 0), func(_ int, p pkt) bool { return p.ev.End }),
				pkt{at: 200 * ms, exp: true}, pkt{at: 400 * ms, exp: true}),
			want: "9", durs: []uint16{640},
		},
		{
			name: "End lost, next digit starts before timeout: previous completes at once",
			pkts: concat(without(senderPackets(1000, 2, 800, 0), func(_ int, p pkt) bool { return p.ev.End }),
				senderPackets(9000, 3, 800, 100*ms)),
			want: "23", durs: []uint16{640, 800},
		},
		{
			name: "only End packets of a short event received, previous never ended",
			pkts: concat(without(senderPackets(1000, 4, 800, 0), func(_ int, p pkt) bool { return p.ev.End }),
				without(senderPackets(9000, 6, 320, 100*ms), func(_ int, p pkt) bool { return !p.ev.End }),
				[]pkt{{at: 600 * ms, exp: true}}),
			want: "46", durs: []uint16{640, 320},
		},
		{
			name: "reordered and duplicated packets",
			pkts: func() []pkt {
				p := senderPackets(5000, 0, 800, 0)
				p[1], p[2] = p[2], p[1]
				p = append(p, p[len(p)-1], p[0], p[3]) // late duplicates after End
				return p
			}(),
			want: "0", durs: []uint16{800},
		},
		{
			// The Detector has no marker input at all: a carrier that never sets it, or a
			// lost first (marker) packet, look the same and work by timestamp alone.
			name: "marker-less carrier: first packet lost, back-to-back same digit",
			pkts: concat(without(senderPackets(7777, 12, 800, 0), func(i int, _ pkt) bool { return i == 0 }),
				senderPackets(7777+7*960, 12, 800, 140*ms)),
			want: "AA", durs: []uint16{800, 800},
		},
		{
			name: "timestamp wrap between events",
			pkts: concat(senderPackets(0xffffff00, 8, 800, 0), senderPackets(0x00000100, 8, 800, 300*ms)),
			want: "88", durs: []uint16{800, 800},
		},
		{
			name: "stale packet of an old event after a newer one",
			pkts: concat(senderPackets(1000, 1, 800, 0), senderPackets(9000, 2, 800, 300*ms),
				[]pkt{{ts: 1000, ev: Event{Code: 1, Duration: 160}, at: 700 * ms}}),
			want: "12", durs: []uint16{800, 800},
		},
		{
			name: "long event in two segments (§2.5.1.3) is one digit",
			pkts: []pkt{
				{ts: 100, ev: Event{Code: 5, Duration: 30000}},
				{ts: 100, ev: Event{Code: 5, Duration: 0xffff}, at: 20 * ms},
				{ts: 100 + 0xffff, ev: Event{Code: 5, Duration: 1000}, at: 40 * ms},
				{ts: 100 + 0xffff, ev: Event{Code: 5, End: true, Duration: 2000}, at: 60 * ms},
				{ts: 100 + 0xffff, ev: Event{Code: 5, End: true, Duration: 2000}, at: 80 * ms},
			},
			want: "5", durs: []uint16{0xffff},
		},
		{
			name: "stream restart far behind the last event",
			pkts: concat(senderPackets(50_000_000, 3, 800, 0), senderPackets(1000, 4, 800, 300*ms)),
			want: "34", durs: []uint16{800, 800},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDetector(150 * time.Millisecond)
			t0 := time.Unix(1700000000, 0)
			var got []rune
			var durs []uint16
			codeAt := map[uint32]uint8{}
			for _, p := range c.pkts {
				if !p.exp {
					if _, dup := codeAt[p.ts]; !dup {
						codeAt[p.ts] = p.ev.Code
					}
				}
			}
			take := func(g Digit, ok bool) {
				if ok {
					got = append(got, DigitRune(g.Code))
					durs = append(durs, g.Duration)
					// The digit carries its event's start timestamp.
					if code, found := codeAt[g.TS]; !found || code != g.Code {
						t.Errorf("digit %+v: no event with code %d started at ts %d", g, g.Code, g.TS)
					}
					if g.Code == 5 && c.name[:4] == "long" && g.TS != 100 {
						t.Errorf("segmented event TS %d, want the first segment's 100", g.TS)
					}
				}
			}
			for _, p := range c.pkts {
				if p.exp {
					take(d.Expire(t0.Add(p.at)))
					continue
				}
				take(d.Push(p.ts, p.ev, t0.Add(p.at)))
				take(d.Expire(t0.Add(p.at))) // a playout tick after every packet
			}
			if string(got) != c.want {
				t.Fatalf("digits %q, want %q", string(got), c.want)
			}
			for i := range durs {
				if durs[i] != c.durs[i] {
					t.Errorf("digit %d duration %d, want %d", i, durs[i], c.durs[i])
				}
			}
		})
	}
}

func TestDetectorNoAllocs(t *testing.T) {
	d := NewDetector(100 * time.Millisecond)
	now := time.Unix(0, 0)
	ts := uint32(0)
	a := testing.AllocsPerRun(100, func() {
		ts += 5000
		d.Push(ts, Event{Code: 1, Duration: 160}, now)
		d.Push(ts, Event{Code: 1, End: true, Duration: 320}, now)
		d.Push(ts, Event{Code: 1, End: true, Duration: 320}, now)
		d.Expire(now)
	})
	if a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

func TestGenerator(t *testing.T) {
	cases := []struct {
		dur, step uint16
		want      []uint16 // durations of the non-End packets
	}{
		{800, 160, []uint16{160, 320, 480, 640}},
		{850, 160, []uint16{160, 320, 480, 640, 800}},
		{160, 160, nil},
		{100, 160, nil},
		{1600, 320, []uint16{320, 640, 960, 1280}},
		{65535, 16000, []uint16{16000, 32000, 48000, 64000}},
	}
	for _, c := range cases {
		var g Generator
		if g.Active() {
			t.Fatal("zero Generator active")
		}
		g.Start(11, c.dur, 10)
		var durs []uint16
		ends, n := 0, 0
		for g.Active() {
			ev, first := g.Next(c.step)
			if first != (n == 0) {
				t.Fatalf("dur %d: packet %d first=%v", c.dur, n, first)
			}
			n++
			if ev.Code != 11 || ev.Volume != 10 {
				t.Fatalf("dur %d: packet %+v", c.dur, ev)
			}
			if ev.End {
				ends++
				if ev.Duration != c.dur {
					t.Fatalf("dur %d: End duration %d", c.dur, ev.Duration)
				}
				continue
			}
			if ends > 0 {
				t.Fatalf("dur %d: non-End packet after End", c.dur)
			}
			durs = append(durs, ev.Duration)
		}
		if ends != EndRepeats {
			t.Errorf("dur %d: %d End packets, want 3", c.dur, ends)
		}
		if len(durs) != len(c.want) {
			t.Fatalf("dur %d step %d: durations %v, want %v", c.dur, c.step, durs, c.want)
		}
		for i := range durs {
			if durs[i] != c.want[i] {
				t.Fatalf("dur %d step %d: durations %v, want %v", c.dur, c.step, durs, c.want)
			}
		}
		if ev, first := g.Next(c.step); ev != (Event{}) || first {
			t.Errorf("Next after the end returned %+v %v", ev, first)
		}
	}
}

// The Generator never touches timestamps: a caller stamping every packet with the event
// start timestamp produces exactly what the Detector needs, and a marker-less carrier works.
func TestGeneratorToDetector(t *testing.T) {
	d := NewDetector(200 * time.Millisecond)
	now := time.Unix(0, 0)
	streamTS := uint32(123456)
	var got []rune
	for _, r := range "159#" {
		code, _ := DigitCode(r)
		var g Generator
		g.Start(code, 800, 10)
		evTS := streamTS // event timestamp fixed at start (§2.5.1.2)
		for g.Active() {
			ev, _ := g.Next(160)
			var b [4]byte
			ev.Put(b[:])
			pe, err := ParseEvent(b[:])
			if err != nil {
				t.Fatal(err)
			}
			if dg, ok := d.Push(evTS, pe, now); ok {
				got = append(got, DigitRune(dg.Code))
			}
			streamTS += 960 // the audio stream clock keeps running (48 kHz)
			now = now.Add(20 * time.Millisecond)
		}
		streamTS += 960 * 5
	}
	if string(got) != "159#" {
		t.Fatalf("got %q", string(got))
	}
}
