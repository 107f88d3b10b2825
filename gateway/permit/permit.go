// Package permit is ponte's policy for business-initiated WhatsApp calls
// (BIC): may this business number call this user now, and if not, what SIP
// answer tells the PBX why, and should a call-permission request go out.
//
// It applies Meta's rules (WhatsApp Calling reference §2.8, §3.5, §3.6,
// §4.3, §7) on top of a store.Ledger, and lets Meta's own answers (GET
// call_permissions, Graph errors, the call_permission_reply webhook) always
// override what the ledger believed. It knows nothing of SIP transactions or
// configuration files: the gateway maps config onto Limits and RequestConfig
// and a Decision onto a SIP response.
package permit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

// Errors of RequestPermission (and of Normalize).
var (
	ErrBadNumber        = errors.New("permit: not an E.164 number or BSUID")
	ErrRequestLimit     = errors.New("permit: call-permission request limit reached")
	ErrAlreadyPermanent = errors.New("permit: the user already gave a permanent call permission")
	ErrNoTemplate       = errors.New("permit: outside the 24 h customer-service window and no permission-request template configured")
	ErrNoGraph          = errors.New("permit: no Graph API client")
)

// LimitError is a refusal by a request limit; it wraps ErrRequestLimit.
type LimitError struct {
	Limit      string    // which: "24h", "7d" (ponte's count) or "meta" (138009 / Meta's limits)
	Until      time.Time // when a request is allowed again; zero when unknown
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	msg := "call-permission request limit reached (" + e.Limit + ")"
	if !e.Until.IsZero() {
		msg += "; next request allowed at " + e.Until.UTC().Format(time.RFC3339)
	}
	return msg
}

func (e *LimitError) Unwrap() error { return ErrRequestLimit }

// Limits are Meta's limits per business number and user (reference §4.3,
// §3.3, §3.5). Zero fields take the defaults: Meta's documented values today.
type Limits struct {
	RequestsPer24h    int // 1, interactive and template together
	RequestsPer7d     int // 2
	ConnectedPer24h   int // 100 (was 5, then 10; reference §4.3 changelog)
	InitiationsPer24h int // 10000 connects per business number
	// WarnAfterUnanswered: after this many consecutive unanswered or
	// rejected calls Meta asks the user to reconsider (2); ponte warns.
	WarnAfterUnanswered int
	// RevokeAfterUnanswered: after this many Meta revokes the permission (4).
	RevokeAfterUnanswered int
	// StopBeforeRevoke refuses (403) the call that would be the
	// RevokeAfterUnanswered-th unanswered one in a row. Default false: Meta
	// revokes only after that many calls actually went unanswered, the call
	// may well be answered, and refusing it would keep the pair blocked
	// until the user calls in; so ponte lets it through and logs a warning
	// (Decision.Warn). Operators who would rather keep the permission set it.
	StopBeforeRevoke bool
	Window           time.Duration // customer-service window, 24 h
	// TemporaryValidity is used when a temporary permission comes without
	// an expiration: 7 days (reference §4.3).
	TemporaryValidity time.Duration
	CacheTTL          time.Duration // how long a GET call_permissions answer is trusted, 60 s
	// GetRate is call_permissions GETs per second per business number: 5,
	// the lower of the documented 5 and 100 (reference §3.5 DOC-CONFLICT).
	GetRate float64
}

// DefaultLimits returns Meta's documented limits.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.RequestsPer24h, 1)
	def(&l.RequestsPer7d, 2)
	def(&l.ConnectedPer24h, 100)
	def(&l.InitiationsPer24h, 10000)
	def(&l.WarnAfterUnanswered, 2)
	def(&l.RevokeAfterUnanswered, 4)
	defDur(&l.Window, 24*time.Hour)
	defDur(&l.TemporaryValidity, 7*24*time.Hour)
	defDur(&l.CacheTTL, 60*time.Second)
	if l.GetRate <= 0 || math.IsNaN(l.GetRate) || math.IsInf(l.GetRate, 0) {
		l.GetRate = 5
	}
	return l
}

// RequestConfig says how to ask a user for permission, per business number.
type RequestConfig struct {
	Auto             bool   // Check sends a request when the user has no permission
	InteractiveBody  string // body of the free-form request (inside the window); optional
	TemplateName     string // approved call_permission_request template (outside the window)
	TemplateLanguage string
	TemplateParams   []string
}

// Graph is the part of the Graph API the policy uses (*whatsapp.Client).
type Graph interface {
	CallPermissions(ctx context.Context, phoneNumberID, userWaID, recipient string) (*whatsapp.CallPermission, error)
	SendPermissionRequest(ctx context.Context, phoneNumberID, to string, r whatsapp.PermissionRequest) (whatsapp.MessageResult, error)
}

