package sip

import (
	"context"
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
		Host: d.trunk.viaHost(d.ua), Port: d.trunk.viaPort(d.viaPort), Params: sip.NewParams(), // H-NAT (advertise.go)
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
	// RFC 4028 §7.1: ponte supports session timers and asks for its
	// interval (at least the Min-SE a 422 demanded, §7.4). No 100rel.
	req.AppendHeader(sip.NewHeader("Supported", supportedHeader))
	if se := secs(d.ua.cfg.SessionExpires); se > 0 || d.minSE > 0 {
		req.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(max(se, d.minSE))))
	}
	if d.minSE > 0 {
		req.AppendHeader(sip.NewHeader("Min-SE", strconv.Itoa(d.minSE)))
	}
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
	req := likeInvite(inv, sip.CANCEL, inv.To())
	req.AppendHeader(sip.NewHeader("User-Agent", d.ua.cfg.UserAgent))
	if !r.IsZero() {
		req.AppendHeader(sip.NewHeader("Reason", r.String())) // RFC 3326 §2
	}
	req.SetBody(nil)
	d.finish(req, d.dest)
	return req
}

// likeInvite starts a request that RFC 3261 builds from the INVITE it
// refers to: a CANCEL (§9.1) or the ACK of a non-2xx final response
// (§17.1.1.3) carries the INVITE's Request-URI, top Via (same branch),
// From, Call-ID and CSeq number with its own method; to is the INVITE's To
// for a CANCEL, the response's for an ACK.
func likeInvite(inv *sip.Request, method sip.RequestMethod, to *sip.ToHeader) *sip.Request {
	req := sip.NewRequest(method, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(to))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: method})
	return req
}

