package api

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ponte-gw/ponte/store"
)

// ErrBadQuery wraps every query-parameter error; the message names the
// parameter so an API user can fix the call without reading code.
var ErrBadQuery = errors.New("bad query")

// filterKeys are the query parameters of /api/calls and /api/calls.csv.
var filterKeys = []string{"caller", "cursor", "direction", "from", "limit", "outcome", "route", "to"}

// maxQueryLimit bounds limit for the CSV export (JSON pages clamp to
// store.MaxLimit).
const maxQueryLimit = 1_000_000

// ParseFilter reads the list filters from a query string. Unknown or repeated
// parameters are errors: a misspelt "directon=inbound" silently returning
// every call would mislead a supervisor. limit is returned as given (0 when
// absent); the JSON handler defaults and clamps it.
func ParseFilter(q url.Values) (store.Filter, error) {
	var f store.Filter
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys) // one deterministic error for one query
	for _, k := range keys {
		if !slices.Contains(filterKeys, k) {
			return f, fmt.Errorf("%w: unknown parameter %q (known: %s)", ErrBadQuery, truncateParam(k), strings.Join(filterKeys, ", "))
		}
		if len(q[k]) != 1 {
			return f, fmt.Errorf("%w: %s is given %d times", ErrBadQuery, k, len(q[k]))
		}
		v := q[k][0]
		if !utf8.ValidString(v) || len(v) > 512 {
			return f, fmt.Errorf("%w: %s is not valid UTF-8 of at most 512 bytes", ErrBadQuery, k)
		}
		var err error
		switch k {
		case "from", "to":
			var t time.Time
			if t, err = time.Parse(time.RFC3339, v); err != nil {
				return f, fmt.Errorf("%w: %s=%q is not an RFC 3339 time (e.g. 2026-11-21T00:00:00-03:00)", ErrBadQuery, k, v)
			}
			if k == "from" {
				f.From = t
			} else {
				f.To = t
			}
		case "direction":
			f.Direction = store.Direction(v)
			if f.Direction != store.Inbound && f.Direction != store.Outbound {
				return f, fmt.Errorf("%w: direction=%q is not inbound or outbound", ErrBadQuery, v)
			}
		case "outcome":
			f.Outcome = store.Outcome(v)
			if !slices.Contains(store.Outcomes, f.Outcome) {
				return f, fmt.Errorf("%w: outcome=%q is not one of %v", ErrBadQuery, v, store.Outcomes)
			}
		case "caller", "route":
			if v == "" || len(v) > 128 {
				return f, fmt.Errorf("%w: %s must be 1..128 bytes", ErrBadQuery, k)
			}
			if k == "caller" {
				f.Caller = v
			} else {
				f.Route = v
			}
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxQueryLimit {
				return f, fmt.Errorf("%w: limit=%q is not a number from 1 to %d", ErrBadQuery, v, maxQueryLimit)
			}
			f.Limit = n
		case "cursor":
			if _, _, err := store.DecodeCursor(v); err != nil {
				return f, fmt.Errorf("%w: cursor is not one this API returned", ErrBadQuery)
			}
			f.Cursor = v
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, fmt.Errorf("%w: from must be before to", ErrBadQuery)
	}
	return f, nil
}

func truncateParam(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
