package loadgen

import (
	"math"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
)

// feedLoop plays rounds of a loop's PCM into a detector as 20 ms packets, packet i arriving
// at t0 + i*20 ms + delay (+ jitter(i)), skipping the packets lost(i) says; it returns the
// send instants of the transitions.
func feedLoop(d *markerDetector, pcm []int16, rounds int, t0 time.Time, delay time.Duration,
	jitter func(int) time.Duration, lost func(int) bool) []time.Time {
	var sent []time.Time
	frames := len(pcm) / frameSamples
	for i := range rounds * frames {
		at := t0.Add(time.Duration(i) * frameDur)
		if i%frames == markAt {
			sent = append(sent, at)
		}
		if lost != nil && lost(i) {
			continue
		}
		if jitter != nil {
			at = at.Add(jitter(i))
		}
		k := i % frames
		d.add(pcm[k*frameSamples:(k+1)*frameSamples], at.Add(delay))
	}
	return sent
}

func TestMarkerDetectorDelay(t *testing.T) {
	pcm := loopPCM(callerHz)
	bias, err := pcmDelay(pcm)
	if err != nil {
		t.Fatal(err)
	}
	if bias.Abs() > time.Millisecond {
		t.Fatalf("detector bias %v on its own PCM, want within 1 ms", bias)
	}
	t0 := time.Unix(5000, 0)
	cases := []struct {
		name   string
		delay  time.Duration
		jitter func(int) time.Duration
		lost   func(int) bool
		late   int // the round whose transition shows 20 ms late (-1: none)
	}{
		{"37 ms", 37 * time.Millisecond, nil, nil, -1},
		{"zero", 0, nil, nil, -1},
		// Arrival jitter shifts whole packets, and the transition with its packet: packet
		// markAt arrives 3 ms late in every round, so the delay is 3 ms more.
		{"late marker packet", 12 * time.Millisecond, func(i int) time.Duration {
			if i%loopFrames == markAt {
				return 3 * time.Millisecond
			}
			return 0
		}, nil, -1},
		// The first f2 frame lost in round 2: the switch arrives with the next frame, 20 ms
		// later, and is still paired with its own transition.
		{"marker frame lost", 20 * time.Millisecond, nil, func(i int) bool { return i == 2*loopFrames+markAt }, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d markerDetector
			sent := feedLoop(&d, pcm, 5, t0, c.delay, c.jitter, c.lost)
			ds, unmatched := matchDelays(sent, d.found, t0, t0.Add(time.Hour))
			if len(ds) != 5 || unmatched != 0 {
				t.Fatalf("paired %d (unmatched %d), want 5", len(ds), unmatched)
			}
			for round, x := range ds {
				want := c.delay
				if c.jitter != nil {
					want += c.jitter(markAt)
				}
				if round == c.late {
					want += frameDur
				}
				if got := x - bias; (got - want).Abs() > 500*time.Microsecond {
					t.Errorf("round %d: delay %v, want %v", round, got, want)
				}
			}
		})
	}
}

// The offline codec chains: G.711 adds no delay, libopus its lookahead (2.5 ms + 4 ms of delay
// compensation in VOIP mode, OPUS_GET_LOOKAHEAD).
func TestChainDelay(t *testing.T) {
	pcm := loopPCM(callerHz)
	bias, err := pcmDelay(pcm)
	if err != nil {
		t.Fatal(err)
	}
	opusLoop, err := encodeLoop("opus", pcm, callerOpus)
	if err != nil {
		t.Fatal(err)
	}
	pcmuLoop, err := encodeLoop("PCMU", loopPCM(pbxHz), pbxOpts)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		loop     [][]byte
		src, via string
		lo, hi   time.Duration
	}{
		{"PCMU decode", pcmuLoop, "PCMU", "", -time.Millisecond, time.Millisecond},
		{"PCMU -> opus", pcmuLoop, "PCMU", "opus", 4 * time.Millisecond, 10 * time.Millisecond},
		{"opus decode", opusLoop, "opus", "", 4 * time.Millisecond, 10 * time.Millisecond},
		{"opus -> PCMA", opusLoop, "opus", "PCMA", 4 * time.Millisecond, 10 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := chainDelay(c.loop, c.src, c.via, gwOpusToMeta)
			if err != nil {
				t.Fatal(err)
			}
			if got := d - bias; got < c.lo || got > c.hi {
				t.Fatalf("chain delay %v, want %v..%v", got, c.lo, c.hi)
			}
		})
	}
	if len(opusLoop) != loopFrames || len(pcmuLoop) != loopFrames || len(pcmuLoop[0]) != frameSamples {
		t.Fatalf("loops of %d and %d frames (%d bytes), want %d", len(opusLoop), len(pcmuLoop), len(pcmuLoop[0]), loopFrames)
	}
}

