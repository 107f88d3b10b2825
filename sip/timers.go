package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Session timer errors (RFC 4028), as Dialog.Err after the dialog ended.
var (
	// ErrSessionExpired: the PBX was the refresher and no refresh arrived
	// before the session interval ran out (RFC 4028 §10): ponte sent BYE.
	ErrSessionExpired = errors.New("sip: session expired (no refresh from the PBX)")
	// ErrRefreshFailed: ponte's refresh timed out or got 408/481, so the
	// dialog is gone (RFC 4028 §10, RFC 3261 §12.2.1.2): ponte sent BYE.
	ErrRefreshFailed = errors.New("sip: session refresh failed")
)

// Defaults of Config.SessionExpires and Config.MinSE.
const (
	DefaultSessionExpires = 1800 * time.Second // RFC 4028 §4 recommends 1800 s
	DefaultMinSE          = 90 * time.Second   // RFC 4028 §4: never below 90 s
)

// expiredReason is the Reason on the BYE ending an expired session.
var expiredReason = Reason{Protocol: "Q.850", Cause: 102, Text: "Session timer expired"}

// sessionTimer is the dialog's negotiated session timer; zero interval: none.
type sessionTimer struct {
	interval  time.Duration
	weRefresh bool
	last      time.Time // last successful refresh (or the answer)
	next      time.Time // retry time after a failed refresh (zero: none)
}

// sessionOffer is a Session-Expires seen in a PBX request, and what our 2xx says.
type sessionOffer struct {
	present   bool
	secs      int
	refresher string // "uac" (the PBX refreshes) or "uas" (ponte does)
}

// headers are the 2xx's Session-Expires and, when the PBX is to refresh,
// Require: timer (RFC 4028 §9).
func (s sessionOffer) headers() []sip.Header {
	if !s.present {
		return nil
	}
	h := []sip.Header{sip.NewHeader("Session-Expires", strconv.Itoa(s.secs)+";refresher="+s.refresher)}
	if s.refresher == "uac" {
		h = append(h, sip.NewHeader("Require", "timer"))
	}
	return h
}

// headerValue is the first value of the first header present among names
// (long and compact forms, RFC 3261 §7.3.3).
func headerValue(m interface{ GetHeader(string) sip.Header }, names ...string) (string, bool) {
	for _, n := range names {
		if h := m.GetHeader(n); h != nil {
			return h.Value(), true
		}
	}
	return "", false
}

// ParseSessionExpires parses a Session-Expires value (RFC 4028 §4):
// delta-seconds, then parameters of which refresher=uac|uas is read.
func ParseSessionExpires(v string) (secs int, refresher string, ok bool) {
	parts := strings.Split(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || n <= 0 || n > 1<<30 {
		return 0, "", false
	}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "refresher") {
			switch r := strings.ToLower(strings.TrimSpace(val)); r {
			case "uac", "uas":
				refresher = r
			}
		}
	}
	return n, refresher, true
}

// parseMinSE parses a Min-SE value (RFC 4028 §5).
func parseMinSE(v string) (int, bool) {
	s, _, ok := ParseSessionExpires(v)
	return s, ok
}

