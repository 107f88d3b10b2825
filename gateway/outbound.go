package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/permit"
	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/webrtc"
	"github.com/ponte-gw/ponte/whatsapp"
)

// A business-initiated call (reference §3.3, §8 items 12-15):
//
//	PBX INVITE (authenticated by package sip) -> permission policy (ledger,
//	GET call_permissions) -> 403/480/486 or: WebRTC offer -> Graph connect
//	(never retried) -> connect webhook: apply Meta's answer -> RINGING: 180
//	-> ACCEPTED: 200 to the PBX, media both ways -> BYE/terminate.
//
// The call runs on the same call type as user-initiated ones, so the bridge,
// hold, codec changes, INFO DTMF, the PBX media timeout and the records are
// shared; out holds what only this direction has.

// pbxSide is the agent's side of a business-initiated call: a PBX INVITE
// waiting for its final answer (sip.IncomingCall), or for click-to-call an
// agent ponte rang and who already answered.
type pbxSide interface {
	Ring(code int, reason string) error
	EarlyMedia(ctx context.Context, opt sip.AnswerOptions) (*sip.MediaDesc, error)
	Reject(code int, reason string, hdrs ...sip.Header) error
	Answer(ctx context.Context, opt sip.AnswerOptions) (*sip.Dialog, error)
	Canceled() <-chan struct{}
}

// outState is what only a business-initiated call has.
type outState struct {
	side   pbxSide
	trunk  *config.Trunk
	number *config.Number
	user   string // ledger key: wa_id digits or BSUID
	bsuid  bool
	agent  string            // who placed it (From user of the INVITE)
	rtp    *sip.RTPSession   // the agent's RTP session when it exists before the call (click-to-call)
	setup  func(*call) error // run once the bridge exists (click-to-call's ringback)
	events chan whatsapp.CallEvent
	// wacidKnown is set once the wacid is known (connect's answer or the
	// first webhook naming our id).
	wacidKnown bool
	started    bool // the ledger counted the call (CallStarted)
	ringing    bool
	early      bool   // 183 sent: the PBX hears the user's early media
	signal     string // what produced the 200: "accepted" (status webhook) or "media"
	metaEnded  bool   // Meta ended the call (terminate webhook, REJECTED): no terminate back
	declined   bool   // the user declined (REJECTED)
	connectErr error  // a connect that got no answer (timeout): webhooks decide
}

// sipRefusal is a final non-2xx answer to the PBX, before the call is
// answered, with what Meta or the policy said.
type sipRefusal struct {
	code       int
	reason     string // reason phrase
	warning    string // RFC 3261 §20.43 Warning value, e.g. `399 ponte "..."`
	retryAfter time.Duration
	outcome    string // record's end reason
	ledger     string // outcome for the permission ledger ("" : not a placed call)
}

func (e *sipRefusal) Error() string { return fmt.Sprintf("refused: %d %s", e.code, e.reason) }

// Errors of business-initiated calls.
var (
	ErrPBXCancel    = errors.New("gateway: the PBX cancelled the call")
	ErrBadNumber    = errors.New("gateway: the dialled number is not a WhatsApp user id")
	ErrNoBusiness   = errors.New("gateway: no business number for this trunk")
	ErrOutboundOff  = errors.New("gateway: business-initiated calls are not configured")
	ErrBadAnswerSDP = errors.New("gateway: unusable SDP answer from Meta")
)

// outboundGraph is the part of the Graph API business-initiated calls need.
type outboundGraph interface {
	Connect(ctx context.Context, phoneNumberID, to, recipient, sdp, bizOpaque string) (string, error)
	Terminate(ctx context.Context, phoneNumberID, callID string) error
}

// decisionRefusal turns a refusing policy decision into the SIP answer.
func decisionRefusal(d permit.Decision, outcome string) *sipRefusal {
	r := &sipRefusal{code: d.SIPCode, reason: d.Reason, warning: d.Warning, retryAfter: d.RetryAfter, outcome: outcome}
	if r.code == 0 {
		r.code = 500
	}
	if r.reason == "" {
		r.reason = "Refused by WhatsApp call policy"
	}
	return r
}

