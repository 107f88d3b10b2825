package permit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

// RequestPermission sends a call-permission request for the REST API, under
// the same rules as Check's automatic one: *LimitError (wrapping
// ErrRequestLimit) with the time of the next allowed request,
// ErrAlreadyPermanent, ErrNoTemplate outside the window without a
// template, or Meta's error. A user who declined may be asked again here.
func (s *Service) RequestPermission(ctx context.Context, business, user string, rc RequestConfig) (kind, wamid string, err error) {
	now := s.now()
	user = s.key(ctx, user)
	k := pairKey{business, user}
	unlock := s.lockPair(k)
	defer unlock()
	// Without the ledger the limits cannot be kept: refuse rather than risk
	// a 138009 and a billed message.
	c, err := s.l.PairCounters(ctx, business, user, now)
	if err != nil {
		return "", "", fmt.Errorf("permit: ledger: %w", err)
	}
	p, err := s.l.Permission(ctx, business, user)
	if err != nil {
		return "", "", fmt.Errorf("permit: ledger: %w", err)
	}
	mv, fresh := s.freshView(k, now)
	if !fresh {
		if mv = s.fetch(ctx, k, now); mv != nil {
			p = s.applyView(ctx, p, mv, now)
		}
	}
	return s.request(ctx, k, rc, p, c, mv, now)
}

// CallStarted counts a business-initiated call Meta accepted (connect
// answered with a wacid): an initiation, and the pair's call in progress.
func (s *Service) CallStarted(ctx context.Context, business, user, wacid string) error {
	now := s.now()
	user = s.key(ctx, user)
	s.maybePrune(ctx, now)
	if err := s.l.AddCallAttempt(ctx, store.CallAttempt{Business: business, User: user, WACID: wacid, At: now,
		Outcome: store.CallInProgress}); err != nil {
		return fmt.Errorf("permit: call started: %w", err)
	}
	return nil
}

// CallEnded records how a call went: "connected" (for any connected call
// between the pair, user-initiated ones too: it resets the request limits
// and the unanswered run, and opens the customer-service window, reference
// §4.3, §7), "unanswered", "rejected" or "failed".
func (s *Service) CallEnded(ctx context.Context, business, user, wacid, outcome string) {
	switch outcome {
	case store.CallConnected, store.CallUnanswered, store.CallRejected, store.CallFailed:
	default:
		s.log.Warn("permission ledger: unknown call outcome ignored", "outcome", outcome)
		return
	}
	now := s.now()
	user = s.key(ctx, user)
	k := pairKey{business, user}
	log := s.log.With("business", business, "wacid", wacid)
	if wacid != "" {
		// User-initiated calls have no row: ErrNotFound is expected there.
		if err := s.l.SetCallOutcome(ctx, wacid, outcome, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Warn("permission ledger: call outcome not recorded", "err", err)
		}
	}
	switch outcome {
	case store.CallConnected:
		if err := s.l.MarkConnected(ctx, business, user, now); err != nil {
			log.Warn("permission ledger: connected call not recorded", "err", err)
		}
		if err := s.l.TouchWindow(ctx, business, user, now); err != nil {
			log.Warn("permission ledger: window not recorded", "err", err)
		}
		s.forget(k) // Meta's request limits were reset
	case store.CallUnanswered, store.CallRejected:
		c, err := s.l.PairCounters(ctx, business, user, now)
		if err != nil {
			log.Warn("permission ledger unreadable", "err", err)
			return
		}
		switch n := c.ConsecutiveUnanswered; {
		case n >= s.lim.RevokeAfterUnanswered:
			log.Warn("consecutive unanswered or rejected calls reached Meta's revoke threshold: expect the permission to be revoked",
				"count", n)
			s.forget(k) // ask Meta again before the next call
		case n >= s.lim.WarnAfterUnanswered:
			log.Warn("consecutive unanswered or rejected calls: Meta asks the user to reconsider the permission", "count", n)
		}
	}
}

