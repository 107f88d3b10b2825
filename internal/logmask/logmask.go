// Package logmask keeps full phone numbers out of ponte's logs at info level
// and above (design.md conventions: "no secrets or full phone numbers at info
// level"); at debug level numbers are logged whole, for troubleshooting.
package logmask

import (
	"log/slog"
	"strings"
)

// Number masks a phone number for logs: the country code and the first
// digits of the national number stay (which country, which area), the last
// four stay (which of a caller's calls), and at least four digits in between
// are starred: "+5511987654321" -> "+55119****4321". A number too short to
// keep both ends shows only its second half.
func Number(s string) string {
	plus := strings.HasPrefix(s, "+")
	d := digits(s)
	if len(d) == 0 {
		return s
	}
	n := len(d)
	head, tail := 0, n/2
	if n >= 8 {
		head, tail = min(5, n-8), 4
	}
	out := d[:head] + strings.Repeat("*", n-head-tail) + d[n-tail:]
	if plus {
		out = "+" + out
	}
	return out
}

// digits returns s's digits if s looks like a phone number: an optional
// leading "+", then 6 to 15 digits (E.164's maximum, ITU-T E.164 §6) with
// optional spaces, dots, dashes and parentheses. Otherwise "".
func digits(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "+")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return ""
		}
	}
	if b.Len() < 6 || b.Len() > 15 {
		return ""
	}
	return b.String()
}

// keys are the attribute keys ponte and its packages log phone numbers
// under (the caller, the callee, the business number).
var keys = map[string]bool{
	"from": true, "to": true, "caller": true, "callee": true, "number": true, "phone": true,
	"wa_id": true, "user": true, "recipient": true, "display_phone_number": true, "did": true,
	"from_number": true, "to_number": true, "caller_id": true, "from_user": true, "to_user": true,
	"from_uri": true, "to_uri": true,
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that masks phone numbers
// (bare, or the user part of a sip:/sips:/tel: URI) under the keys above.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if !keys[a.Key] || a.Value.Kind() != slog.KindString {
		return a
	}
	return slog.String(a.Key, maskValue(a.Value.String()))
}

func maskValue(v string) string {
	if digits(v) != "" {
		return Number(v)
	}
	for _, scheme := range []string{"sip:", "sips:", "tel:"} {
		rest, ok := strings.CutPrefix(v, scheme)
		if !ok {
			continue
		}
		user, host, hasHost := strings.Cut(rest, "@")
		if digits(user) == "" {
			return v
		}
		if hasHost {
			return scheme + Number(user) + "@" + host
		}
		return scheme + Number(user)
	}
	return v
}

// HandlerOptions returns handler options for level: numbers are masked
// unless the level is debug or lower.
func HandlerOptions(level slog.Level) *slog.HandlerOptions {
	o := &slog.HandlerOptions{Level: level}
	if level > slog.LevelDebug {
		o.ReplaceAttr = ReplaceAttr
	}
	return o
}