// PlaceCall runs a business-initiated call for side, an INVITE from trunk
// for the Request-URI user dialled, placed by agent. hdr reads a header of
// the INVITE. It returns at once; the call runs on a goroutine the gateway owns.
func (g *Gateway) PlaceCall(side pbxSide, trunkName, dialled, agent string, hdr func(string) string) {
	log := g.log.With("trunk", trunkName, "dialled", maskDigits(dialled))
	refuse := func(r *sipRefusal) {
		log.Info("business-initiated call refused", "code", r.code, "reason", r.reason)
		if err := side.Reject(r.code, r.reason, refusalHeaders(r)...); err == nil {
			g.obs.SIPResponse("INVITE", r.code, "out")
		} else {
			log.Warn("final answer to the PBX not sent", "err", err)
		}
		g.obs.CallRefused(metrics.DirOutbound, "", r.outcome)
	}
	trunk := g.cfg.Trunk(trunkName)
	if trunk == nil || g.permits == nil {
		refuse(&sipRefusal{code: 403, reason: "Business-initiated calls are not enabled", outcome: "not_enabled"})
		return
	}
	var num *config.Number
	if trunk.Inbound != nil && trunk.Inbound.NumberHeader != "" && hdr != nil {
		num = g.cfg.BusinessNumberFor(trunk, hdr(trunk.Inbound.NumberHeader))
	} else {
		num = g.cfg.BusinessNumberFor(trunk, "")
	}
	if num == nil {
		refuse(&sipRefusal{code: 403, reason: "No WhatsApp business number for this trunk", outcome: "no_business_number"})
		return
	}
	user, _, err := g.permits.Normalize(dialled, trunk.CountryCode)
	if err != nil {
		// RFC 3261 §21.4.19: 484 Address Incomplete / §21.4.5 404.
		refuse(&sipRefusal{code: 484, reason: "Not a WhatsApp number (E.164 or BSUID expected)", outcome: "bad_number"})
		return
	}
	if err := g.placeWith(newID(), side, trunk, num, user, agent, nil, nil); err != nil {
		// The whole gateway is draining or full: the one case for 503
		// (RFC 3261 §21.5.4), with a short Retry-After.
		refuse(&sipRefusal{code: 503, reason: "Service Unavailable (" + RefusalReason(err) + ")", retryAfter: 30 * time.Second, outcome: "refused_" + RefusalReason(err)})
	}
}

// placeWith starts the call: side is the agent's side, rtpSess its RTP
// session when it exists already (click-to-call) and setup what to do once
// the bridge exists (click-to-call's ringback). Drain and admission are
// checked under the lock that adds the call, so no call starts once Close
// waits for the running ones; their refusal is returned.
func (g *Gateway) placeWith(id string, side pbxSide, trunk *config.Trunk, num *config.Number, user, agent string,
	rtpSess *sip.RTPSession, setup func(*call) error) error {
	bsuid := permit.IsBSUID(user)
	c := newCall(g, whatsapp.CallEvent{PhoneNumberID: num.PhoneNumberID, DisplayPhoneNumber: num.DisplayPhoneNumber,
		Direction: whatsapp.DirBusinessInitiated})
	c.id, c.rec.ID = id, id
	c.out = &outState{side: side, trunk: trunk, number: num, user: user, bsuid: bsuid, agent: agent,
		events: make(chan whatsapp.CallEvent, 32), rtp: rtpSess, setup: setup}
	if bsuid {
		c.ev.FromUserID = user
	} else {
		c.ev.From = user
	}
	c.rec.From, c.rec.To, c.rec.AnsweredBy = user, num.DisplayPhoneNumber, agent
	c.rec.Direction, c.rec.Target = "outbound", agent
	c.log = g.log.With("call_id", id, "direction", "outbound", "trunk", trunk.Name, "user", maskDigits(user))
	g.mu.Lock()
	if err := g.admitLocked(); err != nil {
		g.mu.Unlock()
		c.cancel(nil)
		return err
	}
	g.out[c.id] = c
	g.wg.Add(1)
	g.mu.Unlock()
	g.obs.CallOffered(metrics.DirOutbound, "")

	go func() {
		defer g.wg.Done()
		c.runOutbound()
		g.callEnded(c)
		g.mu.Lock()
		delete(g.out, c.id)
		if c.ev.CallID != "" && g.outWACID[c.ev.CallID] == c {
			delete(g.outWACID, c.ev.CallID)
		}
		c.recMu.Lock()
		g.records = append(g.records, c.rec)
		c.recMu.Unlock()
		if len(g.records) > maxRecords {
			g.records = g.records[len(g.records)-maxRecords:]
		}
		g.mu.Unlock()
	}()
	return nil
}

