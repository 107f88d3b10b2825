package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The call-permission ledger: what ponte knows about each (business number,
// WhatsApp user) pair for business-initiated calls (WhatsApp Calling
// reference §2.8, §3.5, §4.3, §7). It only records; the rules (limits,
// windows, Meta's answers overriding it) live in package gateway/permit.
// Two implementations behave the same: SQLite (migration 0002) and
// MemoryLedger, for runs without a store and for tests.

// PermissionState is the user's call permission toward a business number.
type PermissionState string

const (
	PermissionNone      PermissionState = "none"      // never given, or Meta says no_permission
	PermissionTemporary PermissionState = "temporary" // until Permission.Expires (7 days from approval)
	PermissionPermanent PermissionState = "permanent" // no expiry (reference §4.1, since 2025-11-03)
	PermissionRevoked   PermissionState = "revoked"   // the user rejected, or Meta revoked after 4 unanswered calls
)

func validState(s PermissionState) bool {
	switch s {
	case PermissionNone, PermissionTemporary, PermissionPermanent, PermissionRevoked:
		return true
	}
	return false
}

// Permission is one pair's permission. Permission() returns the zero value
// with State PermissionNone (and a zero Updated) for a pair never recorded.
type Permission struct {
	Business string // phone_number_id
	User     string // wa_id digits or BSUID
	State    PermissionState
	Expires  time.Time // temporary only
	Source   string    // what set it, e.g. "reply", "reply_automatic", "meta", "connect_138006"
	Updated  time.Time
	// RequestsBlockedUntil: Meta answered 138009 (request limit); no request
	// before it. MarkConnected clears it (a connected call resets the limits).
	RequestsBlockedUntil time.Time
}

// Request kinds (reference §4.2).
const (
	RequestInteractive = "interactive" // free-form, inside the customer-service window
	RequestTemplate    = "template"    // approved template, outside it
)

// PermissionRequest is one call-permission request sent to a user.
type PermissionRequest struct {
	Business, User string
	At             time.Time
	Kind           string // RequestInteractive | RequestTemplate
	WAMID          string // messages[0].id; the reply's context.id
	Outcome        string // "sent" (default), "accepted", "rejected"
}

// Outcomes of business-initiated calls in the ledger.
const (
	CallInProgress = "in_progress"
	CallConnected  = "connected"
	CallUnanswered = "unanswered"
	CallRejected   = "rejected"
	CallFailed     = "failed"
)

func validCallOutcome(o string) bool {
	switch o {
	case CallInProgress, CallConnected, CallUnanswered, CallRejected, CallFailed:
		return true
	}
	return false
}

// CallAttempt is one business-initiated connect.
type CallAttempt struct {
	Business, User string
	WACID          string // "" when Meta refused the connect
	At             time.Time
	Outcome        string // CallInProgress at connect time
}

// PairCounters is what the limits need for one pair at a given time. Every
// window is half-open, (now-window, now]: an event exactly one window old
// no longer counts.
type PairCounters struct {
	// Requests sent after the pair's last connected call.
	RequestsLast24h, RequestsLast7d int
	LastRequestAt                   time.Time
	OldestRequestIn7d               time.Time
	// RequestTimes lists those of the last 7 days, oldest first, so the
	// policy can say exactly when the next one is allowed.
	RequestTimes []time.Time

	ConnectedLast24h     int // connected business-initiated calls
	OldestConnectedIn24h time.Time

	// ConsecutiveUnanswered counts unanswered or rejected business calls
	// since the last connected call (failed connects do not count).
	ConsecutiveUnanswered int
	LastConnected         time.Time // any connected call, BIC or UIC

	InProgress      bool      // a business call to this pair is in_progress
	InProgressSince time.Time // the newest such call's connect time
}

// Ledger is the permission ledger. Methods wrap ErrInvalid for bad input
// and ErrNotFound when a wacid is unknown.
type Ledger interface {
	// Permission returns the pair's permission: State PermissionNone and a
	// zero Updated when unknown.
	Permission(ctx context.Context, business, user string) (Permission, error)
	SetPermission(ctx context.Context, p Permission) error
	AddPermissionRequest(ctx context.Context, r PermissionRequest) error
	// SetRequestOutcome records the user's reply to the request with this
	// wamid; ErrNotFound when no request has it.
	SetRequestOutcome(ctx context.Context, wamid, outcome string) error
	// AddCallAttempt records a connect; ErrExists for a wacid seen before.
	AddCallAttempt(ctx context.Context, a CallAttempt) error
	// SetCallOutcome ends an in_progress call. The first final outcome
	// wins: a call already ended is left as it is (no error).
	SetCallOutcome(ctx context.Context, wacid, outcome string, at time.Time) error
	// MarkConnected records a connected call between the pair (UIC too): it
	// resets the request counters, Meta's request block and the unanswered run.
	MarkConnected(ctx context.Context, business, user string, at time.Time) error
	PairCounters(ctx context.Context, business, user string, now time.Time) (PairCounters, error)
	// BusinessInitiations counts the business number's connects after since,
	// and returns the oldest of them.
	BusinessInitiations(ctx context.Context, business string, since time.Time) (n int, oldest time.Time, err error)
	// LearnAlias maps a dialled number to the wa_id Meta resolved it to and
	// moves what the ledger holds under the dialled number to the wa_id.
	LearnAlias(ctx context.Context, input, waID string, at time.Time) error
	// ResolveAlias returns the wa_id learned for input, or input itself.
	ResolveAlias(ctx context.Context, input string) (string, error)
	// TouchWindow opens the customer-service window at at (never moves it back).
	TouchWindow(ctx context.Context, business, user string, at time.Time) error
	// WindowLastInbound returns the start of the pair's window; zero if none.
	WindowLastInbound(ctx context.Context, business, user string) (time.Time, error)
	// PruneLedger deletes history from before before (requests, calls,
	// windows, connected marks) and permissions that no longer say anything:
	// none, or temporary and expired, last changed before before.
	PruneLedger(ctx context.Context, before time.Time) error
}

var _ Ledger = (*SQLite)(nil)

// stmt is one statement of a multi-statement transaction.
type stmt struct {
	q    string
	args []any
}

func checkPair(business, user string) error {
	if business == "" || user == "" || len(business) > 128 || len(user) > 128 {
		return fmt.Errorf("%w: ledger pair needs a business (1..128 bytes) and a user (1..128 bytes)", ErrInvalid)
	}
	return nil
}

func checkRequest(r PermissionRequest) error {
	if err := checkPair(r.Business, r.User); err != nil {
		return err
	}
	if r.Kind != RequestInteractive && r.Kind != RequestTemplate {
		return fmt.Errorf("%w: request kind %q (want interactive or template)", ErrInvalid, r.Kind)
	}
	if r.At.IsZero() {
		return fmt.Errorf("%w: request time is required", ErrInvalid)
	}
	return nil
}

func checkAttempt(a CallAttempt) error {
	if err := checkPair(a.Business, a.User); err != nil {
		return err
	}
	if !validCallOutcome(a.Outcome) {
		return fmt.Errorf("%w: call outcome %q", ErrInvalid, a.Outcome)
	}
	if a.At.IsZero() {
		return fmt.Errorf("%w: call time is required", ErrInvalid)
	}
	return nil
}

func checkPermission(p Permission) error {
	if err := checkPair(p.Business, p.User); err != nil {
		return err
	}
	if !validState(p.State) {
		return fmt.Errorf("%w: permission state %q", ErrInvalid, p.State)
	}
	return nil
}

// Permission reads a pair's permission.
func (s *SQLite) Permission(ctx context.Context, business, user string) (Permission, error) {
	p := Permission{Business: business, User: user, State: PermissionNone}
	var state string
	var expires, updated, blocked sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT state, expires, source, updated, requests_blocked_until
		FROM permissions WHERE business = ? AND wa_user = ?`, business, user).
		Scan(&state, &expires, &p.Source, &updated, &blocked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return p, nil
	case err != nil:
		return p, fmt.Errorf("store: permission: %w", err)
	}
	p.State = PermissionState(state)
	p.Expires, p.Updated, p.RequestsBlockedUntil = fromNanos(expires), fromNanos(updated), fromNanos(blocked)
	return p, nil
}

// SetPermission writes a pair's permission whole.
func (s *SQLite) SetPermission(ctx context.Context, p Permission) error {
	if err := checkPermission(p); err != nil {
		return err
	}
	if p.Updated.IsZero() {
		p.Updated = time.Now()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO permissions (business, wa_user, state, expires, source, updated, requests_blocked_until)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (business, wa_user) DO UPDATE SET state = excluded.state, expires = excluded.expires,
			source = excluded.source, updated = excluded.updated, requests_blocked_until = excluded.requests_blocked_until`,
		p.Business, p.User, string(p.State), nanos(p.Expires), p.Source, p.Updated.UnixNano(), nanos(p.RequestsBlockedUntil))
	if err != nil {
		return fmt.Errorf("store: set permission: %w", err)
	}
	return nil
}

