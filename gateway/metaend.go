// What Meta is told about an inbound call: accept once the PBX has
// answered (ref §3.2), then reject or terminate at the end.

package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/whatsapp"
)

// noteAcceptFailure remembers whether a failed accept may nonetheless have
// taken effect at Meta: any failure but a definite refusal (an API error
// with a 4xx other than 429) is unsure. A request the client gave up on
// (timeout, connection cut, 5xx from a proxy) can still reach Meta and be
// carried out there (whatsapp.RetryTable, ref §3.2).
func (c *call) noteAcceptFailure(err error) {
	var ae *whatsapp.APIError
	definite := errors.As(err, &ae) && ae.HTTPStatus < 500 && ae.HTTPStatus != http.StatusTooManyRequests
	c.acceptUnsure.Store(!definite)
}

// rejectAtMeta ends at Meta a call ponte never saw accepted: reject (ref
// §3.2). After an unsure accept Meta may hold the call as accepted and then
// refuses the reject ("already in progress", ref §3.2: reject is for calls
// not yet accepted, terminate for calls in progress); the call would stay up
// and billed, the user in a dead call, until Meta's own no-media timer
// (§5.5). Then terminate ends it (issue 8 item 5).
func (c *call) rejectAtMeta(ctx context.Context) error {
	err := c.g.graph.Reject(ctx, c.ev.PhoneNumberID, c.ev.CallID)
	var ae *whatsapp.APIError
	if err == nil || !c.acceptUnsure.Load() || !errors.As(err, &ae) || ae.HTTPStatus >= 500 || ae.HTTPStatus == http.StatusTooManyRequests {
		return err
	}
	c.log.Info("reject refused after an unanswered accept: Meta may have accepted the call; sending terminate", "err", err)
	if terr := c.g.graph.Terminate(ctx, c.ev.PhoneNumberID, c.ev.CallID); terr != nil {
		return fmt.Errorf("%w; then terminate: %w", err, terr)
	}
	return nil
}

// acceptWatchingPBX is acceptMeta for an answered PBX leg: a BYE from the
// PBX while accept waits (DTLS, a slow Graph API, its retries) ends the call
// at once instead of accepting, at Meta, a call nobody is on.
func (c *call) acceptWatchingPBX(leg metaLeg, dlg *sip.Dialog, acceptBy time.Time) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-dlg.Done():
			if dlg.RemoteBye() {
				c.end(ErrPBXHangup)
			}
		case <-done:
		}
	}()
	return c.acceptMeta(leg, acceptBy)
}

// acceptMeta waits for DTLS, sends accept with the pre_accept SDP and opens
// media toward Meta only once accept returned 200.
func (c *call) acceptMeta(leg metaLeg, acceptBy time.Time) error {
	if c.accepted {
		return nil
	}
	wctx, cancel := context.WithDeadline(c.ctx, minTime(acceptBy, time.Now().Add(c.cfg().Media.ConnectTimeout.D())))
	defer cancel()
	if err := leg.WaitConnected(wctx); err != nil {
		if cause := context.Cause(c.ctx); cause != nil {
			return cause
		}
		return fmt.Errorf("%w: %v", ErrMediaConnect, err)
	}
	if err := c.g.graph.Accept(c.ctx, c.ev.PhoneNumberID, c.ev.CallID, c.answer, c.id); err != nil {
		if cause := context.Cause(c.ctx); cause != nil {
			// The call ended while accept was in flight: no retry. Meta may
			// have carried it out already (its answer on the way), so the
			// accept is unsure: a refused reject is followed by terminate.
			c.acceptUnsure.Store(true)
			return cause
		}
		c.noteAcceptFailure(err) // FAULT: a failure that may have taken effect (above)
		return fmt.Errorf("%w: %v", ErrAcceptFailed, err)
	}
	c.accepted = true
	c.livePut() // CRASH: Meta accepted: terminate, not reject, after a crash
	c.rec.Accepted = time.Now()
	leg.EnableSend()
	c.bridge.OpenMeta()
	c.uicConnected()
	return nil
}

// finish tells Meta what it needs to know and fills the record.
func (c *call) finish(err error) {
	er := classify(err)
	c.rec.Outcome = er.outcome
	c.rec.Ended = time.Now()
	c.termMu.Lock()
	c.rec.MetaStatus, c.rec.MetaErrors = c.termStatus, c.termCodes
	c.termMu.Unlock()
	action := metaReject
	switch {
	case errors.Is(err, ErrCallerHangup):
		action, c.rec.EndedBy = metaNone, "caller"
		if c.rec.MetaStatus == "FAILED" && len(c.rec.MetaErrors) > 0 {
			// Meta ended it with a reason (media timeouts 138021/138022, ...);
			// FAILED without errors is an unanswered call the user gave up on.
			c.rec.Outcome, c.rec.EndedBy = "meta_failed", "meta"
		}
	case c.accepted:
		action = metaTerminate
		c.rec.EndedBy = "ponte"
		if errors.Is(err, ErrPBXHangup) {
			c.rec.EndedBy = "pbx"
		}
	default:
		c.rec.EndedBy = "ponte"
		var se *sip.StatusError
		if errors.As(err, &se) || errors.Is(err, ErrPBXHangup) {
			c.rec.EndedBy = "pbx"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var gerr error
	switch action {
	case metaReject:
		gerr = c.rejectAtMeta(ctx) // FAULT: reject, or terminate after an unsure accept
	case metaTerminate:
		gerr = c.g.graph.Terminate(ctx, c.ev.PhoneNumberID, c.ev.CallID)
	}
	if gerr != nil {
		c.log.Warn("telling Meta the call ended failed", "err", gerr)
	}
	c.log.Info("call ended", "outcome", c.rec.Outcome, "ended_by", c.rec.EndedBy, "cause", errString(err),
		"to_meta_packets", c.rec.ToMeta.Out, "to_pbx_packets", c.rec.ToPBX.Out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
