package webrtc

import (
	"math"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// LegStats are counters of one leg. Loss and jitter follow RFC 3550 appendix A.3 and A.8.
type LegStats struct {
	PacketsIn, BytesIn   uint64 // RTP from Meta (payload bytes)
	PacketsOut, BytesOut uint64 // RTP toward Meta (payload bytes)
	// Lost is the cumulative number of inbound packets lost (expected - received, RFC 3550
	// A.3); duplicates can make it negative.
	Lost int64
	// Jitter is the inbound interarrival jitter of the Opus stream (RFC 3550 A.8).
	Jitter time.Duration
	// RTT comes from Meta's reception reports about our SSRC (LSR/DLSR, RFC 3550 §6.4.1);
	// zero until one arrived.
	RTT time.Duration
	// RemoteFractionLost is the loss Meta last reported for our stream (0..1).
	RemoteFractionLost float64
	RTCPIn, RTCPOut    uint64
	RemoteSSRC         uint32
	FirstIn, LastIn    time.Time
	FirstOut, LastOut  time.Time
	ByeReceived        bool
}

// Stats returns a snapshot of the leg's counters.
func (l *Leg) Stats() LegStats {
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	s := l.st.pub
	if l.st.started {
		s.Lost = int64(l.st.expected()) - int64(l.st.received)
	}
	s.Jitter = time.Duration(l.st.jitter / OpusClockRate * float64(time.Second))
	return s
}

// legStats is the mutable state behind LegStats.
type legStats struct {
	mu  sync.Mutex
	pub LegStats
	t0  time.Time // arrival clock origin for jitter

	// Inbound sequence tracking (RFC 3550 A.1, simplified: no probation).
	started              bool
	baseSeq, maxSeq      uint16
	cycles               uint32
	received             uint64
	expectedPrior        uint64
	receivedPrior        uint64
	transit              int64
	haveTransit          bool
	jitter               float64 // timestamp units
	lastSR               uint32  // middle 32 bits of Meta's last SR NTP time
	lastSRAt             time.Time
	lastTS               uint32 // RTP timestamp of our last Opus packet
	lastTSAt             time.Time
	haveTS               bool
	packetsOut, octetOut uint32 // SR sender info wraps at 2^32 (RFC 3550 §6.4.1)
}

func (s *legStats) init() { s.t0 = time.Now() }

func (s *legStats) onRTP(h *rtp.Header, payloadLen int, opus bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.pub
	if p.PacketsIn == 0 {
		p.FirstIn = now
	}
	p.PacketsIn++
	p.BytesIn += uint64(payloadLen)
	p.LastIn = now
	if !s.started || h.SSRC != p.RemoteSSRC {
		// New source: restart the loss and jitter bookkeeping (RFC 3550 A.1 init_seq).
		s.started = true
		p.RemoteSSRC = h.SSRC
		s.baseSeq, s.maxSeq, s.cycles = h.SequenceNumber, h.SequenceNumber, 0
		s.received, s.expectedPrior, s.receivedPrior = 0, 0, 0
		s.haveTransit, s.jitter = false, 0
	} else if d := h.SequenceNumber - s.maxSeq; d != 0 && d < 0x8000 {
		if h.SequenceNumber < s.maxSeq {
			s.cycles += 1 << 16
		}
		s.maxSeq = h.SequenceNumber
	}
	s.received++
	if !opus {
		// RFC 4733 packets repeat one timestamp for a whole event: they say nothing about
		// network jitter.
		return
	}
	arrival := int64(now.Sub(s.t0)) * OpusClockRate / int64(time.Second)
	transit := arrival - int64(h.Timestamp)
	if s.haveTransit {
		d := float64(transit - s.transit)
		s.jitter += (math.Abs(d) - s.jitter) / 16
	}
	s.transit, s.haveTransit = transit, true
}

func (s *legStats) expected() uint64 {
	return uint64(s.cycles) + uint64(s.maxSeq) - uint64(s.baseSeq) + 1
}

func (s *legStats) onSent(ts uint32, payloadLen int, opus bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.pub
	if p.PacketsOut == 0 {
		p.FirstOut = now
	}
	p.PacketsOut++
	p.BytesOut += uint64(payloadLen)
	p.LastOut = now
	s.packetsOut++
	s.octetOut += uint32(payloadLen)
	if opus {
		s.lastTS, s.lastTSAt, s.haveTS = ts, now, true
	}
}

// report builds our SR or RR (RFC 3550 §6.4) for the current state.
func (s *legStats) report(ssrc uint32, now time.Time) []rtcp.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	var blocks []rtcp.ReceptionReport
	if s.started {
		exp := s.expected()
		lost := int64(exp) - int64(s.received)
		expInt := exp - s.expectedPrior
		recvInt := s.received - s.receivedPrior
		s.expectedPrior, s.receivedPrior = exp, s.received
		var frac uint8
		if lostInt := int64(expInt) - int64(recvInt); expInt > 0 && lostInt > 0 {
			frac = uint8((lostInt << 8) / int64(expInt))
		}
		// Cumulative loss is a signed 24-bit field.
		lost = max(min(lost, 0x7fffff), -0x800000)
		var dlsr uint32
		if !s.lastSRAt.IsZero() {
			dlsr = uint32(now.Sub(s.lastSRAt).Seconds() * 65536)
		}
		blocks = append(blocks, rtcp.ReceptionReport{
			SSRC:               s.pub.RemoteSSRC,
			FractionLost:       frac,
			TotalLost:          uint32(lost) & 0xffffff,
			LastSequenceNumber: s.cycles + uint32(s.maxSeq),
			Jitter:             uint32(s.jitter),
			LastSenderReport:   s.lastSR,
			Delay:              dlsr,
		})
	}
	if !s.haveTS {
		return []rtcp.Packet{&rtcp.ReceiverReport{SSRC: ssrc, Reports: blocks}}
	}
	// The SR's RTP timestamp corresponds to its NTP time, extrapolated from our last packet at
	// the 48 kHz Opus clock (RFC 3550 §6.4.1).
	rtpTS := s.lastTS + uint32(now.Sub(s.lastTSAt).Seconds()*OpusClockRate)
	return []rtcp.Packet{&rtcp.SenderReport{
		SSRC:        ssrc,
		NTPTime:     ntpTime(now),
		RTPTime:     rtpTS,
		PacketCount: s.packetsOut,
		OctetCount:  s.octetOut,
		Reports:     blocks,
	}}
}

