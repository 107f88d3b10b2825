package transcode

import (
	"bytes"
	"fmt"
	"testing"
)

// payloadFor makes a distinct payload per sequence number so tests can check what came out.
func payloadFor(seq uint16) []byte { return []byte(fmt.Sprintf("pkt-%05d", seq)) }

type popResult struct {
	seq int // -1 for no payload
	st  PopStatus
}

func popN(t *testing.T, j *JitterBuffer, n int) []popResult {
	t.Helper()
	var out []popResult
	for range n {
		p, _, st := j.Pop()
		r := popResult{seq: -1, st: st}
		if st == PopOK {
			if _, err := fmt.Sscanf(string(p), "pkt-%05d", &r.seq); err != nil {
				t.Fatalf("bad payload %q", p)
			}
		} else if p != nil {
			t.Fatalf("status %v with payload %q", st, p)
		}
		out = append(out, r)
	}
	return out
}

func ok(seqs ...int) []popResult {
	var r []popResult
	for _, s := range seqs {
		r = append(r, popResult{s, PopOK})
	}
	return r
}

var (
	lost  = popResult{-1, PopLost}
	empty = popResult{-1, PopEmpty}
)

func cat(rs ...[]popResult) []popResult {
	var out []popResult
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

func TestJitterBuffer(t *testing.T) {
	cases := []struct {
		name   string
		cfg    JitterConfig
		push   []uint16
		pops   int
		want   []popResult
		stats  JitterStats
		before int // pops done before the pushes (playout running before arrival)
	}{
		{
			name: "in order", cfg: JitterConfig{},
			push: []uint16{10, 11, 12}, pops: 4,
			want:  cat(ok(10, 11, 12), []popResult{empty}),
			stats: JitterStats{Pushed: 3, Underrun: 1},
		},
		{
			name: "reorder within target depth", cfg: JitterConfig{TargetDepth: 3},
			push: []uint16{101, 100, 103, 102}, pops: 4,
			want:  ok(100, 101, 102, 103),
			stats: JitterStats{Pushed: 4},
		},
		{
			name: "not started below target depth", cfg: JitterConfig{TargetDepth: 3},
			push: []uint16{1, 2}, pops: 2,
			want:  []popResult{empty, empty},
			stats: JitterStats{Pushed: 2},
		},
		{
			name: "loss gives PopLost then continues", cfg: JitterConfig{TargetDepth: 2},
			push: []uint16{5, 6, 8, 9}, pops: 5,
			want:  cat(ok(5, 6), []popResult{lost}, ok(8, 9)),
			stats: JitterStats{Pushed: 4, Lost: 1},
		},
		{
			name: "duplicates", cfg: JitterConfig{TargetDepth: 4},
			push: []uint16{1, 2, 2, 3, 1, 4}, pops: 4,
			want:  ok(1, 2, 3, 4),
			stats: JitterStats{Pushed: 6, Duplicate: 2},
		},
		{
			name: "sequence wrap at 65535", cfg: JitterConfig{TargetDepth: 3},
			push: []uint16{65534, 0, 65535, 1, 2}, pops: 5,
			want:  ok(65534, 65535, 0, 1, 2),
			stats: JitterStats{Pushed: 5},
		},
		{
			name: "max depth drops oldest", cfg: JitterConfig{TargetDepth: 1, MaxDepth: 3},
			push: []uint16{1, 2, 3, 4, 5}, pops: 3,
			want:  ok(3, 4, 5),
			stats: JitterStats{Pushed: 5, Overflow: 2},
		},
		{
			name: "oversize dropped", cfg: JitterConfig{MaxPayload: 4},
			push: []uint16{1}, pops: 1,
			want:  []popResult{empty},
			stats: JitterStats{Pushed: 1, Oversize: 1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := NewJitterBuffer(c.cfg)
			for _, s := range c.push {
				j.Push(s, uint32(s)*160, payloadFor(s))
			}
			got := popN(t, j, c.pops)
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("pops %v, want %v", got, c.want)
			}
			if st := j.Stats(); st != c.stats {
				t.Fatalf("stats %+v, want %+v", st, c.stats)
			}
		})
	}
}

