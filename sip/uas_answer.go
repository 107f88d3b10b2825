package sip

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Answer sends the 2xx and returns the confirmed dialog, which the rest of
// the package drives as it does a dialog ponte placed: Bye, BYE/re-INVITE/
// UPDATE/INFO from the PBX, OnMediaChange, OnDTMF, Done, RemoteBye, session
// timers. Dialog.Answer is the PBX's media: its offer restricted to the
// negotiated codec, or the answer it put in the ACK.
//
// With an offer in the INVITE the answer goes in the 200 (after a 183 the
// same one), opt.Media is pointed at the PBX and Answer returns at once;
// the 2xx is retransmitted over UDP until the ACK (RFC 3261 §13.3.1.4) and
// a dialog that never gets one is ended with a BYE (ErrNoAck). Without an
// offer ponte's offer goes in the 200 and Answer returns once the ACK
// brought a usable answer (RFC 3264 §5, RFC 3261 §13.2.1); without one the
// dialog is ended with a BYE and ErrNoAnswerSDP (or ErrNoAck) returned.
// A CANCEL that wins the race gives ErrCanceled.
func (c *IncomingCall) Answer(ctx context.Context, opt AnswerOptions) (*Dialog, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if err := c.errFinalLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	plan, code, err := c.planLocked(opt)
	if err == nil {
		c.state = csAnswering
	}
	d := c.d
	c.mu.Unlock()
	if err != nil {
		if code != 0 {
			c.rejectWithWarning(code, err)
		}
		return nil, err
	}

	// The dialog is confirmed by the 2xx for the UAS (RFC 3261 §12.1): it
	// is registered first so that the PBX's ACK, BYE or INFO find it.
	aw := &ackWait{cseq: d.inviteCSeq, offered: plan.offered, ch: make(chan *sip.Request, 1), cleared: make(chan struct{})}
	d.mu.Lock()
	d.state = stateConfirmed
	d.cur = plan.st
	d.ackWait, d.oaPending = aw, plan.offered
	d.onRefer, d.onReferAccepted = opt.OnRefer, opt.OnReferAccepted
	if !plan.offered {
		d.answer = plan.md
	}
	d.mu.Unlock()
	d.applySession(c.se)
	if err := c.u.addDialog(d); err != nil {
		c.abortAnswer(d, 503, "Service Unavailable", err)
		return nil, err
	}
	c.applyMedia(plan)
	res := c.okResponse(d, plan, opt.Headers)

	c.mu.Lock()
	if c.state != csAnswering { // a CANCEL got in
		c.mu.Unlock()
		d.end(ErrCanceled, false, "")
		return nil, ErrCanceled
	}
	c.state = csAnswered
	c.mu.Unlock()
	err = c.tx.Respond(res)
	c.mu.Lock()
	canceled := c.state == csCanceled
	c.closeFinalLocked()
	c.mu.Unlock()
	if err != nil {
		// The CANCEL won inside sipgo (its 487 went out), or the transport
		// failed: there is no dialog either way.
		if canceled || errors.Is(err, sip.ErrTransactionCanceled) {
			err = ErrCanceled
		} else {
			err = fmt.Errorf("%w: %v", ErrTransport, err)
		}
		d.end(err, false, "")
		return nil, err
	}
	ready := make(chan error, 1)
	if !plan.offered {
		d.mu.Lock()
		d.setResultLocked(nil)
		d.mu.Unlock()
	}
	if !c.u.goTracked(func() { d.awaitFirstAck(c.tx, res, aw, ready) }) {
		d.end(ErrClosed, false, "")
		return nil, ErrClosed
	}
	if !c.u.goTracked(d.timerLoop) {
		d.end(ErrClosed, false, "")
		return nil, ErrClosed
	}
	if !plan.offered {
		return d, nil
	}
	select {
	case err := <-ready:
		if err != nil {
			return nil, err
		}
		return d, nil
	case <-ctx.Done():
		d.byeAsync(Reason{Protocol: "SIP", Cause: 487, Text: "Request Terminated"})
		return nil, ctx.Err()
	case <-c.u.closing:
		return nil, ErrClosed
	}
}

// abortAnswer refuses the INVITE after Answer started (the UA closed).
func (c *IncomingCall) abortAnswer(d *Dialog, code int, reason string, err error) {
	d.end(err, false, "")
	c.mu.Lock()
	c.state = csPending
	c.mu.Unlock()
	c.rejectFinal(code, reason)
}

