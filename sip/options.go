package sip

import (
	"context"
	"net"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Ping sends an out-of-dialog OPTIONS to the trunk (RFC 3261 §11) and returns
// the final response code. Any final response, even 404 or 405, means the
// trunk is alive; a timeout or a transport error means it is not.
func (u *UA) Ping(ctx context.Context, t *Trunk) (int, error) {
	u.mu.Lock()
	started := u.started && !u.closed
	u.mu.Unlock()
	if !started {
		return 0, ErrNotStarted
	}
	tr := strings.ToLower(t.Transport)
	if tr == "" {
		tr = "udp"
	}
	lap, ok := u.listenerFor(tr)
	if !ok {
		return 0, ErrConfig
	}
	if tr == "tls" { // H-TLS (tls.go): the trunk's own CA, SNI and client certificate
		if _, _, err := u.dialTLS(ctx, t, lap); err != nil {
			return 0, err
		}
	}
	host, port, err := splitHostPort(t.Address)
	if err != nil {
		return 0, err
	}
	ruri := sip.Uri{Scheme: "sip", Host: host, Port: port}
	req := sip.NewRequest(sip.OPTIONS, ruri)
	via := &sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(tr),
		Host: t.viaHost(u), Port: t.viaPort(lap.Port()), Params: sip.NewParams(),
	}
	via.Params.Add("branch", sip.GenerateBranchN(16))
	via.Params.Add("rport", "") // RFC 3581: the answer comes back to our source port through NAT
	req.AppendHeader(via)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "ponte", Host: t.viaHost(u)}, Params: sip.NewParams()}
	from.Params.Add("tag", randToken(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: ruri, Params: sip.NewParams()})
	cid := sip.CallIDHeader(randToken(16))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.AppendHeader(sip.NewHeader("User-Agent", u.cfg.UserAgent))
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	req.SetBody(nil) // H-TLS: Content-Length: 0, mandatory over TCP/TLS (RFC 3261 §18.3, §20.14)
	req.SetTransport(strings.ToUpper(tr))
	req.SetDestination(t.Address)
	if tr == "udp" {
		req.Laddr = sip.Addr{IP: net.IP(lap.Addr().AsSlice()), Port: int(lap.Port())}
	}
	res, err := u.do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}
