package sip

import (
	"encoding/binary"
	"net/netip"
)

// latchProbation is how many consecutive RTP packets (same SSRC, each
// sequence number one above the last) a source on a host other than the
// signalled one must send before ponte latches onto it. One stray or
// forged datagram cannot steal the stream; a PBX behind NAT, which streams
// 50 packets a second, is learned in 40 ms. (Asterisk's strictrtp learning
// mode uses the same kind of probation.)
const latchProbation = 3

// natState is an RTPSession's NAT handling: the per-trunk address put in
// SDP c= and the symmetric-RTP latch. It is guarded by RTPSession.mu.
//
// The latch (RFC 4961 symmetric RTP, "comedia"): RTP is sent where the
// PBX's RTP comes from, not only where its SDP says. A source is accepted
//   - from the signalled host (any port: a port-rewriting NAT in front of
//     it), at once; or
//   - from another host only while nothing is latched yet, after
//     latchProbation in-sequence packets. That is a PBX behind NAT whose c=
//     holds its private, unreachable address: its packets come from the
//     NAT's public address.
//
// Once latched, packets from any other source (another host, or another
// port on the latched host) are dropped, so a foreign source cannot hijack
// the stream mid-call. A new signalled address (re-INVITE) starts over.
type natState struct {
	mediaIP netip.Addr // c= toward the trunk (NAT.MediaIP); zero: the UA's

	forSig  netip.AddrPort // the signalled address the latch below belongs to
	latched bool
	prev    netip.AddrPort // the signalled address before the last re-INVITE
	to      netip.AddrPort // the latched source
	// the foreign source on probation
	cand     netip.AddrPort
	candSSRC uint32
	candSeq  uint16
	candN    int
}

// admit decides whether an RTP datagram pkt (at least the 12-byte fixed
// header) from `from` is accepted while sig is the signalled address. to is
// valid when RTP must now be sent there (a new or re-confirmed latch).
// It does not allocate.
func (n *natState) admit(sig, from netip.AddrPort, pkt []byte) (ok bool, to netip.AddrPort) {
	if !sig.IsValid() {
		return true, netip.AddrPort{} // no SDP yet: nothing to check against
	}
	if n.forSig != sig {
		*n = natState{mediaIP: n.mediaIP, forSig: sig, prev: n.forSig}
	}
	if from.Addr() == sig.Addr() || sig.Addr().IsUnspecified() {
		// Packets still in flight from the address a re-INVITE moved away
		// from (or a PBX that sends briefly from both) must not pull RTP
		// back there.
		if from == n.prev && from != sig {
			return false, netip.AddrPort{}
		}
		n.latched, n.to, n.candN = true, from, 0
		return true, from
	}
	if n.latched {
		return from == n.to, netip.AddrPort{}
	}
	if len(pkt) < 12 {
		return false, netip.AddrPort{}
	}
	seq := binary.BigEndian.Uint16(pkt[2:4])
	ssrc := binary.BigEndian.Uint32(pkt[8:12])
	if n.candN > 0 && from == n.cand && ssrc == n.candSSRC && seq == n.candSeq+1 {
		n.candN++
	} else {
		n.cand, n.candSSRC, n.candN = from, ssrc, 1
	}
	n.candSeq = seq
	if n.candN < latchProbation {
		return false, netip.AddrPort{}
	}
	n.latched, n.to, n.candN = true, from, 0
	return true, from
}

// acceptFrom applies the latch to an RTP datagram and re-points RTP at the
// latched source; a refused datagram counts as Dropped.
func (s *RTPSession) acceptFrom(from netip.AddrPort, pkt []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, to := s.nat.admit(s.signalled, from, pkt)
	if !ok {
		s.stats.Dropped++
		return false
	}
	if to.IsValid() && to != s.remote {
		s.remote = to
	}
	return true
}

// mayLatch reports whether a datagram from `from` could be accepted by the
// latch: the signalled host, the latched source, or any source while nothing
// is latched (a candidate). A check that runs before acceptFrom (SRTP
// authentication) should use it rather than a signalled-host test, or a PBX
// behind NAT is never learned.
func (s *RTPSession) mayLatch(from netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sig, n := s.signalled, &s.nat
	switch {
	case !sig.IsValid() || sig.Addr().IsUnspecified() || from.Addr() == sig.Addr():
		return true
	case n.forSig != sig || !n.latched:
		return true
	default:
		return from == n.to
	}
}

// rtcpFromLocked reports whether RTCP from `from` belongs to the session:
// from the signalled host, or from the host RTP is latched to (a PBX behind
// NAT sends its RTCP from the NAT's address too, on a port of its own).
// The caller holds s.mu. handleRTCP (rtcp.go) should use it instead of
// its signalled-host test so that RTCP from a NATed PBX is counted and
// latched (RFC 4961 applies to RTCP as well).
func (s *RTPSession) rtcpFromLocked(from netip.AddrPort) bool {
	sig, n := s.signalled, &s.nat
	switch {
	case !sig.IsValid() || sig.Addr().IsUnspecified() || from.Addr() == sig.Addr():
		return true
	default:
		return n.forSig == sig && n.latched && from.Addr() == n.to.Addr()
	}
}

// setMediaIP sets the c= address used for this session (per trunk).
func (s *RTPSession) setMediaIP(a netip.Addr) {
	s.mu.Lock()
	s.nat.mediaIP = a.Unmap()
	s.mu.Unlock()
}

// mediaIP is the per-trunk c= address, or the zero Addr for the UA's.
func (s *RTPSession) mediaIP() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nat.mediaIP
}
