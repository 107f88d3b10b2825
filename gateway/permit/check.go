package permit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

// Ledger sources of a permission.
const (
	sourceMeta          = "meta"                   // GET call_permissions
	sourceAccept        = "reply_accept"           // the user accepted a request or granted it from the profile
	sourceAcceptAuto    = "reply_accept_automatic" // callback permission after the user called (reference §2.8)
	sourceReject        = "reply_reject"           // the user declined
	sourceRevokeAuto    = "reply_revoke_automatic" // Meta revoked after consecutive unanswered calls
	sourceConnect138006 = "connect_138006"
	sourceRequest138017 = "request_138017"
)

// verdict is what the permission alone says.
type verdict int

const (
	vAllowed    verdict = iota
	vUnverified         // nothing known and Meta not reachable: Meta decides on connect
	vNone
	vExpired
	vRevokedByUser
	vRevokedAuto
	vLimit  // start_call not allowed because of a limit (until, when known)
	vDenied // start_call not allowed, no limit named
)

// Check decides, before dialling, whether business may call user now
// (reference §3.3, §3.5, §4.3, §8 item 12). In order:
//
//  1. a call to the pair already in progress: 486 (Meta would answer 138003);
//  2. the business number's 10,000 connects per 24 h: 480 + Retry-After;
//  3. the pair's 100 connected calls per 24 h: 480 + Retry-After;
//  4. the permission. Meta is asked (GET call_permissions, rate limited per
//     business number) unless its answer is cached and younger than
//     CacheTTL; its answer overrides the ledger and is written into it.
//     When Meta cannot be asked (613/429, local rate limit, errors) the
//     ledger decides, and a pair the ledger has never seen is let through
//     for Meta to decide on connect: a call never fails for that alone.
//     start_call not allowed with limit_expiration_time: 480 + Retry-After.
//     No permission: 403 and, with rc.Auto and within the request limits,
//     a permission request (interactive inside the customer-service window,
//     the template outside it);
//  5. the run of unanswered or rejected calls: Warn at WarnAfterUnanswered;
//     one short of RevokeAfterUnanswered, Warn (or 403 with StopBeforeRevoke).
func (s *Service) Check(ctx context.Context, business, user string, rc RequestConfig) Decision {
	now := s.now()
	user = s.key(ctx, user)
	k := pairKey{business, user}
	unlock := s.lockPair(k)
	defer unlock()

	ledgerOK := true
	c, err := s.l.PairCounters(ctx, business, user, now)
	if err != nil {
		s.log.Error("permission ledger unreadable: Meta's answers decide", "err", err)
		ledgerOK, c = false, store.PairCounters{}
	}
	if c.InProgress && now.Sub(c.InProgressSince) < staleInProgress {
		return refuse(486, "Call in progress with this WhatsApp user",
			"a call to this WhatsApp user is already in progress", 0)
	}
	if n, oldest, err := s.l.BusinessInitiations(ctx, business, now.Add(-24*time.Hour)); err != nil {
		s.log.Error("permission ledger unreadable", "err", err)
	} else if n >= s.lim.InitiationsPer24h {
		ra := retryIn(oldest.Add(24*time.Hour), now)
		return refuse(480, fmt.Sprintf("WhatsApp call-initiation limit reached (%d per 24 h); retry in %s", s.lim.InitiationsPer24h, human(ra)),
			fmt.Sprintf("business call-initiation limit of %d per 24 h reached", s.lim.InitiationsPer24h), ra)
	}
	if c.ConnectedLast24h >= s.lim.ConnectedPer24h {
		ra := retryIn(c.OldestConnectedIn24h.Add(24*time.Hour), now)
		return refuse(480, fmt.Sprintf("Connected-call limit with this WhatsApp user reached (%d per 24 h); retry in %s", s.lim.ConnectedPer24h, human(ra)),
			fmt.Sprintf("limit of %d connected calls per 24 h with this user reached", s.lim.ConnectedPer24h), ra)
	}

	p, err := s.l.Permission(ctx, business, user)
	if err != nil {
		s.log.Error("permission ledger unreadable", "err", err)
		ledgerOK, p = false, store.Permission{Business: business, User: user, State: store.PermissionNone}
	}
	mv, fresh := s.freshView(k, now)
	if !fresh {
		if mv = s.fetch(ctx, k, now); mv != nil {
			p = s.applyView(ctx, p, mv, now)
		}
	}
	v, until := s.verdict(p, mv, now)
	var d Decision
	switch v {
	case vAllowed:
		d = Decision{Allow: true}
	case vUnverified:
		d = Decision{Allow: true, Warn: "call permission not verified (Meta's call_permissions unavailable): Meta decides on connect"}
	case vLimit:
		ra := retryIn(until, now)
		reason := "WhatsApp call limit with this user reached"
		if ra > 0 {
			reason += "; retry in " + human(ra)
		}
		return refuse(480, reason, "WhatsApp start_call limit reached for this user", ra)
	case vDenied:
		return refuse(403, "WhatsApp does not allow calling this user now", "WhatsApp start_call not allowed for this user", 0)
	default:
		return s.noPermission(ctx, k, v, rc, p, c, mv, ledgerOK, now)
	}

	n := c.ConsecutiveUnanswered
	switch {
	case n >= s.lim.RevokeAfterUnanswered-1 && s.lim.StopBeforeRevoke:
		return refuse(403, fmt.Sprintf("Stopped: %d unanswered WhatsApp calls in a row, one more and WhatsApp revokes the permission", n),
			"too many unanswered calls in a row: WhatsApp would revoke the call permission", 0)
	case n >= s.lim.RevokeAfterUnanswered-1:
		d.Warn = fmt.Sprintf("%d consecutive unanswered or rejected calls: if this one goes unanswered too, Meta revokes the call permission (after %d)",
			n, s.lim.RevokeAfterUnanswered)
	case n >= s.lim.WarnAfterUnanswered:
		d.Warn = fmt.Sprintf("%d consecutive unanswered or rejected calls: Meta has asked the user to reconsider the call permission", n)
	}
	return d
}

