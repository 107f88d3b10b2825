package sip

import (
	"strings"
	"unicode/utf8"
)

// DefaultMaxHeaderValue caps every untrusted header value we put on the wire.
const DefaultMaxHeaderValue = 256

// MaxDisplayName caps the caller's display name, in characters.
const MaxDisplayName = 64

const hexDigits = "0123456789ABCDEF"

// SanitizeHeaderValue makes an untrusted string safe to use as a SIP header
// value (RFC 3261 §7.3.1, §25.1): bytes outside visible ASCII (VCHAR 0x21-0x7E)
// and space are percent-encoded, so CR and LF can never split the header
// (header injection) and non-ASCII cannot break a PBX parser. Leading and
// trailing spaces are trimmed. The result is at most max bytes
// (DefaultMaxHeaderValue when max <= 0), never cutting an escape in half.
func SanitizeHeaderValue(v string, max int) string {
	if max <= 0 {
		max = DefaultMaxHeaderValue
	}
	v = strings.Trim(v, " ")
	var b strings.Builder
	b.Grow(min(len(v), max))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 0x20 && c <= 0x7E {
			if b.Len()+1 > max {
				break
			}
			b.WriteByte(c)
			continue
		}
		if b.Len()+3 > max {
			break
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0F])
	}
	// A cut may leave a trailing space; trim it so the value stays canonical.
	return strings.TrimRight(b.String(), " ")
}

// QuoteDisplayName returns the display name ready to sit between the double
// quotes of a name-addr (RFC 3261 §25.1 quoted-string): control characters
// (including CR/LF) and invalid UTF-8 are dropped, '"' and '\' are
// backslash-escaped (quoted-pair), and the name is capped at MaxDisplayName
// characters. sipgo writes FromHeader.DisplayName verbatim inside quotes, so
// the escaping must be done here.
func QuoteDisplayName(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n >= MaxDisplayName {
			break
		}
		if r == utf8.RuneError || r < 0x20 || r == 0x7F || (r >= 0x80 && r < 0xA0) ||
			r == '\u2028' || r == '\u2029' {
			continue
		}
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// EscapeUser percent-encodes a string for the user part of a SIP URI
// (RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )).
// Caller ids such as "+5511999990000" pass unchanged; anything else that could
// end the user part ('@', ':', '>', space, control, non-ASCII) is escaped.
// The result is capped at 128 bytes.
func EscapeUser(s string) string {
	const maxUser = 128
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUserChar(c) {
			if b.Len()+1 > maxUser {
				break
			}
			b.WriteByte(c)
			continue
		}
		if b.Len()+3 > maxUser {
			break
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0F])
	}
	return b.String()
}

func isUserChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	// mark and user-unreserved; ';' and '?' are legal but confuse naive
	// parsers (they start URI params/headers), so we escape them.
	return strings.IndexByte("-_.!~*'()&=+$,/", c) >= 0
}

// validHeaderName reports whether name is an RFC 3261 token (§25.1).
func validHeaderName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// reservedHeaders are the headers the dialog layer owns; an extra header with
// one of these names (or a compact form) would corrupt the dialog or routing.
var reservedHeaders = map[string]bool{
	"via": true, "v": true, "from": true, "f": true, "to": true, "t": true,
	"call-id": true, "i": true, "cseq": true, "contact": true, "m": true,
	"max-forwards": true, "content-length": true, "l": true, "content-type": true,
	"c": true, "content-encoding": true, "e": true, "route": true, "record-route": true,
	"authorization": true, "proxy-authorization": true, "proxy-require": true,
	"require": true, "supported": true, "k": true, "allow": true, "user-agent": true,
	"expires": true, "reason": true,
}

func reservedHeader(name string) bool { return reservedHeaders[strings.ToLower(name)] }

// quoteReasonText prepares the text param of a Reason header (RFC 3326
// quoted-string), reusing the display-name rules.
func quoteReasonText(s string) string { return QuoteDisplayName(s) }