func TestJitterLateAfterPlayout(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{TargetDepth: 1})
	j.Push(10, 1600, payloadFor(10))
	j.Push(12, 1920, payloadFor(12))
	got := popN(t, j, 2) // 10, then 11 is missing while 12 waits -> lost
	if fmt.Sprint(got) != fmt.Sprint(cat(ok(10), []popResult{lost})) {
		t.Fatalf("got %v", got)
	}
	j.Push(11, 1760, payloadFor(11)) // arrives after its playout slot
	j.Push(9, 1440, payloadFor(9))
	if got := popN(t, j, 2); fmt.Sprint(got) != fmt.Sprint(cat(ok(12), []popResult{empty})) {
		t.Fatalf("got %v", got)
	}
	if st := j.Stats(); st.Late != 2 || st.Lost != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestJitterLostPeekNextAndTimestamp(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{TargetDepth: 3})
	for _, s := range []uint16{100, 101, 103, 104} {
		j.Push(s, uint32(s)*960, payloadFor(s))
	}
	p, ts, st := j.Pop()
	if st != PopOK || ts != 100*960 || !bytes.Equal(p, payloadFor(100)) {
		t.Fatalf("pop 1: %q %d %v", p, ts, st)
	}
	if _, ts, st = j.Pop(); st != PopOK || ts != 101*960 {
		t.Fatalf("pop 2: %d %v", ts, st)
	}
	_, ts, st = j.Pop()
	if st != PopLost {
		t.Fatalf("pop 3: %v, want lost", st)
	}
	if ts != 102*960 {
		t.Errorf("lost frame timestamp estimate %d, want %d", ts, 102*960)
	}
	next, okk := j.PeekNext()
	if !okk || !bytes.Equal(next, payloadFor(103)) {
		t.Fatalf("PeekNext = %q %v, want packet 103", next, okk)
	}
	// PeekNext does not consume.
	buf := make([]byte, 64)
	n, ts, st := j.PopInto(buf)
	if st != PopOK || ts != 103*960 || !bytes.Equal(buf[:n], payloadFor(103)) {
		t.Fatalf("PopInto: %q %d %v", buf[:n], ts, st)
	}
	if j.Len() != 1 {
		t.Fatalf("Len %d, want 1", j.Len())
	}
}

func TestJitterUnderrunRebuffersAndSkipsStaleGap(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{TargetDepth: 2})
	j.Push(1, 0, payloadFor(1))
	j.Push(2, 0, payloadFor(2))
	if got := popN(t, j, 3); fmt.Sprint(got) != fmt.Sprint(cat(ok(1, 2), []popResult{empty})) {
		t.Fatalf("got %v", got)
	}
	// 3..5 never arrive (outage); 6 arrives: one packet is below target depth -> still empty.
	j.Push(6, 0, payloadFor(6))
	if got := popN(t, j, 1); got[0] != empty {
		t.Fatalf("rebuffering: got %v", got)
	}
	j.Push(7, 0, payloadFor(7))
	// Resume at 6: the outage was already played as silence, no burst of PopLost.
	if got := popN(t, j, 2); fmt.Sprint(got) != fmt.Sprint(ok(6, 7)) {
		t.Fatalf("after resume: %v", got)
	}
	st := j.Stats()
	if st.Lost != 3 || st.Underrun != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A straggler from the outage is late, not replayed.
	j.Push(4, 0, payloadFor(4))
	if j.Stats().Late != 1 || j.Len() != 0 {
		t.Fatalf("straggler: %+v len %d", j.Stats(), j.Len())
	}
}