// AddPermissionRequest records a request sent.
func (s *SQLite) AddPermissionRequest(ctx context.Context, r PermissionRequest) error {
	if err := checkRequest(r); err != nil {
		return err
	}
	if r.Outcome == "" {
		r.Outcome = "sent"
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO permission_requests (business, wa_user, at, kind, wamid, outcome) VALUES (?, ?, ?, ?, ?, ?)`,
		r.Business, r.User, r.At.UnixNano(), r.Kind, r.WAMID, r.Outcome)
	if err != nil {
		return fmt.Errorf("store: add permission request: %w", err)
	}
	return nil
}

// SetRequestOutcome records the reply to a request.
func (s *SQLite) SetRequestOutcome(ctx context.Context, wamid, outcome string) error {
	if wamid == "" || outcome == "" {
		return fmt.Errorf("%w: request outcome needs a wamid and an outcome", ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE permission_requests SET outcome = ? WHERE wamid = ?`, outcome, wamid)
	if err != nil {
		return fmt.Errorf("store: set request outcome: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: permission request %q", ErrNotFound, wamid)
	}
	return nil
}

// AddCallAttempt records a connect.
func (s *SQLite) AddCallAttempt(ctx context.Context, a CallAttempt) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: add call attempt: %w", err)
	}
	defer tx.Rollback()
	if a.WACID != "" {
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM bic_calls WHERE wacid = ?`, a.WACID).Scan(&one); {
		case err == nil:
			return fmt.Errorf("%w: business call %s", ErrExists, a.WACID)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: add call attempt: %w", err)
		}
	}
	var ended any
	if a.Outcome != CallInProgress {
		ended = a.At.UnixNano()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO bic_calls (business, wa_user, at, wacid, outcome, ended) VALUES (?, ?, ?, ?, ?, ?)`,
		a.Business, a.User, a.At.UnixNano(), a.WACID, a.Outcome, ended); err != nil {
		return fmt.Errorf("store: add call attempt: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: add call attempt: %w", err)
	}
	return nil
}

