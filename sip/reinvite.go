package sip

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ErrNoAck: the PBX never ACKed ponte's 2xx to its re-INVITE (RFC 3261
// §13.3.1.4: the session is ended with a BYE).
var ErrNoAck = errors.New("sip: no ACK for our 2xx to the PBX's re-INVITE")

// supportedExt are the option tags ponte implements (RFC 3261 §19.2).
// 100rel (RFC 3262) is deliberately absent: ponte never sends PRACK.
var supportedExt = map[string]bool{"timer": true}

// supportedHeader is the Supported value on ponte's requests and responses.
const supportedHeader = "timer"

// ackWait is a 2xx of ours to a PBX re-INVITE that awaits its ACK.
type ackWait struct {
	cseq    uint32
	offered bool              // the 2xx carried our offer: the ACK carries the answer
	ch      chan *sip.Request // capacity 1; nil request: stop waiting
	cleared chan struct{}     // closed when the wait is over
}

// settlePrevious lets a new PBX re-INVITE or UPDATE overtake the ACK of the
// previous re-INVITE's 2xx, which sipgo may hand over after it (one
// goroutine per message): it waits up to T1 for that ACK. If it is still
// missing, a 2xx without offer stops being retransmitted (the PBX sends a
// new INVITE only once its previous one is done, RFC 3261 §14.1); a 2xx
// with ponte's offer still awaits its answer, and false means 491.
func (d *Dialog) settlePrevious() bool {
	d.mu.Lock()
	aw := d.ackWait
	d.mu.Unlock()
	if aw == nil {
		return true
	}
	select {
	case <-aw.cleared:
		return true
	case <-time.After(sip.T1):
	}
	if aw.offered {
		return false
	}
	select {
	case aw.ch <- nil:
	default:
	}
	return true
}

// OnMediaChange sets a callback for media changes the PBX makes inside the
// dialog (hold, resume, new address, codec switch); see MediaState. It runs
// on a SIP goroutine once the change is applied and must not block. It is
// not called for the initial answer (WaitAnswer returns that) nor when an
// exchange changed nothing (a session refresh).
func (d *Dialog) OnMediaChange(f func(MediaState)) {
	d.mu.Lock()
	d.onMedia = f
	d.mu.Unlock()
}

// Media returns the PBX leg's current media state.
func (d *Dialog) Media() MediaState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// optionTags splits the comma-separated option tags of every h header.
func optionTags(m sip.Message, names ...string) []string {
	var tags []string
	for _, n := range names {
		for _, h := range m.GetHeaders(n) {
			for _, t := range strings.Split(h.Value(), ",") {
				if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
					tags = append(tags, t)
				}
			}
		}
	}
	return tags
}

// unsupportedTags are the option tags of req's Require that ponte lacks.
func unsupportedTags(req *sip.Request) []string {
	var bad []string
	for _, t := range optionTags(req, "Require") {
		if !supportedExt[t] {
			bad = append(bad, t)
		}
	}
	return bad
}

