package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxLimit bounds a page; the API clamps to it as well.
const MaxLimit = 500

// List returns one page of calls, newest first. Pagination is by keyset on
// (offered, id): a page never repeats or skips a row when calls are added
// meanwhile, and a deep page costs the same as the first (no OFFSET scan).
func (s *SQLite) List(ctx context.Context, f Filter) (Page, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	var (
		where []string
		args  []any
	)
	if !f.From.IsZero() {
		where, args = append(where, "offered >= ?"), append(args, f.From.UnixNano())
	}
	if !f.To.IsZero() {
		where, args = append(where, "offered < ?"), append(args, f.To.UnixNano())
	}
	if f.Direction != "" {
		where, args = append(where, "direction = ?"), append(args, string(f.Direction))
	}
	if f.Outcome != "" {
		where, args = append(where, "outcome = ?"), append(args, string(f.Outcome))
	}
	if f.Route != "" {
		where, args = append(where, "route = ?"), append(args, f.Route)
	}
	if f.Caller != "" {
		cond, cargs := callerCond(f.Caller)
		where, args = append(where, cond), append(args, cargs...)
	}
	if f.Cursor != "" {
		off, id, err := DecodeCursor(f.Cursor)
		if err != nil {
			return Page{}, err
		}
		where, args = append(where, "(offered, id) < (?, ?)"), append(args, off, id)
	}
	q := `SELECT ` + allCols + ` FROM calls`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY offered DESC, id DESC LIMIT ?`
	rows, err := s.r.QueryContext(ctx, q, append(args, limit+1)...)
	if err != nil {
		return Page{}, fmt.Errorf("store: list: %w", err)
	}
	defer rows.Close()
	p := Page{Calls: []Call{}}
	for rows.Next() {
		c, err := scanCall(rows)
		if err != nil {
			return Page{}, fmt.Errorf("store: list: %w", err)
		}
		p.Calls = append(p.Calls, *c)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("store: list: %w", err)
	}
	if len(p.Calls) > limit {
		p.Calls = p.Calls[:limit]
		last := p.Calls[limit-1]
		p.Next = EncodeCursor(last.Offered.UnixNano(), last.ID)
	}
	return p, nil
}

// callerCond matches a user by number (typed with any punctuation) or BSUID.
// A key without digits is matched only as a BSUID: BSUID-only calls have an
// empty caller_number, which must never match.
func callerCond(key string) (string, []any) {
	if phoneLike(key) {
		return "(caller_number = ? OR caller_bsuid = ?)", []any{digits(key), key}
	}
	return "caller_bsuid = ?", []any{key}
}

// EncodeCursor makes the opaque cursor for the row after (offered, id).
func EncodeCursor(offeredNanos int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(offeredNanos, 10) + "|" + id))
}

// DecodeCursor parses EncodeCursor's output; anything else is ErrBadCursor.
func DecodeCursor(cur string) (int64, string, error) {
	if len(cur) > 512 {
		return 0, "", fmt.Errorf("%w: too long", ErrBadCursor)
	}
	b, err := base64.RawURLEncoding.DecodeString(cur)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %v", ErrBadCursor, err)
	}
	n, id, ok := strings.Cut(string(b), "|")
	off, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || id == "" || len(id) > 128 {
		return 0, "", fmt.Errorf("%w: malformed", ErrBadCursor)
	}
	return off, id, nil
}

// LastAgent finds the agent for a sticky-agent attempt, and when that agent
// answered.
func (s *SQLite) LastAgent(ctx context.Context, callerKey string, since time.Time) (string, time.Time, error) {
	if strings.TrimSpace(callerKey) == "" {
		return "", time.Time{}, nil
	}
	cond, args := callerCond(callerKey)
	var agent string
	var at int64
	err := s.r.QueryRowContext(ctx, `SELECT answered_by, answered FROM calls WHERE `+cond+
		` AND answered_by <> '' AND answered >= ? ORDER BY answered DESC LIMIT 1`,
		append(args, since.UnixNano())...).Scan(&agent, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("store: last agent: %w", err)
	}
	return agent, time.Unix(0, at), nil
}

// CloseInterrupted ends the calls a stop left open, each with a call.ended
// event, in one transaction.
func (s *SQLite) CloseInterrupted(ctx context.Context, now time.Time) (int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: close interrupted: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+allCols+` FROM calls WHERE ended IS NULL ORDER BY offered`)
	if err != nil {
		return 0, fmt.Errorf("store: close interrupted: %w", err)
	}
	var open []*Call
	for rows.Next() {
		c, err := scanCall(rows)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: close interrupted: %w", err)
		}
		open = append(open, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("store: close interrupted: %w", err)
	}
	for _, c := range open {
		c.Ended = now.UTC()
		if c.Ended.Before(c.Offered) {
			c.Ended = c.Offered
		}
		c.EndReason, c.EndedBy = EndReasonInterrupted, EndedBySystem
		c.Outcome = OutcomeFailed
		if !c.Answered.IsZero() {
			c.Outcome = OutcomeAnswered
		}
		if err := prepare(c); err != nil {
			return 0, err
		}
		if err := updateRow(ctx, tx, c); err != nil {
			return 0, err
		}
		if err := s.enqueue(ctx, tx, c, []EventType{EventEnded}); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: close interrupted: %w", err)
	}
	if s.events && len(open) > 0 {
		s.notify()
	}
	if len(open) > 0 {
		s.log.Warn("store: calls cut by a restart closed as interrupted", "count", len(open))
	}
	return len(open), nil
}

// Due returns the head-of-line pending event of each call, oldest first.
func (s *SQLite) Due(ctx context.Context, now time.Time, n int) ([]Event, error) {
	if n <= 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, event_id, call_id, type, body, created, attempts, last_error
		FROM outbox o
		WHERE dead = 0 AND next_attempt <= ?
		  AND seq = (SELECT MIN(seq) FROM outbox p WHERE p.call_id = o.call_id AND p.dead = 0)
		ORDER BY seq LIMIT ?`, now.UnixNano(), n)
	if err != nil {
		return nil, fmt.Errorf("store: due events: %w", err)
	}
	return scanEvents(rows)
}