// SetCallOutcome ends an in_progress call.
func (s *SQLite) SetCallOutcome(ctx context.Context, wacid, outcome string, at time.Time) error {
	if wacid == "" || !validCallOutcome(outcome) || outcome == CallInProgress {
		return fmt.Errorf("%w: call outcome %q for wacid %q", ErrInvalid, outcome, wacid)
	}
	var cur string
	err := s.w.QueryRowContext(ctx, `UPDATE bic_calls SET outcome = CASE WHEN outcome = 'in_progress' THEN ? ELSE outcome END,
		ended = COALESCE(ended, ?) WHERE wacid = ? RETURNING outcome`, outcome, at.UnixNano(), wacid).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: business call %s", ErrNotFound, wacid)
	}
	if err != nil {
		return fmt.Errorf("store: set call outcome: %w", err)
	}
	return nil
}

// MarkConnected records a connected call between the pair.
func (s *SQLite) MarkConnected(ctx context.Context, business, user string, at time.Time) error {
	if err := checkPair(business, user); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: mark connected: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO pair_connected (business, wa_user, at) VALUES (?, ?, ?)
		ON CONFLICT (business, wa_user) DO UPDATE SET at = MAX(at, excluded.at)`, business, user, at.UnixNano()); err != nil {
		return fmt.Errorf("store: mark connected: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE permissions SET requests_blocked_until = NULL
		WHERE business = ? AND wa_user = ?`, business, user); err != nil {
		return fmt.Errorf("store: mark connected: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: mark connected: %w", err)
	}
	return nil
}