func refusalHeaders(r *sipRefusal) []sip.Header {
	var h []sip.Header
	if r.warning != "" {
		h = append(h, sip.Header{Name: "Warning", Value: r.warning})
	}
	if r.retryAfter > 0 {
		secs := int((r.retryAfter + time.Second - 1) / time.Second)
		h = append(h, sip.Header{Name: "Retry-After", Value: strconv.Itoa(secs)})
	}
	return h
}

func (c *call) runOutbound() {
	defer c.cancel(nil)
	err := c.outConnect()
	c.finishOutbound(err)
	c.persist(store.EventEnded)
	c.liveEnd() // CRASH (livecalls.go)
}

// outConnect runs the call until it ends and returns why.
func (c *call) outConnect() error {
	o, cfg := c.out, c.cfg()
	rc := requestConfig(o.number)
	d := c.g.permits.Check(c.ctx, o.number.PhoneNumberID, o.user, rc)
	if d.Warn != "" {
		c.log.Warn("call permission", "warning", d.Warn)
	}
	if !d.Allow {
		c.g.obs.PermissionCheck("denied")
		return decisionRefusal(d, "permission_"+strconv.Itoa(d.SIPCode))
	}
	c.g.obs.PermissionCheck("allowed")
	c.persist(store.EventOffered)

	leg, err := c.g.rtc.NewLeg(c.id)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMediaConnect, err)
	}
	defer leg.Close()
	offer, err := leg.Offer()
	if err != nil {
		return fmt.Errorf("%w: offer: %v", ErrMediaConnect, err)
	}
	rtpSess := o.rtp
	if rtpSess == nil {
		if rtpSess, err = c.g.ua.NewRTPSession(); err != nil {
			return fmt.Errorf("%w: rtp: %v", ErrSIP, err)
		}
	}
	defer rtpSess.Close()
	c.bridge = newBridge(c.log, mediaParams{
		Complexity: cfg.Media.OpusComplexity, Bitrate: cfg.Media.OpusBitrate,
		JitterFrames: cfg.Media.JitterFrames, AcceptFrames: int(cfg.Media.AcceptBuffer.D() / frameDur),
	}, leg, rtpSess, c.end)
	c.bridge.SetInfoSink(c.startInfoSender(c.ctx))
	c.bridge.Start(c.ctx)
	defer func() {
		c.bridge.Stop()
		leg.Close()
		rtpSess.Close()
		for _, s := range c.extraSess { // transfer targets' sessions
			s.Close()
		}
		c.bridge.Wait()
		c.rec.ToPBX, c.rec.ToMeta = c.bridge.Stats()
		c.rec.MediaWork = c.bridge.Work()
	}()
	if o.setup != nil {
		if err := o.setup(c); err != nil {
			return err
		}
	}

	to, recipient := o.user, ""
	if o.bsuid {
		to, recipient = "", o.user
	}
	c.g.obs.CallSetup(metrics.DirOutbound, metrics.StageInviteToConnect, time.Since(c.rec.Offered))
	cctx, cancel := context.WithTimeout(c.ctx, cfg.Outbound.ConnectTimeout.D())
	wacid, err := c.g.outGraph().Connect(cctx, o.number.PhoneNumberID, to, recipient, offer, c.id)
	cancel()
	var apiErr *whatsapp.APIError
	switch {
	case errors.As(err, &apiErr):
		d := c.g.permits.ConnectError(c.ctx, o.number.PhoneNumberID, o.user, apiErr)
		if apiErr.Message != "" && !strings.Contains(d.Reason, apiErr.Message) {
			d.Reason += ": " + apiErr.Message // Meta's own words, for the PBX's log
		}
		r := decisionRefusal(d, "meta_"+strconv.Itoa(apiErr.Code))
		c.rec.MetaErrors = append(c.rec.MetaErrors, apiErr.Code)
		return r
	case err != nil:
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		// No answer to connect: Meta may have placed the call anyway. Never
		// connect again (a second call, or 138003); the webhooks, which carry
		// our id in biz_opaque_callback_data, tell what happened.
		c.log.Warn("connect got no answer: waiting for Meta's webhooks, no second connect", "err", err)
		o.connectErr = err
	default:
		c.adoptWACID(wacid)
	}
	c.rec.PreAccepted = time.Now() // connect sent: the setup stage of this direction
	c.persist()
	return c.outWait(leg, rtpSess)
}

