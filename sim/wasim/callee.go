package wasim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pion/sdp/v3"
	pwebrtc "github.com/pion/webrtc/v4"
)

type calleeState int

const (
	calleeCalling  calleeState = iota // connect accepted, the phone not ringing yet
	calleeRinging                     // RINGING sent
	calleeAccepted                    // ACCEPTED sent
	calleeEnded
)

// Callee is one business-initiated call: the WhatsApp user being called (a pion peer that
// answers the business's offer like Meta: ICE-lite, a=setup:active, Opus 111 and
// telephone-event/8000 126, §5.2) plus the call state Meta keeps. Its media API is Caller's:
// Heard, Digits, SendDTMF, WaitDTMF, HeardMarkers, MarkerSender, Stream.
type Callee struct {
	endpoint
	u         *user       // fields guarded by Meta.umu
	uo        UserOptions // the user's options when the call was placed
	offer     string      // the business's offer
	answer    string      // Meta's answer (the connect webhook's session)
	to        string      // `to` or `recipient` as the business sent it
	opaque    string      // biz_opaque_callback_data, echoed on every webhook
	connectAt time.Time

	mu          sync.Mutex
	state       calleeState
	answerSent  bool
	acceptedAt  time.Time // real clock: media timers
	acceptedSim time.Time // Config.Now: start_time
	endReason   string

	hmu      sync.Mutex // guards the webhook queue
	hookQ    []queuedHook
	hookBusy bool

	accepted chan struct{}
}

type queuedHook struct {
	event string
	body  []byte
	done  chan<- error // optional: told the delivery result
}

// connect implements action "connect" (§3.1, §3.3): Meta's checks on the request, the user
// and the pair's permission and limits, then the user's phone answers the offer. The call's
// webhooks start once the HTTP answer is out (Callee.start).
func (m *Meta) connect(gb *graphBody) (*Callee, *graphError) {
	if gb.Session == nil || gb.Session.SDP == "" {
		return nil, badParam("session with sdp is required")
	}
	if gb.Session.SDPType != "offer" {
		return nil, badParam(fmt.Sprintf("Invalid sdp_type %q for connect: want offer", gb.Session.SDPType))
	}
	if gb.To == "" && gb.Recipient == "" {
		return nil, badParam("to or recipient is required")
	}
	if gerr := validateOfferSDP(gb.Session.SDP); gerr != nil {
		return nil, gerr
	}
	if n := utf8.RuneCountInString(gb.BizOpaque); n > 512 {
		return nil, badParam(fmt.Sprintf("biz_opaque_callback_data is %d characters, max 512", n))
	}
	c := &Callee{offer: gb.Session.SDP, to: firstNonEmpty(gb.To, gb.Recipient), opaque: gb.BizOpaque,
		connectAt: time.Now(), accepted: make(chan struct{})}
	id := newID("wacid.", 21)
	now := m.now()

	m.umu.Lock()
	// With both to and recipient, to wins (§3.1).
	u := m.resolveLocked(c.to)
	gerr := callAllowed(u, now)
	if gerr == nil {
		c.u, c.uo = u, u.o
		u.active = c
	}
	m.umu.Unlock()
	if gerr != nil {
		return nil, gerr
	}
	c.init(m, id, c.uo.media())
	if err := c.answerOffer(); err != nil {
		m.releaseUser(c)
		return nil, badParam("Invalid connection info: " + err.Error())
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.closePeer()
		m.releaseUser(c)
		return nil, &graphError{status: http.StatusServiceUnavailable, code: 1, message: "simulator closed"}
	}
	m.callees[c.id] = c
	m.newCall = append(m.newCall, c)
	close(m.calleeCh)
	m.calleeCh = make(chan struct{})
	m.mu.Unlock()
	c.startReaders()
	return c, nil
}

// callAllowed applies Meta's rules for calling user u (§3.6): unknown user 138001, no valid
// permission 138006 (HTTP 401), a call already running 138003, the connected-call limit
// 138012 with the next allowed time in error_data.details. m.umu is held.
func callAllowed(u *user, now time.Time) *graphError {
	switch {
	case u == nil:
		return &graphError{status: http.StatusBadRequest, code: 138001, message: "Receiver is incapable of receiving this call"}
	case !u.permitted(now):
		return &graphError{status: http.StatusUnauthorized, code: 138006, message: "No approved call permission from the recipient"}
	case u.active != nil:
		return &graphError{status: http.StatusBadRequest, code: 138003,
			message: "Duplicate call", details: "A call is already ongoing with this receiver"}
	}
	if full, next := limitReached(u.connected, now, day, u.o.ConnectedLimit); full {
		return &graphError{status: http.StatusBadRequest, code: 138012,
			message: "Business initiated calls limit reached",
			details: fmt.Sprintf("Connected call limit of %d per 24 hours reached for this user; next call allowed at %s (%d)",
				u.o.ConnectedLimit, next.UTC().Format(time.RFC3339), next.Unix())}
	}
	return nil
}