func refuse(code int, reason, warn string, retry time.Duration) Decision {
	return Decision{SIPCode: code, Reason: reason, Warning: warning(warn), RetryAfter: retry}
}

// verdict reads the permission from Meta's answer when there is one, else
// from the ledger.
func (s *Service) verdict(p store.Permission, mv *whatsapp.CallPermission, now time.Time) (verdict, time.Time) {
	if mv != nil {
		switch mv.Status {
		case "no_permission":
			return ledgerDenial(p, now), time.Time{}
		case "temporary", "permanent":
			// Gate on start_call.can_perform_action (reference §3.5).
			a, ok := mv.Action("start_call")
			if !ok || a.CanPerform {
				return vAllowed, time.Time{}
			}
			var until time.Time
			exhausted := false
			for _, l := range a.Limits {
				if l.Expiration.After(until) {
					until = l.Expiration
				}
				exhausted = exhausted || (l.MaxAllowed > 0 && l.CurrentUsage >= l.MaxAllowed)
			}
			if until.After(now) || exhausted {
				return vLimit, until
			}
			return vDenied, time.Time{}
		}
	}
	switch effective(p, now) {
	case string(store.PermissionTemporary), string(store.PermissionPermanent):
		return vAllowed, time.Time{}
	}
	if p.State == store.PermissionNone && p.Updated.IsZero() && mv == nil {
		return vUnverified, time.Time{}
	}
	return ledgerDenial(p, now), time.Time{}
}

