package sip

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// ErrReferGone: the dialog a transfer NOTIFY belongs to has ended.
var ErrReferGone = errors.New("sip: the transferring dialog has ended")

// Refer is a transfer the PBX asked for with REFER (RFC 3515): ponte is to
// call ReferTo and report how it went.
type Refer struct {
	ReferTo    string // the Refer-To URI without its header part
	ReferredBy string // Referred-By (RFC 3892), informational
	// NoSub: the PBX sent Refer-Sub: false (RFC 4488 §4): it wants no NOTIFY.
	NoSub bool
}

// ReferHandler decides on a REFER. It returns 0 to accept (202 Accepted; the
// handler then reports progress with NotifyRefer) or a final failure status,
// e.g. 403 for a target outside the allow-list. It runs on a SIP goroutine
// and must not block.
type ReferHandler func(Refer) (code int, reason string)

// OnRefer sets the dialog's REFER handler, and accepted, which runs once
// the 202 is on its way, so that no NOTIFY can overtake it (RFC 3515
// §2.4.4: the first NOTIFY follows the 202). Without a handler, REFER gets 501.
func (d *Dialog) OnRefer(f ReferHandler, accepted func(Refer)) {
	d.mu.Lock()
	d.onRefer, d.onReferAccepted = f, accepted
	d.mu.Unlock()
}

// handleRefer answers an in-dialog REFER (RFC 3515 §2.4.2).
func (d *Dialog) handleRefer(req *sip.Request, tx sip.ServerTransaction) {
	d.mu.Lock()
	h, then := d.onRefer, d.onReferAccepted
	d.mu.Unlock()
	rts := req.GetHeaders("Refer-To")
	switch {
	case len(rts) != 1:
		// §2.4.1: exactly one Refer-To.
		respond(tx, req, 400, "Bad Request (one Refer-To)", nil)
		return
	case h == nil:
		respond(tx, req, 501, "Not Implemented", nil)
		return
	}
	to, ok := referTarget(rts[0].Value())
	if !ok {
		respond(tx, req, 400, "Bad Request (Refer-To)", nil)
		return
	}
	if strings.Contains(strings.ToLower(rts[0].Value()), "replaces") {
		// Attended transfer (RFC 3891 Replaces) would join two of the
		// PBX's own dialogs; ponte does blind transfers only.
		respond(tx, req, 501, "Not Implemented (Replaces)", nil)
		return
	}
	r := Refer{ReferTo: to}
	if rb := req.GetHeader("Referred-By"); rb != nil {
		r.ReferredBy = SanitizeHeaderValue(rb.Value(), 256)
	}
	if rs := req.GetHeader("Refer-Sub"); rs != nil && strings.EqualFold(strings.TrimSpace(rs.Value()), "false") {
		r.NoSub = true
	}
	code, reason := h(r)
	if code != 0 {
		respond(tx, req, code, reason, nil)
		return
	}
	var hdrs []sip.Header
	if r.NoSub {
		hdrs = append(hdrs, sip.NewHeader("Refer-Sub", "false"))
	}
	d.mu.Lock()
	d.referNoSub = r.NoSub
	d.mu.Unlock()
	respond(tx, req, 202, "Accepted", nil, hdrs...)
	if then != nil {
		then(r)
	}
}

// referTarget takes the URI out of a Refer-To value (name-addr or addr-spec,
// RFC 3515 §2.1), without its ?headers part.
func referTarget(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return "", false
		}
		v = v[i+1 : i+j]
	} else if k := strings.IndexByte(v, ';'); k >= 0 {
		v = v[:k]
	}
	if q := strings.IndexByte(v, '?'); q >= 0 {
		v = v[:q]
	}
	scheme, rest, ok := strings.Cut(v, ":")
	if !ok || rest == "" || strings.ContainsAny(v, "<>\" \t\r\n") {
		return "", false
	}
	switch strings.ToLower(scheme) {
	case "sip", "sips", "tel":
	default:
		return "", false
	}
	return v, true
}

// NotifyRefer reports a transfer's progress to the PBX that asked for it:
// a NOTIFY of event refer with the status line as message/sipfrag (RFC 3515
// §2.4.4-5). A final status (>= 200) ends the implicit subscription. With
// Refer-Sub: false nothing is sent.
func (d *Dialog) NotifyRefer(ctx context.Context, code int, reason string) error {
	d.mu.Lock()
	if d.referNoSub {
		d.mu.Unlock()
		return nil
	}
	if d.state == stateEnded {
		d.mu.Unlock()
		return ErrReferGone
	}
	d.cseq++
	req := d.buildInDialogLocked(sip.NOTIFY, d.cseq)
	d.mu.Unlock()
	state := "active;expires=60"
	if code >= 200 {
		state = "terminated;reason=noresource"
	}
	req.AppendHeader(sip.NewHeader("Event", "refer"))
	req.AppendHeader(sip.NewHeader("Subscription-State", state))
	req.AppendHeader(sip.HeaderClone(&d.contact))
	req.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", code, SanitizeHeaderValue(reason, 128))))
	res, err := d.ua.do(ctx, req)
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		return &StatusError{Code: res.StatusCode, Reason: res.Reason}
	}
	return nil
}