// requestConfig is the number's automatic permission-request policy.
func requestConfig(n *config.Number) permit.RequestConfig {
	pr := n.PermissionRequest
	if pr == nil {
		return permit.RequestConfig{}
	}
	rc := permit.RequestConfig{Auto: pr.Auto, InteractiveBody: pr.Body}
	if t := pr.Template; t != nil {
		rc.TemplateName, rc.TemplateLanguage, rc.TemplateParams = t.Name, t.Language, t.Params
	}
	return rc
}

// adoptWACID records the call's wacid and lets webhooks find the call by it.
func (c *call) adoptWACID(wacid string) {
	o := c.out
	if o.wacidKnown || wacid == "" {
		return
	}
	o.wacidKnown = true
	c.ev.CallID, c.rec.WACID = wacid, wacid
	c.log = c.log.With("wacid", wacid)
	c.g.mu.Lock()
	c.g.outWACID[wacid] = c
	c.g.mu.Unlock()
	c.g.takeStash(c, wacid)
	c.livePut() // CRASH: the wacid to terminate after a crash (livecalls.go)
	if !o.started {
		o.started = true
		if err := c.g.permits.CallStarted(c.ctx, o.number.PhoneNumberID, o.user, wacid); err != nil {
			c.log.Warn("permission ledger: call not counted", "err", err)
		}
	}
}

// outWait follows Meta's webhooks until the user answers, refuses or the
// no-answer timer fires, then runs the answered call to its end.
func (c *call) outWait(leg *webrtc.Leg, rtpSess *sip.RTPSession) error {
	o, cfg := c.out, c.cfg()
	noAnswer := time.NewTimer(cfg.Outbound.NoAnswerTimeout.D())
	defer noAnswer.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	legDone := leg.Done()
	var grace <-chan time.Time
	for {
		select {
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		case <-o.side.Canceled():
			return ErrPBXCancel
		case <-noAnswer.C:
			return &sipRefusal{code: 480, reason: "No answer from the WhatsApp user", outcome: "no_answer", ledger: "unanswered"}
		case <-legDone:
			// Meta's side closing DTLS may come a moment before the
			// REJECTED or terminate webhook that explains it.
			legDone, grace = nil, time.After(terminateGrace)
		case <-grace:
			return ErrMediaLost
		case ev := <-o.events:
			answered, err := c.outEvent(ev, leg)
			if err != nil {
				return err
			}
			if answered {
				if grace != nil {
					return ErrMediaLost
				}
				return c.outAnswered(leg, rtpSess)
			}
		case <-poll.C:
			// Media from the user before ACCEPTED (reference §2.3 UNCONFIRMED):
			// a 183 with SDP so the agent hears it, and the answer itself only
			// when outbound.early_media_answers says so.
			// Packets before the PBX side is set are counted as discarded.
			if toPBX, _ := c.bridge.Stats(); toPBX.In+toPBX.Discarded == 0 {
				continue
			}
			if cfg.Outbound.EarlyMediaAnswers {
				o.signal = "media"
				return c.outAnswered(leg, rtpSess)
			}
			if !o.early {
				if err := c.outEarly(rtpSess); err != nil {
					c.log.Warn("183 to the PBX failed", "err", err)
				}
				o.early = true
			}
		}
	}
}

