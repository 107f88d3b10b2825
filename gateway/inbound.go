package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/route"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/webrtc"
	"github.com/ponte-gw/ponte/whatsapp"
)

// call is one user-initiated WhatsApp call bridged to a SIP target.
//
//	connect webhook -> Answer(offer) -> pre_accept -> INVITE target
//	PBX 200 (ACKed at once by package sip) -> PBX audio buffered
//	DTLS connected -> accept (same SDP) -> 200 -> media toward Meta
//
// Anything that ends the call cancels c.ctx with a cause; run reads the cause
// and ends both legs accordingly.
type call struct {
	g   *Gateway
	id  string
	ev  whatsapp.CallEvent
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelCauseFunc

	termMu     sync.Mutex
	termStatus string
	termCodes  []int

	answer   string // our SDP answer: pre_accept and accept carry it byte for byte
	mediaFor string // SIP Call-ID of the dialog the bridge's PBX side is set for

	hookHeaders []sip.Header               // added to every INVITE by the routing hook
	router      *route.Router              // the call's route (nil before plan)
	recMu       sync.Mutex                 // rec.Transfers: a refused REFER is recorded on a SIP goroutine
	extraSess   []*sip.RTPSession          // RTP sessions of transfer targets, closed with the call
	xfer        *transfers                 // the PBX side through blind transfers (transfer.go)
	defaultDept *attempt                   // the route's default department, for a failed transfer
	queueUntil  time.Time                  // queue mode: the hunt's deadline (zero otherwise)
	held        atomic.Bool                // the PBX holds the call (its RTP may stop)
	curDlg      atomic.Pointer[sip.Dialog] // the PBX dialog that has the call now
	accepted    bool                       // accept returned 200: from now on Meta is told "terminate", not "reject"
	bridge      *Bridge
	rec         Record
	out         *outState        // business-initiated calls only (outbound.go)
	liveDlg     *sip.DialogState // CRASH: the PBX dialog in the live row (livecalls.go)

	acceptUnsure atomic.Bool // FAULT: a failed accept may have taken effect at Meta (metaend.go)
}

func newCall(g *Gateway, ev whatsapp.CallEvent) *call {
	id := newID()
	ctx, cancel := context.WithCancelCause(g.ctx)
	c := &call{g: g, id: id, ev: ev, ctx: ctx, cancel: cancel, xfer: newTransfers()}
	c.log = g.log.With("call_id", id, "wacid", ev.CallID)
	c.rec = Record{
		ID: id, WACID: ev.CallID, From: ev.From, FromName: ev.ContactName, To: ev.DisplayPhoneNumber,
		PhoneNumberID: ev.PhoneNumberID, Offered: time.Now(),
	}
	return c
}

// end asks the call to end with cause. The first cause wins.
func (c *call) end(cause error) { c.cancel(c.withReason(cause)) }

// endCause is a cause that also carries the Reason header (RFC 3326) for a
// CANCEL that it may trigger: package sip finds the sip.CancelCause, the
// gateway its own sentinel.
type endCause struct {
	err error
	cc  sip.CancelCause
}

func (e endCause) Error() string   { return e.err.Error() }
func (e endCause) Unwrap() []error { return []error{e.err, e.cc} }

func (c *call) withReason(err error) error {
	return endCause{err: err, cc: sip.CancelCause{Reason: c.reasonFor(err)}}
}

// reasonFor is the Reason header (RFC 3326) of the BYE or CANCEL an end
// cause sends: the error table's, or for the user's hang-up, what Meta's
// terminate webhook said.
func (c *call) reasonFor(err error) sip.Reason {
	if errors.Is(err, ErrCallerHangup) {
		c.termMu.Lock()
		defer c.termMu.Unlock()
		return terminateReason(c.termStatus, c.termCodes)
	}
	return classify(err).reason
}

// metaLeg is what the call needs of the WhatsApp media leg to accept.
type metaLeg interface {
	WaitConnected(context.Context) error
	EnableSend()
}

// metaTerminated handles Meta's terminate webhook: the user hung up, or Meta
// ended the call (accept window, media timeouts 138021/138022, ...).
func (c *call) metaTerminated(ev whatsapp.CallEvent) {
	c.noteTerminate(ev)
	c.end(ErrCallerHangup)
}