// checkRequest applies the checks every in-dialog request from the PBX gets
// before its method is processed. It answers and returns false when the
// request must go no further:
//   - 420 Bad Extension with Unsupported listing the Require option tags
//     ponte lacks (RFC 3261 §8.2.2.3);
//   - 481 once the dialog is over or ponte has sent its BYE (§15: the
//     session ends when the BYE is sent);
//   - 500 for a CSeq lower than the PBX's previous one (§12.2.2).
func (d *Dialog) checkRequest(req *sip.Request, tx sip.ServerTransaction) bool {
	if unsupported := unsupportedTags(req); len(unsupported) > 0 {
		respond(tx, req, 420, "Bad Extension", nil, sip.NewHeader("Unsupported", strings.Join(unsupported, ", ")))
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateConfirmed || d.byeSent {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return false
	}
	if cs := req.CSeq(); cs != nil {
		if d.remoteCSeq != 0 && cs.SeqNo < d.remoteCSeq {
			respond(tx, req, 500, "Server Internal Error", nil)
			return false
		}
		d.remoteCSeq = cs.SeqNo
	}
	return true
}

// refreshTargetLocked takes the Contact of a target refresh request
// (re-INVITE, UPDATE: RFC 3261 §12.2.2, RFC 3311 §5.2) as the new remote target.
func (d *Dialog) refreshTargetLocked(m *sip.Request) {
	if c := m.Contact(); c != nil && c.Address.Host != "" {
		d.remoteTarget = *c.Address.Clone()
	}
}

// handleReinvite absorbs a PBX re-INVITE on the SIP leg without involving
// the WhatsApp side: an offer is answered from ponte's current media (see
// answerOffer); an offerless re-INVITE gets ponte's offer in the 200 and
// the answer is taken from the ACK (RFC 3261 §14.2, RFC 3264 §8). Either way
// the 2xx is retransmitted until the ACK arrives (§13.3.1.4).
func (d *Dialog) handleReinvite(req *sip.Request, tx sip.ServerTransaction) {
	if !d.checkRequest(req, tx) {
		return
	}
	settled := d.settlePrevious()
	d.mu.Lock()
	if !settled || d.oaPending {
		// Glare with ponte's own re-INVITE, or ponte's offer is still
		// unanswered (RFC 3261 §14.2; RFC 3264 §4: one exchange at a time).
		d.mu.Unlock()
		respond(tx, req, 491, "Request Pending", nil)
		return
	}
	d.mu.Unlock()
	se, ok := d.sessionFromRequest(req, tx)
	if !ok {
		return
	}
	var body []byte
	var st MediaState
	offered := len(req.Body()) == 0
	if offered && d.media == nil {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return
	}
	if offered {
		body, st = d.localOffer()
	} else {
		var code int
		body, st, code = d.answerRemoteOffer(req.Body())
		if code != 0 {
			respond(tx, req, code, "Not Acceptable Here", nil)
			return
		}
	}
	d.mu.Lock()
	d.refreshTargetLocked(req)
	var aw *ackWait
	if cs := req.CSeq(); cs != nil {
		aw = &ackWait{cseq: cs.SeqNo, offered: offered, ch: make(chan *sip.Request, 1), cleared: make(chan struct{})}
		d.ackWait = aw
		d.oaPending = offered
	}
	d.mu.Unlock()
	if !offered {
		d.applyMedia(st)
	}
	d.applySession(se)
	res := d.okResponse(req, body, se)
	if err := tx.Respond(res); err != nil {
		d.ua.log.Debug("sip: 200 to re-INVITE not sent", "call_id", d.callID, "err", err)
	}
	if aw != nil && !d.ua.goTracked(func() { d.awaitAck(tx, res, aw) }) {
		d.clearAckWait(aw)
	}
}

// okResponse is our 2xx to a PBX re-INVITE or UPDATE.
func (d *Dialog) okResponse(req *sip.Request, body []byte, se sessionOffer) *sip.Response {
	res := sip.NewResponseFromRequest(req, 200, "OK", body)
	res.AppendHeader(d.contact.Clone())
	res.AppendHeader(sip.NewHeader("Allow", allowMethods))
	res.AppendHeader(sip.NewHeader("Supported", supportedHeader))
	for _, h := range se.headers() {
		res.AppendHeader(h)
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	return res
}

// handleUpdate answers a PBX UPDATE (RFC 3311): with SDP it is an offer
// answered at once in the 200 (no ACK); without, a session refresh
// (RFC 4028 §9) or a target refresh.
func (d *Dialog) handleUpdate(req *sip.Request, tx sip.ServerTransaction) {
	if !d.checkRequest(req, tx) {
		return
	}
	hasOffer := len(req.Body()) > 0
	settled := !hasOffer || d.settlePrevious()
	d.mu.Lock()
	if hasOffer && (!settled || d.oaPending) {
		// RFC 3311 §5.2: an offer while ours is unanswered gets 491.
		d.mu.Unlock()
		respond(tx, req, 491, "Request Pending", nil)
		return
	}
	d.mu.Unlock()
	se, ok := d.sessionFromRequest(req, tx)
	if !ok {
		return
	}
	var body []byte
	if hasOffer {
		var st MediaState
		var code int
		body, st, code = d.answerRemoteOffer(req.Body())
		if code != 0 {
			respond(tx, req, code, "Not Acceptable Here", nil)
			return
		}
		d.applyMedia(st)
	}
	d.mu.Lock()
	d.refreshTargetLocked(req)
	d.mu.Unlock()
	d.applySession(se)
	if err := tx.Respond(d.okResponse(req, body, se)); err != nil {
		d.ua.log.Debug("sip: 200 to UPDATE not sent", "call_id", d.callID, "err", err)
	}
}

// handleAck takes the ACK of our 2xx to a PBX re-INVITE.
func (d *Dialog) handleAck(req *sip.Request) {
	d.mu.Lock()
	aw := d.ackWait
	d.mu.Unlock()
	if aw == nil || req.CSeq() == nil || req.CSeq().SeqNo != aw.cseq {
		return // ACK of the initial 2xx exchange's peer, or a retransmission
	}
	select {
	case aw.ch <- req:
	default:
	}
}

func (d *Dialog) clearAckWait(aw *ackWait) {
	close(aw.cleared)
	d.mu.Lock()
	if d.ackWait == aw {
		d.ackWait = nil
		if aw.offered {
			d.oaPending = false
		}
	}
	d.mu.Unlock()
}

// awaitAck retransmits our 2xx over UDP (T1 doubling up to T2) until the
// ACK arrives, for at most 64*T1 (RFC 3261 §13.3.1.4); without an ACK the
// session is ended with a BYE. The ACK of an offerless re-INVITE carries
// the PBX's answer (§13.2.1), applied like any answer.
func (d *Dialog) awaitAck(tx sip.ServerTransaction, res *sip.Response, aw *ackWait) {
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
		case ack = <-tx.Acks(): // a peer that reused the INVITE's branch
		case <-retx.C:
			if !reliable {
				_ = tx.Respond(res)
			}
			iv = min(2*iv, sip.T2)
			retx.Reset(iv)
			continue
		case <-giveUp.C:
			d.ua.log.Warn("sip: no ACK for our 2xx to a re-INVITE", "call_id", d.callID)
			d.byeSync(Reason{Protocol: "SIP", Cause: 408, Text: "No ACK"})
			d.end(ErrNoAck, false, "")
			return
		case <-d.done:
			return
		case <-d.ua.closing:
			return
		}
		if aw.offered && ack != nil && !d.takeAnswer(ack.Body()) {
			d.byeUnusable()
		}
		return
	}
}

