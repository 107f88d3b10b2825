package sip

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// RTP errors.
var (
	ErrNoRTPPort      = errors.New("sip: no free RTP port pair in range")
	ErrPayloadTooLong = errors.New("sip: RTP packet too long")
)

// maxRTPPacket is the largest RTP packet we send or accept (one Ethernet MTU).
const maxRTPPacket = 1500

// RTPStats are the counters of one RTPSession.
type RTPStats struct {
	PacketsIn, PacketsOut uint64
	BytesIn, BytesOut     uint64 // payload octets (RFC 3550 §6.4.1 sender's octet count)
	Dropped               uint64 // datagrams not accepted: unknown source host, not RTP v2
	SRTPDropped           uint64 // H-TLS: SRTP/SRTCP packets that failed authentication or replay checks, or clear media on a required session
	Lost                  int64  // cumulative packets lost from the current remote SSRC (RFC 3550 A.3)
	Jitter                time.Duration
	SSRCChanges           int
	LastIn                time.Time // arrival time of the last accepted RTP packet

	// From the last RTCP report block the remote sent about our stream.
	RemoteFractionLost float64 // 0..1
	RemoteLost         int64
	RemoteJitter       time.Duration
	RTT                time.Duration // RFC 3550 §6.4.1 LSR/DLSR round trip, 0 if unknown
	RTCPIn, RTCPOut    uint64
}

// rxState is the RFC 3550 Appendix A.1/A.3/A.8 receiver state for one source.
type rxState struct {
	active        bool
	ssrc          uint32
	maxSeq        uint16
	cycles        uint32
	baseSeq       uint32
	badSeq        uint32
	received      uint64
	expectedPrior uint64
	receivedPrior uint64
	transit       int64
	haveTransit   bool
	jitter        float64 // in RTP timestamp units
}

const (
	maxDropout  = 3000
	maxMisorder = 100
	seqMod      = 1 << 16
)

func (r *rxState) init(ssrc uint32, seq uint16) {
	*r = rxState{active: true, ssrc: ssrc, maxSeq: seq, baseSeq: uint32(seq), badSeq: seqMod + 1}
}

// update applies RFC 3550 A.1 update_seq; it reports whether the packet counts.
func (r *rxState) update(seq uint16) bool {
	delta := seq - r.maxSeq
	switch {
	case delta < maxDropout:
		if seq < r.maxSeq {
			r.cycles += seqMod // wrapped
		}
		r.maxSeq = seq
	case uint32(delta) <= seqMod-maxMisorder:
		// A big jump: restart only if the next packet confirms it (the
		// source restarted without changing SSRC).
		if uint32(seq) == r.badSeq {
			r.init(r.ssrc, seq)
		} else {
			r.badSeq = (uint32(seq) + 1) & (seqMod - 1)
			return false
		}
	default:
		// duplicate or reordered packet: counted, max unchanged
	}
	r.received++
	return true
}

func (r *rxState) extendedMax() uint32 { return r.cycles + uint32(r.maxSeq) }

func (r *rxState) lost() int64 {
	if !r.active {
		return 0
	}
	expected := int64(r.extendedMax()) - int64(r.baseSeq) + 1
	return expected - int64(r.received)
}

// RTPSession is one plain RTP/AVP UDP socket with RTCP on port+1 (RFC 3550).
// ReadRTP is meant for one reader goroutine and WriteRTP for one writer;
// both may run concurrently with each other, with Stats and with SetRemote.
type RTPSession struct {
	conn, rtcpConn *net.UDPConn
	local          netip.AddrPort
	cname          string
	interval       time.Duration
	start          time.Time

	mu         sync.Mutex
	signalled  netip.AddrPort // from SDP
	remote     netip.AddrPort // where we send RTP (latched)
	rtcpRemote netip.AddrPort
	clockRate  int
	mediaPT    int // -1: jitter on every PT
	rx         rxState
	stats      RTPStats
	// sender side (RFC 3550 §6.4.1)
	txSSRC    uint32
	txLastTS  uint32
	txLastAt  time.Time
	txSentSR  bool // sent RTP since the last report
	lastSRMid uint32
	lastSRAt  time.Time
	closed    bool
	wmu       sync.Mutex
	wbuf      []byte
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	sec       srtpSec // H-TLS: SDES-SRTP state (srtp.go)

	nat natState // H-NAT: per-trunk c= and the symmetric-RTP latch (latch.go)
}

