package webrtc_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/webrtc"
)

// pion's own cost per packet, reported apart from ponte's media code (issue 7): the leg's
// write path (RawTrack, SRTP protect, ICE mux, sendto) and read path (the mux's reader
// goroutine, DTLS/SRTP demultiplexing, SRTP unprotect, pion's read buffer, ReadRTP) over
// loopback. Besides wall time per packet they report the process's CPU time per packet
// (getrusage: every goroutine, including the peer's side and pion's internal reader
// goroutines, which wall time alone hides when they run on another core).

// cpuTime is the CPU time (user + system) used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds cpu-ns/op: the process CPU time since start, per iteration.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkReadRTP: the peer (a pion stack shaped like Meta's relay) sends one Opus
// packet and the leg reads it, one at a time: one packet through the whole pion receive path.
// The CPU figure includes the peer's send (SRTP protect, its default interceptors, sendto).
func BenchmarkReadRTP(b *testing.B) {
	l, p := connectedPair(b, func(c *webrtc.Config) { c.RTCPInterval = time.Hour })
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 60)}
	buf := make([]byte, 1500)
	var in rtp.Packet
	// Drain anything pion buffered during the handshake, then measure.
	for range 20 {
		pkt.SequenceNumber++
		pkt.Timestamp += 960
		if err := p.track.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		if err := l.ReadRTP(buf, &in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for b.Loop() {
		pkt.SequenceNumber++
		pkt.Timestamp += 960
		if err := p.track.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		if err := l.ReadRTP(buf, &in); err != nil {
			b.Fatal(err)
		}
		if in.SequenceNumber != pkt.SequenceNumber {
			b.Fatalf("read seq %d, sent %d (a packet was lost on loopback)", in.SequenceNumber, pkt.SequenceNumber)
		}
	}
	reportCPU(b, start)
}