// outEvent applies one webhook event before the answer.
func (c *call) outEvent(ev whatsapp.CallEvent, leg *webrtc.Leg) (answered bool, err error) {
	o := c.out
	c.adoptWACID(ev.CallID)
	switch ev.Kind {
	case whatsapp.EventConnect:
		if ev.WaID != "" && !o.bsuid && ev.WaID != o.user {
			// The number dialled reaches a different wa_id (Brazil's ninth
			// digit, Mexico's 521): learn it so the ledger keys on the wa_id.
			c.g.permits.LearnAlias(c.ctx, o.user, ev.WaID)
		}
		if err := leg.SetAnswer(ev.SDP); err != nil {
			return false, fmt.Errorf("%w: %v", ErrBadAnswerSDP, err)
		}
		c.log.Info("Meta's answer applied")
	case whatsapp.EventStatus:
		switch ev.Status {
		case "RINGING":
			if !o.ringing {
				o.ringing = true
				if err := o.side.Ring(180, "Ringing"); err != nil {
					c.log.Warn("180 to the PBX failed", "err", err)
				}
			}
		case "ACCEPTED":
			o.signal = "accepted"
			return true, nil
		case "REJECTED":
			// Meta ends a declined call itself and sends terminate too
			// (reference §2.4): no terminate back.
			o.metaEnded, o.declined = true, true
			return false, &sipRefusal{code: 603, reason: "Declined by the WhatsApp user", outcome: "rejected", ledger: "rejected"}
		}
	case whatsapp.EventTerminate:
		o.metaEnded = true
		c.noteTerminate(ev)
		return false, terminateRefusal(ev)
	}
	return false, nil
}

// terminateRefusal maps a terminate webhook before the answer to the PBX's
// final response: a Meta error code as the table says, else no answer.
func terminateRefusal(ev whatsapp.CallEvent) *sipRefusal {
	for _, e := range ev.Errors {
		r := metaCodeRefusal(e.Code, e.Message)
		r.ledger = "failed"
		return r
	}
	return &sipRefusal{code: 480, reason: "The WhatsApp user did not answer", outcome: "no_answer", ledger: "unanswered"}
}

// metaCodeRefusal is issue 5's mapping of Meta's error codes to SIP
// (reference §3.6, §8 item 12): honest codes, Meta's message in the phrase.
func metaCodeRefusal(code int, msg string) *sipRefusal {
	r := &sipRefusal{outcome: "meta_" + strconv.Itoa(code)}
	switch code {
	case 138006, 138013:
		r.code = 403
	case 138001:
		r.code = 404
	case 138003:
		r.code = 486
	case 138002, 138005, 138012:
		r.code = 480
	default:
		r.code = 500
	}
	r.reason = fmt.Sprintf("WhatsApp error %d", code)
	if msg != "" {
		r.reason += ": " + msg
	}
	return r
}

// outEarly answers the PBX 183 with SDP and bridges the user's early audio.
func (c *call) outEarly(rtpSess *sip.RTPSession) error {
	md, err := c.out.side.EarlyMedia(c.ctx, c.answerOptions(rtpSess))
	if err != nil {
		return err
	}
	if err := c.startPBXMedia(rtpSess, md, c.out.trunk); err != nil {
		return err
	}
	c.mediaFor = "early"
	return nil
}

