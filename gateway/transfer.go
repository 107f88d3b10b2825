package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
)

// Blind transfers (RFC 3515): the answering PBX or callbot sends REFER; ponte
// calls the Refer-To target on the same trunk, bridges the WhatsApp leg to it
// without touching the Meta side (same SSRC, sequence and timestamps go on),
// reports progress to the transferor with NOTIFY, and ends the old leg. A
// failed transfer leaves the caller with the transferor, or sends the call to
// the route's default department, as the trunk says.

// ErrTransferGone: the transferor hung up and the transfer failed, with no
// default department to fall back on.
var ErrTransferGone = errors.New("gateway: transfer failed after the transferor left")

// pbxLeg is the PBX side of the call as it stands: one dialog, its RTP
// session and its trunk.
type pbxLeg struct {
	dlg   *sip.Dialog
	sess  *sip.RTPSession
	trunk *config.Trunk
}

// transfers follows the PBX side of a connected call (either direction)
// through blind transfers: the leg in use, the REFER accepted and waiting
// for the call's goroutine, and whether one is running.
type transfers struct {
	cur    *pbxLeg
	refers chan sip.Refer // room for one: busy admits one transfer at a time
	busy   atomic.Bool
}

func newTransfers() *transfers { return &transfers{refers: make(chan sip.Refer, 1)} }

// startTransfers makes the answered leg the call's PBX side and wires it
// (mid-call requests). Its REFERs go to c.xfer from the moment it was dialled
// (dialTarget) or answered (outAnswered).
func (c *call) startTransfers(cur *pbxLeg) *transfers {
	c.xfer.cur = cur
	c.wireLeg(cur)
	return c.xfer
}

// refer carries out one accepted REFER on the call's goroutine. It reports
// whether the call goes on; when it does not, err is why it ended.
func (c *call) refer(r sip.Refer) (goOn bool, err error) {
	ts := c.xfer
	cur := ts.cur
	next := c.transfer(cur, r)
	ts.busy.Store(false)
	if next == nil && (cur.dlg.RemoteBye() || cur.trunk.Transfer.OnFailure == config.TransferToDefault) {
		// The transferor is gone (or the trunk says so): the route's
		// default department takes the caller (none for an outbound call).
		next = c.transferToDefault(cur)
	}
	if next == nil {
		if cur.dlg.RemoteBye() {
			return false, ErrTransferGone
		}
		return true, nil // the caller stays with the transferor
	}
	ts.cur = next
	c.liveDialog(next.dlg) // CRASH
	c.held.Store(false)
	c.wireLeg(next)
	c.extraSess = append(c.extraSess, next.sess) // its REFERs are routed since it was dialled
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = cur.dlg.Bye(ctx, sip.Reason{Protocol: "SIP", Cause: 200, Text: "Call transferred"})
	cancel()
	cur.sess.Close()
	return true, nil
}

// legEnded handles the end of the PBX dialog in use. A transferor that hangs
// up right after its REFER leaves the transfer to decide what happens to
// the caller; otherwise the call is over.
func (c *call) legEnded() (goOn bool, err error) {
	ts := c.xfer
	if ts.busy.Load() {
		return c.refer(<-ts.refers)
	}
	if ts.cur.dlg.RemoteBye() {
		return false, ErrPBXHangup
	}
	return false, fmt.Errorf("%w: dialog ended", ErrSIP)
}

// TransferRecord is one transfer in the record.
type TransferRecord struct {
	At                 time.Time
	By, ReferTo, Trunk string
	Result, Reason     string // "200", a SIP code, "denied", or an event
	TookFor            time.Duration
}

// referHandlers decide on a REFER from a leg on trunk on the SIP goroutine,
// at once: a target the PSTN policy or the trunk's allow-list refuses gets
// 403, a second REFER while one is running 491 (RFC 3261 §14.2's "request
// pending"), anything else 202 and a job for the call's goroutine (c.xfer).
func (c *call) referHandlers(trunk *config.Trunk) (sip.ReferHandler, func(sip.Refer)) {
	refers, busy := c.xfer.refers, &c.xfer.busy
	decide := func(r sip.Refer) (int, string) {
		// H-SIPSEC (issue 8): PSTN policy first: Meta's terms forbid
		// bridging WhatsApp calls to the PSTN, whatever the trunk allows.
		if err := c.cfg().PSTNPolicy().Check(trunk.Name, r.ReferTo); err != nil {
			c.log.Warn("transfer refused", "refer_to", r.ReferTo, "why", err)
			c.addTransfer(TransferRecord{At: time.Now(), By: r.ReferredBy, ReferTo: r.ReferTo, Trunk: trunk.Name, Result: "denied", Reason: err.Error()})
			return 403, "Forbidden (PSTN policy)"
		}
		if ok, why := trunk.TransferAllowed(r.ReferTo); !ok {
			c.log.Warn("transfer refused", "refer_to", r.ReferTo, "why", why)
			c.addTransfer(TransferRecord{At: time.Now(), By: r.ReferredBy, ReferTo: r.ReferTo, Trunk: trunk.Name, Result: "denied", Reason: why})
			return 403, "Forbidden (" + why + ")"
		}
		if !busy.CompareAndSwap(false, true) {
			return 491, "Request Pending"
		}
		return 0, ""
	}
	accepted := func(r sip.Refer) { refers <- r }
	return decide, accepted
}

