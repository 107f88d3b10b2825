package wasim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// UserOptions describe a WhatsApp user the business may call (business-initiated calls) and
// how the user behaves. Zero values take the documented defaults.
type UserOptions struct {
	WaID    string   // the wa_id Meta reports; the user's key (the BSUID when WaID is empty)
	Dialled []string // other inputs that reach this user, e.g. "5511987654321" for wa_id "551187654321"
	BSUID   string   // business-scoped user id: `recipient`, to_user_id, user_id (2026 fields)
	Name    string   // contacts[].profile.name on messages webhooks (default "WhatsApp User")

	// Permission is the user's call permission: "no_permission" (default), "temporary" or
	// "permanent" (§3.5, §4). A temporary one lasts until PermissionExpires (default 7 days
	// from SetUser, §4.3).
	Permission        string
	PermissionExpires time.Time

	// Answer is what the user does when the business calls: "accept" (default), "reject"
	// (REJECTED, then terminate FAILED) or "none" (never answers: after Config.RingTimeout
	// Meta ends the call with terminate FAILED).
	Answer       string
	AnswerAfter  time.Duration // ring time before accept/reject (default 1 s; negative: at once)
	RingingAfter time.Duration // delay from connect to the RINGING status (default 200 ms; negative: at once)
	// ConnectWebhook says when Meta sends the connect webhook carrying its SDP answer:
	// "ringing" (default: just before RINGING) or "accepted" (only when the user answers,
	// just before ACCEPTED). Which one Meta does is UNCONFIRMED (§2.3).
	ConnectWebhook string
	// EarlyMedia: the user's side sends audio from RINGING on, before ACCEPTED (UNCONFIRMED
	// Meta behaviour, §2.3). Otherwise media flows only after ACCEPTED.
	EarlyMedia bool

	// Voice and ears, as in CallOptions.
	ToneHz, ToneDBFS     float64
	ExpectHz, ExpectDBFS float64
	Marker               bool
	// OnAudio sees every decoded 8 kHz frame the user hears, with its arrival time.
	OnAudio func(pcm []int16, at time.Time)

	// ConnectedLimit is the start_call limit: connected business-initiated calls per 24 h
	// (§4.3: 100; default 100).
	ConnectedLimit int
}

// Permission states (§3.5).
const (
	PermissionNone      = "no_permission"
	PermissionTemporary = "temporary"
	PermissionPermanent = "permanent"
)

// Meta's limits per business number and user pair (§4.3).
const (
	requestsPerDay     = 1
	requestsPerWeek    = 2
	temporaryLifetime  = 7 * 24 * time.Hour
	serviceWindow      = 24 * time.Hour // customer-service window (§7)
	autoRevokeAfter    = 4              // consecutive unanswered or rejected BIC calls (§4.3)
	day, week          = 24 * time.Hour, 7 * 24 * time.Hour
	defaultUserName    = "WhatsApp User"
	defaultRingingTime = 200 * time.Millisecond
)

func (o *UserOptions) setDefaults(now time.Time) {
	if o.WaID == "" && o.BSUID == "" {
		panic("wasim: UserOptions needs a WaID or a BSUID")
	}
	o.WaID = normNumber(o.WaID)
	if o.Name == "" {
		o.Name = defaultUserName
	}
	switch o.Permission {
	case "":
		o.Permission = PermissionNone
	case PermissionNone, PermissionPermanent:
	case PermissionTemporary:
		if o.PermissionExpires.IsZero() {
			o.PermissionExpires = now.Add(temporaryLifetime)
		}
	default:
		panic(fmt.Sprintf("wasim: UserOptions.Permission %q", o.Permission))
	}
	switch o.Answer {
	case "":
		o.Answer = "accept"
	case "accept", "reject", "none":
	default:
		panic(fmt.Sprintf("wasim: UserOptions.Answer %q", o.Answer))
	}
	switch o.ConnectWebhook {
	case "":
		o.ConnectWebhook = "ringing"
	case "ringing", "accepted":
	default:
		panic(fmt.Sprintf("wasim: UserOptions.ConnectWebhook %q", o.ConnectWebhook))
	}
	if o.AnswerAfter == 0 {
		o.AnswerAfter = time.Second
	}
	if o.RingingAfter == 0 {
		o.RingingAfter = defaultRingingTime
	}
	o.AnswerAfter, o.RingingAfter = max(o.AnswerAfter, 0), max(o.RingingAfter, 0)
	if o.ConnectedLimit <= 0 {
		o.ConnectedLimit = 100
	}
	mo := o.media()
	mo.setDefaults()
	o.ToneHz, o.ToneDBFS, o.ExpectHz, o.ExpectDBFS = mo.ToneHz, mo.ToneDBFS, mo.ExpectHz, mo.ExpectDBFS
}