// validateOfferSDP applies Meta's documented checks to a connect offer (§5.3, §3.6 code 100
// "SDP validation details in error_data"): one audio m-line, DTLS-SRTP with a fingerprint ("No
// fingerprint found in SDP"), ICE credentials, Opus at 48 kHz, and a=setup:actpass. Whether
// Meta accepts an active or passive offer is UNCONFIRMED (§5.2, §9 item 3): the simulator
// refuses it, so the gateway must offer actpass.
func validateOfferSDP(offer string) *graphError {
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(offer); err != nil {
		return badParam("Invalid SDP: " + err.Error())
	}
	if n := len(sd.MediaDescriptions); n != 1 {
		return badParam(fmt.Sprintf("SDP must have exactly one media section, got %d", n))
	}
	md := sd.MediaDescriptions[0]
	attr := func(key string) string {
		if v, ok := md.Attribute(key); ok {
			return strings.TrimSpace(v)
		}
		v, _ := sd.Attribute(key)
		return strings.TrimSpace(v)
	}
	opus := false
	for _, a := range md.Attributes {
		if a.Key == "rtpmap" {
			_, enc, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			opus = opus || strings.HasPrefix(strings.ToLower(enc), "opus/48000")
		}
	}
	switch {
	case md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0:
		return badParam("SDP must have one active audio media section")
	case !strings.Contains(strings.Join(md.MediaName.Protos, "/"), "RTP/SAVP"):
		return badParam("SDP media must be DTLS-SRTP (UDP/TLS/RTP/SAVPF)")
	case !opus:
		return badParam("SDP must offer opus/48000")
	case attr("ice-ufrag") == "" || attr("ice-pwd") == "":
		return badParam("SDP must carry ice-ufrag and ice-pwd")
	case attr("fingerprint") == "":
		return badParam("No fingerprint found in SDP")
	}
	if s := attr("setup"); s != "actpass" {
		return badParam(fmt.Sprintf("Invalid DTLS setup a=setup:%s in offer: the offer must be a=setup:actpass", s))
	}
	return nil
}

// answerOffer builds the user's peer and answers the business's offer in Meta's shape (§5.2).
func (c *Callee) answerOffer() error {
	if err := c.newPeer(true); err != nil {
		return err
	}
	err := c.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeOffer, SDP: c.offer})
	var sender *pwebrtc.RTPSender
	if err == nil {
		// AddTrack after the offer attaches the track to the offer's transceiver: one m-line.
		sender, err = c.pc.AddTrack(c.track)
	}
	if err == nil {
		for _, t := range c.pc.GetTransceivers() {
			if t.Sender() == sender {
				c.tr = t
			}
		}
		if c.tr == nil {
			err = errors.New("no transceiver")
		}
	}
	var ans pwebrtc.SessionDescription
	if err == nil {
		ans, err = c.pc.CreateAnswer(nil)
	}
	if err == nil {
		c.answer, err = c.setLocal(ans)
	}
	if err != nil {
		c.closePeer()
		return err
	}
	return nil
}

func (m *Meta) releaseUser(c *Callee) {
	m.umu.Lock()
	defer m.umu.Unlock()
	if c.u != nil && c.u.active == c {
		c.u.active = nil
	}
}

// start runs the call's life once the connect answer is on the wire.
func (c *Callee) start() { c.goOwned(c.run) }

