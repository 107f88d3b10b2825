package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ponte-gw/ponte/api"
	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/permit"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/transcode"
)

// Click-to-call (POST /api/calls): check the permission, ring the agent,
// and when the agent answers call the WhatsApp user and bridge both. The
// agent hears local ringback until the user answers. No agent is rung when
// the policy refuses the call.

// ringbackCountry is the cadence played to agents waiting on a user; the
// same Brazilian cadence as the queue (transcode.NewRingback).
const ringbackCountry = queueRingback

// agentSide is the pbxSide of click-to-call: the agent already answered a
// dialog ponte placed, so ringing and answering are local.
type agentSide struct {
	dlg  *sip.Dialog
	md   *sip.MediaDesc
	stop func() // ends the local ringback
}

func (a *agentSide) Ring(int, string) error { return nil } // the agent hears ponte's ringback already
func (a *agentSide) EarlyMedia(context.Context, sip.AnswerOptions) (*sip.MediaDesc, error) {
	a.stop()
	return a.md, nil
}
func (a *agentSide) Answer(context.Context, sip.AnswerOptions) (*sip.Dialog, error) {
	a.stop()
	return a.dlg, nil
}

// Reject hangs up on the agent, saying why in the Reason header (RFC 3326).
func (a *agentSide) Reject(code int, reason string, _ ...sip.Header) error {
	a.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.dlg.Bye(ctx, sip.Reason{Protocol: "SIP", Cause: code, Text: reason})
}
func (a *agentSide) Canceled() <-chan struct{} { return a.dlg.Done() }

// businessNumber finds a configured number by id or display number; empty
// picks the only one.
func (g *Gateway) businessNumber(s string) *config.Number {
	if s == "" {
		if len(g.cfg.WhatsApp.Numbers) == 1 {
			return &g.cfg.WhatsApp.Numbers[0]
		}
		return nil
	}
	return g.cfg.BusinessNumberFor(nil, s)
}

// RequestPermission sends a call-permission request for the REST API,
// within Meta's limits.
func (g *Gateway) RequestPermission(ctx context.Context, r api.PermissionRequest) (api.PermissionRequestResult, error) {
	if g.permits == nil {
		return api.PermissionRequestResult{}, &api.RefusedError{Status: 501, Reason: "business-initiated calls are not configured"}
	}
	num := g.businessNumber(r.Business)
	if num == nil {
		return api.PermissionRequestResult{}, &api.RefusedError{Status: 400, Reason: "business: name one of the configured numbers"}
	}
	user, _, err := g.permits.Normalize(r.User, "")
	if err != nil {
		return api.PermissionRequestResult{}, &api.RefusedError{Status: 400, Reason: "user: not an E.164 number or BSUID"}
	}
	rc := requestConfig(num)
	if r.Body != "" {
		rc.InteractiveBody = r.Body
	}
	kind, wamid, err := g.permits.RequestPermission(ctx, num.PhoneNumberID, user, rc)
	if err != nil {
		return api.PermissionRequestResult{}, permitAPIError(err)
	}
	return api.PermissionRequestResult{Kind: kind, MessageID: wamid, User: user}, nil
}

// permitAPIError maps the policy's refusals to HTTP: limits are 429 with
// Retry-After, a refusal of the rules 409/403, the rest 502 (Meta failed).
func permitAPIError(err error) error {
	var le *permit.LimitError
	switch {
	case errors.As(err, &le):
		return &api.RefusedError{Status: 429, Reason: le.Error(), RetryAfter: le.RetryAfter}
	case errors.Is(err, permit.ErrAlreadyPermanent):
		return &api.RefusedError{Status: 409, Reason: err.Error()}
	case errors.Is(err, permit.ErrNoTemplate):
		return &api.RefusedError{Status: 409, Reason: err.Error()}
	default:
		return &api.RefusedError{Status: 502, Reason: "WhatsApp refused the request: " + err.Error()}
	}
}

// Permission is GET /api/permissions/{user}.
func (g *Gateway) Permission(ctx context.Context, business, user string) (any, error) {
	if g.permits == nil {
		return nil, &api.RefusedError{Status: 501, Reason: "business-initiated calls are not configured"}
	}
	num := g.businessNumber(business)
	if num == nil {
		return nil, &api.RefusedError{Status: 400, Reason: "business: name one of the configured numbers"}
	}
	u, _, err := g.permits.Normalize(user, "")
	if err != nil {
		return nil, &api.RefusedError{Status: 400, Reason: "user: not an E.164 number or BSUID"}
	}
	return g.permits.Status(ctx, num.PhoneNumberID, u)
}

