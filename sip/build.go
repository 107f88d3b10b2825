package sip

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// ErrBadTarget reports a dial target we cannot turn into a SIP URI.
var ErrBadTarget = fmt.Errorf("sip: bad dial target")

func randToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// resolveTarget turns "sip:sales@pbx.example.com" or a bare user "1000" into
// the Request-URI; a bare user goes to the trunk address.
func resolveTarget(target string, t *Trunk) (sip.Uri, error) {
	target = strings.TrimSpace(target)
	if target == "" || strings.ContainsAny(target, "\r\n") {
		return sip.Uri{}, fmt.Errorf("%w: %q", ErrBadTarget, target)
	}
	l := strings.ToLower(target)
	if strings.HasPrefix(l, "sip:") || strings.HasPrefix(l, "sips:") {
		var u sip.Uri
		if err := sip.ParseUri(target, &u); err != nil || u.Host == "" {
			return sip.Uri{}, fmt.Errorf("%w: %q: %v", ErrBadTarget, target, err)
		}
		return u, nil
	}
	host, port, err := splitHostPort(t.Address)
	if err != nil {
		return sip.Uri{}, err
	}
	return sip.Uri{Scheme: "sip", User: EscapeUser(target), Host: host, Port: port}, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the transport default applies.
		if addr == "" || strings.ContainsAny(addr, " /@") {
			return "", 0, fmt.Errorf("%w: trunk address %q", ErrConfig, addr)
		}
		return strings.Trim(addr, "[]"), 0, nil
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%w: trunk address %q", ErrConfig, addr)
	}
	return host, p, nil
}

// newVia makes a Via with a fresh RFC 3261 branch and rport (RFC 3581) so
// responses come back to our source port through NAT.
func (d *Dialog) newVia() *sip.ViaHeader {
	v := &sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: d.transport,
		Host: d.ua.advertise, Port: int(d.viaPort), Params: sip.NewParams(),
	}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	return v
}

// finish sets transport details shared by every request we send.
func (d *Dialog) finish(req *sip.Request, dest string) {
	req.SetTransport(d.transport)
	req.SetDestination(dest)
	if d.laddr.IP != nil {
		req.Laddr = d.laddr
	}
}

// buildInvite builds the (re)sent initial INVITE for the current CSeq.
func (d *Dialog) buildInvite(auth sip.Header) *sip.Request {
	req := sip.NewRequest(sip.INVITE, *d.reqURI.Clone())
	req.AppendHeader(d.newVia())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(&d.from))
	req.AppendHeader(sip.HeaderClone(&d.to))
	cid := sip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: d.inviteCSeq, MethodName: sip.INVITE})
	req.AppendHeader(d.contact.Clone())
	req.AppendHeader(sip.NewHeader("Allow", allowMethods))
	req.AppendHeader(sip.NewHeader("User-Agent", d.ua.cfg.UserAgent))
	for _, h := range d.extra {
		req.AppendHeader(sip.NewHeader(h.Name, h.Value))
	}
	if auth != nil {
		req.AppendHeader(auth)
	}
	if d.offer != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		req.AppendHeader(&ct)
	}
	req.SetBody(d.offer)
	d.finish(req, d.dest)
	return req
}

// buildCancel builds the CANCEL for the current INVITE: same Request-URI,
// top Via (branch), From, To, Call-ID and CSeq number (RFC 3261 §9.1).
func (d *Dialog) buildCancel(inv *sip.Request, r Reason) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.AppendHeader(sip.NewHeader("User-Agent", d.ua.cfg.UserAgent))
	if !r.IsZero() {
		req.AppendHeader(sip.NewHeader("Reason", r.String())) // RFC 3326 §2
	}
	req.SetBody(nil)
	d.finish(req, d.dest)
	return req
}

// buildInDialog builds a request inside the confirmed dialog (RFC 3261
// §12.2.1.1): Request-URI is the remote target, Route is the reversed
// Record-Route set, To carries the remote tag. The caller holds d.mu.
func (d *Dialog) buildInDialogLocked(method sip.RequestMethod, cseq uint32) *sip.Request {
	req := sip.NewRequest(method, *d.remoteTarget.Clone())
	req.AppendHeader(d.newVia())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	for _, r := range d.routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	req.AppendHeader(sip.HeaderClone(&d.from))
	to := sip.HeaderClone(&d.to).(*sip.ToHeader)
	to.Params.Add("tag", d.remoteTag)
	req.AppendHeader(to)
	cid := sip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.AppendHeader(sip.NewHeader("User-Agent", d.ua.cfg.UserAgent))
	req.SetBody(nil)
	dest := uriDest(&d.remoteTarget, d.transport)
	if len(d.routes) > 0 {
		var ru sip.Uri
		hp := sip.NewParams()
		if _, err := sip.ParseAddressValue(d.routes[0], &ru, &hp); err == nil && ru.Host != "" {
			dest = uriDest(&ru, d.transport)
		}
	}
	d.finish(req, dest)
	return req
}

// uriDest is the host:port a request for u is sent to (transport default port
// when the URI has none).
func uriDest(u *sip.Uri, transport string) string {
	p := u.Port
	if p == 0 {
		p = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(p))
}

// digestHeader answers a 401/407 challenge (RFC 3261 §22.2, RFC 2617/7616
// digest; qop=auth when offered) for req.
func digestHeader(req *sip.Request, res *sip.Response, user, pass string) (sip.Header, error) {
	chName, crName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, crName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return nil, fmt.Errorf("sip: %d without %s", res.StatusCode, chName)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return nil, fmt.Errorf("sip: parse %s: %w", chName, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	for i, q := range chal.QOP {
		chal.QOP[i] = strings.TrimSpace(q)
	}
	cred, err := digest.Digest(chal, digest.Options{
		Method:   string(req.Method),
		URI:      req.Recipient.String(),
		Username: user,
		Password: pass,
		Count:    1,
	})
	if err != nil {
		return nil, fmt.Errorf("sip: digest: %w", err)
	}
	return sip.NewHeader(crName, cred.String()), nil
}