// noteTerminate keeps what Meta's terminate webhook said, for the record
// and the Reason toward the PBX.
func (c *call) noteTerminate(ev whatsapp.CallEvent) {
	c.termMu.Lock()
	c.termStatus = ev.Status
	for _, e := range ev.Errors {
		c.termCodes = append(c.termCodes, e.Code)
	}
	c.termMu.Unlock()
}

func (c *call) cfg() *config.Config { return c.g.cfg }

// run drives the call from offer to hang-up and fills the record.
func (c *call) run() {
	defer c.cancel(nil)
	c.persist(store.EventOffered)
	c.livePut() // CRASH: live row for recovery after a crash (livecalls.go)
	err := c.connect()
	c.finish(err)
	c.persist(store.EventEnded)
	c.liveEnd() // CRASH
}

// terminateGrace is how long a closed WhatsApp leg waits for Meta's
// terminate webhook before the call is ended as a media failure.
const terminateGrace = 2 * time.Second

// dialResult is what WaitAnswer returned.
type dialResult struct {
	md  *sip.MediaDesc
	err error
}

func (c *call) connect() error {
	cfg := c.cfg()
	// Meta's accept window runs from the connect webhook (reference §3.2).
	acceptBy := c.rec.Offered.Add(cfg.WhatsApp.AcceptDeadline.D())

	router, rp, plan, err := c.plan()
	c.router = router
	if router != nil {
		c.rec.Route, c.rec.Mode, c.rec.Hours = router.Name(), rp.Mode, rp.Why
		c.log = c.log.With("route", router.Name())
	}
	if err != nil {
		return err
	}

	leg, err := c.g.rtc.NewLeg(c.ev.CallID)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMediaConnect, err)
	}
	defer leg.Close()
	c.answer, err = leg.Answer(c.ev.SDP)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadOffer, err)
	}

	hook := c.startHook(router, rp)

	// pre_accept first, so ICE and DTLS converge while the PBX rings
	// (reference §5.6: "pre_accept before sending the SIP INVITE").
	if err := c.g.graph.PreAccept(c.ctx, c.ev.PhoneNumberID, c.ev.CallID, c.answer); err != nil {
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		return fmt.Errorf("%w: %v", ErrPreAcceptFailed, err)
	}
	c.rec.PreAccepted = time.Now()
	c.log.Info("pre_accept sent", "setup_ms", c.rec.PreAccepted.Sub(c.rec.Offered).Milliseconds())
	c.persist()
	if hook != nil {
		o, err := c.waitHook(hook)
		if err != nil {
			return err
		}
		if plan, err = c.applyHook(o, plan); err != nil {
			return err
		}
	}

	rtpSess, err := c.g.ua.NewRTPSession()
	if err != nil {
		return fmt.Errorf("%w: rtp: %v", ErrSIP, err)
	}
	defer rtpSess.Close()

	c.bridge = newBridge(c.log, mediaParams{
		Complexity:   cfg.Media.OpusComplexity,
		Bitrate:      cfg.Media.OpusBitrate,
		JitterFrames: cfg.Media.JitterFrames,
		AcceptFrames: int(cfg.Media.AcceptBuffer.D() / frameDur),
	}, leg, rtpSess, c.end)
	c.bridge.SetInfoSink(c.startInfoSender(c.ctx))
	c.bridge.Start(c.ctx)
	defer func() {
		c.bridge.Stop()
		leg.Close()
		rtpSess.Close()
		for _, s := range c.extraSess {
			s.Close()
		}
		c.bridge.Wait()
		c.rec.ToPBX, c.rec.ToMeta = c.bridge.Stats()
		c.rec.MediaWork = c.bridge.Work()
	}()

	// Watch the WhatsApp leg for the whole call: ICE/DTLS failure ends it.
	// When the user hangs up, Meta's relay may close DTLS a moment before the
	// terminate webhook arrives; wait briefly for it so the record and the
	// Reason toward the PBX say "caller hung up", not "media failed".
	go func() {
		// ICE+DTLS must complete within media.connect_timeout of the answer,
		// even while the PBX is still ringing: otherwise CANCEL and reject.
		if err := leg.WaitConnected(c.ctx); err != nil {
			if c.ctx.Err() == nil && !errors.Is(err, webrtc.ErrFailed) {
				c.end(fmt.Errorf("%w: %v", ErrMediaConnect, err))
				return
			}
		}
		select {
		case <-leg.Done():
		case <-c.ctx.Done():
			return
		}
		t := time.NewTimer(terminateGrace)
		defer t.Stop()
		select {
		case <-t.C:
			c.end(ErrMediaLost)
		case <-c.ctx.Done():
		}
	}()

	if rp.Mode == config.ModeAnswerThenHunt {
		return c.queueHunt(router, rp.Queue, plan, leg, rtpSess, acceptBy)
	}

	// Hunt: each attempt rings until its ring timeout; a failure the
	// route's policy lists moves on to the next, the default department last.
	// The WhatsApp leg, its bridge and the RTP socket stay: the caller keeps
	// hearing WhatsApp's ringing (or, once accepted on early media, ponte's
	// stream continues with one SSRC).
	var lastErr error
	for i, at := range plan {
		answered, err := c.try(router, i, at, leg, rtpSess, acceptBy)
		if answered {
			return err
		}
		lastErr = err
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		if i == len(plan)-1 || !movesOn(router, err) || !time.Now().Before(acceptBy) && !c.accepted {
			break
		}
	}
	c.rec.Target = plan[len(plan)-1].target.URI
	return lastErr
}

