package store

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// mutableCols are the calls columns Update rewrites (all but id and protocol),
// in the order rowArgs and scanCall use.
var mutableCols = []string{
	"wacid", "sip_call_id", "direction", "outcome",
	"caller_number", "caller_bsuid", "caller_name", "caller_username",
	"business_number", "phone_number_id", "route", "mode", "route_hook", "answered_by",
	"offered", "pre_accepted", "accepted", "answered", "ended",
	"end_reason", "ended_by", "duration_ms", "meta_status",
	"meta_errors", "attempts", "transfers", "media", "mos", "updated",
	"answer_signal",
}

var allCols = "id, protocol, " + strings.Join(mutableCols, ", ")

// nanos stores a time as Unix nanoseconds, NULL when unset.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// rowArgs returns c's values for mutableCols.
func rowArgs(c *Call) ([]any, error) {
	metaErrors, err1 := jsonText(nonNil(c.MetaErrors))
	attempts, err2 := jsonText(nonNil(c.Attempts))
	transfers, err3 := jsonText(nonNil(c.Transfers))
	media, err4 := jsonText(c.Media)
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, c.ID, err)
		}
	}
	var mos any
	if c.Media.MOS > 0 {
		mos = c.Media.MOS
	}
	return []any{
		c.WACID, c.SIPCallID, string(c.Direction), string(c.Outcome),
		c.Caller.Number, c.Caller.BSUID, c.Caller.Name, c.Caller.Username,
		c.BusinessNumber, c.PhoneNumberID, c.Route, c.Mode, c.RouteHook, c.AnsweredBy,
		nanos(c.Offered), nanos(c.PreAccepted), nanos(c.Accepted), nanos(c.Answered), nanos(c.Ended),
		c.EndReason, c.EndedBy, c.Duration.Milliseconds(), c.MetaStatus,
		metaErrors, attempts, transfers, media, mos, nanos(c.Updated),
		c.AnswerSignal,
	}, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// scanCall reads one row of allCols.
func scanCall(r rowScanner) (*Call, error) {
	var (
		c                                                    Call
		direction, outcome                                   string
		offered, preAccepted, accepted, answered, ended, upd sql.NullInt64
		durationMs                                           int64
		metaErrors, attempts, transfers, media               string
		mos                                                  sql.NullFloat64
	)
	err := r.Scan(&c.ID, &c.Protocol,
		&c.WACID, &c.SIPCallID, &direction, &outcome,
		&c.Caller.Number, &c.Caller.BSUID, &c.Caller.Name, &c.Caller.Username,
		&c.BusinessNumber, &c.PhoneNumberID, &c.Route, &c.Mode, &c.RouteHook, &c.AnsweredBy,
		&offered, &preAccepted, &accepted, &answered, &ended,
		&c.EndReason, &c.EndedBy, &durationMs, &c.MetaStatus,
		&metaErrors, &attempts, &transfers, &media, &mos, &upd,
		&c.AnswerSignal)
	if err != nil {
		return nil, err
	}
	c.Direction, c.Outcome = Direction(direction), Outcome(outcome)
	c.Offered, c.PreAccepted, c.Accepted = fromNanos(offered), fromNanos(preAccepted), fromNanos(accepted)
	c.Answered, c.Ended, c.Updated = fromNanos(answered), fromNanos(ended), fromNanos(upd)
	c.Duration = time.Duration(durationMs) * time.Millisecond
	for _, j := range []struct {
		text string
		dst  any
	}{{metaErrors, &c.MetaErrors}, {attempts, &c.Attempts}, {transfers, &c.Transfers}, {media, &c.Media}} {
		if err := json.Unmarshal([]byte(j.text), j.dst); err != nil {
			return nil, fmt.Errorf("store: call %s: corrupt JSON column: %w", c.ID, err)
		}
	}
	c.MetaErrors, c.Attempts, c.Transfers = nonNil(c.MetaErrors), nonNil(c.Attempts), nonNil(c.Transfers)
	return &c, nil
}