// run is Meta and the user's phone: RINGING after RingingAfter (with the connect webhook
// carrying the answer, unless ConnectWebhook is "accepted"), then the user's answer after
// AnswerAfter, or Meta's ring timeout; after ACCEPTED, Meta's media timers (§5.5).
func (c *Callee) run() {
	o := c.uo
	ringDeadline := c.connectAt.Add(c.m.cfg.RingTimeout)
	if !c.sleep(o.RingingAfter) {
		return
	}
	c.mu.Lock()
	if c.state != calleeCalling {
		c.mu.Unlock()
		return
	}
	if o.ConnectWebhook == "ringing" {
		c.queue("connect", c.connectBody(), nil)
		c.answerSent = true
	}
	c.queue("status", c.statusBody("RINGING"), nil)
	c.state = calleeRinging
	c.mu.Unlock()
	if o.EarlyMedia {
		c.startMedia()
	}
	answerAt := time.Now().Add(o.AnswerAfter)
	if o.Answer == "none" || answerAt.After(ringDeadline) {
		if c.sleep(time.Until(ringDeadline)) {
			c.end("ring_timeout", calleeEnd{unanswered: true})
		}
		return
	}
	if !c.sleep(time.Until(answerAt)) {
		return
	}
	if o.Answer == "reject" {
		c.end("user_reject", calleeEnd{status: "REJECTED", unanswered: true})
		return
	}
	if !c.pickUp() {
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			if reason, code := c.mediaTimeout(now, c.acceptedAt); reason != "" {
				c.end(reason, calleeEnd{errCode: code})
				return
			}
		}
	}
}

// pickUp is the user answering: ACCEPTED (preceded by the connect webhook when it waited for
// the answer), the pair's counters, and the user's voice.
func (c *Callee) pickUp() bool {
	c.mu.Lock()
	if c.state != calleeRinging {
		c.mu.Unlock()
		return false
	}
	if !c.answerSent {
		c.queue("connect", c.connectBody(), nil)
		c.answerSent = true
	}
	c.state, c.acceptedAt, c.acceptedSim = calleeAccepted, time.Now(), c.m.now()
	// The counters change before the webhook goes out: a gateway reacting to ACCEPTED with a
	// GET call_permissions sees this call counted.
	c.m.bicConnected(c)
	c.queue("status", c.statusBody("ACCEPTED"), nil)
	c.mu.Unlock()
	close(c.accepted)
	c.startMedia()
	return true
}

// bicConnected counts a connected business-initiated call toward start_call, resets the
// permission-request limits and the unanswered run (§4.3) and opens the customer-service
// window (§7). c.mu is held (lock order: Callee.mu, then Meta.umu).
func (m *Meta) bicConnected(c *Callee) {
	m.umu.Lock()
	defer m.umu.Unlock()
	u := c.u
	u.connected = append(within(u.connected, c.acceptedSim, week), c.acceptedSim)
	u.requests, u.unanswered = nil, 0
	u.windowUntil = c.acceptedSim.Add(serviceWindow)
}

type calleeEnd struct {
	silent     bool         // no webhooks (simulator closing)
	status     string       // a call status to send before the terminate (REJECTED)
	unanswered bool         // counts toward the consecutive unanswered calls (§4.3)
	errCode    int          // errors[] code of the terminate
	deferHook  bool         // return the webhooks to send after the HTTP answer instead of queueing them
	done       chan<- error // told when the terminate has been delivered
}

// end moves the call to ended, stops media and queues its webhooks: the optional status, then
// terminate FAILED, or COMPLETED with start_time, end_time and duration if the user had
// answered (§2.5). ok is false if the call had already ended.
func (c *Callee) end(reason string, o calleeEnd) (after func(), ok bool) {
	c.mu.Lock()
	if c.state == calleeEnded {
		c.mu.Unlock()
		return nil, false
	}
	wasAccepted := c.state == calleeAccepted
	c.state, c.endReason = calleeEnded, reason
	var hooks []queuedHook
	if !o.silent {
		if o.status != "" {
			hooks = append(hooks, queuedHook{event: "status", body: c.statusBody(o.status)})
		}
		hooks = append(hooks, queuedHook{event: "terminate", body: c.terminateBody(wasAccepted, o.errCode), done: o.done})
	}
	c.mu.Unlock()
	c.shutdown()
	c.m.log.Debug("business-initiated call ended", "wacid", c.id, "reason", reason)
	// The user's state changes before the webhooks go out (see pickUp). No other webhook of
	// this call can be queued any more: the others are queued under c.mu in a live state.
	if revoke := c.m.calleeEnded(c, o.unanswered && !o.silent); revoke != nil {
		// Meta's automatic revocation after 4 consecutive unanswered calls (§2.8, §4.3).
		hooks = append(hooks, queuedHook{event: "permission_reply", body: revoke})
	}
	send := func() {
		for _, h := range hooks {
			c.queue(h.event, h.body, h.done)
		}
	}
	if o.deferHook {
		return send, true
	}
	send()
	return nil, true
}