// NewRTPSession binds an even RTP port in [RTPPortMin, RTPPortMax] on RTPHost
// with RTCP on port+1 (RFC 3550 §11) and starts the RTCP goroutine.
func (u *UA) NewRTPSession() (*RTPSession, error) {
	conn, rtcpConn, err := u.ports.bind(u.rtpHost)
	if err != nil {
		return nil, err
	}
	s := &RTPSession{
		conn:      conn,
		rtcpConn:  rtcpConn,
		local:     conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		cname:     fmt.Sprintf("ponte-%08x@%s", rand.Uint32(), u.rtpHost),
		interval:  u.cfg.RTCPInterval,
		start:     time.Now(),
		clockRate: 8000,
		mediaPT:   -1,
		wbuf:      make([]byte, maxRTPPacket),
		done:      make(chan struct{}),
	}
	s.local = netip.AddrPortFrom(s.local.Addr().Unmap(), s.local.Port())
	s.wg.Add(1)
	go s.rtcpLoop()
	return s, nil
}

// LocalAddr is the bound RTP address (what goes into our SDP).
func (s *RTPSession) LocalAddr() netip.AddrPort { return s.local }

// SetRemote sets the RTP destination from the SDP (RTCP goes to port+1).
// Symmetric RTP (RFC 4961): once packets arrive from the same host, we
// send to their actual source port, which fixes PBXs behind port-rewriting
// NAT; packets from other hosts are dropped.
func (s *RTPSession) SetRemote(addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	if addr == s.signalled {
		return
	}
	s.signalled, s.remote = addr, addr
	if addr.Port() > 0 && addr.Port() < 65535 {
		s.rtcpRemote = netip.AddrPortFrom(addr.Addr(), addr.Port()+1)
	} else {
		s.rtcpRemote = netip.AddrPort{}
	}
}

// Remote returns where RTP is currently sent (after latching).
func (s *RTPSession) Remote() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote
}

// SetCodec tells the session the main payload type and its RTP clock rate,
// used for jitter (RFC 3550 A.8, computed on that PT only so that
// telephone-event packets with a constant timestamp do not inflate it) and
// for sender report timestamps. Default: every PT, 8000 Hz.
func (s *RTPSession) SetCodec(pt uint8, clockRate int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mediaPT = int(pt)
	if clockRate > 0 {
		s.clockRate = clockRate
	}
}

// ReadRTP blocks for the next RTP packet and unmarshals it into p; p.Payload
// aliases buf. Datagrams that are not RTP, or come from a host other than
// the signalled one, are skipped. RTCP multiplexed on the RTP port
// (RFC 5761 §4) is handed to the RTCP handler. After Close it returns
// net.ErrClosed. No allocation per packet.
func (s *RTPSession) ReadRTP(buf []byte, p *rtp.Packet) error {
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return err
			}
			continue // e.g. ICMP port unreachable surfaced on Linux
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		pkt := buf[:n]
		if n >= 2 && pkt[1] >= 192 && pkt[1] <= 223 {
			s.handleRTCP(pkt, from)
			continue
		}
		if n < 12 || pkt[0]>>6 != 2 {
			s.countDrop()
			continue
		}
		if s.sec.secured() { // H-TLS: authenticate (and decrypt) before the packet may latch
			if !s.mayLatch(from) { // H-NAT's pre-check (latch.go): no CPU spent on sources the latch refuses
				s.countDrop()
				continue
			}
			var ok bool
			if pkt, ok = s.unprotectRTP(pkt); !ok {
				s.countSRTPDrop()
				continue
			}
			n = len(pkt)
		}
		if !s.acceptFrom(from, pkt) { // H-NAT: symmetric-RTP latch (latch.go)
			continue
		}
		if err := p.Unmarshal(pkt); err != nil {
			s.countDrop()
			continue
		}
		s.received(p, n, time.Now())
		return nil
	}
}

func (s *RTPSession) countDrop() {
	s.mu.Lock()
	s.stats.Dropped++
	s.mu.Unlock()
}

func (s *RTPSession) countSRTPDrop() {
	s.mu.Lock()
	s.stats.SRTPDropped++
	s.mu.Unlock()
}