// okResponse is the 2xx to the INVITE: our tag, Contact on the transport
// the INVITE came on, Allow, Supported, the session timer (RFC 4028 §9),
// the SDP and the caller's extra headers.
func (c *IncomingCall) okResponse(d *Dialog, plan *answerPlan, extra []Header) *sip.Response {
	res := c.response(200, "OK", plan.body)
	res.AppendHeader(d.contact.Clone())
	res.AppendHeader(sip.NewHeader("Allow", allowMethods))
	res.AppendHeader(sip.NewHeader("Supported", supportedHeader))
	for _, h := range c.se.headers() {
		res.AppendHeader(h)
	}
	res.AppendHeader(sip.NewHeader("Server", c.u.cfg.UserAgent))
	for _, h := range extra {
		if !validHeaderName(h.Name) || reservedHeader(h.Name) {
			c.u.log.Warn("sip: dropping extra header", "name", SanitizeHeaderValue(h.Name, 64))
			continue
		}
		res.AppendHeader(sip.NewHeader(h.Name, SanitizeHeaderValue(h.Value, c.u.cfg.MaxHeaderValue)))
	}
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	return res
}

// awaitFirstAck retransmits the 2xx to the initial INVITE over UDP, T1
// doubling up to T2, until the ACK arrives, for at most 64*T1 (RFC 3261
// §13.3.1.4); without an ACK the session is ended with a BYE. When the 2xx
// carried ponte's offer, the ACK carries the answer (§13.2.1). The outcome
// goes to ready (capacity 1).
func (d *Dialog) awaitFirstAck(tx sip.ServerTransaction, res *sip.Response, aw *ackWait, ready chan<- error) {
	defer d.clearAckWait(aw)
	reliable := sip.IsReliable(d.transport)
	iv := sip.T1
	retx := time.NewTimer(iv)
	defer retx.Stop()
	giveUp := time.NewTimer(64 * sip.T1)
	defer giveUp.Stop()
	for {
		var ack *sip.Request
		select {
		case ack = <-aw.ch:
		case ack = <-tx.Acks(): // an ACK that reused the INVITE's branch
		case <-retx.C:
			if !reliable {
				_ = tx.Respond(res)
			}
			iv = min(2*iv, sip.T2)
			retx.Reset(iv)
			continue
		case <-giveUp.C:
			d.ua.log.Warn("sip: no ACK for our 2xx to the PBX's INVITE", "call_id", d.callID)
			d.byeSync(Reason{Protocol: "SIP", Cause: 408, Text: "No ACK"})
			d.end(ErrNoAck, false, "")
			ready <- ErrNoAck
			return
		case <-d.done:
			ready <- errOr(d.Err(), ErrCanceled)
			return
		case <-d.ua.closing:
			ready <- ErrClosed
			return
		}
		if ack == nil {
			// A PBX re-INVITE overtook the ACK (settlePrevious gives up on
			// a 2xx without our offer only): the PBX sends one only after
			// its ACK (RFC 3261 §14.1), so the ACK was lost or reordered.
			ready <- nil
			return
		}
		d.mu.Lock()
		d.ackedAt = time.Now()
		d.mu.Unlock()
		if !aw.offered {
			ready <- nil
			return
		}
		if err := d.takeFirstAnswer(ack); err != nil {
			d.ua.log.Warn("sip: unusable answer in the ACK; ending the call", "call_id", d.callID, "err", err)
			d.byeSync(Reason{Protocol: "SIP", Cause: 488, Text: "Not Acceptable Here"})
			d.fail(err)
			ready <- err
			return
		}
		ready <- nil
		return
	}
}

// takeFirstAnswer applies the PBX's answer in the ACK to ponte's offer in
// the 2xx: a codec ponte offered, an address, and SDES keys when required.
func (d *Dialog) takeFirstAnswer(ack *sip.Request) error {
	body := ack.Body()
	if len(body) == 0 {
		return fmt.Errorf("%w: ACK without SDP", ErrNoAnswerSDP)
	}
	if ct := ack.ContentType(); ct != nil && !isSDPType(ct.Value()) {
		return fmt.Errorf("%w: ACK body is %s", ErrNoAnswerSDP, SanitizeHeaderValue(ct.Value(), 64))
	}
	md, err := ParseSDP(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoAnswerSDP, err)
	}
	if !md.Addr.IsValid() || md.Addr.Port() == 0 || len(md.Codecs) == 0 {
		return fmt.Errorf("%w: no usable audio stream", ErrNoAnswerSDP)
	}
	if err := d.media.AcceptSRTP(md); err != nil {
		return err
	}
	d.mu.Lock()
	st, ok := d.stateFromAnswerLocked(md)
	if !ok {
		d.mu.Unlock()
		return fmt.Errorf("%w: no codec ponte offered (%s)", ErrNoAnswerSDP, codecNames(md.Codecs))
	}
	d.cur, d.answer = st, md
	d.setResultLocked(nil)
	d.mu.Unlock()
	if st.Remote.IsValid() && st.Remote.Port() != 0 {
		d.media.SetRemote(st.Remote)
	}
	d.media.SetCodec(st.Codec.PT, st.Codec.Rate)
	return nil
}
