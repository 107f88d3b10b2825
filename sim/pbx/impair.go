package pbx

import (
	"net"
	"net/netip"
	"time"

	"github.com/ponte-gw/ponte/internal/impair"
)

// rtpConn is what a call needs of its RTP socket: a *net.UDPConn, or an
// *impair.Conn around one when Config.Impair is set.
type rtpConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// wrapRTP puts Config.Impair in front of a call's RTP socket. Without a
// Dir the model applies both ways: what the PBX sends (the gateway's SIP
// leg input) and what it receives.
func (p *PBX) wrapRTP(conn *net.UDPConn) rtpConn {
	m := p.cfg.Impair
	if !m.Active() {
		return conn
	}
	mm := *m
	if mm.Dir == 0 {
		mm.Dir = impair.Both
	}
	c := impair.Wrap(conn, mm)
	p.log.Debug("rtp impaired", "seed", c.Seed(), "loss", mm.Loss, "jitter", mm.Jitter, "burst_every", mm.BurstEvery, "burst_len", mm.BurstLen)
	return c
}

// ImpairStats returns the impairment counters of the call's RTP socket and
// the seed in use (ok false when it is not impaired).
func (c *Call) ImpairStats() (st impair.Stats, seed uint64, ok bool) {
	ic, ok := c.rtp.(*impair.Conn)
	if !ok {
		return impair.Stats{}, 0, false
	}
	return ic.Stats(), ic.Seed(), true
}