func (c *call) answerOptions(rtpSess *sip.RTPSession) sip.AnswerOptions {
	t := c.out.trunk
	st := sipTrunk(t)
	return sip.AnswerOptions{Media: rtpSess, Codecs: t.Codecs, DTMFPT: st.DTMFPT, NoTelephoneEvent: st.NoTelephoneEvent,
		SRTP: st.SRTP, Headers: []sip.Header{{Name: "X-Ponte-Call-Id", Value: c.id}}}
}

// outAnswered answers the PBX, opens media both ways and runs the call to
// its end.
func (c *call) outAnswered(leg *webrtc.Leg, rtpSess *sip.RTPSession) (err error) {
	o, cfg := c.out, c.cfg()
	// DTLS must be up before the agent is told the user answered; Meta is
	// the DTLS client here (reference §5.2), so this is normally done.
	wctx, cancel := context.WithTimeout(c.ctx, cfg.Media.ConnectTimeout.D())
	err = leg.WaitConnected(wctx)
	cancel()
	if err != nil {
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		return fmt.Errorf("%w: %v", ErrMediaConnect, err)
	}
	// The agent may transfer the user with a blind REFER, as on an inbound
	// call (transfer.go; the trunk's transfer policy applies). The handlers
	// are in place before the 200, so a REFER right after the ACK finds them.
	opts := c.answerOptions(rtpSess)
	opts.OnRefer, opts.OnReferAccepted = c.referHandlers(o.trunk)
	dlg, err := o.side.Answer(c.ctx, opts)
	if err != nil {
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		c.accepted = true // the user is connected: Meta gets terminate
		return fmt.Errorf("%w: answering the PBX: %v", ErrSIP, err)
	}
	c.accepted = true
	c.liveDialog(dlg) // CRASH: the confirmed dialog, for a BYE after a crash
	c.rec.Accepted, c.rec.PBXAnswered = time.Now(), time.Now()
	c.rec.SIPCallID, c.rec.AnswerSignal = dlg.CallID(), o.signal
	if c.mediaFor != "early" {
		if err := c.startPBXMedia(rtpSess, dlg.Answer(), o.trunk); err != nil {
			return err
		}
	}
	c.mediaFor = dlg.CallID()
	leg.EnableSend()
	c.bridge.OpenMeta()
	c.persist(store.EventAnswered)
	c.g.obs.CallAnswered(metrics.DirOutbound, "", c.rec.Accepted.Sub(c.rec.Offered))
	c.log.Info("business-initiated call connected", "signal", o.signal, "codec", c.rec.Codec)
	c.g.permits.CallEnded(c.ctx, o.number.PhoneNumberID, o.user, c.ev.CallID, "connected")
	o.started = false // counted as connected: finish must not count it again

	ts := c.startTransfers(&pbxLeg{dlg: dlg, sess: rtpSess, trunk: o.trunk})
	defer func() { c.byeUnlessPBX(ts.cur.dlg, err) }()
	watchCtx, stopWatch := context.WithCancel(c.ctx)
	defer stopWatch()
	c.watchPBXMedia(watchCtx, cfg.Media.RTPTimeout.D())
	for {
		select {
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		case r := <-ts.refers:
			if goOn, err := c.refer(r); !goOn {
				return err
			}
		case <-ts.cur.dlg.Done():
			if goOn, err := c.legEnded(); !goOn {
				return err
			}
		case <-leg.Done():
			t := time.NewTimer(terminateGrace)
			select {
			case <-t.C:
				return ErrMediaLost
			case ev := <-o.events:
				t.Stop()
				if ev.Kind == whatsapp.EventTerminate {
					o.metaEnded = true
					c.metaTerminated(ev)
					return ErrCallerHangup
				}
				return ErrMediaLost
			case <-c.ctx.Done():
				t.Stop()
				return context.Cause(c.ctx)
			}
		case ev := <-o.events:
			if ev.Kind == whatsapp.EventTerminate {
				o.metaEnded = true
				c.metaTerminated(ev)
				return ErrCallerHangup
			}
		}
	}
}