// try rings one attempt of the hunt. When it answers, the call goes on
// there to its end (answered is true and err is how the call ended);
// otherwise err says why the attempt failed.
func (c *call) try(router *route.Router, i int, at attempt, leg metaLeg, rtpSess *sip.RTPSession, deadline time.Time) (answered bool, err error) {
	ar := AttemptRecord{Kind: at.kind, Agent: at.agent, Target: at.target.URI, Trunk: at.trunk.Name, Started: time.Now()}
	dlg, md, err := c.dialTarget(at, &ar, leg, rtpSess, deadline)
	ar.Ended, ar.Result = time.Now(), attemptResult(err)
	c.rec.Attempts = append(c.rec.Attempts, ar)
	if err == nil {
		c.rec.Target = at.target.URI
		c.rec.PBXAnswered = time.Now()
		c.log = c.log.With("target", at.target.URI, "sip_call_id", dlg.CallID())
		c.log.Info("target answered", "attempt", i+1, "acked_at", dlg.AckedAt().Format(time.RFC3339Nano))
		c.noteAgent(router, at, dlg)
		// From here the PBX is in the call: every failure path BYEs it.
		return true, c.afterAnswer(leg, rtpSess, dlg, md, at.trunk, deadline)
	}
	c.persist()
	c.log.Info("attempt failed", "attempt", i+1, "target", at.target.URI, "result", ar.Result, "err", err)
	return false, err
}

// queueHunt is the hunt of queue mode (answer_then_hunt): the caller is
// accepted at once and hears the queue's music or ringback while the
// targets ring in turn, round after round, up to the queue time; then the
// default department; then the closing announcement and the end.
func (c *call) queueHunt(router *route.Router, q *config.Queue, plan []attempt, leg metaLeg, rtpSess *sip.RTPSession, acceptBy time.Time) error {
	if err := c.bridge.PlayToMeta(c.queueAudio(q)); err != nil {
		return fmt.Errorf("%w: queue audio: %v", ErrSIP, err)
	}
	if err := c.acceptMeta(leg, acceptBy); err != nil {
		return err
	}
	c.persist()
	targets, dflt, deadline := c.queuePlan(plan, q)
	c.queueUntil = deadline
	start, rounds, n := time.Now(), 0, 0
	stop := false
hunt:
	for len(targets) > 0 && time.Now().Before(deadline) {
		rounds++
		for _, at := range targets {
			if !time.Now().Before(deadline) {
				break hunt
			}
			answered, err := c.try(router, n, at, leg, rtpSess, deadline)
			n++
			c.rec.Queue = queueDescribe(time.Since(start), rounds)
			if answered {
				return err
			}
			if cause := context.Cause(c.ctx); cause != nil {
				return cause
			}
			if !movesOn(router, err) && !errors.Is(err, ErrQueueTimeout) {
				stop = true // e.g. 603: the business declined; no default department
				break hunt
			}
		}
		// Targets that fail at once (busy, down) are not hammered: a pause
		// between rounds.
		select {
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		case <-time.After(min(2*time.Second, time.Until(deadline))):
		}
	}
	c.queueUntil = time.Time{}
	if dflt != nil && !stop {
		answered, err := c.try(router, n, *dflt, leg, rtpSess, time.Time{})
		if answered {
			return err
		}
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
	}
	c.closing(q)
	return ErrQueueTimeout
}

