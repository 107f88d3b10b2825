package impair

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink is a net.PacketConn that records the sequence number (first 4 bytes
// after a 1-byte kind) of each datagram written to it, in arrival order.
type sink struct {
	mu     sync.Mutex
	got    []uint32
	closed bool
}

func newSink(n int) *sink { return &sink{got: make([]uint32, 0, n)} }

func (s *sink) WriteTo(p []byte, _ net.Addr) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	s.got = append(s.got, binary.BigEndian.Uint32(p[1:5]))
	return len(p), nil
}
func (s *sink) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (s *sink) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
func (s *sink) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (s *sink) SetDeadline(time.Time) error      { return nil }
func (s *sink) SetReadDeadline(time.Time) error  { return nil }
func (s *sink) SetWriteDeadline(time.Time) error { return nil }
func (s *sink) snapshot() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.got...)
}
func (s *sink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.got) }
func (s *sink) waitCount(n int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if s.count() >= n {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return s.count() >= n
}

// clock is a settable fake clock.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(d time.Duration) { c.ns.Store(int64(d) + 1e18) }
func newClock() *clock               { c := &clock{}; c.set(0); return c }
func pkt(b []byte, kind byte, i int) []byte {
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:5], uint32(i))
	return b[:12]
}

var dst = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}

// Bernoulli loss: over 10k datagrams the dropped count must lie within 5
// standard deviations of n*p (sd = sqrt(n p (1-p))); every datagram not
// dropped is delivered once, in order (no jitter).
func TestLossRate(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		name string
		loss float64
		seed uint64
	}{
		{"1pct", 0.01, 7}, {"5pct", 0.05, 42}, {"20pct", 0.20, 1234},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(n)
			c := Wrap(s, Model{Seed: tc.seed, Loss: tc.loss})
			t.Logf("seed %d", c.Seed())
			b := make([]byte, 64)
			for i := range n {
				if _, err := c.WriteTo(pkt(b, 0x80, i), dst); err != nil {
					t.Fatal(err)
				}
			}
			st := c.Stats().Write
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			mean, sd := n*tc.loss, math.Sqrt(n*tc.loss*(1-tc.loss))
			if d := float64(st.Dropped); math.Abs(d-mean) > 5*sd {
				t.Errorf("dropped %d of %d, want %.0f ± %.0f", st.Dropped, n, mean, 5*sd)
			}
			got := s.snapshot()
			if st.Sent != n || uint64(len(got))+st.Dropped != n || st.Burst != 0 || st.Reordered != 0 {
				t.Errorf("stats %+v, delivered %d", st, len(got))
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("out of order at %d: %d after %d", i, got[i], got[i-1])
				}
			}
		})
	}
}

// inversions counts datagrams delivered after one offered later.
func inversions(got []uint32) (n int) {
	var hi uint32
	for i, g := range got {
		if i > 0 && g < hi {
			n++
		}
		hi = max(hi, g)
	}
	return n
}

// Jitter on a fake clock, one datagram per 20 ms of virtual time: with up to
// 40 ms of extra delay later datagrams overtake earlier ones; with up to
// 10 ms (less than the spacing) they never can. Nothing is lost either way.
func TestJitterReorders(t *testing.T) {
	const n = 500
	for _, tc := range []struct {
		name    string
		jitter  time.Duration
		dist    Dist
		reorder bool
	}{
		{"uniform40", 40 * time.Millisecond, Uniform, true},
		{"exp40", 40 * time.Millisecond, Exponential, true},
		{"uniform10", 10 * time.Millisecond, Uniform, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSink(n), newClock()
			c := wrap(s, Model{Seed: 99, Jitter: tc.jitter, Dist: tc.dist}, clk.now)
			defer c.Close()
			t.Logf("seed %d", c.Seed())
			b := make([]byte, 64)
			for i := range n {
				clk.set(time.Duration(i) * 20 * time.Millisecond)
				if _, err := c.WriteTo(pkt(b, 0x80, i), dst); err != nil {
					t.Fatal(err)
				}
			}
			clk.set(time.Hour)
			c.WriteTo(pkt(b, 0x80, n), dst) // wakes the scheduler
			clk.set(2 * time.Hour)          // everything is now due
			if !s.waitCount(n+1, 5*time.Second) {
				t.Fatalf("delivered %d of %d", s.count(), n+1)
			}
			st := c.Stats().Write
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			got := s.snapshot()
			seen := make([]bool, n+1)
			for _, g := range got {
				if seen[g] {
					t.Fatalf("datagram %d delivered twice", g)
				}
				seen[g] = true
			}
			inv := inversions(got)
			t.Logf("%d reordered, %d delayed of %d", inv, st.Delayed, st.Sent)
			if uint64(inv) != st.Reordered {
				t.Errorf("counter says %d reordered, the wire %d", st.Reordered, inv)
			}
			if (inv > 0) != tc.reorder {
				t.Errorf("reordered %d, want reordering %v", inv, tc.reorder)
			}
			if st.Delayed < n*9/10 {
				t.Errorf("only %d of %d delayed", st.Delayed, n)
			}
		})
	}
}