// buildInDialog builds a request inside the confirmed dialog (RFC 3261
// §12.2.1.1): Request-URI is the remote target, Route is the reversed
// Record-Route set, To carries the remote tag, and the request goes to the
// first route (loose routing, lr) or else to the remote target. A strict
// router first in the set (no lr) gets the Request-URI itself and the
// remote target moves to the last Route. The caller holds d.mu.
func (d *Dialog) buildInDialogLocked(method sip.RequestMethod, cseq uint32) *sip.Request {
	ruri, routes := *d.remoteTarget.Clone(), d.routes
	var first sip.Uri
	haveFirst := false
	if len(routes) > 0 {
		hp := sip.NewParams()
		_, err := sip.ParseAddressValue(routes[0], &first, &hp)
		haveFirst = err == nil && first.Host != ""
	}
	if haveFirst && !first.UriParams.Has("lr") {
		ruri = *first.Clone()
		routes = append(append([]string(nil), routes[1:]...), "<"+d.remoteTarget.String()+">")
	}
	req := sip.NewRequest(method, ruri)
	req.AppendHeader(d.newVia())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	for _, r := range routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	from, to := d.fromToLocked()
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := sip.CallIDHeader(d.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.AppendHeader(sip.NewHeader("User-Agent", d.ua.cfg.UserAgent))
	req.SetBody(nil)
	dest := d.targetDest() // H-NAT: the Contact, or the trunk for a PBX behind NAT (advertise.go)
	if haveFirst {
		dest = uriDest(&first, d.transport)
	}
	d.finish(req, dest)
	return req
}

// fromToLocked are the From and To of ponte's requests in the dialog
// (RFC 3261 §12.2.1.1): From is the local URI with the local tag, To the
// remote URI with the remote tag. d.from and d.to hold the INVITE's From
// and To, so for a dialog ponte answered (§12.1.1) they swap: the local URI
// is the INVITE's To, the remote URI its From.
func (d *Dialog) fromToLocked() (*sip.FromHeader, *sip.ToHeader) {
	if d.role == roleUAS {
		from := &sip.FromHeader{DisplayName: d.to.DisplayName, Address: *d.to.Address.Clone(), Params: d.to.Params.Clone()}
		from.Params.Add("tag", d.localTag)
		to := &sip.ToHeader{DisplayName: d.from.DisplayName, Address: *d.from.Address.Clone(), Params: d.from.Params.Clone()}
		to.Params.Add("tag", d.remoteTag)
		return from, to
	}
	to := sip.HeaderClone(&d.to).(*sip.ToHeader)
	to.Params.Add("tag", d.remoteTag)
	return sip.HeaderClone(&d.from).(*sip.FromHeader), to
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

// statusError describes a final failure response to our INVITE, classing
// the codes the gateway fails over on.
func statusError(res *sip.Response) *StatusError {
	se := &StatusError{Code: res.StatusCode, Reason: res.Reason}
	if h := res.GetHeader("Reason"); h != nil {
		se.Header = h.Value()
	}
	switch res.StatusCode {
	case 420: // Bad Extension: the PBX lacks an extension we required (we require none)
		se.Err, se.Extensions = ErrExtensionRequired, optionTags(res, "Unsupported")
	case 421: // Extension Required, e.g. 100rel, which ponte does not implement
		se.Err, se.Extensions = ErrExtensionRequired, optionTags(res, "Require")
	case 422:
		se.Err = ErrIntervalTooSmall
	}
	return se
}

// setPeerLocked takes the dialog's remote side from the 2xx (RFC 3261
// §12.1.2): remote tag, remote target (Contact), route set (Record-Route
// reversed), and whether the PBX allows UPDATE.
func (d *Dialog) setPeerLocked(res *sip.Response) {
	if to := res.To(); to != nil {
		d.remoteTag, _ = to.Params.Get("tag")
	}
	d.remoteTarget = *d.reqURI.Clone()
	if c := res.Contact(); c != nil {
		d.remoteTarget = *c.Address.Clone()
	}
	d.routes = uacRouteSet(res)
	d.allowUpdate = false
	for _, m := range optionTags(res, "Allow") {
		if m == "update" {
			d.allowUpdate = true
		}
	}
	d.lastSDP = d.offer
}

// uacRouteSet is the route set a UAC takes from a 2xx: its Record-Route
// values in reverse order (RFC 3261 §12.1.2; sipgo splits comma lists).
func uacRouteSet(res *sip.Response) []string {
	rr := res.GetHeaders("Record-Route")
	routes := make([]string, 0, len(rr))
	for i := len(rr) - 1; i >= 0; i-- {
		routes = append(routes, rr[i].Value())
	}
	return routes
}

// ackFor2xxLocked builds the ACK for the 2xx to the INVITE (§13.2.2.4).
func (d *Dialog) ackFor2xxLocked() *sip.Request {
	ack := d.buildInDialogLocked(sip.ACK, d.inviteCSeq)
	if h := d.invite.GetHeader("Authorization"); h != nil { // §22.1: same credentials
		ack.AppendHeader(sip.HeaderClone(h))
	}
	if h := d.invite.GetHeader("Proxy-Authorization"); h != nil {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	return ack
}

// retryAuth re-sends the INVITE with credentials (new branch, CSeq+1).
func (d *Dialog) retryAuth(res *sip.Response) (sip.ClientTransaction, error) {
	d.mu.Lock()
	prev := d.invite
	d.mu.Unlock()
	auth, err := digestHeader(prev, res, d.trunk.Username, d.trunk.Password)
	if err != nil {
		return nil, err
	}
	return d.resendInvite(auth)
}

// retryMinSE re-sends the INVITE after a 422 with Min-SE: minSE and a
// Session-Expires at least that large (RFC 4028 §7.4), keeping any
// credentials.
func (d *Dialog) retryMinSE(minSE int) (sip.ClientTransaction, error) {
	d.mu.Lock()
	d.minSE = max(d.minSE, minSE)
	var auth sip.Header
	for _, n := range []string{"Authorization", "Proxy-Authorization"} {
		if h := d.invite.GetHeader(n); h != nil {
			auth = sip.HeaderClone(h)
		}
	}
	d.mu.Unlock()
	return d.resendInvite(auth)
}

// resendInvite sends the INVITE again (new branch, CSeq+1, same tags).
func (d *Dialog) resendInvite(auth sip.Header) (sip.ClientTransaction, error) {
	d.mu.Lock()
	d.inviteCSeq++
	d.cseq = d.inviteCSeq
	inv := d.buildInvite(auth)
	d.invite = inv
	d.mu.Unlock()
	tx, err := d.ua.ua.TransactionLayer().Request(context.Background(), inv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTransport, err)
	}
	d.watch2xx(tx)
	return tx, nil
}
