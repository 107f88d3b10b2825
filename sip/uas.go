package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// IncomingCall errors.
var (
	// ErrCallFinal: the INVITE already has its final response (answered,
	// rejected, or answered 503 because the UA closed).
	ErrCallFinal = errors.New("sip: the INVITE already has its final response")
	// ErrNoOffer: early media needs an SDP offer in the INVITE (without
	// 100rel ponte's offer can only go in the 2xx, RFC 3261 §13.2.1).
	ErrNoOffer = errors.New("sip: the INVITE carried no SDP offer")
	// ErrNoCodec: the offer has none of AnswerOptions.Codecs; the INVITE was
	// answered 488 (RFC 3264 §6).
	ErrNoCodec = errors.New("sip: no acceptable codec in the offer")
	// ErrBadStatus: a status code the method cannot send.
	ErrBadStatus = errors.New("sip: status code out of range")
)

// AnswerOptions says how to answer a PBX-originated INVITE.
type AnswerOptions struct {
	Media  *RTPSession // our RTP socket (UA.NewRTPSession)
	Codecs []string    // acceptable codecs in preference order, e.g. ["PCMU","PCMA"]
	// DTMFPT is the telephone-event PT ponte offers when the INVITE had no
	// SDP (default 101); with an offer, the PBX's PT is kept.
	DTMFPT           uint8
	NoTelephoneEvent bool
	// SRTP is the trunk's SDES policy (srtp.go): RTP/SAVP offers are
	// answered with a=crypto, and required refuses a plain offer.
	SRTP    SRTPMode
	Headers []Header // extra headers on the 2xx (untrusted values are sanitised)
	// OnRefer and OnReferAccepted are the dialog's REFER handlers
	// (Dialog.OnRefer), in place before the 2xx goes out: a REFER the PBX
	// sends right after its ACK must not find the dialog without one (501).
	OnRefer         ReferHandler
	OnReferAccepted func(Refer)
}

// dialogRole is which side of the INVITE ponte was.
type dialogRole int

const (
	roleUAC dialogRole = iota // ponte sent the INVITE (Dial)
	roleUAS                   // the PBX sent it (IncomingCall.Answer)
)

type callState int

const (
	csPending   callState = iota // no final response yet (1xx maybe)
	csAnswering                  // Answer is building the 2xx
	csAnswered                   // 2xx sent
	csRejected                   // final non-2xx sent
	csCanceled                   // the PBX cancelled, or Expires ran out: 487 sent
)

// IncomingCall is a PBX-originated INVITE waiting for its final response:
// the UAS side of the INVITE transaction (RFC 3261 §13.3). Its methods may
// be called from any goroutine.
type IncomingCall struct {
	u         *UA
	in        *inbound
	req       *sip.Request
	tx        sip.ServerTransaction
	trunk     string
	src       netip.AddrPort
	transport string // "UDP", "TCP", "TLS"
	offer     *MediaDesc
	se        sessionOffer
	key       string
	toTag     string

	mu           sync.Mutex
	state        callState
	cancelReason string
	canceled     chan struct{}
	final        chan struct{} // closed once the final response is decided
	d            *Dialog       // built by the first EarlyMedia or Answer
	plan         *answerPlan
}

// answerPlan is the negotiated SDP answer (or offer), reused by the 2xx
// after a 183 so that both carry the same session description (RFC 3264
// §8, RFC 6337 §3.1.1).
type answerPlan struct {
	body    []byte
	st      MediaState
	md      *MediaDesc // the PBX's offer as the session uses it; nil when ponte offered
	offered bool       // the body is ponte's offer; the answer comes in the ACK
}

func newIncomingCall(in *inbound, req *sip.Request, tx sip.ServerTransaction, src netip.AddrPort, trunk string, offer *MediaDesc, se sessionOffer) *IncomingCall {
	tr := strings.ToUpper(req.MessageData.Transport())
	if tr == "" {
		tr = "UDP"
	}
	return &IncomingCall{
		u: in.u, in: in, req: req, tx: tx, trunk: trunk, src: src, transport: tr,
		offer: offer, se: se, key: callKey(req), toTag: randToken(8),
		canceled: make(chan struct{}), final: make(chan struct{}),
	}
}