// PairCounters computes the pair's counters at now.
func (s *SQLite) PairCounters(ctx context.Context, business, user string, now time.Time) (PairCounters, error) {
	var c PairCounters
	var lc sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT at FROM pair_connected WHERE business = ? AND wa_user = ?`, business, user).Scan(&lc)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	c.LastConnected = fromNanos(lc)
	// Requests after both the last connected call and the 7-day edge.
	since := max(now.Add(-7*24*time.Hour).UnixNano(), lc.Int64)
	rows, err := s.r.QueryContext(ctx, `SELECT at FROM permission_requests
		WHERE business = ? AND wa_user = ? AND at > ? AND at <= ? ORDER BY at`, business, user, since, now.UnixNano())
	if err != nil {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	var times []time.Time
	for rows.Next() {
		var at int64
		if err := rows.Scan(&at); err != nil {
			rows.Close()
			return c, fmt.Errorf("store: pair counters: %w", err)
		}
		times = append(times, time.Unix(0, at).UTC())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	fillRequests(&c, times, now)

	var oldest, inProg sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*), MIN(at) FROM bic_calls
		WHERE business = ? AND wa_user = ? AND outcome = 'connected' AND at > ? AND at <= ?`,
		business, user, now.Add(-24*time.Hour).UnixNano(), now.UnixNano()).Scan(&c.ConnectedLast24h, &oldest); err != nil {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	c.OldestConnectedIn24h = fromNanos(oldest)
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM bic_calls
		WHERE business = ? AND wa_user = ? AND outcome IN ('unanswered', 'rejected') AND at > ? AND at <= ?`,
		business, user, lc.Int64, now.UnixNano()).Scan(&c.ConsecutiveUnanswered); err != nil {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(at) FROM bic_calls
		WHERE business = ? AND wa_user = ? AND outcome = 'in_progress'`, business, user).Scan(&inProg); err != nil {
		return c, fmt.Errorf("store: pair counters: %w", err)
	}
	c.InProgress, c.InProgressSince = inProg.Valid, fromNanos(inProg)
	return c, nil
}

// fillRequests derives the request counters from the request times of the
// last 7 days after the last connected call, oldest first.
func fillRequests(c *PairCounters, times []time.Time, now time.Time) {
	c.RequestTimes = times
	c.RequestsLast7d = len(times)
	day := now.Add(-24 * time.Hour)
	for _, t := range times {
		if t.After(day) {
			c.RequestsLast24h++
		}
	}
	if len(times) > 0 {
		c.OldestRequestIn7d, c.LastRequestAt = times[0], times[len(times)-1]
	}
}