// dialTarget rings one target until it answers (the 200 is ACKed by package
// sip), fails, or runs out of time: its ring timeout, its no-provisional
// timeout, or Meta's accept deadline, whichever comes first.
func (c *call) dialTarget(at attempt, ar *AttemptRecord, leg metaLeg, rtpSess *sip.RTPSession, acceptBy time.Time) (*sip.Dialog, *sip.MediaDesc, error) {
	target, trunk := at.target, at.trunk
	// H-SIPSEC (issue 8): no WhatsApp call goes to a PSTN trunk or prefix,
	// whoever chose the target (route, hook, REFER); the configured URI is
	// checked, not the one with the DID put in (targetURI).
	if err := c.cfg().PSTNPolicy().Check(trunk.Name, target.URI); err != nil {
		return nil, nil, err
	}
	if !c.g.TrunkUp(trunk.Name) {
		return nil, nil, fmt.Errorf("%w: %s", ErrTrunkDown, trunk.Name)
	}
	dialCtx, dialCancel := context.WithCancelCause(c.ctx)
	defer dialCancel(nil)
	ringBy := time.Now().Add(target.RingTimeout.D())
	limit, limitErr := ringBy, ErrRingTimeout
	if !acceptBy.IsZero() && acceptBy.Before(ringBy) { // zero: accepted already, no Meta deadline
		limit, limitErr = acceptBy, ErrAcceptDeadline
		if !c.queueUntil.IsZero() {
			limitErr = ErrQueueTimeout // queue mode: the deadline is the queue time
		}
	}
	stop := time.AfterFunc(time.Until(limit), func() { dialCancel(c.withReason(limitErr)) })
	defer stop.Stop()

	early := make(chan *sip.MediaDesc, 1)
	// A transfer target's early media must not replace the transferor's
	// audio: the caller is connected already.
	earlyAnswer := trunk.EarlyMedia == "answer" && at.kind != "transfer"
	// A target that sends no 100/18x in time is dead (RFC 3261 §17.1.1.2
	// would wait 32 s for Timer B): give up on it at once.
	var provisional atomic.Bool
	ringing := make(chan struct{}, 1) // CRASH: the first provisional: persist the INVITE to CANCEL it after a crash
	deadTimer := time.AfterFunc(target.NoProvisionalTimeout.D(), func() {
		if !provisional.Load() {
			dialCancel(c.withReason(ErrNoProvisional))
		}
	})
	defer deadTimer.Stop()
	dlg, err := c.g.ua.Dial(dialCtx, sip.DialRequest{
		Trunk:       c.sipTrunk(trunk),
		Target:      targetURI(target.URI, c.ev.DisplayPhoneNumber),
		FromUser:    callerID(c.ev, trunk),
		FromDisplay: displayName(c.ev, trunk),
		ToUser:      c.ev.DisplayPhoneNumber,
		Headers:     c.inviteHeaders(),
		Media:       rtpSess,
		OnProvisional: func(code int, _ string, md *sip.MediaDesc) {
			provisional.Store(true)
			select {
			case ringing <- struct{}{}:
			default:
			}
			if earlyAnswer && md != nil && code >= 180 {
				select {
				case early <- md:
				default:
				}
			}
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSIP, err)
	}
	ar.SIPCallID = dlg.CallID()
	c.rec.SIPCallID = dlg.CallID()
	// REFER handlers from the start: a REFER the PBX sends right after its
	// ACK, before afterAnswer runs, must not find the dialog without one.
	dlg.OnRefer(c.referHandlers(trunk))

	answered := make(chan dialResult, 1)
	go func() {
		md, err := dlg.WaitAnswer(dialCtx)
		answered <- dialResult{md, err}
	}()

	var res dialResult
wait:
	for {
		select {
		case res = <-answered:
			break wait
		case <-ringing:
			c.liveEarly(dlg) // CRASH (livecalls.go): on the call's goroutine, not the SIP one
			ringing = nil
		case md := <-early:
			// Trunk says early_media: answer: accept on the first 18x with SDP,
			// so the PBX's announcement reaches the caller. From here any
			// failure is a terminate, not a reject.
			if err := c.startPBXMedia(rtpSess, md, trunk); err != nil {
				dialCancel(c.withReason(err))
				continue
			}
			c.mediaFor = dlg.CallID()
			if err := c.acceptMeta(leg, acceptBy); err != nil {
				dialCancel(c.withReason(err))
				continue
			}
			stop.Stop() // the caller is connected: only the ring timeout applies now
			stop = time.AfterFunc(time.Until(ringBy), func() { dialCancel(c.withReason(ErrRingTimeout)) })
		}
	}
	if res.err != nil {
		cause := context.Cause(dialCtx)
		var se *sip.StatusError
		switch {
		case errors.As(res.err, &se):
			return nil, nil, res.err
		case cause != nil && !errors.Is(cause, context.Canceled):
			return nil, nil, cause
		default:
			return nil, nil, fmt.Errorf("%w: %w", ErrSIP, res.err)
		}
	}
	stop.Stop()
	return dlg, res.md, nil
}

// afterAnswer takes the call from the PBX's 200 to its end.
func (c *call) afterAnswer(leg metaLeg, rtpSess *sip.RTPSession, dlg *sip.Dialog, md *sip.MediaDesc, trunk *config.Trunk, acceptBy time.Time) (err error) {
	// Mid-call requests may come as soon as the PBX has its ACK.
	ts := c.startTransfers(&pbxLeg{dlg: dlg, sess: rtpSess, trunk: trunk}) // its REFERs were routed at dial time
	defer func() { c.byeUnlessPBX(ts.cur.dlg, err) }()
	c.liveDialog(dlg) // CRASH: the confirmed dialog, for a BYE after a crash (livecalls.go)
	// Early media of this very dialog already pointed the bridge at it; a
	// target reached after another's early media still needs its own.
	if c.mediaFor != dlg.CallID() {
		if err := c.startPBXMedia(rtpSess, md, trunk); err != nil {
			return err
		}
		c.mediaFor = dlg.CallID()
	}
	if err := c.acceptWatchingPBX(leg, dlg, acceptBy); err != nil {
		return err
	}
	c.persist(store.EventAnswered)
	c.log.Info("call connected", "codec", c.rec.Codec,
		"pbx200_to_accept_ms", c.rec.Accepted.Sub(c.rec.PBXAnswered).Milliseconds())

	watchCtx, stopWatch := context.WithCancel(c.ctx)
	defer stopWatch()
	c.watchPBXMedia(watchCtx, c.cfg().Media.RTPTimeout.D())
	for {
		goOn := false
		select {
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		case r := <-ts.refers:
			goOn, err = c.refer(r)
		case <-ts.cur.dlg.Done():
			goOn, err = c.legEnded()
		}
		if !goOn {
			return err
		}
	}
}

// byeUnlessPBX ends the PBX dialog with the Reason of the call's end cause,
// unless the PBX hung up itself.
func (c *call) byeUnlessPBX(dlg *sip.Dialog, err error) {
	if errors.Is(err, ErrPBXHangup) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if berr := dlg.Bye(ctx, c.reasonFor(err)); berr != nil {
		c.log.Warn("BYE to the PBX failed", "err", berr)
	}
}

// startPBXMedia points RTP at the PBX's answer and opens the bridge.
func (c *call) startPBXMedia(rtpSess *sip.RTPSession, md *sip.MediaDesc, trunk *config.Trunk) error {
	pm, ok := pbxMediaFor(md, trunk)
	if !ok {
		return fmt.Errorf("%w: the PBX answered no codec of %v", ErrSIP, trunk.Codecs)
	}
	rtpSess.SetRemote(md.Addr)
	c.rec.Codec, c.rec.DTMFMode = pm.Codec, pm.DTMFMode
	return c.bridge.SetPBX(pm)
}

// attempt is one step of the hunt.
type attempt struct {
	kind   string // route.Kind: sticky_agent | target | default_department | closed
	agent  string // sticky_agent: who
	target config.Target
	trunk  *config.Trunk
}

// plan asks the route what to do with this call: the attempts in order, or
// a rejection when the route is closed and says so.
func (c *call) plan() (*route.Router, route.Plan, []attempt, error) {
	cfg := c.cfg()
	n := cfg.Number(c.ev.PhoneNumberID)
	if n == nil || n.InboundRoute == "" {
		return nil, route.Plan{}, nil, fmt.Errorf("%w: phone_number_id %s", ErrNoRoute, c.ev.PhoneNumberID)
	}
	r := c.g.routers[n.InboundRoute]
	if r == nil {
		return nil, route.Plan{}, nil, fmt.Errorf("%w: route %s", ErrNoRoute, n.InboundRoute)
	}
	p := r.PlanNow(c.callerKey(), c.g.agents)
	if p.Reject {
		return r, p, nil, fmt.Errorf("%w: %s", ErrClosed, p.Why)
	}
	var plan []attempt
	for _, a := range p.Attempts {
		trunk := cfg.Trunk(a.Trunk)
		if trunk == nil {
			continue // validation names unknown trunks; a sticky template's trunk is checked too
		}
		plan = append(plan, attempt{kind: string(a.Kind), agent: a.Agent, trunk: trunk, target: config.Target{
			URI: a.URI, Trunk: a.Trunk,
			RingTimeout: config.Duration(a.RingTimeout), NoProvisionalTimeout: config.Duration(a.NoProvisionalTimeout),
		}})
	}
	if len(plan) == 0 {
		return r, p, nil, fmt.Errorf("%w: route %s has no usable target", ErrNoRoute, n.InboundRoute)
	}
	if last := plan[len(plan)-1]; last.kind == string(route.KindDefault) {
		c.defaultDept = &last
	}
	return r, p, plan, nil
}

// noteAgent records who answered (the configured header, else
// P-Asserted-Identity, else the Contact user) and remembers it for the
// sticky-agent rule. The identity is only ever dialled again through the
// route's URI template, never by replaying the Contact.
func (c *call) noteAgent(r *route.Router, at attempt, dlg *sip.Dialog) {
	agent, src, ok := r.Agent(dlg.AnswerHeader)
	if !ok && at.agent != "" {
		agent, src, ok = at.agent, "sticky attempt", true
	}
	if !ok {
		return
	}
	c.rec.AnsweredBy, c.rec.AgentSource = agent, src
	if key := c.callerKey(); key != "" {
		c.g.agents.Remember(key, agent, time.Now())
	}
}

// callerKey identifies the WhatsApp user across calls: the wa_id, or the
// BSUID for username-only users, whose number Meta does not send.
func (c *call) callerKey() string {
	if c.ev.From != "" {
		return strings.TrimPrefix(c.ev.From, "+")
	}
	return c.ev.FromUserID
}

// movesOn applies the route's policy (default: 408, 480, 486, 5xx, ring
// timeout and no-provisional timeout move on; 603 stops) to a failed
// attempt. A down trunk always moves on (no INVITE was sent), and so do
// 420/421: the target demands an extension ponte does not offer (100rel),
// and another target may not (issue 3).
func movesOn(r *route.Router, err error) bool {
	var se *sip.StatusError
	switch {
	case errors.As(err, &se):
		return se.Code == 420 || se.Code == 421 || r.MovesOn(se.Code)
	case errors.Is(err, ErrTrunkDown):
		return true
	case errors.Is(err, ErrRingTimeout):
		return r.MovesOnEvent(config.EventRingTimeout)
	case errors.Is(err, ErrNoProvisional):
		return r.MovesOnEvent(config.EventNoProvisionalTimeout)
	}
	return false
}

// attemptResult names an attempt's outcome for the record: the SIP code, or
// the event that ended it.
func attemptResult(err error) string {
	var se *sip.StatusError
	switch {
	case err == nil:
		return "answered"
	case errors.As(err, &se):
		return fmt.Sprintf("%d", se.Code)
	case errors.Is(err, ErrRingTimeout):
		return "ring_timeout"
	case errors.Is(err, ErrNoProvisional):
		return "no_provisional_timeout"
	case errors.Is(err, ErrTrunkDown):
		return "trunk_down"
	case errors.Is(err, ErrAcceptDeadline):
		return "accept_deadline"
	case errors.Is(err, ErrCallerHangup):
		return "caller_hangup"
	default:
		return "error"
	}
}

func (c *call) sipTrunk(t *config.Trunk) *sip.Trunk { return sipTrunk(t) }

// sipTrunk is a configured trunk as package sip needs it: address and
// credentials, codecs, DTMF, NAT addressing, TLS and SRTP.
func sipTrunk(t *config.Trunk) *sip.Trunk {
	st := &sip.Trunk{
		Name: t.Name, Address: t.Address, Transport: t.Transport,
		Username: t.Auth.Username, Password: t.Auth.Password,
		Codecs: t.Codecs, DTMFPT: uint8(t.DTMFPT), FromDomain: t.FromDomain,
		NAT:              sip.NAT{AdvertiseHost: t.Advertise.SIPHost, MediaIP: t.Advertise.MediaAddr(), RewriteContact: t.RewriteContact},
		NoTelephoneEvent: t.DTMF == "info" || t.DTMF == "inband",
		SRTP:             sip.SRTPMode(t.SRTP),
	}
	if t.TLS != nil {
		st.TLS = &sip.TLSConfig{CAFile: t.TLS.CAFile, CertFile: t.TLS.CertFile, KeyFile: t.TLS.KeyFile,
			ServerName: t.TLS.ServerName, InsecureSkipVerify: t.TLS.InsecureSkipVerify, ALPN: t.TLS.ALPN}
	}
	return st
}

// callerID is the From user: the caller's number in the trunk's format
// (E.164 with "+" by default), or the BSUID when Meta sends no number
// (username-only users, reference §2.2).
func callerID(ev whatsapp.CallEvent, t *config.Trunk) string {
	n := strings.TrimPrefix(ev.From, "+")
	if n == "" {
		if ev.FromUserID != "" {
			return ev.FromUserID
		}
		return "anonymous"
	}
	switch t.CallerID {
	case "e164":
		return n
	case "national":
		if rest, ok := strings.CutPrefix(n, t.CountryCode); ok && rest != "" {
			return rest
		}
		return "+" + n // a foreign caller keeps the international form
	default:
		return "+" + n
	}
}

// displayName is the From display name per the trunk's policy.
func displayName(ev whatsapp.CallEvent, t *config.Trunk) string {
	switch t.DisplayName {
	case "none":
		return ""
	case "number":
		return callerID(ev, t)
	default:
		return ev.ContactName
	}
}

// inviteHeaders carry the WhatsApp context to the PBX. Values from the caller
// (payloads) are sanitised by package sip: percent-encoded, length-capped,
// never a CR or LF.
func (c *call) inviteHeaders() []sip.Header {
	h := []sip.Header{
		{Name: "X-WA-Call-Id", Value: c.ev.CallID},
		{Name: "X-WA-Phone-Number-Id", Value: c.ev.PhoneNumberID},
		{Name: "X-Ponte-Call-Id", Value: c.id},
	}
	if c.ev.CTAPayload != "" {
		h = append(h, sip.Header{Name: "X-WA-CTA-Payload", Value: c.ev.CTAPayload})
	}
	if c.ev.DeeplinkPayload != "" {
		h = append(h, sip.Header{Name: "X-WA-Deeplink-Payload", Value: c.ev.DeeplinkPayload})
	}
	return append(h, c.hookHeaders...)
}

// chooseCodec takes the first codec of the PBX's answer that the trunk
// allows (RFC 3264 §6.1: the answerer's order is its preference).
func chooseCodec(md *sip.MediaDesc, allowed []string) (pbxMedia, bool) {
	for _, cd := range md.Codecs {
		for _, a := range allowed {
			if strings.EqualFold(cd.Name, a) {
				return pbxMedia{Codec: a, PT: cd.PT, DTMFPT: md.DTMFPT}, true
			}
		}
	}
	return pbxMedia{}, false
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// targetURI puts the dialled business number (the DID) in the Request-URI
// when the target names only a host (sip:pbx.example.com), so PBX dialplans
// route on the DID as they would for a PSTN trunk. A target with a user
// (sip:sales@pbx) is used as configured; the To header carries the DID either way.
func targetURI(uri, did string) string {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || did == "" || strings.Contains(rest, "@") {
		return uri
	}
	return scheme + ":" + did + "@" + rest
}