// ConnectError maps Meta's refusal of a connect (reference §3.6, §8 item
// 12) to the ledger and to the SIP answer. The connect is counted as an
// initiation: whether Meta counts refused ones is not documented, and
// counting keeps ponte on the safe side of the 10,000 per 24 h.
func (s *Service) ConnectError(ctx context.Context, business, user string, apiErr *whatsapp.APIError) Decision {
	now := s.now()
	user = s.key(ctx, user)
	k := pairKey{business, user}
	if apiErr == nil {
		return refuse(500, "WhatsApp call failed", "WhatsApp call failed", 0)
	}
	if err := s.l.AddCallAttempt(ctx, store.CallAttempt{Business: business, User: user, At: now, Outcome: store.CallFailed}); err != nil {
		s.log.Warn("permission ledger: refused connect not counted", "err", err)
	}
	code := apiErr.Code
	msg := apiErr.Message
	if msg == "" {
		msg = "error"
	}
	meta := fmt.Sprintf("WhatsApp error %d: %s", code, msg)
	if code == 0 {
		meta = fmt.Sprintf("WhatsApp HTTP %d: %s", apiErr.HTTPStatus, msg)
	}
	switch code {
	case 138006:
		unlock := s.lockPair(k)
		defer unlock()
		p, err := s.l.Permission(ctx, business, user)
		if err == nil && p.State != store.PermissionRevoked {
			p.State, p.Expires, p.Source, p.Updated = store.PermissionNone, time.Time{}, sourceConnect138006, now
			err = s.l.SetPermission(ctx, p)
		}
		if err != nil {
			s.log.Warn("permission ledger: 138006 not recorded", "err", err)
		}
		s.forget(k)
		return refuse(403, "No WhatsApp call permission (WhatsApp error 138006)", "no call permission from the user (138006)", 0)
	case 138001:
		return refuse(404, "Not a WhatsApp user, or the user cannot be called (WhatsApp error 138001)", "receiver uncallable (138001)", 0)
	case 138003:
		return refuse(486, "Call in progress with this WhatsApp user (WhatsApp error 138003)", "a call with this user is already in progress (138003)", 0)
	case 138013:
		return refuse(403, "Business-initiated calls are not available for this user (WhatsApp error 138013)", "business-initiated calling not available (138013)", 0)
	case 138009:
		unlock := s.lockPair(k)
		defer unlock()
		p, err := s.l.Permission(ctx, business, user)
		if err == nil {
			p.RequestsBlockedUntil, p.Updated = now.Add(24*time.Hour), now
			err = s.l.SetPermission(ctx, p)
		}
		if err != nil {
			s.log.Warn("permission ledger: 138009 not recorded", "err", err)
		}
		return refuse(403, "No WhatsApp call permission; permission-request limit reached (WhatsApp error 138009)", "permission-request limit reached (138009)", 0)
	case 138012:
		until := parseNextTime(apiErr.Details)
		if !until.After(now) {
			if c, err := s.l.PairCounters(ctx, business, user, now); err == nil && !c.OldestConnectedIn24h.IsZero() {
				until = c.OldestConnectedIn24h.Add(24 * time.Hour)
			}
		}
		s.forget(k)
		ra := retryIn(until, now)
		reason := "Connected-call limit with this WhatsApp user reached (WhatsApp error 138012)"
		if ra > 0 {
			reason += "; retry in " + human(ra)
		}
		return refuse(480, reason, "connected-call limit with this user reached (138012)", ra)
	case 138005:
		// The call rate limit per number: ponte's own count says when the
		// oldest connect leaves the 24 h, else a minute.
		ra := time.Minute
		if n, oldest, err := s.l.BusinessInitiations(ctx, business, now.Add(-24*time.Hour)); err == nil && n >= s.lim.InitiationsPer24h {
			ra = retryIn(oldest.Add(24*time.Hour), now)
		}
		return refuse(480, "WhatsApp call rate limit reached (WhatsApp error 138005); retry in "+human(ra), "call rate limit reached (138005)", ra)
	case 138002:
		// Concurrent calls per number (1000): calls end within minutes.
		return refuse(480, "WhatsApp concurrent-call limit reached (WhatsApp error 138002)", "concurrent-call limit reached (138002)", time.Minute)
	}
	switch {
	case apiErr.HTTPStatus >= 500:
		// Meta's side failed (138004 connection error, 138007 connect
		// timeout, or an outage): temporary, so the 500 carries a
		// Retry-After (RFC 3261 §20.33, §21.5.1). Not 503: a proxy takes
		// that as ponte itself being down and stops sending it every call
		// (§21.5.4), while this failure may be one user's.
		return refuse(500, meta, meta, metaRetry)
	case apiErr.HTTPStatus == 429:
		// A rate limit without a code of its own: as 138002 and 138005.
		return refuse(480, meta, meta, time.Minute)
	}
	return refuse(500, meta, meta, 0)
}

// metaRetry is the Retry-After of a 500 for a failure on Meta's side.
const metaRetry = 30 * time.Second