func secs(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// sessionFromRequest reads a PBX re-INVITE/UPDATE's Session-Expires
// (RFC 4028 §9): below our Min-SE it answers 422 with Min-SE and returns
// false; else it decides who refreshes: the PBX's choice, or the PBX (uac)
// when it supports timers and left the choice to us.
func (d *Dialog) sessionFromRequest(req *sip.Request, tx sip.ServerTransaction) (sessionOffer, bool) {
	v, ok := headerValue(req, "Session-Expires", "x")
	if !ok {
		return sessionOffer{}, true
	}
	n, r, ok := ParseSessionExpires(v)
	if !ok {
		respond(tx, req, 400, "Bad Session-Expires", nil)
		return sessionOffer{}, false
	}
	if min := secs(d.ua.cfg.MinSE); n < min {
		respond(tx, req, 422, "Session Interval Too Small", nil, sip.NewHeader("Min-SE", strconv.Itoa(min)))
		return sessionOffer{}, false
	}
	if r == "" {
		r = "uas"
		for _, t := range optionTags(req, "Supported", "k") {
			if t == "timer" {
				r = "uac"
			}
		}
	}
	return sessionOffer{present: true, secs: n, refresher: r}, true
}

// applySession records a refresh the PBX made. A re-INVITE/UPDATE without
// Session-Expires still counts as a refresh of a running timer: dropping
// the timer instead would let a PBX that forgets the header in a hold
// re-INVITE expire the call on its side.
func (d *Dialog) applySession(s sessionOffer) {
	d.mu.Lock()
	switch {
	case s.present:
		d.st = sessionTimer{interval: time.Duration(s.secs) * time.Second, weRefresh: s.refresher == "uas", last: time.Now()}
	case d.st.interval > 0:
		d.st.last, d.st.next = time.Now(), time.Time{}
	}
	d.mu.Unlock()
	d.kickTimer()
}

// sessionFromAnswerLocked sets the timer from the 2xx to our INVITE or to
// our refresh (RFC 4028 §7.2, §10): no Session-Expires means no timer;
// refresher=uas means the PBX refreshes; uac (or none) means ponte does.
func (d *Dialog) sessionFromAnswerLocked(res *sip.Response) {
	v, ok := headerValue(res, "Session-Expires", "x")
	n, r, valid := ParseSessionExpires(v)
	if !ok || !valid {
		d.st = sessionTimer{}
		return
	}
	d.st = sessionTimer{interval: time.Duration(n) * time.Second, weRefresh: r != "uas", last: time.Now()}
}

func (d *Dialog) kickTimer() {
	select {
	case d.stKick <- struct{}{}:
	default:
	}
}

// SessionInterval reports the negotiated session interval (0: no session
// timer) and whether ponte is the refresher.
func (d *Dialog) SessionInterval() (time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.interval, d.st.weRefresh
}

// timerLoop runs the session timer of a confirmed dialog until it ends:
// as refresher, ponte refreshes at half the interval (RFC 4028 §7.2, §10);
// otherwise it sends BYE if no refresh came by the interval minus
// min(32 s, interval/3) (§10).
func (d *Dialog) timerLoop() {
	for {
		d.mu.Lock()
		st := d.st
		d.mu.Unlock()
		var fire <-chan time.Time
		var t *time.Timer
		if st.interval > 0 {
			at := st.last.Add(st.interval - min(32*time.Second, st.interval/3))
			if st.weRefresh {
				at = st.last.Add(st.interval / 2)
				if !st.next.IsZero() {
					at = st.next
				}
			}
			t = time.NewTimer(time.Until(at))
			fire = t.C
		}
		select {
		case <-d.done:
		case <-d.ua.closing:
		case <-d.stKick:
		case <-fire:
		}
		if t != nil {
			t.Stop()
		}
		select {
		case <-d.done:
			return
		case <-d.ua.closing:
			return
		default:
		}
		d.mu.Lock()
		now := time.Now()
		st = d.st
		var due, expired bool
		switch {
		case st.interval == 0:
		case st.weRefresh:
			expired = !now.Before(st.last.Add(st.interval))
			due = !now.Before(st.last.Add(st.interval/2)) && (st.next.IsZero() || !now.Before(st.next))
		default:
			expired = !now.Before(st.last.Add(st.interval - min(32*time.Second, st.interval/3)))
		}
		d.mu.Unlock()
		switch {
		case expired:
			d.ua.log.Warn("sip: session expired", "call_id", d.callID, "we_refresh", st.weRefresh)
			d.byeSync(expiredReason)
			d.end(ErrSessionExpired, false, "")
			return
		case due:
			if err := d.refresh(); err != nil {
				d.byeSync(Reason{Protocol: "SIP", Cause: 408, Text: "Session refresh failed"})
				d.end(err, false, "")
				return
			}
		}
	}
}

// errBusy: an INVITE transaction is in progress in the dialog (RFC 3261
// §14.1 forbids another); try again shortly.
var errBusy = errors.New("sip: offer/answer in progress")

// refresh sends one session refresh and schedules the next step; a non-nil
// error means the dialog is gone and must be ended.
func (d *Dialog) refresh() error {
	retried422 := false
	for {
		d.mu.Lock()
		useUpdate := d.allowUpdate
		d.mu.Unlock()
		res, err := d.sendRefresh(useUpdate)
		now := time.Now()
		d.mu.Lock()
		expiry := d.st.last.Add(d.st.interval)
		retryLater := func(after time.Duration) {
			d.st.next = now.Add(max(after, time.Second))
		}
		switch {
		case errors.Is(err, errBusy):
			retryLater(time.Second)
		case errors.Is(err, errDialogOver):
			retryLater(time.Second) // the BYE in flight ends the dialog
		case err != nil:
			d.mu.Unlock()
			return fmt.Errorf("%w: %v", ErrRefreshFailed, err)
		case res.IsSuccess():
			d.sessionFromAnswerLocked(res)
		case res.StatusCode == 422 && !retried422:
			retried422 = true
			if v, ok := headerValue(res, "Min-SE"); ok {
				if n, ok := parseMinSE(v); ok {
					d.minSE = max(d.minSE, n)
				}
			}
			d.mu.Unlock()
			continue
		case (res.StatusCode == 405 || res.StatusCode == 501) && useUpdate:
			d.allowUpdate = false // fall back to re-INVITE
			d.mu.Unlock()
			continue
		case res.StatusCode == 481 || res.StatusCode == 408:
			d.mu.Unlock()
			return fmt.Errorf("%w: %d %s", ErrRefreshFailed, res.StatusCode, res.Reason)
		case res.StatusCode == 491:
			// RFC 3261 §14.1: ponte owns the Call-ID, so it waits 2.1-4 s,
			// unless the session would expire first.
			retryLater(min(2100*time.Millisecond+rand.N(1900*time.Millisecond), expiry.Sub(now)/2))
		default:
			// Not refreshed, but the session stands until it expires (§10).
			retryLater(expiry.Sub(now) / 2)
		}
		d.mu.Unlock()
		return nil
	}
}

var errDialogOver = errors.New("sip: dialog over")

// sendRefresh sends a refresh: UPDATE without a body when the PBX allows it
// (RFC 4028 §7.4 lets either method refresh; UPDATE needs no offer), else a
// re-INVITE offering the last SDP sent, unchanged (same o= version: RFC 3264
// §8). It returns the final response; a 2xx to the re-INVITE is ACKed and
// its answer applied.
func (d *Dialog) sendRefresh(useUpdate bool) (*sip.Response, error) {
	method := sip.INVITE
	if useUpdate {
		method = sip.UPDATE
	}
	d.mu.Lock()
	if d.state != stateConfirmed || d.byeSent {
		d.mu.Unlock()
		return nil, errDialogOver
	}
	if method == sip.INVITE && (d.oaPending || d.ackWait != nil) {
		d.mu.Unlock()
		return nil, errBusy
	}
	se := secs(d.st.interval)
	if d.minSE > se {
		se = d.minSE
	}
	hdrs := []sip.Header{
		d.contact.Clone(),
		sip.NewHeader("Allow", allowMethods),
		sip.NewHeader("Supported", supportedHeader),
		sip.NewHeader("Session-Expires", strconv.Itoa(se)+";refresher=uac"),
	}
	if d.minSE > 0 {
		hdrs = append(hdrs, sip.NewHeader("Min-SE", strconv.Itoa(d.minSE)))
	}
	var body []byte
	if method == sip.INVITE {
		body = d.lastSDP
		d.oaPending = true
	}
	d.mu.Unlock()
	clearPending := func() {
		d.mu.Lock()
		d.oaPending = false
		d.mu.Unlock()
	}
	ctx, cancel := d.ua.bgContext(sip.Timer_B + time.Second)
	defer cancel()
	res, tx, req, err := d.inDialog(ctx, method, body, "application/sdp", hdrs...)
	if err != nil || !res.IsSuccess() {
		clearPending()
		return res, err
	}
	if c := res.Contact(); c != nil && c.Address.Host != "" { // target refresh (RFC 3261 §12.2.1.2)
		d.mu.Lock()
		d.remoteTarget = *c.Address.Clone()
		d.mu.Unlock()
	}
	if method == sip.INVITE {
		// The answer is in force and the exchange over before the ACK
		// leaves, so a PBX re-INVITE right after the ACK sees them.
		usable := d.takeAnswer(res.Body())
		clearPending()
		d.ackReinvite(tx, req, res)
		if !usable {
			d.byeUnusable()
		}
	}
	return res, nil
}

// ackReinvite ACKs the 2xx to our re-INVITE (end to end, RFC 3261 §13.2.2.4)
// and every retransmission of it.
func (d *Dialog) ackReinvite(tx sip.ClientTransaction, req *sip.Request, res *sip.Response) {
	d.mu.Lock()
	ack := d.buildInDialogLocked(sip.ACK, req.CSeq().SeqNo)
	d.mu.Unlock()
	for _, n := range []string{"Authorization", "Proxy-Authorization"} {
		if h := req.GetHeader(n); h != nil {
			ack.AppendHeader(sip.HeaderClone(h))
		}
	}
	_ = d.ua.ua.TransportLayer().WriteMsg(ack)
	tx.OnRetransmission(func(r *sip.Response) {
		if r.IsSuccess() {
			_ = d.ua.ua.TransportLayer().WriteMsg(ack.Clone())
		}
	})
}

// inDialog sends one request inside the confirmed dialog and returns its
// final response, retrying once with digest credentials if challenged. The
// INVITE client transaction stays alive (for 2xx retransmissions) and is
// returned; a non-INVITE one is terminated.
func (d *Dialog) inDialog(ctx context.Context, method sip.RequestMethod, body []byte, ct string, hdrs ...sip.Header) (*sip.Response, sip.ClientTransaction, *sip.Request, error) {
	var auth sip.Header
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		if d.state != stateConfirmed || d.byeSent {
			d.mu.Unlock()
			return nil, nil, nil, errDialogOver
		}
		d.cseq++
		req := d.buildInDialogLocked(method, d.cseq)
		d.mu.Unlock()
		for _, h := range hdrs {
			req.AppendHeader(sip.HeaderClone(h))
		}
		if auth != nil {
			req.AppendHeader(auth)
		}
		if len(body) > 0 {
			c := sip.ContentTypeHeader(ct)
			req.AppendHeader(&c)
			req.SetBody(body)
		}
		tx, err := d.ua.ua.TransactionLayer().Request(ctx, req)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %v", ErrTransport, err)
		}
		res, err := finalResponse(ctx, tx, d.ua.closing)
		if method != sip.INVITE || err != nil {
			tx.Terminate()
		}
		if err != nil {
			return nil, nil, nil, err
		}
		if (res.StatusCode == 401 || res.StatusCode == 407) && attempt == 0 && d.trunk.Password != "" {
			if auth, err = digestHeader(req, res, d.trunk.Username, d.trunk.Password); err == nil {
				continue
			}
		}
		return res, tx, req, nil
	}
}

// finalResponse waits for a client transaction's final response.
func finalResponse(ctx context.Context, tx sip.ClientTransaction, closing <-chan struct{}) (*sip.Response, error) {
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if errors.Is(tx.Err(), sip.ErrTransactionTimeout) {
				return nil, ErrTimeout
			}
			return nil, fmt.Errorf("%w: %v", ErrTransport, tx.Err())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-closing:
			return nil, ErrClosed
		}
	}
}
