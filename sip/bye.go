package sip

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Bye ends an answered dialog with a BYE carrying r as its Reason header
// (RFC 3326). Before an answer it cancels the INVITE instead (RFC 3261
// §15: a UAC must not BYE an unconfirmed dialog's INVITE; it CANCELs).
// Done is closed when it returns. A non-2xx answer to the BYE is returned as
// *StatusError, but the dialog is over either way (§15.1.1).
func (d *Dialog) Bye(ctx context.Context, r Reason) error {
	d.mu.Lock()
	st := d.state
	d.mu.Unlock()
	switch st {
	case stateEnded:
		return nil
	case stateCalling, stateEarly:
		d.requestCancel(r)
		return nil
	}
	err := d.sendBye(ctx, r)
	d.end(nil, false, "")
	return err
}

// sendBye sends one BYE (at most once per dialog), retrying once with
// digest if the PBX challenges it.
func (d *Dialog) sendBye(ctx context.Context, r Reason) error {
	d.mu.Lock()
	if d.byeSent || d.state == stateEnded {
		d.mu.Unlock()
		return nil
	}
	d.byeSent = true
	d.cseq++
	req := d.buildInDialogLocked(sip.BYE, d.cseq)
	d.mu.Unlock()
	if !r.IsZero() {
		req.AppendHeader(sip.NewHeader("Reason", r.String()))
	}
	res, err := d.ua.do(ctx, req)
	if err == nil && (res.StatusCode == 401 || res.StatusCode == 407) && d.trunk.Password != "" {
		auth, aerr := digestHeader(req, res, d.trunk.Username, d.trunk.Password)
		if aerr == nil {
			d.mu.Lock()
			d.cseq++
			req2 := d.buildInDialogLocked(sip.BYE, d.cseq)
			d.mu.Unlock()
			if !r.IsZero() {
				req2.AppendHeader(sip.NewHeader("Reason", r.String()))
			}
			req2.AppendHeader(auth)
			res, err = d.ua.do(ctx, req2)
		}
	}
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		return &StatusError{Code: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

// byeSync sends a BYE bounded by Timer F; used by the dialog's own goroutines.
func (d *Dialog) byeSync(r Reason) {
	ctx, cancel := d.ua.bgContext(sip.Timer_F + time.Second)
	defer cancel()
	if err := d.sendBye(ctx, r); err != nil {
		d.ua.log.Warn("sip: BYE failed", "call_id", d.callID, "err", err)
	}
}

// byeAsync BYEs an answered dialog in a UA-owned goroutine.
func (d *Dialog) byeAsync(r Reason) {
	d.ua.goTracked(func() {
		d.byeSync(r)
		d.end(nil, false, "")
	})
}

// goTracked runs f in a goroutine that Close waits for; false if closed.
func (u *UA) goTracked(f func()) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		f()
	}()
	return true
}

// bgContext is a context for background signalling, cancelled by Close.
func (u *UA) bgContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(u.ctx, timeout)
}

// do runs a non-INVITE client transaction to its final response.
func (u *UA) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := u.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTransport, err)
	}
	defer tx.Terminate()
	return finalResponse(ctx, tx, nil)
}

// drainAsync consumes a non-INVITE transaction's responses (sipgo blocks
// its state machine until a response is read) and terminates it.
func (u *UA) drainAsync(tx sip.ClientTransaction) {
	ok := u.goTracked(func() {
		defer tx.Terminate()
		for {
			select {
			case res := <-tx.Responses():
				if !res.IsProvisional() {
					return
				}
			case <-tx.Done():
				return
			case <-u.ctx.Done():
				return
			}
		}
	})
	if !ok {
		tx.Terminate()
	}
}

// forked handles a 2xx from a second fork of our INVITE (another To tag):
// the first 2xx won, so this dialog is ACKed and at once BYEd (RFC 3261
// §13.2.2.4). Its retransmissions are ACKed again, never BYEd twice.
func (d *Dialog) forked(res *sip.Response) {
	tag, _ := res.To().Params.Get("tag")
	d.mu.Lock()
	if d.forks == nil {
		d.forks = map[string]bool{}
	}
	seen := d.forks[tag]
	d.forks[tag] = true
	// A shadow dialog carries the fork's remote tag, target and route set.
	g := &Dialog{
		ua: d.ua, trunk: d.trunk, transport: d.transport, dest: d.dest, viaPort: d.viaPort,
		laddr: d.laddr, callID: d.callID, localTag: d.localTag, reqURI: d.reqURI,
		from: d.from, to: d.to, contact: d.contact, invite: d.invite,
		inviteCSeq: d.inviteCSeq, cseq: d.inviteCSeq, state: stateConfirmed,
	}
	d.mu.Unlock()
	g.setPeerLocked(res)
	_ = d.ua.ua.TransportLayer().WriteMsg(g.ackFor2xxLocked())
	if seen {
		return
	}
	d.ua.log.Info("sip: second 2xx from a fork; ACK and BYE it", "call_id", d.callID, "to_tag", tag)
	d.ua.goTracked(func() {
		g.byeSync(Reason{Protocol: "SIP", Cause: 200, Text: "Call completed elsewhere"})
	})
}
