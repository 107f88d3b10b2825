package wasim

import (
	"context"
	"fmt"
	"sync"
	"time"

	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/internal/impair"
)

// CallOptions describe the WhatsApp user who calls.
type CallOptions struct {
	From            string // wa_id / from (default "16315553602"); "" is sent as "" when BSUID is set
	Name            string // contacts[].profile.name (default "WhatsApp User")
	BSUID           string // from_user_id / contacts[].user_id (2026 fields), optional
	CTAPayload      string
	DeeplinkPayload string
	ToneHz          float64   // tone the caller speaks (default 440)
	ToneDBFS        float64   // its level (default -12)
	Timestamp       time.Time // connect webhook timestamp (default now)
	Marker          bool      // send the sim/audio marker sequence instead of a plain tone
	// What the caller expects to hear from the business (for Heard): default 440 Hz at -12 dBFS.
	ExpectHz, ExpectDBFS float64
	// DTMFDropEnd drops every End packet of the caller's DTMF events (loss impairment).
	DTMFDropEnd bool
	// DeadMedia: the caller's relay never answers ICE (the answer is accepted by
	// the Graph API but never applied), so the gateway's ICE/DTLS cannot complete.
	DeadMedia bool
	// OnAudio sees every decoded 8 kHz frame the caller hears, with its arrival time.
	OnAudio func(pcm []int16, at time.Time)
	// Replay makes the caller's voice a pre-encoded loop (load generation, media.go).
	Replay *Replay
	// Impair degrades the caller's media socket (impair.go).
	Impair *impair.Model
}

// Marker sequence used by CallOptions.Marker and by HeardMarkers; a PBX simulator measuring
// delay uses the same frequencies.
const (
	MarkerF1Hz   = 700.0
	MarkerF2Hz   = 1300.0
	MarkerPeriod = 500 * time.Millisecond
)

func (o *CallOptions) setDefaults(now time.Time) {
	if o.From == "" && o.BSUID == "" {
		o.From = "16315553602"
	}
	if o.Name == "" {
		o.Name = "WhatsApp User"
	}
	if o.Timestamp.IsZero() {
		o.Timestamp = now
	}
	mo := o.media()
	mo.setDefaults()
	o.ToneHz, o.ToneDBFS, o.ExpectHz, o.ExpectDBFS = mo.ToneHz, mo.ToneDBFS, mo.ExpectHz, mo.ExpectDBFS
}

func (o *CallOptions) media() mediaOptions {
	return mediaOptions{ToneHz: o.ToneHz, ToneDBFS: o.ToneDBFS, ExpectHz: o.ExpectHz, ExpectDBFS: o.ExpectDBFS,
		Marker: o.Marker, DTMFDropEnd: o.DTMFDropEnd, OnAudio: o.OnAudio, Replay: o.Replay, Impair: o.Impair}
}

type callState int

const (
	stateRinging callState = iota
	statePreAccepted
	stateAccepted
	stateEnded
)

// Caller is one WhatsApp user's call: a pion peer shaped like Meta's relay (endpoint) plus the
// call state Meta keeps for the Graph API.
type Caller struct {
	endpoint
	opts  CallOptions
	offer string

	mu                sync.Mutex
	state             callState
	connectAt         time.Time
	acceptedAt        time.Time
	acceptRespondedAt time.Time
	preSDP            string
	answerSDP         string
	opaque            string
	endReason         string

	accepted chan struct{}
}

// Call places a user-initiated call: it builds the caller peer (ICE-lite, actpass, Opus 111
// "minptime=10;useinbandfec=1", telephone-event/8000 126, BUNDLE, one SSRC, §5.1), waits for
// gathering, then POSTs the signed connect webhook. It returns once the gateway has answered
// the webhook (2xx), or an error wrapping ErrWebhookRejected.
func (m *Meta) Call(ctx context.Context, o CallOptions) (*Caller, error) {
	o.setDefaults(m.now())
	c := &Caller{opts: o, accepted: make(chan struct{})}
	c.init(m, newID("wacid.", 21), o.media())
	if err := c.buildPeer(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.closePeer()
		return nil, ErrClosed
	}
	m.calls[c.id] = c
	c.connectAt = time.Now()
	c.wg.Add(1)
	m.mu.Unlock()
	go c.supervise()
	c.startReaders()
	// A user-initiated call opens the customer-service window, answered or not (§7).
	m.userActivity(o.From, o.BSUID)

	body, err := m.connectBody(c)
	if err == nil {
		_, err = m.post(ctx, "connect", c.id, body, true)
	}
	if err != nil {
		c.end("webhook_failed", endOpts{silent: true})
		return nil, fmt.Errorf("wasim: connect webhook: %w", err)
	}
	return c, nil
}

