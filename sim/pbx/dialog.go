package pbx

// In-dialog signalling of the simulator: requests it sends inside a call
// (re-INVITE, UPDATE, INFO, BYE) and the ones it answers from ponte
// (session refreshes, INFO digits).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	psip "github.com/ponte-gw/ponte/sip"
)

// InDialogRequest is a request ponte sent inside a call.
type InDialogRequest struct {
	Method         string
	At             time.Time
	SessionExpires string // its Session-Expires header, if any
	Body           []byte
}

// SDPOptions shape an offer the simulator makes inside a call.
type SDPOptions struct {
	Direction string   // sendrecv (default), sendonly, recvonly, inactive
	NullAddr  bool     // c=0.0.0.0: RFC 2543 hold
	Port      int      // m= port: 0 its own RTP port, -1 port 0 (stream disabled), else this port
	Codecs    []string // codec names (default: the call's answered codecs)
}

// OfferSDP builds an offer from the simulator's session (same o= session,
// version incremented on each call, RFC 3264 §8).
func (c *Call) OfferSDP(o SDPOptions) []byte {
	codecs := c.Codecs()
	if len(o.Codecs) > 0 {
		codecs = nil
		for _, n := range o.Codecs {
			if cd, ok := psip.KnownCodec(n); ok {
				codecs = append(codecs, cd)
			}
		}
	}
	addr := c.local
	switch {
	case o.Port < 0:
		addr = netip.AddrPortFrom(addr.Addr(), 0)
	case o.Port > 0:
		addr = netip.AddrPortFrom(addr.Addr(), uint16(o.Port))
	}
	if o.NullAddr {
		addr = netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port())
	}
	c.mu.Lock()
	c.sdpVersion++
	v := c.sessID + c.sdpVersion
	c.mu.Unlock()
	return psip.BuildSDP(psip.SDPSpec{
		Addr: addr, Codecs: codecs, DTMFPT: c.dtmfPT(), Ptime: c.p.cfg.Ptime,
		Direction: o.Direction, SessID: c.sessID, Version: v,
	})
}

// dtmfPT is the telephone-event PT in its SDPs, -1 without.
func (c *Call) dtmfPT() int {
	if c.p.cfg.NoTelephoneEvent {
		return -1
	}
	return int(c.p.cfg.DTMFPT)
}

// dialogPeer is what a request inside the dialog is built from (RFC 3261
// §12.1): the remote target, the route set in sending order, our side
// (URI and tag, the request's From) and the far end's (its To).
type dialogPeer struct {
	target sip.Uri
	routes []string
	local  sip.FromHeader
	remote sip.ToHeader
}

// uasDialog is the dialog of an INVITE the simulator answers (RFC 3261
// §12.1.1): the remote target is the INVITE's Contact and the route set
// its Record-Route in order.
func uasDialog(inv *sip.Request, localTag string) dialogPeer {
	d := dialogPeer{target: *inv.Recipient.Clone()}
	if ct := inv.Contact(); ct != nil {
		d.target = *ct.Address.Clone()
	}
	for _, rr := range inv.GetHeaders("Record-Route") { // UAS keeps the order (§12.1.1)
		d.routes = append(d.routes, rr.Value())
	}
	d.local = sip.FromHeader{Address: *inv.To().Address.Clone(), Params: sip.NewParams()}
	d.local.Params.Add("tag", localTag)
	d.remote = sip.ToHeader{DisplayName: inv.From().DisplayName, Address: *inv.From().Address.Clone(), Params: inv.From().Params.Clone()}
	return d
}

// newRequest builds an in-dialog request with the next CSeq.
func (c *Call) newRequest(method sip.RequestMethod) *sip.Request {
	c.mu.Lock()
	c.cseq++
	seq := c.cseq
	c.mu.Unlock()
	return c.buildRequest(method, seq)
}

// buildRequest builds an in-dialog request (RFC 3261 §12.2.1.1): to the
// remote target through the route set (loose routing), sent to the first
// route if any or else to the target.
func (c *Call) buildRequest(method sip.RequestMethod, seq uint32) *sip.Request {
	c.mu.Lock()
	d := c.dlg
	c.mu.Unlock()
	target := d.target
	req := sip.NewRequest(method, *target.Clone())
	tr := c.transport
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: tr,
		Host: c.p.addr.Addr().String(), Port: int(c.p.addr.Port()), Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranchN(16))
	req.AppendHeader(via)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	next := target
	for i, r := range d.routes {
		req.AppendHeader(sip.NewHeader("Route", r))
		if i == 0 {
			var u sip.Uri
			if _, err := sip.ParseAddressValue(r, &u, nil); err == nil && u.Host != "" {
				next = u
			}
		}
	}
	from := sip.FromHeader{DisplayName: d.local.DisplayName, Address: *d.local.Address.Clone(), Params: d.local.Params.Clone()}
	req.AppendHeader(&from)
	to := sip.ToHeader{DisplayName: d.remote.DisplayName, Address: *d.remote.Address.Clone(), Params: d.remote.Params.Clone()}
	req.AppendHeader(&to)
	cid := sip.CallIDHeader(c.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetBody(nil)
	req.SetTransport(tr)
	port := next.Port
	if port == 0 {
		port = sip.DefaultPort(tr)
	}
	req.SetDestination(net.JoinHostPort(strings.Trim(next.Host, "[]"), fmt.Sprint(port)))
	if !sip.IsReliable(tr) {
		la := c.p.udp.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
	}
	return req
}