// ledgerDenial names what the ledger knows of a missing permission.
func ledgerDenial(p store.Permission, now time.Time) verdict {
	switch {
	case p.State == store.PermissionRevoked && p.Source == sourceReject:
		return vRevokedByUser
	case p.State == store.PermissionRevoked:
		return vRevokedAuto
	case effective(p, now) == "expired":
		return vExpired
	}
	return vNone
}

// effective is the ledger state at now: a temporary permission past its
// expiry is "expired" (Meta sends no webhook then; reference §2.8).
func effective(p store.Permission, now time.Time) string {
	if p.State == store.PermissionTemporary && !p.Expires.IsZero() && !now.Before(p.Expires) {
		return "expired"
	}
	return string(p.State)
}

// noPermission answers 403 and, when configured and allowed, asks the user.
func (s *Service) noPermission(ctx context.Context, k pairKey, v verdict, rc RequestConfig, p store.Permission,
	c store.PairCounters, mv *whatsapp.CallPermission, ledgerOK bool, now time.Time) Decision {
	var reason, warn string
	switch v {
	case vRevokedByUser:
		reason, warn = "The WhatsApp user declined calls from this business", "the user declined the call permission"
	case vRevokedAuto:
		reason, warn = "WhatsApp revoked the call permission after unanswered calls", "call permission revoked by WhatsApp"
	case vExpired:
		reason, warn = "WhatsApp call permission expired", "the user's call permission expired"
	default:
		reason, warn = "No WhatsApp call permission", "no call permission from the user"
	}
	d := refuse(403, reason, warn, 0)
	switch {
	case !rc.Auto:
		return d
	case v == vRevokedByUser:
		// The user said no: ponte does not ask again on its own (an agent
		// still can, through the API).
		d.Reason += "; not asking again automatically"
		return d
	case !ledgerOK:
		d.Reason += "; no request sent (ledger unavailable)"
		return d
	}
	kind, _, err := s.request(ctx, k, rc, p, c, mv, now)
	var le *LimitError
	switch {
	case err == nil:
		d.Requested = kind
		d.Reason += "; request sent (" + kind + ")"
		d.Warning = warning(warn + "; a permission request was sent")
	case errors.As(err, &le):
		d.Reason += "; request limit reached"
		if le.RetryAfter > 0 {
			d.Reason += ", next in " + human(le.RetryAfter)
		}
	case errors.Is(err, ErrNoTemplate):
		d.Reason += "; outside the 24 h window and no template configured to ask"
	case errors.Is(err, ErrAlreadyPermanent):
		// Meta says a permanent permission exists (138017): call after all.
		return Decision{Allow: true, Warn: "the ledger saw no permission but Meta reports a permanent one"}
	default:
		s.log.Warn("automatic call-permission request failed", "err", err)
		d.Reason += "; the permission request failed"
	}
	return d
}

// fetch asks Meta for the pair's permission within the business number's
// GET budget; nil when it cannot (the ledger decides then).
func (s *Service) fetch(ctx context.Context, k pairKey, now time.Time) *whatsapp.CallPermission {
	if s.g == nil {
		return nil
	}
	if !s.takeToken(k.business, now) {
		s.log.Debug("call_permissions: local rate limit reached, deciding on the ledger", "business", k.business)
		return nil
	}
	wa, rcpt := k.user, ""
	if IsBSUID(k.user) {
		wa, rcpt = "", k.user
	}
	mv, err := s.g.CallPermissions(ctx, k.business, wa, rcpt)
	if err != nil {
		var ae *whatsapp.APIError
		if errors.As(err, &ae) && (ae.Code == 613 || ae.HTTPStatus == 429) {
			s.log.Warn("call_permissions rate limited by Meta (613): deciding on the ledger", "business", k.business)
		} else {
			s.log.Warn("call_permissions failed: deciding on the ledger", "business", k.business, "err", err)
		}
		return nil
	}
	s.storeView(k, mv, now)
	return mv
}