// buildPeer makes the caller's offer in Meta's shape (§5.1): ICE-lite, actpass, mid "audio".
func (c *Caller) buildPeer() error {
	if err := c.newPeer(false); err != nil {
		return err
	}
	var err error
	c.tr, err = c.pc.AddTransceiverFromTrack(c.track, pwebrtc.RTPTransceiverInit{Direction: pwebrtc.RTPTransceiverDirectionSendrecv})
	if err == nil {
		err = c.tr.SetMid("audio") // Meta's mid (§5.1)
	}
	var offer pwebrtc.SessionDescription
	if err == nil {
		offer, err = c.pc.CreateOffer(nil)
	}
	if err == nil {
		c.offer, err = c.setLocal(offer)
	}
	if err != nil {
		c.closePeer()
		return fmt.Errorf("wasim: offer: %w", err)
	}
	return nil
}

// Offer is the SDP offer sent in the connect webhook.
func (c *Caller) Offer() string { return c.offer }

// Answer is the SDP answer the caller applied (from pre_accept, or accept without pre_accept).
func (c *Caller) Answer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answerSDP
}

// WaitAccepted waits until the gateway's accept request has been answered with 200.
func (c *Caller) WaitAccepted(ctx context.Context) error {
	select {
	case <-c.accepted:
		return nil
	case <-c.ended:
		return fmt.Errorf("wasim: call ended before accept: %s", c.EndReason())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AcceptRespondedAt is when the simulator finished answering the accept request (zero before).
// The caller starts media only after this instant, as WhatsApp clients do (§3.2).
func (c *Caller) AcceptRespondedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acceptRespondedAt
}

// AcceptedAt is when the simulator carried out the accept (zero before): the
// call is in progress at Meta from then, whether or not the answer reached
// the gateway yet.
func (c *Caller) AcceptedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acceptedAt
}

// EndReason says why the call ended: "gateway_terminate", "gateway_reject", "user_hangup",
// "accept_timeout", "no_media_138021", "no_media_138022" (or "" while it lasts).
func (c *Caller) EndReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endReason
}

func (c *Caller) bizOpaque() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opaque
}

// Hangup is the user hanging up: a terminate webhook with status COMPLETED and the duration
// (FAILED without times if the call was never accepted), delivered before Hangup returns.
func (c *Caller) Hangup(ctx context.Context) error {
	body, ok := c.end("user_hangup", endOpts{})
	if !ok {
		return fmt.Errorf("wasim: call already ended (%s)", c.EndReason())
	}
	_, err := c.m.post(ctx, "terminate", c.id, body, true)
	return err
}

func (c *Caller) preAccept(gb *graphBody) *graphError {
	if e := validateAnswerSDP(gb); e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateRinging:
	case stateEnded:
		return badParam("call " + c.id + " has already ended")
	default:
		return badParam("call " + c.id + " is already pre-accepted or in progress")
	}
	if err := c.applyAnswer(gb.Session.SDP); err != nil {
		return badParam("Invalid connection info: " + err.Error())
	}
	c.state, c.preSDP = statePreAccepted, gb.Session.SDP
	return nil
}

// accept: Meta rejects an accept after the window, after the end, or whose SDP differs from the
// pre_accept SDP (§3.1, §3.2). Media starts after the 200 is on the wire.
func (c *Caller) accept(gb *graphBody) (func(), *graphError) {
	if e := validateAnswerSDP(gb); e != nil {
		return nil, e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state == stateEnded:
		return nil, badParam("call " + c.id + " has already ended")
	case c.state == stateAccepted:
		return nil, badParam("call " + c.id + " is already in progress")
	case time.Since(c.connectAt) > c.m.cfg.AcceptWindow:
		return nil, badParam("accept window expired")
	case c.state == statePreAccepted && gb.Session.SDP != c.preSDP:
		return nil, badParam("SDP does not match the SDP sent with pre_accept")
	case c.state == stateRinging:
		if err := c.applyAnswer(gb.Session.SDP); err != nil {
			return nil, badParam("Invalid connection info: " + err.Error())
		}
	}
	c.state, c.acceptedAt, c.opaque = stateAccepted, time.Now(), gb.BizOpaque
	return c.onAcceptResponded, nil
}