// Bursts drop exactly the datagrams offered inside [After + k*Every,
// After + k*Every + Len), k >= 1, and nothing else; with MediaOnly, non-RTP
// datagrams (STUN's first byte is 0) pass through the bursts.
func TestBurstWindow(t *testing.T) {
	for _, tc := range []struct {
		name             string
		every, len, aftr time.Duration
		mediaOnly        bool
	}{
		{"2s/200ms", 2 * time.Second, 200 * time.Millisecond, 0, false},
		{"1s/50ms after 500ms", time.Second, 50 * time.Millisecond, 500 * time.Millisecond, false},
		{"media only", 2 * time.Second, 200 * time.Millisecond, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10000 // one per virtual ms
			s, clk := newSink(n), newClock()
			c := wrap(s, Model{BurstEvery: tc.every, BurstLen: tc.len, After: tc.aftr, MediaOnly: tc.mediaOnly}, clk.now)
			b := make([]byte, 64)
			want := 0
			inBurst := make([]bool, n)
			for i := range n {
				at := time.Duration(i) * time.Millisecond
				clk.set(at)
				kind := byte(0x80)
				if tc.mediaOnly && i%2 == 1 {
					kind = 0x00 // a STUN message
				}
				el := at - tc.aftr
				inBurst[i] = kind == 0x80 && el >= tc.every && el%tc.every < tc.len
				if !inBurst[i] {
					want++
				}
				if _, err := c.WriteTo(pkt(b, kind, i), dst); err != nil {
					t.Fatal(err)
				}
			}
			st := c.Stats().Write
			c.Close()
			got := s.snapshot()
			if len(got) != want {
				t.Errorf("delivered %d, want %d", len(got), want)
			}
			for _, g := range got {
				if inBurst[g] {
					t.Fatalf("datagram at %d ms delivered inside a burst", g)
				}
			}
			if int(st.Burst) != n-want || st.Dropped != 0 {
				t.Errorf("stats %+v, want %d burst drops", st, n-want)
			}
		})
	}
}

// Reads over real loopback sockets: jitter reorders what the reader sees,
// every datagram arrives once, the counter agrees with the order seen, and a
// read deadline still expires when nothing comes.
func TestReadSide(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := Wrap(rx, Model{Seed: 5, Dir: Read, Jitter: 40 * time.Millisecond})
	defer c.Close()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const n = 50
	go func() {
		b := make([]byte, 64)
		for i := range n {
			tx.WriteToUDPAddrPort(pkt(b, 0x80, i), to)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var got []uint32
	buf := make([]byte, 1500)
	for len(got) < n {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d: %v", len(got), err)
		}
		if from != tx.LocalAddr().(*net.UDPAddr).AddrPort() || k != 12 {
			t.Fatalf("from %v, %d bytes", from, k)
		}
		got = append(got, binary.BigEndian.Uint32(buf[1:5]))
	}
	st := c.Stats().Read
	t.Logf("%d reordered, %d delayed of %d", inversions(got), st.Delayed, st.Sent)
	if uint64(inversions(got)) != st.Reordered || st.Sent != n {
		t.Errorf("stats %+v, inversions seen %d", st, inversions(got))
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, _, err := c.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with nothing sent: %v, want deadline exceeded", err)
	}
}

// Close stops the scheduler and the reader, unblocks a pending read, and
// everything after it fails with net.ErrClosed.
func TestClose(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := Wrap(rx, Model{Dir: Both, Loss: 0.1, Jitter: 40 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 100))
		done <- err
	}()
	b := make([]byte, 64)
	for i := range 10 { // queued, never delivered
		c.WriteToUDPAddrPort(pkt(b, 0x80, i), netip.MustParseAddrPort("127.0.0.1:9"))
	}
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending read: %v", err)
	}
	if _, err := c.WriteTo(b[:12], dst); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second close: %v", err)
	}
	goleak.VerifyNone(t)
}

// The write path allocates nothing per datagram once warm.
func TestWriteAllocs(t *testing.T) {
	s, clk := newSink(1<<16), newClock()
	c := wrap(s, Model{Seed: 3, Loss: 0.05, BurstEvery: time.Second, BurstLen: 100 * time.Millisecond}, clk.now)
	defer c.Close()
	b := make([]byte, 172)
	i := 0
	step := func() {
		clk.set(time.Duration(i) * 20 * time.Millisecond)
		c.WriteTo(pkt(b, 0x80, i), dst)
		i++
	}
	for range 100 {
		step()
	}
	if a := testing.AllocsPerRun(1000, step); a != 0 {
		t.Errorf("%v allocations per datagram", a)
	}
}

// BenchmarkWriteJitter: the queued path (jitter, loss) including delivery by
// the scheduler goroutine.
func BenchmarkWriteJitter(b *testing.B) {
	s, clk := newSink(0), newClock()
	s.got = nil
	c := wrap(&discard{s}, Model{Seed: 3, Loss: 0.05, Jitter: 40 * time.Millisecond}, clk.now)
	defer c.Close()
	buf := make([]byte, 172)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		clk.set(time.Duration(i) * 20 * time.Millisecond)
		c.WriteTo(pkt(buf, 0x80, i), dst)
	}
}

// discard drops what is written (benchmarks).
type discard struct{ *sink }

func (discard) WriteTo(p []byte, _ net.Addr) (int, error) { return len(p), nil }