// ClickToCall checks the permission, then rings the agent; the rest runs on
// a goroutine the gateway owns.
func (g *Gateway) ClickToCall(ctx context.Context, r api.ClickToCall) (api.ClickToCallResult, error) {
	if g.permits == nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 501, Reason: "business-initiated calls are not configured"}
	}
	trunk := g.cfg.Trunk(r.Trunk)
	if trunk == nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 400, Reason: "trunk: not a configured trunk"}
	}
	// Meta's terms: a WhatsApp call is never bridged to the PSTN, click-to-call's agent leg included.
	if err := g.cfg.PSTNPolicy().Check(trunk.Name, r.Agent); err != nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 403, Reason: "agent: " + err.Error()}
	}
	num := g.businessNumber(r.Business)
	if num == nil {
		num = g.cfg.BusinessNumberFor(trunk, "")
	}
	if num == nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 400, Reason: "business: name one of the configured numbers"}
	}
	user, _, err := g.permits.Normalize(r.User, trunk.CountryCode)
	if err != nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 400, Reason: "user: not an E.164 number or BSUID"}
	}
	if err := g.Admit(); err != nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 503, Reason: "gateway " + RefusalReason(err), RetryAfter: 30 * time.Second}
	}
	// The permission first: no agent is rung for a call that cannot be made.
	d := g.permits.Check(ctx, num.PhoneNumberID, user, requestConfig(num))
	if !d.Allow {
		status := 403
		if d.SIPCode == 480 || d.SIPCode == 486 {
			status = 429
		}
		return api.ClickToCallResult{}, &api.RefusedError{Status: status, Reason: d.Reason, RetryAfter: d.RetryAfter}
	}
	id := newID()
	g.mu.Lock()
	err = g.admitLocked() // under the lock that adds to wg: Close may be waiting on it
	if err == nil {
		g.wg.Add(1)
	}
	g.mu.Unlock()
	if err != nil {
		return api.ClickToCallResult{}, &api.RefusedError{Status: 503, Reason: "gateway " + RefusalReason(err), RetryAfter: 30 * time.Second}
	}
	go func() {
		defer g.wg.Done()
		g.ringAgent(id, trunk, num, r.Agent, user)
	}()
	return api.ClickToCallResult{ID: id, User: user}, nil
}

// ringAgent dials the agent, plays ringback when they answer and hands the
// call to the business-initiated flow.
func (g *Gateway) ringAgent(id string, trunk *config.Trunk, num *config.Number, agent, user string) {
	log := g.log.With("call_id", id, "agent", agent, "trunk", trunk.Name)
	rtpSess, err := g.ua.NewRTPSession()
	if err != nil {
		log.Error("click-to-call: no RTP port", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(g.ctx, 60*time.Second)
	defer cancel()
	dlg, err := g.ua.Dial(ctx, sip.DialRequest{Trunk: sipTrunk(trunk), Target: agent, FromUser: user,
		FromDisplay: "WhatsApp " + user, Media: rtpSess,
		Headers: []sip.Header{{Name: "X-Ponte-Call-Id", Value: id}}})
	if err != nil {
		rtpSess.Close()
		log.Warn("click-to-call: agent not rung", "err", err)
		return
	}
	md, err := dlg.WaitAnswer(ctx)
	if err != nil {
		rtpSess.Close()
		log.Info("click-to-call: agent did not answer", "err", err)
		return
	}
	side := &agentSide{dlg: dlg, md: md, stop: func() {}}
	err = g.placeWith(id, side, trunk, num, user, agent, rtpSess, func(c *call) error {
		if err := c.startPBXMedia(rtpSess, md, trunk); err != nil {
			return err
		}
		c.mediaFor = "early"
		rb, err := transcode.NewRingback(ringbackCountry)
		if err != nil {
			return fmt.Errorf("ringback: %w", err)
		}
		if err := c.bridge.PlayToPBX(rb.Fill); err != nil {
			return err
		}
		side.stop = func() { _ = c.bridge.PlayToPBX(nil) }
		return nil
	})
	if err != nil {
		log.Warn("click-to-call: gateway refused the call after the agent answered", "err", err)
		_ = side.Reject(503, "Service Unavailable ("+RefusalReason(err)+")")
		rtpSess.Close()
	}
}
