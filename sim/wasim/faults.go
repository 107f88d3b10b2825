package wasim

import (
	"net"
	"sync/atomic"
	"time"
)

// blackhole sits between the peer's ICE mux and its socket (above the wire
// counter, so Meta's media timers still see what the business sends). Once
// cut, nothing goes out and nothing read is handed to pion: no RTP, no RTCP,
// no STUN answers to the gateway's consent checks (RFC 7675 §5.1), and no DTLS
// close_notify or RTCP BYE either, as when the user's network or Meta's relay
// vanishes. The gateway can learn it only from ICE liveness.
type blackhole struct {
	net.PacketConn
	cut atomic.Int64 // unix nanoseconds when cut; 0 while media flows
}

func (h *blackhole) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := h.PacketConn.ReadFrom(b)
		if err != nil || h.cut.Load() == 0 {
			return n, addr, err
		}
	}
}

func (h *blackhole) WriteTo(b []byte, addr net.Addr) (int, error) {
	if h.cut.Load() != 0 {
		return len(b), nil // swallowed by the network
	}
	return h.PacketConn.WriteTo(b, addr)
}

// StopMedia cuts the caller's media now: its network goes dead as
// described on blackhole. Tests call it once they have heard the call's
// audio, so a starved test machine cannot move the cut before the check.
// It returns false when the caller has no media endpoint yet.
func (c *Caller) StopMedia() bool {
	if c.hole == nil {
		return false
	}
	c.hole.cut.CompareAndSwap(0, time.Now().UnixNano())
	c.m.log.Debug("caller media cut", "wacid", c.id)
	return true
}

// MediaStoppedAt is when StopMedia cut the caller's media (zero before).
func (c *Caller) MediaStoppedAt() time.Time {
	if c.hole == nil {
		return time.Time{}
	}
	if ns := c.hole.cut.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