// takeAnswer applies the PBX's answer to an offer of ours (in an ACK, or the
// 2xx to our re-INVITE). It reports false for an answer ponte cannot use,
// which cannot be refused (RFC 3264 §6 gives no way): the caller ends the
// session with a BYE (see byeUnusable).
func (d *Dialog) takeAnswer(body []byte) bool {
	if len(body) == 0 {
		d.ua.log.Warn("sip: answer missing; media unchanged", "call_id", d.callID)
		return true
	}
	md, err := ParseSDP(body)
	var st MediaState
	ok := err == nil
	d.mu.Lock()
	if d.state != stateConfirmed || d.byeSent {
		d.mu.Unlock()
		return true // the dialog ended meanwhile (a BYE crossed our re-INVITE)
	}
	if ok {
		st, ok = d.stateFromAnswerLocked(md)
	}
	if ok && d.media != nil && d.media.AcceptSRTP(md) != nil { // H-TLS (srtp.go): a required call stays SRTP
		ok = false
	}
	d.mu.Unlock()
	if !ok {
		return false
	}
	d.applyMedia(st)
	return true
}

// byeUnusable ends the session after an unusable answer.
func (d *Dialog) byeUnusable() {
	d.ua.log.Warn("sip: unusable SDP answer from the PBX; ending the call", "call_id", d.callID)
	d.byeAsync(Reason{Protocol: "SIP", Cause: 488, Text: "Not Acceptable Here"})
}

