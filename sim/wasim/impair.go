package wasim

import (
	"net"

	"github.com/ponte-gw/ponte/internal/impair"
)

// impairConn puts CallOptions.Impair between the caller's UDP socket and
// everything above it (the wire counter, pion's ICE mux): STUN, DTLS, SRTP
// and SRTCP all cross it, as they cross a real lossy path; pion retransmits
// STUN and DTLS flights, so setup survives loss (set Model.MediaOnly or
// Model.After to spare it). Without a Dir the model applies both ways.
func (e *endpoint) impairConn(udp *net.UDPConn) net.PacketConn {
	m := e.mo.Impair
	if !m.Active() {
		return udp
	}
	mm := *m
	if mm.Dir == 0 {
		mm.Dir = impair.Both
	}
	c := impair.Wrap(udp, mm)
	e.m.log.Debug("media impaired", "wacid", e.id, "seed", c.Seed(), "loss", mm.Loss, "jitter", mm.Jitter,
		"burst_every", mm.BurstEvery, "burst_len", mm.BurstLen)
	return c
}

// ImpairStats returns the impairment counters of the caller's media socket
// and the seed in use (ok false when it is not impaired).
func (e *endpoint) ImpairStats() (st impair.Stats, seed uint64, ok bool) {
	if e.wire == nil {
		return impair.Stats{}, 0, false
	}
	ic, ok := e.wire.PacketConn.(*impair.Conn)
	if !ok {
		return impair.Stats{}, 0, false
	}
	return ic.Stats(), ic.Seed(), true
}