func (o *UserOptions) media() mediaOptions {
	return mediaOptions{ToneHz: o.ToneHz, ToneDBFS: o.ToneDBFS, ExpectHz: o.ExpectHz, ExpectDBFS: o.ExpectDBFS, Marker: o.Marker,
		OnAudio: o.OnAudio}
}

// user is Meta's state for one business number and user pair. Guarded by Meta.umu.
type user struct {
	o           UserOptions
	permission  string
	expires     time.Time
	requests    []time.Time // permission requests counted toward 1/24 h and 2/7 d (§4.3)
	connected   []time.Time // connected business-initiated calls (start_call limit)
	unanswered  int         // consecutive unanswered or rejected business-initiated calls
	lastRequest string      // wamid of the last permission request sent
	windowUntil time.Time   // end of the customer-service window (§7)
	active      *Callee     // the running business-initiated call (one at a time, 138003)
}

// status is the permission as of now: an expired temporary permission is no permission ("No
// webhook is sent when a temporary permission expires", §2.8).
func (u *user) status(now time.Time) (string, time.Time) {
	if u.permission == PermissionTemporary {
		if !now.Before(u.expires) {
			return PermissionNone, time.Time{}
		}
		return PermissionTemporary, u.expires
	}
	return u.permission, time.Time{}
}

func (u *user) permitted(now time.Time) bool {
	st, _ := u.status(now)
	return st != PermissionNone
}

// within returns the times in ts that fall in the window of length d ending at now, oldest
// first.
func within(ts []time.Time, now time.Time, d time.Duration) []time.Time {
	var out []time.Time
	for _, t := range ts {
		if now.Sub(t) < d && !t.After(now) {
			out = append(out, t)
		}
	}
	return out
}

// limitReached reports whether ts already holds max events in the window of d ending at now,
// and when the oldest of them leaves the window.
func limitReached(ts []time.Time, now time.Time, d time.Duration, limit int) (bool, time.Time) {
	in := within(ts, now, d)
	if len(in) < limit {
		return false, time.Time{}
	}
	return true, in[len(in)-limit].Add(d)
}