// calleeEnded frees the user for a new call and counts an unanswered one; at the fourth in a
// row Meta revokes the permission and returns the revocation webhook body.
func (m *Meta) calleeEnded(c *Callee, unanswered bool) []byte {
	m.umu.Lock()
	u := c.u
	if u.active == c {
		u.active = nil
	}
	revoke := false
	if unanswered {
		u.unanswered++
		if u.unanswered >= autoRevokeAfter && u.permission != PermissionNone {
			u.permission, u.expires, u.unanswered, revoke = PermissionNone, time.Time{}, 0, true
		}
	}
	uo := u.o
	m.umu.Unlock()
	if !revoke {
		return nil
	}
	body, err := m.permissionReplyBody(uo, PermissionReplyOptions{Response: "reject", Source: "automatic", NoContext: true}, "")
	if err != nil {
		m.log.Error("revocation body", "err", err)
		return nil
	}
	return body
}

// terminate is the business's terminate action: 200, then the terminate webhook (§2.5, §3.3).
func (c *Callee) terminate() (func(), *graphError) {
	after, ok := c.end("gateway_terminate", calleeEnd{deferHook: true})
	if !ok {
		return nil, badParam("call " + c.id + " has already ended")
	}
	return after, nil
}

// Hangup is the user hanging up: a terminate webhook with status COMPLETED, start_time,
// end_time and duration (FAILED without them if the user never answered), delivered before
// Hangup returns.
func (c *Callee) Hangup(ctx context.Context) error {
	done := make(chan error, 1)
	if _, ok := c.end("user_hangup", calleeEnd{done: done}); !ok {
		return fmt.Errorf("wasim: call already ended (%s)", c.EndReason())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// queue appends a webhook to the call's delivery queue: the call's webhooks reach the gateway
// one at a time, in the order of the events, as Meta's usually do. Delivery continues after
// the call ended; Close cancels it.
func (c *Callee) queue(event string, body []byte, done chan<- error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	c.hookQ = append(c.hookQ, queuedHook{event: event, body: body, done: done})
	if c.hookBusy {
		return
	}
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		c.hookQ = nil
		if done != nil {
			done <- ErrClosed
		}
		return
	}
	c.hookBusy = true
	m.wg.Add(1)
	go c.deliverHooks()
}

func (c *Callee) deliverHooks() {
	defer c.m.wg.Done()
	for {
		c.hmu.Lock()
		if len(c.hookQ) == 0 {
			c.hookBusy = false
			c.hmu.Unlock()
			return
		}
		h := c.hookQ[0]
		c.hookQ = c.hookQ[1:]
		c.hmu.Unlock()
		_, err := c.m.post(c.m.ctx, h.event, c.id, h.body, true)
		if h.done != nil {
			h.done <- err
		}
	}
}

// Callee returns the business-initiated call with this wacid, or nil.
func (m *Meta) Callee(wacid string) *Callee {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.callees[wacid]
}

// WaitCallee returns the next business-initiated call not yet returned by WaitCallee, in the
// order the connects were accepted, waiting for one if needed.
func (m *Meta) WaitCallee(ctx context.Context) (*Callee, error) {
	for {
		m.mu.Lock()
		if m.taken < len(m.newCall) {
			c := m.newCall[m.taken]
			m.taken++
			m.mu.Unlock()
			return c, nil
		}
		ch, closed := m.calleeCh, m.closed
		m.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Offer is the business's SDP offer from the connect request.
func (c *Callee) Offer() string { return c.offer }

// Answer is Meta's SDP answer, sent in the connect webhook.
func (c *Callee) Answer() string { return c.answer }

// User is the wa_id (or BSUID) of the user called.
func (c *Callee) User() string { return firstNonEmpty(c.uo.WaID, c.uo.BSUID) }

// BizOpaque is the connect's biz_opaque_callback_data.
func (c *Callee) BizOpaque() string { return c.opaque }

// WaitAccepted waits until the user has answered (ACCEPTED queued, user media starting).
func (c *Callee) WaitAccepted(ctx context.Context) error {
	select {
	case <-c.accepted:
		return nil
	case <-c.ended:
		return fmt.Errorf("wasim: call ended before the user answered: %s", c.EndReason())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// EndReason says why the call ended: "user_hangup", "user_reject", "ring_timeout",
// "gateway_terminate", "no_media_138021", "no_media_138022", "sim_closed" ("" while it lasts).
func (c *Callee) EndReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endReason
}