// Decision is the policy's answer before dialling.
type Decision struct {
	Allow bool
	// SIPCode is 0 when allowed; 403 no permission / revoked / not
	// callable, 404 not a WhatsApp user, 480 a limit (with RetryAfter), 486
	// a call already in progress, 500 another Meta error. Never 503: it
	// would make proxies stop sending us every call (RFC 3261 §21.5.4).
	SIPCode int
	Reason  string // reason phrase
	// Warning is an RFC 3261 §20.43 Warning header value, e.g.
	// `399 ponte "no call permission from the user"`.
	Warning    string
	RetryAfter time.Duration // for 480 (RFC 3261 §20.33)
	Requested  string        // "" | "interactive" | "template": this Check sent a permission request
	Warn       string        // for the log: e.g. two unanswered calls in a row
}

// pairKey is a (business number, user) pair.
type pairKey struct{ business, user string }

// view is a cached GET call_permissions answer.
type view struct {
	at time.Time
	p  *whatsapp.CallPermission
}

type bucket struct {
	tokens float64
	last   time.Time
}

type pairLock struct {
	mu   sync.Mutex
	refs int
}

// Service applies the policy. It is safe for concurrent use; calls for
// one pair are serialised, so two calls never both send a request.
type Service struct {
	l   store.Ledger
	g   Graph
	lim Limits
	now func() time.Time
	log *slog.Logger

	mu        sync.Mutex
	views     map[pairKey]view
	buckets   map[string]*bucket
	locks     map[pairKey]*pairLock
	lastPrune time.Time
}

// Bounds of in-memory state.
const (
	maxViews = 10000
	// staleInProgress: a call still in_progress after this long was lost
	// (a restart under it); it no longer blocks the pair. Ringing lasts
	// about a minute, and connected calls leave in_progress at once.
	staleInProgress = 10 * time.Minute
	pruneEvery      = time.Hour
	keepHistory     = 8 * 24 * time.Hour // longer than the longest window (7 d)
)

// New returns the policy on ledger l and Graph client g (nil: Meta is never
// asked; the ledger decides). clock nil means time.Now.
func New(l store.Ledger, g Graph, limits Limits, clock func() time.Time, log *slog.Logger) *Service {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{l: l, g: g, lim: limits.withDefaults(), now: clock, log: log.With("component", "permit"),
		views: map[pairKey]view{}, buckets: map[string]*bucket{}, locks: map[pairKey]*pairLock{}}
}

// Limits returns the limits in force (defaults filled in).
func (s *Service) Limits() Limits { return s.lim }

// IsBSUID reports whether s is a business-scoped user id rather than a
// phone number: "US.13491208655302741918"-like, a letter first, a dot, and
// only letters, digits, dots, '_' and '-' (reference §2.2 BSUID changes).
// Anything with letters and a dot counts; Meta has the last word.
func IsBSUID(s string) bool {
	if len(s) < 3 || len(s) > 128 || !isLetter(s[0]) || !strings.Contains(s, ".") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// NormalizeNumber turns what a PBX or a person dialled into a ledger key
// without resolving aliases: E.164 digits without '+', or a BSUID as is.
// Spaces, dashes, dots and parentheses are dropped, and a tel/SIP URI
// user's parameters (RFC 3966 §3: ";phone-context=...") too. "+" or "00"
// starts an international number; a leading "0" (national trunk prefix), or
// digits not starting with the default country code, make a national
// number that gets defaultCountryCode. A national number that happens to
// start with the country code's digits is taken as international: PBXs
// should send '+', "00" or the trunk "0".
func NormalizeNumber(dialled, defaultCountryCode string) (user string, bsuid bool, err error) {
	s := strings.TrimSpace(dialled)
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if IsBSUID(s) {
		return s, true, nil
	}
	plus := false
	d := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			d = append(d, c)
		case c == '+' && len(d) == 0 && !plus:
			plus = true
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '\t':
		default:
			return "", false, fmt.Errorf("%w: %q", ErrBadNumber, dialled)
		}
	}
	num := string(d)
	cc := countryCode(defaultCountryCode)
	switch {
	case plus:
	case strings.HasPrefix(num, "00"):
		num = num[2:]
	case strings.HasPrefix(num, "0"):
		if cc == "" {
			return "", false, fmt.Errorf("%w: national number %q and no default country code", ErrBadNumber, dialled)
		}
		num = cc + num[1:]
	case cc != "" && !strings.HasPrefix(num, cc):
		num = cc + num
	}
	// E.164 (ITU-T E.164 §6): at most 15 digits, no leading 0; 7 is the
	// shortest country code + subscriber number in use.
	if len(num) < 7 || len(num) > 15 || num[0] == '0' {
		return "", false, fmt.Errorf("%w: %q", ErrBadNumber, dialled)
	}
	return num, false, nil
}