// Request sends an in-dialog request and returns the final response. A 2xx
// to an INVITE is ACKed; when that 2xx carried ponte's offer (an offerless
// re-INVITE), the ACK carries the simulator's answer (RFC 3261 §13.2.1).
func (c *Call) Request(ctx context.Context, method string, body []byte, contentType string, hdrs ...sip.Header) (*sip.Response, error) {
	req := c.newRequest(sip.RequestMethod(method))
	req.AppendHeader(c.contactHeader())
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if len(body) > 0 {
		ct := sip.ContentTypeHeader(contentType)
		req.AppendHeader(&ct)
		req.SetBody(body)
	}
	tx, err := c.p.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if res.IsSuccess() && req.IsInvite() {
				c.ackInvite(req, res, len(body) == 0)
			}
			return res, nil
		case <-tx.Done():
			return nil, errors.Join(fmt.Errorf("pbx: %s transaction ended", method), tx.Err())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ackInvite ACKs a 2xx to the simulator's re-INVITE, end to end.
func (c *Call) ackInvite(inv *sip.Request, res *sip.Response, withAnswer bool) {
	ack := sip.NewRequest(sip.ACK, inv.Recipient)
	via := sip.HeaderClone(inv.Via()).(*sip.ViaHeader)
	via.Params.Add("branch", sip.GenerateBranchN(16))
	ack.AppendHeader(via)
	for _, h := range inv.GetHeaders("Route") {
		ack.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	ack.AppendHeader(sip.HeaderClone(inv.From()))
	ack.AppendHeader(sip.HeaderClone(inv.To()))
	ack.AppendHeader(sip.HeaderClone(inv.CallID()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.ACK})
	ack.SetBody(nil)
	if withAnswer {
		if offer, err := psip.ParseSDP(res.Body()); err == nil {
			ct := sip.ContentTypeHeader("application/sdp")
			ack.AppendHeader(&ct)
			ack.SetBody(c.answerTo(offer))
		}
	}
	ack.SetTransport(inv.Transport())
	ack.SetDestination(inv.Destination())
	ack.Laddr = inv.Laddr
	_ = c.p.ua.TransportLayer().WriteMsg(ack)
}

// answerTo answers an offer from ponte inside the call: its own codecs that
// the offer has, the offer's direction mirrored (RFC 3264 §6.1).
func (c *Call) answerTo(offer *psip.MediaDesc) []byte {
	var codecs []psip.CodecDesc
	ours := c.Codecs()
	for _, cd := range ours {
		if oc, ok := offer.Codec(cd.Name); ok {
			codecs = append(codecs, oc)
		}
	}
	if len(codecs) == 0 {
		codecs = ours
	}
	c.mu.Lock()
	c.sdpVersion++
	v := c.sessID + c.sdpVersion
	c.mu.Unlock()
	return psip.BuildSDP(psip.SDPSpec{
		Addr: c.local, Codecs: codecs, DTMFPT: c.dtmfPT(), Ptime: c.p.cfg.Ptime,
		Direction: psip.AnswerDirection(offer.Direction), SessID: c.sessID, Version: v,
	})
}

// Reinvite sends a re-INVITE with offer (nil: offerless, the answer goes in
// the ACK) and returns ponte's final response.
func (c *Call) Reinvite(ctx context.Context, offer []byte, hdrs ...sip.Header) (*sip.Response, error) {
	return c.Request(ctx, "INVITE", offer, "application/sdp", hdrs...)
}

// Update sends an UPDATE (RFC 3311), with an offer or none (a refresh).
func (c *Call) Update(ctx context.Context, offer []byte, hdrs ...sip.Header) (*sip.Response, error) {
	return c.Request(ctx, "UPDATE", offer, "application/sdp", hdrs...)
}

// SendDTMFInfo sends each digit as an INFO with an application/dtmf-relay
// body and waits for each answer.
func (c *Call) SendDTMFInfo(ctx context.Context, digits string, dur time.Duration) error {
	for _, d := range digits {
		body, err := psip.DTMFRelayBody(d, dur)
		if err != nil {
			return err
		}
		res, err := c.Request(ctx, "INFO", body, "application/dtmf-relay")
		if err != nil {
			return err
		}
		if !res.IsSuccess() {
			return fmt.Errorf("pbx: INFO answered %d %s", res.StatusCode, res.Reason)
		}
	}
	return nil
}

// InfoDigits are the DTMF digits ponte sent as SIP INFO.
func (c *Call) InfoDigits() []ReceivedDigit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ReceivedDigit(nil), c.infoDigits...)
}