// start fixes our To tag and sends 100 Trying. The tag is written into the
// request's To itself, before any response and before the transaction's
// lock is taken by the 100, so that every response built from the request
// carries it, including the 487 sipgo sends on CANCEL: RFC 3261 §8.2.6.2
// wants one tag on all responses but the 100.
func (c *IncomingCall) start() {
	if to := c.req.To(); to != nil {
		to.Params.Add("tag", c.toTag)
	}
	if !c.tx.OnCancel(c.onCancel) {
		c.onCancel(nil)
	}
	_ = c.tx.Respond(sip.NewResponseFromRequest(c.req, 100, "Trying", nil))
}

// onCancel runs under sipgo's transaction lock when a CANCEL matched the
// INVITE before its final response; sipgo answers 200 to the CANCEL and
// 487 to the INVITE itself (RFC 3261 §9.2). It must not respond.
func (c *IncomingCall) onCancel(r *sip.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == csCanceled || c.state == csRejected {
		return
	}
	c.state = csCanceled
	if r != nil {
		if h := r.GetHeader("Reason"); h != nil {
			c.cancelReason = SanitizeHeaderValue(h.Value(), DefaultMaxHeaderValue)
		}
	}
	close(c.canceled)
	c.closeFinalLocked()
	c.forgetLocked()
}

func (c *IncomingCall) closeFinalLocked() {
	select {
	case <-c.final:
	default:
		close(c.final)
	}
}

// forgetLocked drops a call that will have no dialog from the registry
// (lock order: c.mu, then in.mu; in.mu is never held while taking c.mu).
func (c *IncomingCall) forgetLocked() { c.in.forget(c) }

// Trunk is the name of the inbound trunk the INVITE matched.
func (c *IncomingCall) Trunk() string { return c.trunk }

// Request is the INVITE (its To carries ponte's tag).
func (c *IncomingCall) Request() *sip.Request { return c.req }

// CallID is the INVITE's Call-ID.
func (c *IncomingCall) CallID() string { return callIDOf(c.req) }

// Source is the transport address the INVITE came from.
func (c *IncomingCall) Source() netip.AddrPort { return c.src }

// Offer is the INVITE's SDP offer, nil if it had no body.
func (c *IncomingCall) Offer() *MediaDesc { return c.offer }

// Canceled is closed when the PBX cancels the INVITE (or its Expires runs
// out) before the final response; the INVITE has been answered 487.
func (c *IncomingCall) Canceled() <-chan struct{} { return c.canceled }

// CancelReason is the Reason header of the CANCEL (RFC 3326), if any.
func (c *IncomingCall) CancelReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelReason
}

// errFinalLocked is the error for a call past its final response.
func (c *IncomingCall) errFinalLocked() error {
	switch c.state {
	case csCanceled:
		return ErrCanceled
	case csPending:
		return nil
	}
	return ErrCallFinal
}

// response builds a response to the INVITE with our tag.
func (c *IncomingCall) response(code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(c.req, code, SanitizeHeaderValue(reason, 128), body)
	if to := res.To(); to != nil {
		to.Params.Add("tag", c.toTag)
	}
	return res
}

// Ring sends a provisional response without SDP, 180 Ringing typically
// (101-199). Its To tag is the one of the final answer.
func (c *IncomingCall) Ring(code int, reason string) error {
	if code <= 100 || code > 199 {
		return fmt.Errorf("%w: %d is not a provisional response with a tag", ErrBadStatus, code)
	}
	c.mu.Lock()
	err := c.errFinalLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.tx.Respond(c.response(code, reason, nil)); err != nil {
		return fmt.Errorf("%w: %v", ErrTransport, err)
	}
	return nil
}

// Reject sends a final 3xx-6xx response. hdrs are added (Warning,
// Retry-After, Contact for a 3xx, Reason); names that would corrupt the
// transaction are dropped and values sanitised. After the call was
// cancelled it returns ErrCanceled and sends nothing.
func (c *IncomingCall) Reject(code int, reason string, hdrs ...Header) error {
	if code < 300 || code > 699 {
		return fmt.Errorf("%w: %d is not a final failure response", ErrBadStatus, code)
	}
	c.mu.Lock()
	if err := c.errFinalLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.state = csRejected
	c.mu.Unlock()
	res := c.response(code, reason, nil)
	for _, h := range hdrs {
		if name, ok := responseHeaderName(h.Name, code); ok {
			res.AppendHeader(sip.NewHeader(name, SanitizeHeaderValue(h.Value, c.u.cfg.MaxHeaderValue)))
		} else {
			c.u.log.Warn("sip: dropping extra header", "name", SanitizeHeaderValue(h.Name, 64))
		}
	}
	err := c.tx.Respond(res)
	c.mu.Lock()
	c.closeFinalLocked()
	c.forgetLocked()
	c.mu.Unlock()
	if err != nil {
		if errors.Is(err, sip.ErrTransactionCanceled) {
			return ErrCanceled
		}
		return fmt.Errorf("%w: %v", ErrTransport, err)
	}
	return nil
}