// applyView writes Meta's answer into the ledger: Meta's view always wins.
func (s *Service) applyView(ctx context.Context, p store.Permission, mv *whatsapp.CallPermission, now time.Time) store.Permission {
	np := p
	np.Source = sourceMeta
	switch mv.Status {
	case "no_permission":
		// Keep "revoked" and who revoked (why there is none: a user's
		// refusal stops automatic requests); anything else becomes none.
		if p.State == store.PermissionRevoked {
			np.Source = p.Source
		} else {
			np.State, np.Expires = store.PermissionNone, time.Time{}
		}
	case "temporary":
		np.State = store.PermissionTemporary
		switch {
		case !mv.Expiration.IsZero():
			np.Expires = mv.Expiration
		case p.State == store.PermissionTemporary && p.Expires.After(now):
		default:
			np.Expires = now.Add(s.lim.TemporaryValidity)
		}
	case "permanent":
		np.State, np.Expires = store.PermissionPermanent, time.Time{}
	default:
		s.log.Warn("call_permissions: unknown status, ledger unchanged", "status", mv.Status)
		return p
	}
	if a, ok := mv.Action("send_call_permission_request"); ok && !a.CanPerform {
		for _, l := range a.Limits {
			if l.Expiration.After(np.RequestsBlockedUntil) {
				np.RequestsBlockedUntil = l.Expiration
			}
		}
	}
	np.Updated = now
	if err := s.l.SetPermission(ctx, np); err != nil {
		s.log.Warn("permission ledger: Meta's answer not recorded", "err", err)
	}
	return np
}

// request sends a call-permission request within the limits; the pair's
// lock is held. It records what was sent, and what Meta said about it.
func (s *Service) request(ctx context.Context, k pairKey, rc RequestConfig, p store.Permission,
	c store.PairCounters, mv *whatsapp.CallPermission, now time.Time) (kind, wamid string, err error) {
	if s.g == nil {
		return "", "", ErrNoGraph
	}
	if p.State == store.PermissionPermanent || (mv != nil && mv.Status == "permanent") {
		// Meta would answer 138017: don't send (reference §3.6, §8 item 25).
		return "", "", ErrAlreadyPermanent
	}
	if le := s.requestLimit(p, c, mv, now); le != nil {
		return "", "", le
	}
	last, err := s.l.WindowLastInbound(ctx, k.business, k.user)
	if err != nil {
		return "", "", fmt.Errorf("permit: window: %w", err)
	}
	var req whatsapp.PermissionRequest
	switch {
	case !last.IsZero() && now.Before(last.Add(s.lim.Window)):
		// Free-form only inside the customer-service window (reference §4.2).
		kind, req.Body = store.RequestInteractive, rc.InteractiveBody
	case rc.TemplateName != "":
		kind = store.RequestTemplate
		req.Template = &whatsapp.Template{Name: rc.TemplateName, Language: rc.TemplateLanguage, BodyParams: rc.TemplateParams}
	default:
		return "", "", ErrNoTemplate
	}
	res, err := s.g.SendPermissionRequest(ctx, k.business, k.user, req)
	if err != nil {
		return "", "", s.requestFailed(ctx, k, kind, p, err, now)
	}
	user := k.user
	if res.WaID != "" && res.WaID != user && !IsBSUID(user) && !IsBSUID(res.WaID) {
		if err := s.l.LearnAlias(ctx, user, res.WaID, now); err != nil {
			s.log.Warn("permission ledger: alias not recorded", "err", err)
		} else {
			user = res.WaID
		}
	}
	if err := s.l.AddPermissionRequest(ctx, store.PermissionRequest{Business: k.business, User: user, At: now,
		Kind: kind, WAMID: res.MessageID}); err != nil {
		s.log.Error("permission ledger: a sent request was not recorded", "err", err, "wamid", res.MessageID)
	}
	s.forget(k)
	s.log.Info("call-permission request sent", "business", k.business, "kind", kind, "wamid", res.MessageID)
	return kind, res.MessageID, nil
}