// BusinessInitiations counts connects by the business number after since.
func (s *SQLite) BusinessInitiations(ctx context.Context, business string, since time.Time) (int, time.Time, error) {
	var n int
	var oldest sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*), MIN(at) FROM bic_calls WHERE business = ? AND at > ?`,
		business, since.UnixNano()).Scan(&n, &oldest); err != nil {
		return 0, time.Time{}, fmt.Errorf("store: business initiations: %w", err)
	}
	return n, fromNanos(oldest), nil
}

// LearnAlias maps input to waID and moves input's ledger rows to waID.
func (s *SQLite) LearnAlias(ctx context.Context, input, waID string, at time.Time) error {
	if input == "" || waID == "" || input == waID || len(input) > 128 || len(waID) > 128 {
		return fmt.Errorf("%w: alias %q -> %q", ErrInvalid, input, waID)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: learn alias: %w", err)
	}
	defer tx.Rollback()
	stmts := []stmt{
		{`INSERT INTO aliases (input, wa_id, learned_at) VALUES (?, ?, ?)
			ON CONFLICT (input) DO UPDATE SET wa_id = excluded.wa_id, learned_at = excluded.learned_at`,
			[]any{input, waID, at.UnixNano()}},
		// History moves as it is.
		{`UPDATE bic_calls SET wa_user = ? WHERE wa_user = ?`, []any{waID, input}},
		{`UPDATE permission_requests SET wa_user = ? WHERE wa_user = ?`, []any{waID, input}},
	}
	// One row per pair: where both keys have one, the newer wins (ties go
	// to the wa_id's), then the dialled number's rows left move over.
	for _, t := range []struct{ table, col string }{
		{"permissions", "updated"}, {"windows", "last_inbound"}, {"pair_connected", "at"},
	} {
		tb, col := t.table, t.col
		stmts = append(stmts,
			stmt{`DELETE FROM ` + tb + ` WHERE wa_user = ? AND EXISTS (SELECT 1 FROM ` + tb + ` n
				WHERE n.business = ` + tb + `.business AND n.wa_user = ? AND n.` + col + ` >= ` + tb + `.` + col + `)`,
				[]any{input, waID}},
			stmt{`DELETE FROM ` + tb + ` WHERE wa_user = ? AND EXISTS (SELECT 1 FROM ` + tb + ` o
				WHERE o.business = ` + tb + `.business AND o.wa_user = ?)`, []any{waID, input}},
			stmt{`UPDATE ` + tb + ` SET wa_user = ? WHERE wa_user = ?`, []any{waID, input}})
	}
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return fmt.Errorf("store: learn alias: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: learn alias: %w", err)
	}
	return nil
}

// ResolveAlias returns the wa_id learned for input, or input.
func (s *SQLite) ResolveAlias(ctx context.Context, input string) (string, error) {
	var wa string
	err := s.r.QueryRowContext(ctx, `SELECT wa_id FROM aliases WHERE input = ?`, input).Scan(&wa)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return input, nil
	case err != nil:
		return input, fmt.Errorf("store: resolve alias: %w", err)
	}
	return wa, nil
}

// TouchWindow opens (or extends) the customer-service window.
func (s *SQLite) TouchWindow(ctx context.Context, business, user string, at time.Time) error {
	if err := checkPair(business, user); err != nil {
		return err
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO windows (business, wa_user, last_inbound) VALUES (?, ?, ?)
		ON CONFLICT (business, wa_user) DO UPDATE SET last_inbound = MAX(last_inbound, excluded.last_inbound)`,
		business, user, at.UnixNano())
	if err != nil {
		return fmt.Errorf("store: touch window: %w", err)
	}
	return nil
}

// WindowLastInbound returns when the pair's window was last opened.
func (s *SQLite) WindowLastInbound(ctx context.Context, business, user string) (time.Time, error) {
	var at int64
	err := s.r.QueryRowContext(ctx, `SELECT last_inbound FROM windows WHERE business = ? AND wa_user = ?`, business, user).Scan(&at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("store: window: %w", err)
	}
	return time.Unix(0, at).UTC(), nil
}

// PruneLedger deletes what no rule looks at any more.
func (s *SQLite) PruneLedger(ctx context.Context, before time.Time) error {
	b := before.UnixNano()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: prune ledger: %w", err)
	}
	defer tx.Rollback()
	for _, st := range []stmt{
		{`DELETE FROM permission_requests WHERE at < ?`, []any{b}},
		{`DELETE FROM bic_calls WHERE at < ?`, []any{b}},
		{`DELETE FROM windows WHERE last_inbound < ?`, []any{b}},
		{`DELETE FROM pair_connected WHERE at < ?`, []any{b}},
		{`DELETE FROM permissions WHERE state = 'none' AND updated < ?`, []any{b}},
		{`DELETE FROM permissions WHERE state = 'temporary' AND expires < ? AND updated < ?`, []any{b, b}},
	} {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return fmt.Errorf("store: prune ledger: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: prune ledger: %w", err)
	}
	return nil
}