// responseHeaderName accepts an extra header for a response: a token that
// the transaction layer does not own. Reason (RFC 3326) may go on any
// final response and Contact on a redirect (RFC 3261 §21.3).
func responseHeaderName(name string, code int) (string, bool) {
	if !validHeaderName(name) {
		return "", false
	}
	switch strings.ToLower(name) {
	case "reason":
		return name, true
	case "contact", "m":
		return name, code >= 300 && code < 400
	}
	return name, !reservedHeader(name)
}

// rejectFinal answers a call that is still pending with code (Close, a
// failed setup); no-op otherwise.
func (c *IncomingCall) rejectFinal(code int, reason string) {
	c.mu.Lock()
	if c.state != csPending {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	_ = c.Reject(code, reason)
}

// expire answers 487 when the INVITE's Expires ran out (RFC 3261 §13.3.1)
// and closes Canceled: for the gateway it is the PBX giving up.
func (c *IncomingCall) expire() {
	c.mu.Lock()
	if c.state != csPending {
		c.mu.Unlock()
		return
	}
	c.state = csCanceled
	close(c.canceled)
	c.mu.Unlock()
	_ = c.tx.Respond(c.response(487, "Request Terminated", nil))
	c.mu.Lock()
	c.closeFinalLocked()
	c.forgetLocked()
	c.mu.Unlock()
}

// EarlyMedia answers the offer in a 183 Session Progress (RFC 3261
// §13.3.1.1, no 100rel) and points opt.Media at the PBX, so that early
// media flows before the call is answered. It returns the PBX's media as
// the session uses it (see Dialog.Answer). The 200 of a later Answer carries
// the same SDP; calling it again resends the 183.
func (c *IncomingCall) EarlyMedia(ctx context.Context, opt AnswerOptions) (*MediaDesc, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.offer == nil {
		return nil, ErrNoOffer
	}
	c.mu.Lock()
	if err := c.errFinalLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	plan, code, err := c.planLocked(opt)
	c.mu.Unlock()
	if err != nil {
		if code != 0 {
			c.rejectWithWarning(code, err)
		}
		return nil, err
	}
	c.applyMedia(plan)
	res := c.response(183, "Session Progress", plan.body)
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	res.AppendHeader(c.d.contact.Clone()) // RFC 3261 §12.1.1: a 1xx creating an early dialog has a Contact
	if err := c.tx.Respond(res); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTransport, err)
	}
	return plan.md, nil
}

// rejectWithWarning answers 488 for an offer ponte cannot take.
func (c *IncomingCall) rejectWithWarning(code int, err error) {
	w := Header{Name: "Warning", Value: fmt.Sprintf(`399 %s "%s"`, c.u.advertise, quoteParam(err.Error()))}
	if errors.Is(err, ErrNoCodec) {
		// RFC 3261 §20.43: 305 Incompatible media format.
		w.Value = fmt.Sprintf(`305 %s "Incompatible media format"`, c.u.advertise)
	}
	_ = c.Reject(code, "Not Acceptable Here", w)
}

// applyMedia points the RTP session at the PBX's offer.
func (c *IncomingCall) applyMedia(p *answerPlan) {
	m := c.d.media
	if p.md == nil || m == nil {
		return
	}
	if p.st.Remote.IsValid() && p.st.Remote.Port() != 0 {
		m.SetRemote(p.st.Remote)
	}
	m.SetCodec(p.st.Codec.PT, p.st.Codec.Rate)
}

// planLocked builds the dialog and negotiates the SDP once. The code is
// the response to send for a refused offer (0: none).
func (c *IncomingCall) planLocked(opt AnswerOptions) (*answerPlan, int, error) {
	if c.plan != nil {
		return c.plan, 0, nil
	}
	if opt.Media == nil {
		return nil, 0, fmt.Errorf("%w: AnswerOptions.Media is required", ErrConfig)
	}
	if len(opt.Codecs) == 0 {
		opt.Codecs = []string{"PCMU", "PCMA"}
	}
	if opt.DTMFPT == 0 {
		opt.DTMFPT = 101
	}
	if c.d == nil {
		d, err := c.newDialog(opt)
		if err != nil {
			return nil, 0, err
		}
		c.d = d
	}
	var p *answerPlan
	var err error
	if c.offer == nil {
		p, err = c.d.offerPlan(opt)
	} else {
		p, err = c.d.answerPlan(c.offer, opt)
	}
	if err != nil {
		return nil, 488, err
	}
	c.plan = p
	return p, 0, nil
}