// sameCodec reports whether two descriptions name the same format.
func sameCodec(a, b CodecDesc) bool { return strings.EqualFold(a.Name, b.Name) && a.Rate == b.Rate }

// pickCodecLocked chooses the codec to use from a PBX SDP: the one in use if
// it is still listed (a refresh or hold must not switch codecs), else the
// first of the SDP's that the trunk allows (RFC 3264 §6.1, the order the
// gateway uses for the initial answer).
func (d *Dialog) pickCodecLocked(md *MediaDesc) (CodecDesc, bool) {
	for _, c := range md.Codecs {
		if d.cur.Codec.Name != "" && sameCodec(c, d.cur.Codec) {
			return c, true
		}
	}
	for _, c := range md.Codecs {
		for _, a := range d.trunk.Codecs {
			if strings.EqualFold(c.Name, a) {
				return c, true
			}
		}
	}
	return CodecDesc{}, false
}

// direction renders a send/receive pair as an SDP direction attribute.
func direction(send, recv bool) string {
	switch {
	case send && recv:
		return "sendrecv"
	case send:
		return "sendonly"
	case recv:
		return "recvonly"
	}
	return "inactive"
}

// remoteFlowLocked reads what a PBX SDP allows: whether ponte may send to it
// and whether it will send, with hold detection (RFC 3264 §8.4): a
// direction other than sendrecv, c=0.0.0.0 (RFC 2543 hold: "neither RTP nor
// RTCP should be sent to the peer"), or port 0 (stream disabled, §8.2).
func (d *Dialog) remoteFlowLocked(md *MediaDesc, weSend, weRecv bool) MediaState {
	nullAddr := md.Addr.IsValid() && md.Addr.Addr().IsUnspecified()
	disabled := md.Addr.IsValid() && md.Addr.Port() == 0
	theySend := md.Direction == "sendrecv" || md.Direction == "sendonly"
	theyRecv := md.Direction == "sendrecv" || md.Direction == "recvonly"
	st := MediaState{
		Held:   md.Direction != "sendrecv" || nullAddr || disabled,
		Send:   weSend && theyRecv && !nullAddr && !disabled,
		Recv:   weRecv && theySend && !disabled,
		Remote: d.cur.Remote,
		DTMFPT: md.DTMFPT, DTMFRate: md.DTMFRate,
		Desc: md,
	}
	if md.Addr.IsValid() && !nullAddr && !disabled {
		st.Remote = md.Addr
	}
	return st
}