// MarkSent removes a delivered event.
func (s *SQLite) MarkSent(ctx context.Context, seq int64) error {
	return s.outboxExec(ctx, "mark sent", `DELETE FROM outbox WHERE seq = ?`, seq)
}

// MarkFailed counts an attempt and schedules the next.
func (s *SQLite) MarkFailed(ctx context.Context, seq int64, next time.Time, reason string) error {
	return s.outboxExec(ctx, "mark failed", `UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE seq = ? AND dead = 0`,
		next.UnixNano(), truncate(reason, 500), seq)
}

// MarkDead gives an event up.
func (s *SQLite) MarkDead(ctx context.Context, seq int64, reason string) error {
	return s.outboxExec(ctx, "mark dead", `UPDATE outbox SET attempts = attempts + 1, dead = 1, last_error = ? WHERE seq = ? AND dead = 0`,
		truncate(reason, 500), seq)
}

func (s *SQLite) outboxExec(ctx context.Context, what, q string, args ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%w: pending event %v", ErrNotFound, args[len(args)-1])
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// DeadEvents returns given-up events, oldest first, for an operator.
func (s *SQLite) DeadEvents(ctx context.Context, n int) ([]Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, event_id, call_id, type, body, created, attempts, last_error
		FROM outbox WHERE dead = 1 ORDER BY seq LIMIT ?`, n)
	if err != nil {
		return nil, fmt.Errorf("store: dead events: %w", err)
	}
	return scanEvents(rows)
}

func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var (
			e       Event
			typ     string
			created int64
		)
		if err := rows.Scan(&e.Seq, &e.ID, &e.CallID, &typ, &e.Body, &created, &e.Attempts, &e.LastError); err != nil {
			return nil, fmt.Errorf("store: events: %w", err)
		}
		e.Type, e.Created = EventType(typ), time.Unix(0, created).UTC()
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	return evs, nil
}
