package route

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ponte-gw/ponte/config"
)

// ErrBadAgent wraps an agent identity that cannot be dialled safely.
var ErrBadAgent = errors.New("route: agent identity not usable")

// maxAgentLen bounds what is stored per call and put in a Request-URI.
const maxAgentLen = 64

// Agent sources, as recorded with the agent.
const (
	SourcePAI     = "P-Asserted-Identity"
	SourceContact = "Contact"
)

// ValidAgent accepts an agent identity only if it can stand as a SIP user
// part without escaping. RFC 3261 §25.1: user = 1*( unreserved / escaped /
// user-unreserved ), unreserved = alphanum / mark, mark = - _ . ! ~ * ' ( ),
// user-unreserved = & = + $ , ; ? /. Of user-unreserved, ";", "?" and "/"
// are refused although legal: ";" starts telephone-subscriber parameters in a
// user part (RFC 3261 §19.1.6) and "?" and "/" are where naive parsers split
// URIs, so an identity carrying them would build a URI that PBXs read
// differently. Anything needing %-escapes is refused for the same reason:
// the gateway never dials an odd URI, it skips the sticky attempt.
func ValidAgent(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrBadAgent)
	}
	if len(s) > maxAgentLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadAgent, maxAgentLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()&=+$,", c) >= 0 {
			continue
		}
		return fmt.Errorf("%w: %q has %q, not allowed unescaped in a SIP user part", ErrBadAgent, s, c)
	}
	return nil
}

// ExpandURI puts a valid agent into a sticky-agent URI template
// ("sip:{agent}@pbx.example.com").
func ExpandURI(template, agent string) (string, error) {
	if err := config.CheckURITemplate(template); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := ValidAgent(agent); err != nil {
		return "", err
	}
	return strings.Replace(template, "{agent}", agent, 1), nil
}

// ExtractAgent finds who answered from the header values of the answering
// 200 OK: the configured header (e.g. X-Agent: 1007, or a URI whose user
// part is the agent), else the user of the first sip/sips P-Asserted-Identity
// (RFC 3325 §9.1; a tel identity if that is all there is), else the user of
// the Contact (RFC 3261 §20.10). get returns a header's values by name and
// must match names case-insensitively (RFC 3261 §7.3.5); the compact "m" is
// asked for too. A value that fails ValidAgent is skipped, so a garbled
// header falls back to the next source rather than storing junk. The
// identity is only ever dialled through ExpandURI, never as the raw Contact.
func ExtractAgent(header string, get func(name string) []string) (agent, source string, ok bool) {
	if header != "" {
		for _, v := range get(header) {
			// A bare identity is taken whole (it is not a list); a
			// name-addr or URI gives its user part.
			a := strings.TrimSpace(v)
			if strings.Contains(a, "<") || hasScheme(a) {
				if els := splitHeader(a); len(els) > 0 {
					a, _ = uriUser(addrURI(els[0]))
				}
			}
			if ValidAgent(a) == nil {
				return a, header, true
			}
		}
	}
	tel := ""
	for _, v := range get(SourcePAI) {
		for _, el := range splitHeader(v) {
			u := addrURI(el)
			a, isTel := uriUser(u)
			if ValidAgent(a) != nil {
				continue
			}
			if !isTel {
				return a, SourcePAI, true
			}
			if tel == "" {
				tel = a
			}
		}
	}
	if tel != "" {
		return tel, SourcePAI, true
	}
	for _, name := range []string{SourceContact, "m"} {
		for _, v := range get(name) {
			for _, el := range splitHeader(v) {
				if a, isTel := uriUser(addrURI(el)); !isTel && ValidAgent(a) == nil {
					return a, SourceContact, true
				}
			}
		}
	}
	return "", "", false
}

// splitHeader splits a header value at commas that are outside quoted
// strings and angle brackets (RFC 3261 §7.3.1), trimming each element.
func splitHeader(v string) []string {
	var out []string
	quoted, angle, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++ // quoted-pair
		case c == '"' && !angle:
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			if s := strings.TrimSpace(v[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		}
	}
	if start < len(v) {
		if s := strings.TrimSpace(v[start:]); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// addrURI returns the URI of a name-addr ("Name" <sip:...>;params) or an
// addr-spec (sip:...;params, whose parameters belong to the header, RFC 3261
// §20.10).
func addrURI(el string) string {
	quoted := false
	for i := 0; i < len(el); i++ {
		switch c := el[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '<':
			j := strings.IndexByte(el[i:], '>')
			if j < 0 {
				return ""
			}
			return strings.TrimSpace(el[i+1 : i+j])
		}
	}
	if quoted {
		return ""
	}
	u, _, _ := strings.Cut(el, ";")
	return strings.TrimSpace(u)
}

// uriUser returns the (unescaped) user part of a sip/sips URI, or the number
// of a tel URI (RFC 3966) with isTel set. "" when there is none.
func uriUser(u string) (user string, isTel bool) {
	if rest, ok := cutFold(u, "tel:"); ok {
		n, _, _ := strings.Cut(rest, ";")
		return n, true
	}
	rest, ok := cutFold(u, "sip:")
	if !ok {
		if rest, ok = cutFold(u, "sips:"); !ok {
			return "", false
		}
	}
	userinfo, _, ok := strings.Cut(rest, "@")
	if !ok {
		return "", false // sip:host: no user
	}
	user, _, _ = strings.Cut(userinfo, ":") // drop a password
	user, _, _ = strings.Cut(user, ";")     // drop user parameters (phone-context)
	if strings.IndexByte(user, '%') >= 0 {
		d, err := url.PathUnescape(user)
		if err != nil {
			return "", false
		}
		user = d
	}
	return user, false
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

func hasScheme(s string) bool {
	for _, p := range []string{"sip:", "sips:", "tel:"} {
		if _, ok := cutFold(s, p); ok {
			return true
		}
	}
	return false
}