// requestBlocked reports whether a permission request would break 1/24 h or 2/7 d, and when
// the next one is allowed.
func (u *user) requestBlocked(now time.Time) (bool, time.Time) {
	dayFull, dayNext := limitReached(u.requests, now, day, requestsPerDay)
	weekFull, weekNext := limitReached(u.requests, now, week, requestsPerWeek)
	switch {
	case dayFull && weekFull:
		return true, later(dayNext, weekNext)
	case dayFull:
		return true, dayNext
	case weekFull:
		return true, weekNext
	}
	return false, time.Time{}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// normNumber makes a phone number comparable: spaces and a leading '+' go.
func normNumber(s string) string {
	return strings.TrimPrefix(strings.ReplaceAll(strings.TrimSpace(s), " ", ""), "+")
}

// SetUser defines (or redefines) a WhatsApp user the business may call or message. Redefining
// replaces the options and the permission; the counters (requests, connected calls,
// unanswered calls) and the customer-service window are kept.
func (m *Meta) SetUser(o UserOptions) {
	now := m.now()
	o.setDefaults(now)
	o.Dialled = slices.Clone(o.Dialled)
	m.umu.Lock()
	defer m.umu.Unlock()
	key := firstNonEmpty(o.WaID, o.BSUID)
	u := m.users[key]
	if u == nil {
		u = &user{}
		m.users[key] = u
	}
	u.o, u.permission, u.expires = o, o.Permission, o.PermissionExpires
}

// resolveLocked finds the user an input reaches: the wa_id, one of the Dialled numbers, or the
// BSUID. m.umu is held.
func (m *Meta) resolveLocked(input string) *user {
	if input == "" {
		return nil
	}
	n := normNumber(input)
	for _, u := range m.users {
		if u.o.BSUID != "" && u.o.BSUID == input {
			return u
		}
		if n == "" {
			continue
		}
		if u.o.WaID == n {
			return u
		}
		for _, d := range u.o.Dialled {
			if normNumber(d) == n {
				return u
			}
		}
	}
	return nil
}

// UserState is a snapshot of Meta's state for a user, for assertions.
type UserState struct {
	Permission    string    // as of Config.Now: an expired temporary permission reads no_permission
	Expires       time.Time // temporary permission only
	Requests24h   int       // permission requests counted in the last 24 h
	Requests7d    int       // and in the last 7 days
	Connected24h  int       // connected business-initiated calls in the last 24 h
	Unanswered    int       // consecutive unanswered or rejected business-initiated calls
	WindowOpen    bool      // the customer-service window is open (§7)
	LastRequestID string    // wamid of the last permission request sent
	ActiveCall    string    // wacid of the running business-initiated call, or ""
}

// User returns Meta's state for the user an input reaches (wa_id, dialled number or BSUID).
func (m *Meta) User(input string) (UserState, bool) {
	now := m.now()
	m.umu.Lock()
	defer m.umu.Unlock()
	u := m.resolveLocked(input)
	if u == nil {
		return UserState{}, false
	}
	st := UserState{
		Requests24h: len(within(u.requests, now, day)), Requests7d: len(within(u.requests, now, week)),
		Connected24h: len(within(u.connected, now, day)), Unanswered: u.unanswered,
		WindowOpen: now.Before(u.windowUntil), LastRequestID: u.lastRequest,
	}
	st.Permission, st.Expires = u.status(now)
	if u.active != nil {
		st.ActiveCall = u.active.id
	}
	return st, true
}

// userActivity: the user messaged or called the business, which opens or refreshes the
// customer-service window (§7).
func (m *Meta) userActivity(waID, bsuid string) {
	now := m.now()
	m.umu.Lock()
	defer m.umu.Unlock()
	if u := m.resolveLocked(firstNonEmpty(waID, bsuid)); u != nil {
		u.windowUntil = now.Add(serviceWindow)
	}
}

// userConnected: a call between the pair connected. Any connected call, user- or
// business-initiated, resets the permission-request limits (§4.3); accepting either kind opens
// the customer-service window (§7).
func (m *Meta) userConnected(waID, bsuid string) {
	now := m.now()
	m.umu.Lock()
	defer m.umu.Unlock()
	if u := m.resolveLocked(firstNonEmpty(waID, bsuid)); u != nil {
		u.requests = nil
		u.windowUntil = now.Add(serviceWindow)
	}
}

// handlePermissions implements GET /{version}/{phone_number_id}/call_permissions (§3.5).
func (m *Meta) handlePermissions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rec := GraphRequest{Action: "call_permissions", ReceivedAt: time.Now(), Auth: r.Header.Get("Authorization"),
		Query: r.URL.RawQuery, To: q.Get("user_wa_id"), Recipient: q.Get("recipient")}
	if gerr := m.authorize(r, rec.Auth); gerr != nil {
		m.respond(w, &rec, nil, gerr)
		return
	}
	if m.delayAndInject(w, &rec) {
		return
	}
	now := m.now()
	if !m.permissionRateOK(now) {
		m.respond(w, &rec, nil, &graphError{status: http.StatusTooManyRequests, code: 613,
			message: "Calls to this api have exceeded the rate limit."})
		return
	}
	input := firstNonEmpty(rec.To, rec.Recipient)
	if input == "" {
		m.respond(w, &rec, nil, badParam("user_wa_id or recipient is required"))
		return
	}
	m.umu.Lock()
	u := m.resolveLocked(input)
	resp := permissionResponse(u, now)
	m.umu.Unlock()
	m.respond(w, &rec, resp, nil)
}