// countryCode returns 1-3 digits, or "" for anything else.
func countryCode(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "+")
	if len(s) < 1 || len(s) > 3 || s[0] == '0' {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}

// Normalize is NormalizeNumber followed by the alias the ledger learned for
// the number (the wa_id Meta resolved it to), so the dialled number and the
// wa_id reach the same ledger entry.
func (s *Service) Normalize(dialled, defaultCountryCode string) (user string, bsuid bool, err error) {
	u, bsuid, err := NormalizeNumber(dialled, defaultCountryCode)
	if err != nil || bsuid {
		return u, bsuid, err
	}
	return s.key(context.Background(), u), false, nil
}

// key resolves a phone number's alias; a ledger failure keeps the number.
func (s *Service) key(ctx context.Context, user string) string {
	if IsBSUID(user) {
		return user
	}
	wa, err := s.l.ResolveAlias(ctx, user)
	if err != nil {
		s.log.Warn("permission ledger: alias lookup failed", "err", err)
		return user
	}
	return wa
}

// lockPair serialises the work on one pair.
func (s *Service) lockPair(k pairKey) func() {
	s.mu.Lock()
	pl := s.locks[k]
	if pl == nil {
		pl = &pairLock{}
		s.locks[k] = pl
	}
	pl.refs++
	s.mu.Unlock()
	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		s.mu.Lock()
		if pl.refs--; pl.refs == 0 {
			delete(s.locks, k)
		}
		s.mu.Unlock()
	}
}

// takeToken spends one call_permissions GET of the business number's
// budget (a token bucket of GetRate per second, burst max(1, GetRate)).
func (s *Service) takeToken(business string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	burst := math.Max(1, s.lim.GetRate)
	b := s.buckets[business]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		s.buckets[business] = b
	}
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = math.Min(burst, b.tokens+dt.Seconds()*s.lim.GetRate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// freshView returns the cached Meta answer for k if it is still to be
// trusted: younger than CacheTTL and not past its own expiration.
func (s *Service) freshView(k pairKey, now time.Time) (*whatsapp.CallPermission, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.views[k]
	if !ok || now.Sub(v.at) >= s.lim.CacheTTL || now.Before(v.at) {
		return nil, false
	}
	if v.p.Status == "temporary" && !v.p.Expiration.IsZero() && !now.Before(v.p.Expiration) {
		return nil, false
	}
	return v.p, true
}

func (s *Service) lastView(k pairKey) (view, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.views[k]
	return v, ok
}

func (s *Service) storeView(k pairKey, p *whatsapp.CallPermission, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.views) >= maxViews {
		for vk, v := range s.views {
			if now.Sub(v.at) >= s.lim.CacheTTL || len(s.views) >= maxViews {
				delete(s.views, vk)
			}
		}
	}
	s.views[k] = view{at: now, p: p}
}

// forget drops the cached Meta answer: something changed it (a reply, a
// connect error, a connected call, the unanswered run reaching revoke).
func (s *Service) forget(k pairKey) {
	s.mu.Lock()
	delete(s.views, k)
	s.mu.Unlock()
}

// maybePrune deletes ledger history older than any window, once an hour.
func (s *Service) maybePrune(ctx context.Context, now time.Time) {
	s.mu.Lock()
	due := now.Sub(s.lastPrune) >= pruneEvery
	if due {
		s.lastPrune = now
	}
	s.mu.Unlock()
	if due {
		if err := s.l.PruneLedger(ctx, now.Add(-keepHistory)); err != nil {
			s.log.Warn("permission ledger: prune failed", "err", err)
		}
	}
}

// warning formats an RFC 3261 §20.43 Warning value: code 399
// (miscellaneous), agent "ponte", the text as a quoted-string (§25.1:
// '"' and '\' escaped, no control characters).
func warning(text string) string {
	var b strings.Builder
	b.WriteString(`399 ponte "`)
	for _, r := range text {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// retryIn is the wait until t, at least a second when t is ahead.
func retryIn(t, now time.Time) time.Duration {
	if !t.After(now) {
		return 0
	}
	return max(t.Sub(now), time.Second)
}

// human renders a wait for reason phrases: "5h3m", "40s".
func human(d time.Duration) string {
	if d >= time.Minute {
		d = d.Round(time.Minute)
	} else {
		d = d.Round(time.Second)
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = out[:len(out)-2]
	}
	if strings.HasSuffix(out, "h0m") {
		out = out[:len(out)-2]
	}
	return out
}