// newDialog makes the UAS dialog of the call (RFC 3261 §12.1.1): local URI
// the To of the INVITE with our tag, remote URI its From, route set its
// Record-Route in order, remote target its Contact, a fresh local CSeq.
func (c *IncomingCall) newDialog(opt AnswerOptions) (*Dialog, error) {
	u, req := c.u, c.req
	lap, ok := u.listenerFor(strings.ToLower(c.transport))
	if !ok {
		return nil, fmt.Errorf("%w: no %s listener", ErrConfig, c.transport)
	}
	d := &Dialog{
		ua: u, role: roleUAS,
		trunk: Trunk{
			Name: c.trunk, Codecs: opt.Codecs, DTMFPT: opt.DTMFPT, SRTP: opt.SRTP,
			NoTelephoneEvent: opt.NoTelephoneEvent,
		},
		transport: c.transport, dest: c.src.String(), viaPort: lap.Port(),
		callID: callIDOf(req), localTag: c.toTag, media: opt.Media,
		inviteCSeq: req.CSeq().SeqNo, cseq: 1 + rand.Uint32N(1<<15), sessID: rand.Uint64N(1 << 62),
		cancelCh: make(chan struct{}), result: make(chan struct{}), done: make(chan struct{}),
		stKick: make(chan struct{}, 1), invite: req, state: stateEarly,
		remoteCSeq: req.CSeq().SeqNo, onEnd: func() { c.in.forget(c) },
	}
	if sip.IsReliable(c.transport) {
		// In-dialog requests go back over the PBX's own connection (RFC
		// 5923's reuse): a Contact port behind TCP/TLS is often not
		// listening, and a TLS connection of ours would need the PBX's CA.
		// The Request-URI stays the Contact (RFC 3261 §12.2.1.1).
		d.trunk.NAT.RewriteContact = true
	} else {
		d.laddr = sip.Addr{IP: net.IP(lap.Addr().AsSlice()), Port: int(lap.Port())}
	}
	f := req.From()
	d.from = sip.FromHeader{DisplayName: f.DisplayName, Address: *f.Address.Clone(), Params: f.Params.Clone()}
	d.remoteTag, _ = f.Params.Get("tag")
	t := req.To()
	d.to = sip.ToHeader{DisplayName: t.DisplayName, Address: *t.Address.Clone(), Params: t.Params.Clone()}
	d.to.Params.Remove("tag")
	d.remoteTarget = *req.Contact().Address.Clone()
	d.reqURI = *d.remoteTarget.Clone()
	for _, rr := range req.GetHeaders("Record-Route") { // in order for the UAS (§12.1.1)
		d.routes = append(d.routes, rr.Value())
	}
	for _, m := range optionTags(req, "Allow") {
		if m == "update" {
			d.allowUpdate = true
		}
	}
	user := EscapeUser(req.Recipient.User)
	if user == "" {
		user = "ponte"
	}
	d.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: u.advertise, Port: int(lap.Port())}}
	switch c.transport {
	case "TCP":
		d.contact.Address.UriParams = sip.NewParams()
		d.contact.Address.UriParams.Add("transport", "tcp")
	case "TLS":
		secureContact(&d.contact, c.secureScheme(), "tls")
	}
	return d, nil
}

// secureScheme is a URI whose scheme says whether the 2xx's Contact must
// be a SIPS URI: RFC 3261 §12.1.1 requires one when the Request-URI, the
// top Record-Route or (without Record-Route) the Contact of the INVITE was
// SIPS. Otherwise the Contact is sip: with transport=tls (see
// secureContact).
func (c *IncomingCall) secureScheme() sip.Uri {
	req := c.req
	sips := strings.EqualFold(req.Recipient.Scheme, "sips")
	if rr := req.GetHeader("Record-Route"); rr != nil {
		sips = sips || strings.Contains(strings.ToLower(rr.Value()), "<sips:")
	} else if ct := req.Contact(); ct != nil {
		sips = sips || strings.EqualFold(ct.Address.Scheme, "sips")
	}
	if sips {
		return sip.Uri{Scheme: "sips"}
	}
	return sip.Uri{Scheme: "sip"}
}