func (s *legStats) onRTCPSent() {
	s.mu.Lock()
	s.pub.RTCPOut++
	s.mu.Unlock()
}

func (s *legStats) onRTCPIn() {
	s.mu.Lock()
	s.pub.RTCPIn++
	s.mu.Unlock()
}

func (s *legStats) onBye() {
	s.mu.Lock()
	s.pub.RTCPIn++
	s.pub.ByeReceived = true
	s.mu.Unlock()
}

// onSR remembers Meta's last SR for the LSR/DLSR fields of our next report.
func (s *legStats) onSR(sr *rtcp.SenderReport, now time.Time) {
	s.mu.Lock()
	s.pub.RTCPIn++
	s.lastSR = uint32(sr.NTPTime >> 16)
	s.lastSRAt = now
	s.mu.Unlock()
}

// onReports takes Meta's reception reports about our stream: RTT = A - LSR - DLSR in 1/65536 s
// (RFC 3550 §6.4.1).
func (s *legStats) onReports(ssrc uint32, reports []rtcp.ReceptionReport, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range reports {
		if r.SSRC != ssrc {
			continue
		}
		s.pub.RemoteFractionLost = float64(r.FractionLost) / 256
		if r.LastSenderReport == 0 {
			continue
		}
		a := uint32(ntpTime(now) >> 16)
		if rtt := int64(a) - int64(r.LastSenderReport) - int64(r.Delay); rtt >= 0 {
			s.pub.RTT = time.Duration(rtt * int64(time.Second) / 65536)
		}
	}
}

// ntpTime converts t to the 64-bit NTP format (RFC 5905 §6): seconds since 1900 in the high 32
// bits, fraction in the low 32.
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1970-01-01 minus 1900-01-01 in seconds
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}
