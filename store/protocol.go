package store

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Protocol numbers are what a caller reads out to an agent ("my protocol is
// 2026-1121-0042"), so they are digits only, grouped, and short:
//
//	YYYY-MMDD-NNNN   the business's local date of the offer and that day's
//	                 sequence (4 digits, growing to 5+ past 9999 calls a day)
//
// Why digits and not a Crockford base32 code: Crockford removes letters that
// look alike (I/L/1, O/0, U) but not letters that sound alike on a phone line
// (B/D/E/P/T/V/3, M/N), and a customer can key digits into an IVR on a
// keypad, which a letter code rules out. The date part tells an agent at once
// which day to look at, and sorts. The cost is a sequence the store must
// hand out atomically (one row per day, incremented in the Create
// transaction: one writer in SQLite, an UPDATE ... RETURNING row lock in
// PostgreSQL) and that the daily count of calls can be inferred from a
// protocol; both are acceptable for a business's own customers.

// protocolDay is the date part for t in loc.
func protocolDay(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-0102")
}

// formatProtocol joins a day and its sequence number.
func formatProtocol(day string, n int64) string {
	return fmt.Sprintf("%s-%04d", day, n)
}

// ParseProtocol accepts a protocol as people type it ("2026-1121-0042",
// "2026 1121 42", "2026112142") and returns its canonical form.
func ParseProtocol(s string) (string, bool) {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '-' || r == ' ' || r == '.' || r == '/':
		default:
			return "", false
		}
	}
	d := b.String()
	if len(d) < 9 || len(d) > 18 {
		return "", false
	}
	if _, err := time.Parse("20060102", d[:8]); err != nil {
		return "", false
	}
	n, err := strconv.ParseInt(d[8:], 10, 64)
	if err != nil || n < 1 {
		return "", false
	}
	return formatProtocol(d[:4]+"-"+d[4:8], n), true
}