func (c *Caller) onAcceptResponded() {
	c.mu.Lock()
	if c.state != stateAccepted {
		c.mu.Unlock()
		return
	}
	c.acceptRespondedAt = time.Now()
	c.mu.Unlock()
	if c.startMedia() {
		close(c.accepted)
		c.m.userConnected(c.opts.From, c.opts.BSUID)
	}
}

func (c *Caller) reject() (func(), *graphError) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	switch st {
	case stateEnded:
		return nil, badParam("call " + c.id + " has already ended")
	case stateAccepted:
		return nil, badParam("call " + c.id + " is already in progress; use terminate")
	}
	return c.endAfterResponse("gateway_reject"), nil
}

func (c *Caller) terminate() (func(), *graphError) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st == stateEnded {
		return nil, badParam("call " + c.id + " has already ended")
	}
	return c.endAfterResponse("gateway_terminate"), nil
}

// endAfterResponse ends the call and queues its terminate webhook after the 200 (Meta sends
// the terminate for business reject/terminate too, §2.5).
func (c *Caller) endAfterResponse(reason string) func() {
	body, ok := c.end(reason, endOpts{})
	if !ok {
		return nil
	}
	return func() { c.m.goWebhook("terminate", c.id, body) }
}

// applyAnswer gives the gateway's answer to the caller's peer; c.mu is held.
func (c *Caller) applyAnswer(answer string) error {
	if c.opts.DeadMedia {
		// The relay never answers ICE: keep the call state, never start the peer.
		c.answerSDP = answer
		return nil
	}
	if err := c.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return err
	}
	c.answerSDP = answer
	return nil
}

type endOpts struct {
	silent  bool // no terminate body (simulator closing, failed connect)
	errCode int  // errors[] code
}

// end moves the call to ended, stops its media and returns the terminate webhook body. ok is
// false if the call had already ended.
func (c *Caller) end(reason string, o endOpts) (body []byte, ok bool) {
	c.mu.Lock()
	if c.state == stateEnded {
		c.mu.Unlock()
		return nil, false
	}
	acceptedAt := c.acceptedAt
	wasAccepted := c.state == stateAccepted
	c.state, c.endReason = stateEnded, reason
	c.mu.Unlock()
	// Meta's relay leaves the call: the business leg sees DTLS close and then ICE failure.
	c.shutdown()
	c.m.log.Debug("call ended", "wacid", c.id, "reason", reason)
	if o.silent {
		return nil, true
	}
	status := "FAILED"
	if wasAccepted && o.errCode == 0 {
		status = "COMPLETED"
	}
	if !wasAccepted {
		acceptedAt = time.Time{}
	}
	body, err := c.m.terminateBody(c, status, acceptedAt, time.Now(), o.errCode)
	if err != nil {
		c.m.log.Error("terminate body", "err", err)
		return nil, true
	}
	return body, true
}

// supervise runs Meta's timers for the call (§3.2, §5.5): the accept window, and after accept the
// media timeouts: no business RTP within NoMediaStart, or no business RTP/RTCP for NoMediaMid.
func (c *Caller) supervise() {
	defer c.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	cfg := c.m.cfg
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.mu.Lock()
			st, connectAt, respondedAt := c.state, c.connectAt, c.acceptRespondedAt
			c.mu.Unlock()
			reason, code := "", 0
			switch {
			case (st == stateRinging || st == statePreAccepted) && now.Sub(connectAt) > cfg.AcceptWindow:
				reason = "accept_timeout"
			case st == stateAccepted && !respondedAt.IsZero():
				reason, code = c.mediaTimeout(now, respondedAt)
			}
			if reason == "" {
				continue
			}
			if body, ok := c.end(reason, endOpts{errCode: code}); ok && body != nil {
				c.m.goWebhook("terminate", c.id, body)
			}
			return
		}
	}
}