// requestLimit is the earliest time the next request is allowed, as a
// LimitError, or nil when one may go now.
func (s *Service) requestLimit(p store.Permission, c store.PairCounters, mv *whatsapp.CallPermission, now time.Time) *LimitError {
	var le *LimitError
	worse := func(which string, until time.Time) {
		if le == nil || until.After(le.Until) {
			le = &LimitError{Limit: which, Until: until, RetryAfter: retryIn(until, now)}
		}
	}
	if p.RequestsBlockedUntil.After(now) {
		worse("meta", p.RequestsBlockedUntil)
	}
	if t := nextAllowed(c.RequestTimes, 24*time.Hour, s.lim.RequestsPer24h, now); !t.IsZero() {
		worse(fmt.Sprintf("%d per 24 h", s.lim.RequestsPer24h), t)
	}
	if t := nextAllowed(c.RequestTimes, 7*24*time.Hour, s.lim.RequestsPer7d, now); !t.IsZero() {
		worse(fmt.Sprintf("%d per 7 days", s.lim.RequestsPer7d), t)
	}
	if mv != nil {
		if a, ok := mv.Action("send_call_permission_request"); ok && !a.CanPerform {
			var until time.Time
			for _, l := range a.Limits {
				if l.Expiration.After(until) {
					until = l.Expiration
				}
			}
			worse("meta", until)
		}
	}
	return le
}

// nextAllowed is when one more event fits in a sliding window that allows
// limit: zero if it fits now. times are sorted, oldest first.
func nextAllowed(times []time.Time, window time.Duration, limit int, now time.Time) time.Time {
	var in []time.Time
	for _, t := range times {
		if t.After(now.Add(-window)) && !t.After(now) {
			in = append(in, t)
		}
	}
	if len(in) < limit {
		return time.Time{}
	}
	// Once in[len-limit] leaves the window, limit-1 remain.
	return in[len(in)-limit].Add(window)
}

// requestFailed records what a failed send means for the ledger.
func (s *Service) requestFailed(ctx context.Context, k pairKey, kind string, p store.Permission, err error, now time.Time) error {
	var ae *whatsapp.APIError
	switch {
	case errors.As(err, &ae) && ae.Code == 138009:
		// Meta's count differs from ours: trust it. Without its reset time,
		// wait a day (the shorter limit) unless a connected call resets it.
		until := now.Add(24 * time.Hour)
		p.RequestsBlockedUntil, p.Updated = until, now
		if p.Source == "" {
			p.Source = "request_138009"
		}
		if werr := s.l.SetPermission(ctx, p); werr != nil {
			s.log.Warn("permission ledger: request block not recorded", "err", werr)
		}
		s.forget(k)
		return &LimitError{Limit: "meta", Until: until, RetryAfter: retryIn(until, now)}
	case errors.As(err, &ae) && ae.Code == 138017:
		p.State, p.Expires, p.Source, p.Updated = store.PermissionPermanent, time.Time{}, sourceRequest138017, now
		if werr := s.l.SetPermission(ctx, p); werr != nil {
			s.log.Warn("permission ledger: permanent permission not recorded", "err", werr)
		}
		s.forget(k)
		return fmt.Errorf("%w (Meta 138017)", ErrAlreadyPermanent)
	case errors.As(err, &ae), errors.Is(err, whatsapp.ErrInvalidArgument):
		// Refused or never sent: nothing counts.
	default:
		// No answer: Meta may have sent it (the client never retries
		// messages). Count it, so the limits are never exceeded.
		if werr := s.l.AddPermissionRequest(ctx, store.PermissionRequest{Business: k.business, User: k.user, At: now,
			Kind: kind, Outcome: "unknown"}); werr != nil {
			s.log.Warn("permission ledger: request of unknown fate not recorded", "err", werr)
		}
	}
	return fmt.Errorf("permit: permission request: %w", err)
}