func TestMatchDelays(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sent := []time.Time{at(0), at(1000), at(2000), at(3000)}
	cases := []struct {
		name      string
		recv      []time.Time
		from, to  time.Time
		want      []int // ms
		unmatched int
	}{
		{"each", []time.Time{at(40), at(1041), at(2039)}, at(0), at(9000), []int{40, 41, 39}, 0},
		{"one lost", []time.Time{at(40), at(2045)}, at(0), at(9000), []int{40, 45}, 0},
		{"slightly early", []time.Time{at(995)}, at(0), at(9000), []int{-5}, 0},
		{"too late for any", []time.Time{at(1700)}, at(0), at(9000), nil, 1},
		{"before any sent", []time.Time{at(-300)}, at(-1000), at(9000), nil, 1},
		{"outside the interval", []time.Time{at(40), at(1040), at(3040)}, at(500), at(3000), []int{40}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, un := matchDelays(sent, c.recv, c.from, c.to)
			if len(ds) != len(c.want) || un != c.unmatched {
				t.Fatalf("got %v unmatched %d, want %v unmatched %d", ds, un, c.want, c.unmatched)
			}
			for i, w := range c.want {
				if ds[i] != time.Duration(w)*time.Millisecond {
					t.Fatalf("got %v, want %v ms", ds, c.want)
				}
			}
		})
	}
}

func TestSeqCount(t *testing.T) {
	cases := []struct {
		name           string
		seqs           []uint16
		expected, lost int
	}{
		{"none", nil, 0, 0},
		{"in order", []uint16{10, 11, 12, 13}, 4, 0},
		{"two lost", []uint16{10, 11, 14, 15}, 6, 2},
		{"wrap", []uint16{65534, 65535, 0, 1}, 4, 0},
		{"wrap with loss", []uint16{65534, 1}, 4, 2},
		{"reordered", []uint16{10, 12, 11, 13}, 4, 0},
		{"duplicate", []uint16{10, 11, 11, 12}, 3, 0},
		{"first one late", []uint16{11, 10, 12}, 3, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s seqCount
			for _, q := range c.seqs {
				s.add(q)
			}
			if s.expected() != c.expected || s.lost() != c.lost || s.received != len(c.seqs) {
				t.Fatalf("expected %d lost %d received %d, want %d %d %d", s.expected(), s.lost(), s.received, c.expected, c.lost, len(c.seqs))
			}
		})
	}
}

// flowResult pairs the markers, and the tone check skips the marker windows, placed by the
// call's median delay.
func TestFlowResult(t *testing.T) {
	pcm := loopPCM(pbxHz)
	t0 := time.Unix(7000, 0)
	send, recv := newFlow(false), newFlow(true)
	frames := 4 * loopFrames
	const delay = 45 * time.Millisecond
	an := audio.NewAnalyzer(8000, pbxHz, toneDBFS)
	for n := range frames {
		at := t0.Add(time.Duration(n) * frameDur)
		send.onSent(n, at)
		k := n % loopFrames
		frame := pcm[k*frameSamples : (k+1)*frameSamples]
		recv.seq.add(uint16(n))
		recv.onAudio(frame, at.Add(delay))
		an.Add(frame, at.Add(delay))
	}
	from, to := t0.Add(500*time.Millisecond), t0.Add(time.Duration(frames)*frameDur)
	fr, skip := flowResult(send, recv, from, to, 0)
	if fr.Sent != frames || fr.Received != frames || fr.SeqLost != 0 || fr.Delays != 4 {
		t.Fatalf("flow %+v", fr)
	}
	if math.Abs(fr.DelayP50Ms-ms(delay)) > 0.5 {
		t.Errorf("p50 %.2f ms, want %.2f", fr.DelayP50Ms, ms(delay))
	}
	if len(skip) != 4 {
		t.Fatalf("%d skip spans, want 4", len(skip))
	}
	// Without the skips the marker windows fail the 98 % criterion; with them every judged
	// window has the tone.
	if c := check(an, from, to); c.Pass {
		t.Errorf("check without skips passed: %+v", c)
	}
	if c := check(an, from, to, skip...); !c.Pass || c.Ratio != 1 {
		t.Errorf("check with skips: %+v", c)
	}
}