// answerRemoteOffer answers a PBX offer from ponte's current media: the
// codec in use if offered, else another the trunk allows (a codec change),
// else 488; the direction mirrored (RFC 3264 §6.1: sendonly -> recvonly,
// recvonly -> sendonly, inactive -> inactive) and with c=0.0.0.0 ponte
// sends nothing (§8.4); ponte's own address always. The SDP keeps its o=
// session and increments the version only when the body changes (§8).
func (d *Dialog) answerRemoteOffer(body []byte) ([]byte, MediaState, int) {
	offer, err := ParseSDP(body)
	if err != nil || d.media == nil {
		return nil, MediaState{}, 488
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	codec, ok := d.pickCodecLocked(offer)
	if !ok {
		return nil, MediaState{}, 488
	}
	st := d.remoteFlowLocked(offer, true, true)
	st.Codec = codec
	addr := d.ua.sdpAddr(d.media)
	if offer.Addr.IsValid() && offer.Addr.Port() == 0 {
		addr = netip.AddrPortFrom(addr.Addr(), 0) // RFC 3264 §6: a rejected stream is answered with port 0
	}
	spec := SDPSpec{
		Addr: addr, Codecs: []CodecDesc{codec}, DTMFPT: offer.DTMFPT, DTMFRate: offer.DTMFRate,
		Ptime: offer.Ptime, Direction: direction(st.Send, st.Recv), SessID: d.sessID,
	}
	x, err := d.media.AnswerSRTP(offer, d.trunk.SRTP) // H-TLS (srtp.go): SDES in re-offers, RFC 4568 §7.1.4
	if err != nil {
		return nil, MediaState{}, 488
	}
	x.Apply(&spec)
	return d.localSDPLocked(spec), st, 0
}

// localOffer is ponte's offer for an offerless re-INVITE: the codec in use
// with telephone-event at ponte's address, sendrecv (the PBX answers
// sendonly if it still holds).
func (d *Dialog) localOffer() ([]byte, MediaState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dtmf := d.cur.DTMFPT
	if dtmf < 0 {
		dtmf = int(d.trunk.DTMFPT)
	}
	spec := SDPSpec{
		Addr: d.ua.sdpAddr(d.media), Codecs: []CodecDesc{d.cur.Codec}, DTMFPT: dtmf, DTMFRate: 8000,
		Direction: "sendrecv", SessID: d.sessID,
	}
	if d.cur.DTMFRate > 0 && d.cur.DTMFPT >= 0 {
		spec.DTMFRate = d.cur.DTMFRate
	}
	d.media.SDES().Apply(&spec) // H-TLS (srtp.go): our crypto line in use
	return d.localSDPLocked(spec), d.cur
}

// localSDPLocked renders spec with the dialog's o= session, bumping the
// version only if the body differs from the last one sent (RFC 3264 §8:
// "if the session description is unchanged, the version MUST be the same").
func (d *Dialog) localSDPLocked(spec SDPSpec) []byte {
	spec.SessID = d.sessID
	spec.Version = d.sessID + d.sdpVersion
	body := BuildSDP(spec)
	if !bytes.Equal(body, d.lastSDP) && d.lastSDP != nil {
		d.sdpVersion++
		spec.Version = d.sessID + d.sdpVersion
		body = BuildSDP(spec)
	}
	d.lastSDP = body
	return body
}

// stateFromAnswerLocked reads a PBX answer to ponte's offer (ponte offered
// its current direction).
func (d *Dialog) stateFromAnswerLocked(md *MediaDesc) (MediaState, bool) {
	codec, ok := d.pickCodecLocked(md)
	if !ok || d.media == nil {
		return MediaState{}, false
	}
	ours, err := ParseSDP(d.lastSDP)
	weSend, weRecv := true, true
	if err == nil {
		weSend = ours.Direction == "sendrecv" || ours.Direction == "sendonly"
		weRecv = ours.Direction == "sendrecv" || ours.Direction == "recvonly"
	}
	st := d.remoteFlowLocked(md, weSend, weRecv)
	st.Codec = codec
	return st, true
}

// applyMedia re-points the RTP session and tells the gateway when the
// state changed.
func (d *Dialog) applyMedia(st MediaState) {
	d.mu.Lock()
	prev := d.cur
	d.cur = st
	f := d.onMedia
	d.mu.Unlock()
	if d.media != nil {
		if st.Remote.IsValid() && st.Remote.Port() != 0 {
			d.media.SetRemote(st.Remote)
		}
		if st.Codec.Name != "" {
			d.media.SetCodec(st.Codec.PT, st.Codec.Rate)
		}
	}
	if f != nil && !sameState(prev, st) {
		f(st)
	}
}

func sameState(a, b MediaState) bool {
	return a.Held == b.Held && a.Send == b.Send && a.Recv == b.Recv && a.Remote == b.Remote &&
		a.Codec.PT == b.Codec.PT && sameCodec(a.Codec, b.Codec) && a.DTMFPT == b.DTMFPT
}