func (s *RTPSession) received(p *rtp.Packet, n int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.PacketsIn++
	st.BytesIn += uint64(len(p.Payload))
	st.LastIn = now
	if !s.rx.active || s.rx.ssrc != p.SSRC {
		if s.rx.active {
			st.SSRCChanges++
		}
		s.rx.init(p.SSRC, p.SequenceNumber)
		s.rx.received = 1
	} else if !s.rx.update(p.SequenceNumber) {
		return
	}
	if s.mediaPT >= 0 && int(p.PayloadType) != s.mediaPT {
		return
	}
	// RFC 3550 A.8: J += (|D| - J)/16 with transit in timestamp units.
	arrival := int64(now.Sub(s.start).Seconds() * float64(s.clockRate))
	transit := arrival - int64(p.Timestamp)
	if s.rx.haveTransit {
		d := transit - s.rx.transit
		if d < 0 {
			d = -d
		}
		s.rx.jitter += (float64(d) - s.rx.jitter) / 16
	}
	s.rx.transit, s.rx.haveTransit = transit, true
}

// WriteRTP marshals h and payload into an internal buffer and sends it to
// the remote. It drops the packet silently (nil error) when no remote is
// known yet. No allocation per packet.
func (s *RTPSession) WriteRTP(h *rtp.Header, payload []byte) error {
	s.mu.Lock()
	dst, closed := s.remote, s.closed
	s.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	if !dst.IsValid() || dst.Port() == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	hn := h.MarshalSize()
	if hn+len(payload) > len(s.wbuf) {
		return ErrPayloadTooLong
	}
	n, err := h.MarshalTo(s.wbuf)
	if err != nil {
		return err
	}
	n += copy(s.wbuf[n:], payload)
	out, err := s.protectRTP(s.wbuf[:n]) // H-TLS: SRTP (srtp.go)
	if err != nil {
		if errors.Is(err, errClearRefused) {
			return nil // required SRTP without keys yet: never send in clear
		}
		return err
	}
	if _, err := s.conn.WriteToUDPAddrPort(out, dst); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return net.ErrClosed
		}
		return err
	}
	now := time.Now()
	s.mu.Lock()
	s.stats.PacketsOut++
	s.stats.BytesOut += uint64(len(payload))
	s.txSSRC, s.txLastTS, s.txLastAt, s.txSentSR = h.SSRC, h.Timestamp, now, true
	s.mu.Unlock()
	return nil
}

// Stats returns a snapshot of the counters.
func (s *RTPSession) Stats() RTPStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Lost = s.rx.lost()
	st.Jitter = time.Duration(s.rx.jitter / float64(s.clockRate) * float64(time.Second))
	return st
}

// Close sends an RTCP BYE (RFC 3550 §6.6) if we sent media, closes both
// sockets and waits for the RTCP goroutine.
func (s *RTPSession) Close() error {
	s.closeOnce.Do(func() {
		s.sendRTCP(true)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		s.conn.Close()
		s.rtcpConn.Close()
		s.wg.Wait()
	})
	return nil
}

// portPool hands out even RTP ports (RTCP = port+1) in a range, round robin
// from a random start so that consecutive calls do not reuse a port whose
// late packets may still be in flight.
type portPool struct {
	mu       sync.Mutex
	min, max int
	next     int
}

func newPortPool(min, max int) *portPool {
	if min <= 0 || max <= 0 || max < min+1 {
		min, max = 20000, 29999
	}
	if min%2 == 1 {
		min++
	}
	p := &portPool{min: min, max: max}
	slots := (max - min + 1) / 2
	if slots < 1 {
		slots = 1
	}
	p.next = min + 2*rand.IntN(slots)
	return p
}

func (p *portPool) bind(host netip.Addr) (*net.UDPConn, *net.UDPConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	slots := (p.max - p.min + 1) / 2
	for i := 0; i < slots; i++ {
		port := p.next
		p.next += 2
		if p.next+1 > p.max {
			p.next = p.min
		}
		if port+1 > p.max {
			continue
		}
		c1, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, uint16(port))))
		if err != nil {
			continue
		}
		c2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, uint16(port+1))))
		if err != nil {
			c1.Close()
			continue
		}
		return c1, c2, nil
	}
	return nil, nil, fmt.Errorf("%w: %d-%d on %s", ErrNoRTPPort, p.min, p.max, host)
}