// InDialog lists the requests ponte sent inside the call (re-INVITE and
// UPDATE refreshes, INFO), in order.
func (c *Call) InDialog() []InDialogRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]InDialogRequest(nil), c.inDialog...)
}

func (c *Call) record(req *sip.Request) {
	r := InDialogRequest{Method: string(req.Method), At: time.Now(), Body: req.Body()}
	if h := req.GetHeader("Session-Expires"); h != nil {
		r.SessionExpires = h.Value()
	}
	c.mu.Lock()
	c.inDialog = append(c.inDialog, r)
	c.mu.Unlock()
}

// sessionHeaders echoes a refresh's Session-Expires in the 2xx (RFC 4028
// §9): the requester's refresher, or uac (ponte) when it left the choice.
func sessionHeaders(req *sip.Request) []sip.Header {
	h := req.GetHeader("Session-Expires")
	if h == nil {
		return nil
	}
	n, r, ok := psip.ParseSessionExpires(h.Value())
	if !ok {
		return nil
	}
	if r == "" {
		r = "uac"
	}
	out := []sip.Header{sip.NewHeader("Session-Expires", strconv.Itoa(n)+";refresher="+r)}
	if r == "uac" {
		out = append(out, sip.NewHeader("Require", "timer"))
	}
	return out
}

// answerInDialog answers ponte's re-INVITE or UPDATE: an offer gets the
// simulator's answer, a refresh its Session-Expires echoed.
func (c *Call) answerInDialog(req *sip.Request, tx sip.ServerTransaction) {
	c.record(req)
	hdrs := append(sessionHeaders(req), c.contactHeader())
	var body []byte
	if len(req.Body()) > 0 {
		offer, err := psip.ParseSDP(req.Body())
		if err != nil {
			respond(tx, req, 488, "Not Acceptable Here", nil)
			return
		}
		body = c.answerTo(offer)
		ct := sip.ContentTypeHeader("application/sdp")
		hdrs = append(hdrs, &ct)
	}
	respond(tx, req, 200, "OK", body, hdrs...)
}

// answerHeaders are the extra headers of the 200 to the INVITE: the
// configured Session-Expires (RFC 4028 §9) and Allow.
func (c *Call) answerHeaders(res *sip.Response) {
	cfg := c.p.cfg
	if cfg.SessionExpires > 0 {
		r := cfg.Refresher
		if r == "" {
			r = "uac"
		}
		res.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(cfg.SessionExpires)+";refresher="+r))
		if r == "uac" {
			res.AppendHeader(sip.NewHeader("Require", "timer"))
		}
	}
	allow := "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
	if cfg.AllowUpdate {
		allow += ", UPDATE"
	}
	res.AppendHeader(sip.NewHeader("Allow", allow))
}

func (p *PBX) onUpdate(req *sip.Request, tx sip.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	c.answerInDialog(req, tx)
}

// onInfo records INFO DTMF digits (application/dtmf-relay or application/dtmf).
func (p *PBX) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	c.record(req)
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	// Recorded before the 200, so a sender that got its answer sees it.
	if d, dur, err := psip.ParseDTMFInfo(ct, req.Body()); err == nil {
		c.mu.Lock()
		c.infoDigits = append(c.infoDigits, ReceivedDigit{Rune: d, Duration: dur, At: time.Now()})
		c.mu.Unlock()
	}
	respond(tx, req, 200, "OK", nil)
}

// sendInfoDigits is SendDTMF for Config.DTMFInfo: one INFO per digit, each
// announcing `each`, `gap` apart.
func (c *Call) sendInfoDigits(digits string, each, gap time.Duration) {
	ctx, cancel := context.WithTimeout(c.p.ctx, time.Duration(len(digits))*(each+gap+5*time.Second))
	defer cancel()
	for i, d := range digits {
		if i > 0 {
			select {
			case <-time.After(each + gap):
			case <-c.ended:
				return
			}
		}
		if err := c.SendDTMFInfo(ctx, string(d), each); err != nil {
			c.p.log.Warn("pbx: INFO digit", "err", err)
			return
		}
	}
}

// onNotify answers the NOTIFYs of a transfer this PBX asked for with REFER
// (RFC 3515 §2.4.4: the transferor is the implicit subscriber) and records
// them, so tests can read the sipfrag progress.
func (p *PBX) onNotify(req *sip.Request, tx sip.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	c.record(req)
	respond(tx, req, 200, "OK", nil)
}