func TestJitterSourceJumpResync(t *testing.T) {
	for _, c := range []struct {
		name     string
		newSeq   uint16
		strayOne bool
	}{
		{"forward jump", 30000, false},
		{"backward jump", 100, false},
		{"single stray packet does not resync", 40000, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := NewJitterBuffer(JitterConfig{TargetDepth: 2})
			for s := uint16(20000); s < 20010; s++ {
				j.Push(s, 0, payloadFor(s))
				if s > 20001 {
					popN(t, j, 1)
				}
			}
			if c.strayOne {
				j.Push(c.newSeq, 0, payloadFor(c.newSeq))
				j.Push(20010, 0, payloadFor(20010))
				got := popN(t, j, 3)
				if fmt.Sprint(got) != fmt.Sprint(ok(20008, 20009, 20010)) {
					t.Fatalf("got %v", got)
				}
				if j.Stats().Resync != 0 {
					t.Fatalf("resynced on a stray packet")
				}
				return
			}
			for s := c.newSeq; s < c.newSeq+4; s++ {
				j.Push(s, 0, payloadFor(s))
			}
			got := popN(t, j, 4)
			if fmt.Sprint(got) != fmt.Sprint(ok(int(c.newSeq), int(c.newSeq)+1, int(c.newSeq)+2, int(c.newSeq)+3)) {
				t.Fatalf("after jump: %v", got)
			}
			st := j.Stats()
			if st.Resync != 1 || st.Overflow != 2 { // 20008, 20009 were still buffered
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestJitterReset(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{})
	j.Push(500, 0, payloadFor(500))
	j.Push(501, 0, payloadFor(501))
	j.Reset()
	if j.Len() != 0 {
		t.Fatal("Reset left packets")
	}
	j.Push(7, 0, payloadFor(7)) // would be a "jump" without Reset
	if got := popN(t, j, 1); fmt.Sprint(got) != fmt.Sprint(ok(7)) {
		t.Fatalf("after Reset: %v", got)
	}
	if j.Stats().Pushed != 3 {
		t.Fatal("Reset cleared counters")
	}
}

func TestJitterCapacityWindow(t *testing.T) {
	// A gap wider than the ring (but not a "jump") drops the oldest to make room.
	j := NewJitterBuffer(JitterConfig{Capacity: 8, TargetDepth: 3})
	j.Push(1, 0, payloadFor(1))
	j.Push(2, 0, payloadFor(2))
	j.Push(10, 0, payloadFor(10)) // window becomes [3,11): 1 and 2 are dropped
	j.Push(3, 0, payloadFor(3))   // earlier than 10 but fits: becomes the head
	j.Push(4, 0, payloadFor(4))   // 3 packets: playout starts at 3
	got := popN(t, j, 8)
	want := cat(ok(3, 4), []popResult{lost, lost, lost, lost, lost}, ok(10))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if st := j.Stats(); st.Overflow != 2 || st.Lost != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestJitterSetTargetDepth(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{MaxDepth: 10})
	j.SetTargetDepth(50)
	if j.TargetDepth() != 10 {
		t.Fatalf("target %d, want clamp to 10", j.TargetDepth())
	}
	j.SetTargetDepth(3)
	for s := uint16(1); s <= 2; s++ {
		j.Push(s, 0, payloadFor(s))
	}
	if _, _, st := j.Pop(); st != PopEmpty {
		t.Fatal("started below new target")
	}
	j.Push(3, 0, payloadFor(3))
	if got := popN(t, j, 1); fmt.Sprint(got) != fmt.Sprint(ok(1)) {
		t.Fatalf("got %v", got)
	}
}

func TestJitterNoAllocs(t *testing.T) {
	j := NewJitterBuffer(JitterConfig{Capacity: 64, MaxPayload: 200, TargetDepth: 2})
	payload := make([]byte, 160)
	seq, ts := uint16(65000), uint32(0)
	j.Push(seq, ts, payload)
	a := testing.AllocsPerRun(1000, func() {
		seq++
		ts += 160
		j.Push(seq, ts, payload)
		if _, _, st := j.Pop(); st != PopOK {
			t.Fatalf("pop %v", st)
		}
		j.PeekNext()
	})
	if a != 0 {
		t.Fatalf("%v allocs per Push+Pop", a)
	}
}

// TestJitterLargePayloads: slots start smaller than MaxPayload and grow once to the packets
// they hold; payloads come back intact and, once every slot has held one, Push+Pop of any
// size up to MaxPayload allocates nothing.
func TestJitterLargePayloads(t *testing.T) {
	for _, size := range []int{jbSlotInit - 1, jbSlotInit + 1, 481, 1500} {
		j := NewJitterBuffer(JitterConfig{Capacity: 64, MaxPayload: 1500, TargetDepth: 1})
		payload := make([]byte, size)
		seq := uint16(0)
		step := func() {
			for i := range payload {
				payload[i] = byte(int(seq) + i)
			}
			j.Push(seq, uint32(seq)*160, payload)
			got, _, st := j.Pop()
			if st != PopOK || len(got) != size || got[0] != byte(seq) || got[size-1] != byte(int(seq)+size-1) {
				t.Fatalf("size %d seq %d: %v, %d bytes", size, seq, st, len(got))
			}
			seq++
		}
		for range 64 { // each slot holds one packet
			step()
		}
		if a := testing.AllocsPerRun(500, step); a != 0 {
			t.Errorf("size %d: %.2f allocs per Push+Pop after warm-up", size, a)
		}
	}
	j := NewJitterBuffer(JitterConfig{Capacity: 8, MaxPayload: 300})
	j.Push(0, 0, make([]byte, 301))
	if st := j.Stats(); st.Oversize != 1 {
		t.Fatalf("a payload over MaxPayload was kept: %+v", st)
	}
}