func (c *call) addTransfer(t TransferRecord) {
	c.recMu.Lock()
	c.rec.Transfers = append(c.rec.Transfers, t)
	c.recMu.Unlock()
}

// transfer carries out one accepted REFER. It returns the new PBX leg when
// the target answered (the bridge already points at it), nil otherwise.
func (c *call) transfer(cur *pbxLeg, r sip.Refer) *pbxLeg {
	start := time.Now()
	tr := TransferRecord{At: start, By: r.ReferredBy, ReferTo: r.ReferTo, Trunk: cur.trunk.Name}
	notify := func(code int, reason string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cur.dlg.NotifyRefer(ctx, code, reason); err != nil && !errors.Is(err, sip.ErrReferGone) {
			c.log.Warn("transfer NOTIFY failed", "err", err)
		}
	}
	notify(100, "Trying")
	c.log.Info("transfer", "refer_to", r.ReferTo, "referred_by", r.ReferredBy)

	at := attempt{kind: "transfer", trunk: cur.trunk, target: config.Target{
		URI: r.ReferTo, Trunk: cur.trunk.Name, RingTimeout: cur.trunk.Transfer.RingTimeout,
		NoProvisionalTimeout: config.Duration(3 * time.Second),
	}}
	next, err := c.dialAndSwap(at)
	tr.TookFor = time.Since(start)
	if err != nil {
		code, text := transferFailure(err)
		tr.Result, tr.Reason = attemptResult(err), err.Error()
		c.addTransfer(tr)
		notify(code, text)
		return nil
	}
	tr.Result = "200"
	c.addTransfer(tr)
	notify(200, "OK")
	c.persist(store.EventTransferred)
	return next
}

// transferToDefault sends a caller whose transfer failed, and whose
// transferor is gone or whose trunk says so, to the route's default
// department. nil when there is none or it does not answer.
func (c *call) transferToDefault(cur *pbxLeg) *pbxLeg {
	if c.defaultDept == nil {
		return nil
	}
	c.log.Info("transfer failed: to the default department", "target", c.defaultDept.target.URI)
	next, err := c.dialAndSwap(*c.defaultDept)
	if err != nil {
		return nil
	}
	c.persist(store.EventTransferred)
	return next
}

// dialAndSwap rings a target while the caller is connected (a transfer, a
// fallback after one) and, when it answers, moves the bridge to it.
func (c *call) dialAndSwap(at attempt) (*pbxLeg, error) {
	sess, err := c.g.ua.NewRTPSession()
	if err != nil {
		return nil, fmt.Errorf("%w: rtp: %v", ErrSIP, err)
	}
	ar := AttemptRecord{Kind: at.kind, Target: at.target.URI, Trunk: at.trunk.Name, Started: time.Now()}
	var pm pbxMedia
	dlg, md, err := c.dialTarget(at, &ar, nil, sess, time.Time{})
	if err == nil {
		var ok bool
		if pm, ok = pbxMediaFor(md, at.trunk); !ok {
			err = fmt.Errorf("%w: the target answered no codec of %v", ErrSIP, at.trunk.Codecs)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = dlg.Bye(ctx, sip.Reason{Protocol: "SIP", Cause: 488, Text: "Not Acceptable Here"})
			cancel()
		} else {
			sess.SetRemote(md.Addr)
			err = c.bridge.SwapPBX(sess, pm)
		}
	}
	ar.Ended, ar.Result = time.Now(), attemptResult(err)
	c.rec.Attempts = append(c.rec.Attempts, ar)
	if err != nil {
		sess.Close()
		return nil, err
	}
	c.mediaFor = dlg.CallID()
	c.rec.Codec, c.rec.DTMFMode, c.rec.SIPCallID = pm.Codec, pm.DTMFMode, dlg.CallID()
	if c.router != nil {
		c.noteAgent(c.router, attempt{}, dlg)
	}
	return &pbxLeg{dlg: dlg, sess: sess, trunk: at.trunk}, nil
}

// transferFailure is the status line the transferor gets in the final
// NOTIFY (RFC 3515 §2.4.5): the target's own final response when there was
// one, else what ponte's timers decided.
func transferFailure(err error) (int, string) {
	var se *sip.StatusError
	switch {
	case errors.As(err, &se):
		return se.Code, se.Reason
	case errors.Is(err, ErrRingTimeout):
		return 408, "Request Timeout"
	case errors.Is(err, ErrNoProvisional):
		return 408, "Request Timeout (no response)"
	case errors.Is(err, ErrTrunkDown):
		return 503, "Service Unavailable (trunk down)"
	}
	return 500, "Server Internal Error"
}
