package webrtc_test

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/webrtc"
)

// TestWriteRTPAllocs: sending one packet toward Meta does not allocate in steady state, through
// pion's SRTP and ICE layers down to the socket.
func TestWriteRTPAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	l, _ := connectedPair(t, func(c *webrtc.Config) { c.RTCPInterval = time.Hour }, peerNoRead)
	l.EnableSend()
	h := &rtp.Header{Version: 2, PayloadType: 111}
	payload := make([]byte, 60)
	write := func() {
		h.SequenceNumber++
		h.Timestamp += 960
		if err := l.WriteRTP(h, payload); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		write()
	}
	allocs := minAllocs(500, write)
	t.Logf("WriteRTP: %.2f allocs/packet", allocs)
	if allocs > 0 {
		t.Fatalf("WriteRTP allocates %.2f times per packet", allocs)
	}
}

// TestReadRTPAllocs: reading one packet from Meta does not allocate in steady state. The peer
// sends a burst first, so the measured loop only drains pion's buffer (AllocsPerRun counts
// every goroutine's allocations, including the peer's sender).
func TestReadRTPAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	l, p := connectedPair(t, nil)
	const burst = 700
	for i := range burst {
		err := p.track.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(960 * i)},
			Payload: make([]byte, 60),
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond) // stay below the socket buffer
		}
	}
	time.Sleep(300 * time.Millisecond)
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	read := func() {
		if err := l.ReadRTP(buf, &pkt); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		read()
	}
	allocs := testing.AllocsPerRun(500, read) // the burst holds one run; no background traffic
	t.Logf("ReadRTP: %.2f allocs/packet", allocs)
	if allocs > 0 {
		t.Fatalf("ReadRTP allocates %.2f times per packet", allocs)
	}
	// AllocsPerRun calls read once more than asked, to warm up.
	if s := l.Stats(); s.PacketsIn != 50+501 {
		t.Fatalf("stats %+v", s)
	}
}

func peerNoRead(p *litePeer) { p.noRead.Store(true) }

// minAllocs is the least of three testing.AllocsPerRun measurements. AllocsPerRun counts every
// goroutine of the process, and both pion stacks have housekeeping (ICE keepalives, pair
// checks just after connecting) that lands in a window now and then; the code under test is
// deterministic, so its own count is the minimum.
func minAllocs(runs int, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for range 2 {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}

func BenchmarkWriteRTP(b *testing.B) {
	l, _ := connectedPair(b, func(c *webrtc.Config) { c.RTCPInterval = time.Hour }, peerNoRead)
	l.EnableSend()
	h := &rtp.Header{Version: 2, PayloadType: 111}
	payload := make([]byte, 60)
	b.ReportAllocs()
	start := cpuTime() // includes the peer's pion receiving (and dropping, unread) each packet
	for b.Loop() {
		h.SequenceNumber++
		h.Timestamp += 960
		if err := l.WriteRTP(h, payload); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}
