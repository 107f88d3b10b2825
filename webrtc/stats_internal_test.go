package webrtc

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

func TestStatsLossAndWrap(t *testing.T) {
	tests := []struct {
		name     string
		seqs     []uint16
		wantLost int64
		wantExt  uint32 // extended highest sequence number
	}{
		{"in order", []uint16{10, 11, 12, 13}, 0, 13},
		{"one gap", []uint16{10, 11, 13, 14}, 1, 14},
		{"wrap", []uint16{65534, 65535, 0, 1}, 0, 1<<16 + 1},
		{"wrap with loss", []uint16{65533, 65535, 2}, 3, 1<<16 + 2},
		{"reordered", []uint16{10, 12, 11, 13}, 0, 13},
		{"late old packet", []uint16{10, 11, 12, 9}, -1, 12}, // RFC 3550 A.3: duplicates/old count as received
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s legStats
			s.init()
			now := s.t0
			for i, seq := range tc.seqs {
				s.onRTP(&rtp.Header{SSRC: 7, SequenceNumber: seq, Timestamp: uint32(960 * i)}, 10, true, now.Add(time.Duration(i)*20*time.Millisecond))
			}
			s.mu.Lock()
			lost := int64(s.expected()) - int64(s.received)
			ext := s.cycles + uint32(s.maxSeq)
			s.mu.Unlock()
			if lost != tc.wantLost || ext != tc.wantExt {
				t.Fatalf("lost %d ext %d, want %d %d", lost, ext, tc.wantLost, tc.wantExt)
			}
			if tc.wantLost >= 0 {
				rr := s.report(99, now.Add(time.Second))[0].(*rtcp.ReceiverReport)
				if rr.SSRC != 99 || len(rr.Reports) != 1 || rr.Reports[0].SSRC != 7 ||
					rr.Reports[0].TotalLost != uint32(tc.wantLost) || rr.Reports[0].LastSequenceNumber != tc.wantExt {
					t.Fatalf("report %+v", rr)
				}
				wantFrac := uint8(tc.wantLost * 256 / int64(len(tc.seqs)+int(tc.wantLost)))
				if rr.Reports[0].FractionLost != wantFrac {
					t.Fatalf("fraction %d, want %d", rr.Reports[0].FractionLost, wantFrac)
				}
			}
		})
	}
}

// TestStatsJitter: packets that arrive exactly on their 20 ms schedule have zero jitter; a
// stream whose arrivals alternate ±5 ms converges to about 10 ms of transit difference
// (RFC 3550 A.8: J converges to the mean |D|, here 10 ms = 480 ticks).
func TestStatsJitter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		skew     time.Duration
		min, max time.Duration
	}{
		{"steady", 0, 0, 0},
		{"alternating 5ms", 5 * time.Millisecond, 9 * time.Millisecond, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Leg{}
			l.st.init()
			for i := range 500 {
				at := l.st.t0.Add(time.Duration(i) * 20 * time.Millisecond)
				if i%2 == 1 {
					at = at.Add(tc.skew)
				} else {
					at = at.Add(-tc.skew)
				}
				l.st.onRTP(&rtp.Header{SSRC: 1, SequenceNumber: uint16(i), Timestamp: uint32(960 * i)}, 10, true, at)
			}
			// A telephone-event burst with a frozen timestamp must not move the jitter.
			for i := range 5 {
				l.st.onRTP(&rtp.Header{SSRC: 1, SequenceNumber: uint16(500 + i), Timestamp: 7}, 4, false, l.st.t0.Add(time.Hour))
			}
			j := l.Stats().Jitter
			if j < tc.min || j > tc.max {
				t.Fatalf("jitter %s, want [%s, %s]", j, tc.min, tc.max)
			}
		})
	}
}

func TestSenderReportAndRTT(t *testing.T) {
	var s legStats
	s.init()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.onSent(48000, 40, true, t0)
	s.onSent(48960, 40, true, t0.Add(20*time.Millisecond))
	s.onSent(48960, 4, false, t0.Add(30*time.Millisecond)) // DTMF: counted, not a clock reference
	// Meta's SR arrives; its middle 32 bits become our LSR.
	metaNTP := ntpTime(t0.Add(-time.Second))
	s.onRTP(&rtp.Header{SSRC: 5, SequenceNumber: 1}, 10, true, t0)
	s.onSR(&rtcp.SenderReport{SSRC: 5, NTPTime: metaNTP}, t0)
	pkts := s.report(77, t0.Add(520*time.Millisecond))
	sr, ok := pkts[0].(*rtcp.SenderReport)
	if !ok {
		t.Fatalf("want SR, got %T", pkts[0])
	}
	if sr.SSRC != 77 || sr.PacketCount != 3 || sr.OctetCount != 84 || sr.RTPTime != 48960+24000 {
		t.Fatalf("SR %+v", sr)
	}
	if sr.NTPTime != ntpTime(t0.Add(520*time.Millisecond)) {
		t.Fatal("NTP time")
	}
	rb := sr.Reports[0]
	if rb.LastSenderReport != uint32(metaNTP>>16) || rb.Delay != 34078 {
		t.Fatalf("LSR/DLSR %d %d", rb.LastSenderReport, rb.Delay)
	}
	// Meta reports on our SR 80 ms later with DLSR 30 ms: RTT 50 ms.
	ourLSR := uint32(sr.NTPTime >> 16)
	s.onReports(77, []rtcp.ReceptionReport{{SSRC: 77, FractionLost: 64, LastSenderReport: ourLSR, Delay: 1966}},
		t0.Add(600*time.Millisecond))
	if rtt := s.pub.RTT; rtt < 49*time.Millisecond || rtt > 51*time.Millisecond {
		t.Fatalf("RTT %s, want 50ms", rtt)
	}
	if s.pub.RemoteFractionLost != 0.25 {
		t.Fatalf("remote fraction lost %v", s.pub.RemoteFractionLost)
	}
}

func TestNTPTime(t *testing.T) {
	// 1970-01-01T00:00:00.5Z is NTP second 2208988800 with fraction 2^31.
	got := ntpTime(time.Unix(0, 5e8))
	if got != 2208988800<<32|1<<31 {
		t.Fatalf("ntp %x", got)
	}
}