// parseNextTime finds a time in 138012's error_data.details ("the next
// allowed time"; its format is not documented): RFC 3339, or Unix seconds
// or milliseconds. Zero when there is none.
func parseNextTime(details string) time.Time {
	fields := strings.FieldsFunc(details, func(r rune) bool {
		return r == ' ' || r == ',' || r == '"' || r == '(' || r == ')' || r == ';' || r == '\'' || r == '='
	})
	for _, f := range fields {
		f = strings.TrimRight(f, ".")
		if t, err := time.Parse(time.RFC3339, f); err == nil {
			return t
		}
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			switch len(f) {
			case 10:
				return time.Unix(n, 0)
			case 13:
				return time.UnixMilli(n)
			}
		}
	}
	return time.Time{}
}

// OnPermissionReply applies a call_permission_reply webhook (reference
// §2.8): accept (temporary until expiration_timestamp, or permanent) or
// reject (the user's, or Meta's automatic revoke after unanswered calls).
// A reply older than one already applied is ignored (webhooks may come out
// of order).
func (s *Service) OnPermissionReply(ctx context.Context, business, user string, r whatsapp.PermissionReply, at time.Time) {
	if at.IsZero() {
		at = s.now()
	}
	user = s.key(ctx, user)
	k := pairKey{business, user}
	unlock := s.lockPair(k)
	defer unlock()
	log := s.log.With("business", business, "response", r.Response, "source", r.Source)
	p, err := s.l.Permission(ctx, business, user)
	if err != nil {
		log.Error("permission ledger unreadable: reply lost", "err", err)
		return
	}
	if strings.HasPrefix(p.Source, "reply_") && at.Before(p.Updated) {
		log.Info("call permission reply older than the last one: ignored")
		return
	}
	automatic := r.Source == "automatic"
	outcome := ""
	switch r.Response {
	case "accept":
		outcome = "accepted"
		p.Source = sourceAccept
		if automatic {
			p.Source = sourceAcceptAuto
		}
		if r.IsPermanent {
			p.State, p.Expires = store.PermissionPermanent, time.Time{}
		} else {
			p.State, p.Expires = store.PermissionTemporary, r.Expiration
			if p.Expires.IsZero() {
				p.Expires = at.Add(s.lim.TemporaryValidity)
			}
		}
	case "reject":
		outcome = "rejected"
		p.State, p.Expires, p.Source = store.PermissionRevoked, time.Time{}, sourceReject
		if automatic {
			p.Source = sourceRevokeAuto
		}
	default:
		log.Warn("call permission reply with an unknown response: ignored")
		return
	}
	p.Updated = at
	if err := s.l.SetPermission(ctx, p); err != nil {
		log.Error("permission ledger: reply not recorded", "err", err)
	}
	s.forget(k)
	if strings.HasPrefix(r.ContextID, "wamid.") {
		if err := s.l.SetRequestOutcome(ctx, r.ContextID, outcome); err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Warn("permission ledger: request outcome not recorded", "err", err)
		}
	}
	if !automatic {
		// The reply is a message from the user: it opens the window.
		if err := s.l.TouchWindow(ctx, business, user, at); err != nil {
			log.Warn("permission ledger: window not recorded", "err", err)
		}
	}
	log.Info("call permission reply applied", "state", p.State, "expires", p.Expires)
}

// OnUserActivity opens the customer-service window: an inbound message or
// a user-initiated call, answered or not (reference §7).
func (s *Service) OnUserActivity(ctx context.Context, business, user string, at time.Time) {
	if at.IsZero() {
		at = s.now()
	}
	user = s.key(ctx, user)
	if err := s.l.TouchWindow(ctx, business, user, at); err != nil {
		s.log.Warn("permission ledger: window not recorded", "err", err)
	}
}

// LearnAlias records that the number dialled as input is Meta's wa_id
// waID (connect webhook contacts[].wa_id, messages response contacts[]).
func (s *Service) LearnAlias(ctx context.Context, input, waID string) {
	in, inB, err1 := NormalizeNumber(input, "")
	wa, waB, err2 := NormalizeNumber(waID, "")
	if err1 != nil || err2 != nil || inB || waB || in == wa {
		return
	}
	if err := s.l.LearnAlias(ctx, in, wa, s.now()); err != nil {
		s.log.Warn("permission ledger: alias not recorded", "err", err)
		return
	}
	s.mu.Lock()
	for k := range s.views {
		if k.user == in {
			delete(s.views, k)
		}
	}
	s.mu.Unlock()
	s.log.Info("learned the wa_id of a dialled number", "wa_id_suffix", wa[max(0, len(wa)-4):])
}