// permissionRateOK applies Config.PermissionsRate over a sliding one-second window.
func (m *Meta) permissionRateOK(now time.Time) bool {
	if m.cfg.PermissionsRate <= 0 {
		return true
	}
	m.umu.Lock()
	defer m.umu.Unlock()
	m.permGet = within(m.permGet, now, time.Second)
	if len(m.permGet) >= m.cfg.PermissionsRate {
		return false
	}
	m.permGet = append(m.permGet, now)
	return true
}

type permLimit struct {
	TimePeriod   string `json:"time_period"`
	MaxAllowed   int    `json:"max_allowed"`
	CurrentUsage int    `json:"current_usage"`
	Expiration   *int64 `json:"limit_expiration_time,omitempty"`
}

type permAction struct {
	Name       string      `json:"action_name"`
	CanPerform bool        `json:"can_perform_action"`
	Limits     []permLimit `json:"limits"`
}

type permResponse struct {
	MessagingProduct string `json:"messaging_product"`
	Permission       struct {
		Status     string `json:"status"`
		Expiration *int64 `json:"expiration_time,omitempty"`
	} `json:"permission"`
	Actions []permAction `json:"actions"`
}

// permissionResponse builds the §3.5 answer from the user's state. An unknown (uncallable)
// user has no permission. limit_expiration_time appears only on a limit that is reached.
// m.umu is held.
func permissionResponse(u *user, now time.Time) permResponse {
	var resp permResponse
	resp.MessagingProduct = "whatsapp"
	resp.Permission.Status = PermissionNone
	var requests, connected []time.Time
	connectedLimit := 100
	permanent := false
	if u != nil {
		st, exp := u.status(now)
		resp.Permission.Status = st
		if !exp.IsZero() {
			v := exp.Unix()
			resp.Permission.Expiration = &v
		}
		requests, connected, connectedLimit = u.requests, u.connected, u.o.ConnectedLimit
		permanent = st == PermissionPermanent
	}
	limit := func(period string, d time.Duration, maxAllowed int, ts []time.Time) (permLimit, bool) {
		l := permLimit{TimePeriod: period, MaxAllowed: maxAllowed, CurrentUsage: len(within(ts, now, d))}
		full, next := limitReached(ts, now, d, maxAllowed)
		if full {
			v := next.Unix()
			l.Expiration = &v
		}
		return l, full
	}
	dayL, dayFull := limit("PT24H", day, requestsPerDay, requests)
	weekL, weekFull := limit("P7D", week, requestsPerWeek, requests)
	callL, callFull := limit("PT24H", day, connectedLimit, connected)
	resp.Actions = []permAction{
		// A permanent permission makes a request pointless: Meta refuses it with 138017.
		{Name: "send_call_permission_request", CanPerform: !dayFull && !weekFull && !permanent, Limits: []permLimit{dayL, weekL}},
		{Name: "start_call", CanPerform: u != nil && u.permitted(now) && !callFull, Limits: []permLimit{callL}},
	}
	return resp
}

// PermissionChecks counts the GET call_permissions requests received (any outcome), so tests
// can assert that the gateway caches the answer.
func (m *Meta) PermissionChecks() int {
	n := 0
	for _, r := range m.Requests() {
		if r.Action == "call_permissions" {
			n++
		}
	}
	return n
}