// acceptableOffer is the part of answering an offer that can fail on the
// offer alone: an audio stream with an address and a port, and a codec of
// codecs (RFC 3264 §6). It returns the codec ponte would answer with.
func acceptableOffer(offer *MediaDesc, codecs []string) (CodecDesc, error) {
	switch {
	case !offer.Addr.IsValid():
		return CodecDesc{}, fmt.Errorf("%w: the offer's audio stream has no connection address (c=)", ErrSDPInvalid)
	case offer.Addr.Port() == 0:
		return CodecDesc{}, fmt.Errorf("%w: the offer's audio stream is disabled (port 0)", ErrSDPInvalid)
	}
	codec, ok := offer.Negotiate(codecs)
	if !ok {
		return CodecDesc{}, fmt.Errorf("%w (offered %s)", ErrNoCodec, codecNames(offer.Codecs))
	}
	return codec, nil
}

// CheckOffer tells, before anything else is done for the call, whether
// Answer would refuse the offer with codecs: a gateway must not ring a
// WhatsApp user for a call its PBX side cannot carry. An INVITE without an
// offer passes: the offer comes in the ACK. RefuseOffer answers the error.
func (c *IncomingCall) CheckOffer(codecs []string) error {
	if c.offer == nil {
		return nil
	}
	_, err := acceptableOffer(c.offer, codecs)
	return err
}

// RefuseOffer answers CheckOffer's error: 488 Not Acceptable Here with a
// Warning naming why (305 for no common codec, 399 otherwise; RFC 3261
// §20.43).
func (c *IncomingCall) RefuseOffer(err error) { c.rejectWithWarning(488, err) }

// answerPlan answers the PBX's offer (RFC 3264 §6.1): the first of
// opt.Codecs the offer has, with the PBX's payload type; telephone-event
// at the PBX's PT unless opt says none; the direction mirrored; SDES under
// opt.SRTP. The MediaDesc kept for the gateway is the offer restricted to
// the negotiated codec, since that is all the PBX may send (§6.1).
func (d *Dialog) answerPlan(offer *MediaDesc, opt AnswerOptions) (*answerPlan, error) {
	codec, err := acceptableOffer(offer, opt.Codecs)
	if err != nil {
		return nil, err
	}
	ours := codec
	if k, ok := KnownCodec(codec.Name); ok && k.Fmtp != "" {
		ours.Fmtp = k.Fmtp // our receive parameters (opus: RFC 7587 §7)
	}
	x, err := d.media.AnswerSRTP(offer, opt.SRTP)
	if err != nil {
		return nil, err
	}
	md := *offer
	md.Codecs = []CodecDesc{codec}
	if opt.NoTelephoneEvent {
		md.DTMFPT, md.DTMFRate = -1, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.remoteFlowLocked(&md, true, true)
	st.Codec, st.Desc = codec, &md
	spec := SDPSpec{
		Addr: d.ua.sdpAddr(d.media), Codecs: []CodecDesc{ours}, DTMFPT: md.DTMFPT, DTMFRate: md.DTMFRate,
		Ptime: offer.Ptime, Direction: direction(st.Send, st.Recv),
	}
	x.Apply(&spec)
	return &answerPlan{body: d.localSDPLocked(spec), st: st, md: &md}, nil
}

// offerPlan is ponte's offer for an INVITE without SDP (RFC 3264 §5; RFC
// 3261 §13.2.1: it goes in the 2xx and the answer in the ACK).
func (d *Dialog) offerPlan(opt AnswerOptions) (*answerPlan, error) {
	spec := OfferSpec(d.ua.sdpAddr(d.media), opt.Codecs, opt.DTMFPT, d.sessID)
	if len(spec.Codecs) == 0 {
		return nil, fmt.Errorf("%w: no known codec in %v", ErrConfig, opt.Codecs)
	}
	if opt.NoTelephoneEvent {
		spec.DTMFPT = -1
	}
	x, err := d.media.OfferSRTP(opt.SRTP)
	if err != nil {
		return nil, err
	}
	x.Apply(&spec)
	d.mu.Lock()
	defer d.mu.Unlock()
	return &answerPlan{body: d.localSDPLocked(spec), st: MediaState{DTMFPT: -1}, offered: true}, nil
}

func codecNames(cs []CodecDesc) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}