// finishOutbound answers the PBX if it still waits, tells Meta when it needs
// to know, counts the call in the ledger and fills the record.
func (c *call) finishOutbound(err error) {
	o := c.out
	c.rec.Ended = time.Now()
	var ref *sipRefusal
	ledger := "failed"
	switch {
	case errors.As(err, &ref):
		c.rec.Outcome = ref.outcome
		if ref.ledger != "" {
			ledger = ref.ledger
		}
	case errors.Is(err, ErrPBXCancel):
		c.rec.Outcome, ledger = "cancelled", "unanswered"
	default:
		c.rec.Outcome = classify(err).outcome
	}
	if !c.accepted {
		if ref == nil {
			ref = &sipRefusal{code: 500, reason: "Call failed"}
			switch {
			case errors.Is(err, ErrPBXCancel):
				ref = nil // package sip answered 487
			case errors.Is(err, ErrShutdown), errors.Is(err, ErrDraining):
				ref.code, ref.reason = 503, "Service Unavailable (shutting down)"
			case errors.Is(err, ErrMediaConnect), errors.Is(err, ErrMediaLost), errors.Is(err, ErrBadAnswerSDP):
				ref.reason = "WhatsApp media could not be set up"
			}
		}
		if ref != nil {
			if rerr := o.side.Reject(ref.code, ref.reason, refusalHeaders(ref)...); rerr != nil {
				c.log.Debug("final answer to the PBX not sent", "err", rerr)
			} else {
				c.g.obs.SIPResponse("INVITE", ref.code, "out")
			}
		}
		c.rec.EndedBy = "ponte"
		if errors.Is(err, ErrPBXCancel) {
			c.rec.EndedBy = "pbx"
		}
	} else {
		switch {
		case errors.Is(err, ErrCallerHangup):
			c.rec.EndedBy = "caller"
		case errors.Is(err, ErrPBXHangup):
			c.rec.EndedBy = "pbx"
		default:
			c.rec.EndedBy = "ponte"
		}
	}
	if o.metaEnded {
		c.rec.EndedBy = "caller"
		if !c.accepted && !o.declined {
			c.rec.EndedBy = "meta"
		}
	}
	c.termMu.Lock()
	c.rec.MetaStatus = c.termStatus
	c.rec.MetaErrors = append(c.rec.MetaErrors, c.termCodes...)
	c.termMu.Unlock()
	// Meta is told unless it ended the call itself or never made one: a
	// terminate on every business hang-up, cancel, timeout and failure keeps
	// billing right (reference §3.2, §8 item 15).
	if o.wacidKnown && !o.metaEnded {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if terr := c.g.outGraph().Terminate(ctx, c.ev.PhoneNumberID, c.ev.CallID); terr != nil {
			c.log.Warn("terminate toward Meta failed", "err", terr)
		}
		cancel()
	} else if !o.wacidKnown && o.connectErr != nil {
		// Meta may still create the call; the webhooks that name our id will
		// find the tombstone and terminate it.
		c.g.tombstone(c.id, c.ev.PhoneNumberID)
	}
	if o.started {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		c.g.permits.CallEnded(ctx, o.number.PhoneNumberID, o.user, c.ev.CallID, ledger)
		cancel()
	}
	c.log.Info("business-initiated call ended", "outcome", c.rec.Outcome, "ended_by", c.rec.EndedBy, "cause", errString(err))
}

// maskDigits hides the middle of a number in logs (no full phone numbers at
// info level).
func maskDigits(s string) string {
	if len(s) <= 6 {
		return strings.Repeat("*", len(s))
	}
	return s[:4] + strings.Repeat("*", len(s)-6) + s[len(s)-2:]
}

// SIPTrunk is package sip's view of a configured trunk (for registrations
// and crash recovery's BYE).
func SIPTrunk(t *config.Trunk) *sip.Trunk { return sipTrunk(t) }
