package sip

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/rtcp"
)

// DefaultRTCPInterval is the RFC 3550 §6.2 minimum report interval.
const DefaultRTCPInterval = 5 * time.Second

// ntpEpochOffset is the seconds between 1900-01-01 (NTP) and 1970-01-01.
const ntpEpochOffset = 2208988800

func toNTP(t time.Time) uint64 {
	sec := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return sec<<32 | frac
}

// ntpMid is the middle 32 bits of an NTP timestamp (the LSR/DLSR unit is 1/65536 s).
func ntpMid(t time.Time) uint32 { return uint32(toNTP(t) >> 16) }

// rtcpLoop reads RTCP on port+1 and sends a report every interval,
// randomised to [0.5, 1.5] x interval (RFC 3550 §6.3.1) so that the
// two ends do not synchronise.
func (s *RTPSession) rtcpLoop() {
	defer s.wg.Done()
	buf := make([]byte, maxRTPPacket)
	next := time.Now().Add(s.nextInterval())
	for {
		if err := s.rtcpConn.SetReadDeadline(next); err != nil {
			return
		}
		n, from, err := s.rtcpConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-s.done:
					return
				default:
				}
				s.sendRTCP(false)
				next = time.Now().Add(s.nextInterval())
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.handleRTCP(buf[:n], from)
	}
}

func (s *RTPSession) nextInterval() time.Duration {
	iv := s.interval
	if iv <= 0 {
		iv = DefaultRTCPInterval
	}
	return time.Duration(float64(iv) * (0.5 + rand.Float64()))
}

// handleRTCP records what the remote tells us about our stream.
func (s *RTPSession) handleRTCP(b []byte, from netip.AddrPort) {
	b, ok := s.unprotectRTCP(b) // H-TLS: SRTCP (srtp.go)
	if !ok {
		s.countSRTPDrop()
		return
	}
	pkts, err := rtcp.Unmarshal(b)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.stats.Dropped++
		return
	}
	if s.signalled.IsValid() && !s.signalled.Addr().IsUnspecified() && from.Addr() != s.signalled.Addr() {
		s.stats.Dropped++
		return
	}
	s.stats.RTCPIn++
	if s.signalled.IsValid() && from.Port() != s.remote.Port() {
		// Latch RTCP like RTP (symmetric RTCP, RFC 4961), but never onto
		// the RTP port itself when the peer multiplexes.
		s.rtcpRemote = from
	}
	for _, p := range pkts {
		switch r := p.(type) {
		case *rtcp.SenderReport:
			if s.rx.active && r.SSRC == s.rx.ssrc {
				s.lastSRMid = uint32(r.NTPTime >> 16)
				s.lastSRAt = now
			}
			s.useReports(r.Reports, now)
		case *rtcp.ReceiverReport:
			s.useReports(r.Reports, now)
		}
	}
}

func (s *RTPSession) useReports(rr []rtcp.ReceptionReport, now time.Time) {
	for _, r := range rr {
		if r.SSRC != s.txSSRC || s.stats.PacketsOut == 0 {
			continue
		}
		s.stats.RemoteFractionLost = float64(r.FractionLost) / 256
		s.stats.RemoteLost = int64(r.TotalLost)
		if r.TotalLost&0x800000 != 0 { // 24-bit signed
			s.stats.RemoteLost = int64(r.TotalLost) - 1<<24
		}
		s.stats.RemoteJitter = time.Duration(float64(r.Jitter) / float64(s.clockRate) * float64(time.Second))
		if r.LastSenderReport != 0 {
			// RFC 3550 §6.4.1: RTT = A - LSR - DLSR in 1/65536 s.
			rtt := ntpMid(now) - r.LastSenderReport - r.Delay
			if rtt < 1<<31 {
				s.stats.RTT = time.Duration(uint64(rtt) * uint64(time.Second) >> 16)
			}
		}
	}
}

// sendRTCP sends SR (if we sent RTP since the last report) or RR, with an
// SDES CNAME (RFC 3550 §6.1 compound packet), plus a BYE when closing.
func (s *RTPSession) sendRTCP(bye bool) {
	s.mu.Lock()
	dst := s.rtcpRemote
	if !dst.IsValid() || s.closed || (s.sec.strict.Load() && !s.sec.keyed.Load()) { // H-TLS: no clear RTCP on a required session
		s.mu.Unlock()
		return
	}
	now := time.Now()
	ssrc := s.txSSRC
	if ssrc == 0 {
		ssrc = rand.Uint32() | 1
		s.txSSRC = ssrc
	}
	var reports []rtcp.ReceptionReport
	if s.rx.active {
		reports = append(reports, s.receptionReport(now))
	}
	var first rtcp.Packet
	if s.txSentSR || (bye && s.stats.PacketsOut > 0) {
		// Extrapolate the RTP timestamp of "now" from the last packet sent.
		ts := s.txLastTS + uint32(now.Sub(s.txLastAt).Seconds()*float64(s.clockRate))
		first = &rtcp.SenderReport{
			SSRC: ssrc, NTPTime: toNTP(now), RTPTime: ts,
			PacketCount: uint32(s.stats.PacketsOut), OctetCount: uint32(s.stats.BytesOut),
			Reports: reports,
		}
	} else {
		first = &rtcp.ReceiverReport{SSRC: ssrc, Reports: reports}
	}
	s.txSentSR = false
	pkts := []rtcp.Packet{first, rtcp.NewCNAMESourceDescription(ssrc, s.cname)}
	if bye {
		pkts = append(pkts, &rtcp.Goodbye{Sources: []uint32{ssrc}})
	}
	s.stats.RTCPOut++
	s.mu.Unlock()
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		return
	}
	if b, ok := s.protectRTCP(b); ok { // H-TLS: SRTCP (srtp.go); nothing in clear on a required session
		_, _ = s.rtcpConn.WriteToUDPAddrPort(b, dst)
	}
}

// receptionReport builds the RFC 3550 A.3 report block; caller holds s.mu.
func (s *RTPSession) receptionReport(now time.Time) rtcp.ReceptionReport {
	r := &s.rx
	extMax := r.extendedMax()
	expected := uint64(extMax) - uint64(r.baseSeq) + 1
	lost := int64(expected) - int64(r.received)
	if lost > 0x7FFFFF {
		lost = 0x7FFFFF
	} else if lost < -0x800000 {
		lost = -0x800000
	}
	expInt := expected - r.expectedPrior
	recInt := r.received - r.receivedPrior
	r.expectedPrior, r.receivedPrior = expected, r.received
	var fraction uint8
	if lostInt := int64(expInt) - int64(recInt); expInt > 0 && lostInt > 0 {
		fraction = uint8((lostInt << 8) / int64(expInt))
	}
	rep := rtcp.ReceptionReport{
		SSRC:               r.ssrc,
		FractionLost:       fraction,
		TotalLost:          uint32(lost) & 0xFFFFFF,
		LastSequenceNumber: extMax,
		Jitter:             uint32(r.jitter),
	}
	if !s.lastSRAt.IsZero() {
		rep.LastSenderReport = s.lastSRMid
		rep.Delay = uint32(now.Sub(s.lastSRAt).Seconds() * 65536)
	}
	return rep
}
