package sip

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ErrDigestSyntax: an Authorization header that is not a well-formed Digest
// credential (RFC 7616 §3.4, RFC 3261 §25.1 auth-param grammar).
var ErrDigestSyntax = errors.New("sip: malformed digest credentials")

// Bounds on hostile Authorization headers.
const (
	maxAuthHeader = 4096
	maxAuthParams = 24
	maxAuthHeads  = 4 // Authorization headers looked at per request
)

// digestCreds are the parameters of a Digest Authorization header
// (RFC 7616 §3.4), as sent (quotes and escapes removed).
type digestCreds struct {
	Username, Realm, Nonce, URI, Response string
	Algorithm, CNonce, Opaque, QOP, NC    string
}

// parseDigestAuthorization parses an Authorization value:
// `Digest` 1*SP auth-param *("," auth-param), auth-param = token "=" (token
// / quoted-string) (RFC 7616 §3.4; RFC 3261 §25.1 for quoted-pair). Unknown
// parameters are skipped, a repeated one is an error, and username, realm,
// nonce, uri and response are required. userhash=true and username*
// (RFC 7616 §3.4.4) are refused: ponte never offers userhash.
func parseDigestAuthorization(v string) (digestCreds, error) {
	var c digestCreds
	if len(v) > maxAuthHeader {
		return c, fmt.Errorf("%w: %d bytes", ErrDigestSyntax, len(v))
	}
	v = strings.TrimLeft(v, " \t")
	i := 0
	for i < len(v) && v[i] != ' ' && v[i] != '\t' {
		i++
	}
	if !strings.EqualFold(v[:i], "Digest") {
		return c, fmt.Errorf("%w: scheme is not Digest", ErrDigestSyntax)
	}
	seen := map[string]bool{}
	for n := 0; ; n++ {
		// Skip white space and empty list elements (RFC 7230 §7 #rule).
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == ',') {
			i++
		}
		if i == len(v) {
			break
		}
		if n >= maxAuthParams {
			return c, fmt.Errorf("%w: too many parameters", ErrDigestSyntax)
		}
		start := i
		for i < len(v) && isTokenChar(v[i]) {
			i++
		}
		name := strings.ToLower(v[start:i])
		if name == "" {
			return c, fmt.Errorf("%w: parameter name expected at %d", ErrDigestSyntax, i)
		}
		i = skipWS(v, i)
		if i == len(v) || v[i] != '=' {
			return c, fmt.Errorf("%w: '=' expected after %q", ErrDigestSyntax, name)
		}
		i = skipWS(v, i+1)
		var val string
		var err error
		if i < len(v) && v[i] == '"' {
			val, i, err = quotedString(v, i)
			if err != nil {
				return c, err
			}
		} else {
			start := i
			for i < len(v) && isTokenChar(v[i]) {
				i++
			}
			val = v[start:i]
			if val == "" {
				return c, fmt.Errorf("%w: empty value for %q", ErrDigestSyntax, name)
			}
		}
		i = skipWS(v, i)
		if i < len(v) && v[i] != ',' {
			return c, fmt.Errorf("%w: ',' expected after %q", ErrDigestSyntax, name)
		}
		if seen[name] {
			return c, fmt.Errorf("%w: %q repeated", ErrDigestSyntax, name)
		}
		seen[name] = true
		switch name {
		case "username":
			c.Username = val
		case "realm":
			c.Realm = val
		case "nonce":
			c.Nonce = val
		case "uri":
			c.URI = val
		case "response":
			c.Response = strings.ToLower(val)
		case "algorithm":
			c.Algorithm = val
		case "cnonce":
			c.CNonce = val
		case "opaque":
			c.Opaque = val
		case "qop":
			c.QOP = strings.ToLower(val)
		case "nc":
			c.NC = strings.ToLower(val)
		case "userhash":
			if strings.EqualFold(val, "true") {
				return c, fmt.Errorf("%w: userhash not offered", ErrDigestSyntax)
			}
		case "username*":
			return c, fmt.Errorf("%w: username* not supported", ErrDigestSyntax)
		}
	}
	if c.Username == "" || c.Realm == "" || c.Nonce == "" || c.URI == "" || c.Response == "" {
		return c, fmt.Errorf("%w: username, realm, nonce, uri and response are required", ErrDigestSyntax)
	}
	return c, nil
}

func skipWS(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

// isTokenChar: RFC 3261 §25.1 token characters.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-.!%*_+`'~", c) >= 0
}

// quotedString reads the quoted-string starting at v[i] == '"', undoing
// quoted-pairs. Control characters other than tab are refused.
func quotedString(v string, i int) (string, int, error) {
	var b strings.Builder
	for i++; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch == '"':
			return b.String(), i + 1, nil
		case ch == '\\':
			if i+1 == len(v) {
				return "", i, fmt.Errorf("%w: dangling escape", ErrDigestSyntax)
			}
			i++
			ch = v[i]
		}
		if (ch < 0x20 && ch != '\t') || ch == 0x7f {
			return "", i, fmt.Errorf("%w: control character in quoted string", ErrDigestSyntax)
		}
		b.WriteByte(ch)
	}
	return "", i, fmt.Errorf("%w: unterminated quoted string", ErrDigestSyntax)
}

// digestAlgorithms are the algorithms ponte challenges with, in the order
// the challenges are sent: SHA-256 first, MD5 for older PBXs (RFC 8760
// §2.4, RFC 7616 §3.7: the server lists its preferred algorithm first).
var digestAlgorithms = []string{"SHA-256", "MD5"}

func digestHash(alg string) (func() hash.Hash, bool) {
	switch strings.ToUpper(alg) {
	case "SHA-256":
		return sha256.New, true
	case "MD5", "":
		// RFC 7616 §3.3: no algorithm parameter means MD5.
		return md5.New, true
	}
	return nil, false
}

func hexHash(h func() hash.Hash, parts ...string) string {
	x := h()
	for i, p := range parts {
		if i > 0 {
			x.Write([]byte{':'})
		}
		x.Write([]byte(p))
	}
	return hex.EncodeToString(x.Sum(nil))
}

// digestResponse computes the request-digest of RFC 7616 §3.4.1 for
// qop=auth: H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri)).
func digestResponse(alg, user, realm, pass, method, uri, nonce, nc, cnonce, qop string) (string, bool) {
	h, ok := digestHash(alg)
	if !ok {
		return "", false
	}
	ha1 := hexHash(h, user, realm, pass)
	ha2 := hexHash(h, method, uri)
	return hexHash(h, ha1, nonce, nc, cnonce, qop, ha2), true
}

// digestAuth issues and checks nonces. A nonce is
// base64url(timestamp || HMAC-SHA256(secret, timestamp || source IP)): the
// server keeps no state per challenge, a nonce only works from the address
// it was issued to, and its age is in it (RFC 7616 §3.3 leaves the nonce
// format to the server and suggests a time stamp and a private key).
type digestAuth struct {
	secret [32]byte
	ttl    time.Duration
	opaque string
}

func newDigestAuth(ttl time.Duration) *digestAuth {
	a := &digestAuth{ttl: ttl}
	_, _ = rand.Read(a.secret[:])
	m := hmac.New(sha256.New, a.secret[:])
	m.Write([]byte("opaque"))
	a.opaque = base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
	return a
}

const nonceLen = 8 + sha256.Size

func (a *digestAuth) mac(ts []byte, ip netip.Addr) []byte {
	m := hmac.New(sha256.New, a.secret[:])
	m.Write(ts)
	b, _ := ip.Unmap().MarshalBinary()
	m.Write(b)
	return m.Sum(nil)
}

// nonce issues a nonce for ip at now.
func (a *digestAuth) nonce(ip netip.Addr, now time.Time) string {
	var raw [nonceLen]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	copy(raw[8:], a.mac(raw[:8], ip))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

type nonceState int

const (
	nonceValid nonceState = iota
	nonceExpired
	nonceForged // not ours, not for this address, or from before a restart
)

// checkNonce tells whether n is a nonce we issued to ip within the TTL.
func (a *digestAuth) checkNonce(n string, ip netip.Addr, now time.Time) nonceState {
	raw, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(raw) != nonceLen {
		return nonceForged
	}
	if !hmac.Equal(raw[8:], a.mac(raw[:8], ip)) {
		return nonceForged
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	if age := now.Sub(issued); age > a.ttl || age < -time.Minute {
		return nonceExpired
	}
	return nonceValid
}

// challenges are the WWW-Authenticate headers of a 401 for realm: one per
// algorithm, SHA-256 first (RFC 8760 §2.4), each with qop="auth" and the
// same nonce and opaque; stale=true after an expired nonce (RFC 7616 §3.3).
func (a *digestAuth) challenges(realm string, stale bool, ip netip.Addr, now time.Time) []sip.Header {
	n := a.nonce(ip, now)
	var hs []sip.Header
	for _, alg := range digestAlgorithms {
		v := fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm=%s, qop="auth"`,
			quoteParam(realm), n, a.opaque, alg)
		if stale {
			v += ", stale=true"
		}
		hs = append(hs, sip.NewHeader("WWW-Authenticate", v))
	}
	return hs
}

// quoteParam escapes '"' and '\' for a quoted-string and drops controls.
func quoteParam(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

type authResult int

const (
	authOK     authResult = iota
	authStale             // right password, but the nonce is expired or not ours: challenge again
	authFailed            // wrong password or unacceptable parameters
)

// verify checks credentials for a request (RFC 7616 §3.4, RFC 3261 §22.4):
// algorithm MD5 or SHA-256, qop=auth with nc and cnonce (RFC 2069
// responses without qop are refused: they would let a replayed response
// through without a client nonce), a uri naming the Request-URI, our opaque,
// and the response, compared in constant time. A correct response with an
// expired or foreign nonce is authStale: RFC 7616 §3.3 sets stale=true only
// when the digest itself was valid.
func (a *digestAuth) verify(c digestCreds, method string, ruri sip.Uri, pass string, ip netip.Addr, now time.Time) authResult {
	if c.QOP != "auth" || !validNC(c.NC) || c.CNonce == "" {
		return authFailed
	}
	if c.Opaque != "" && subtle.ConstantTimeCompare([]byte(c.Opaque), []byte(a.opaque)) != 1 {
		return authFailed
	}
	if !sameRequestURI(c.URI, ruri) {
		return authFailed
	}
	want, ok := digestResponse(c.Algorithm, c.Username, c.Realm, pass, method, c.URI, c.Nonce, c.NC, c.CNonce, c.QOP)
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(c.Response)) != 1 {
		return authFailed
	}
	if a.checkNonce(c.Nonce, ip, now) != nonceValid {
		return authStale
	}
	return authOK
}

// validNC: nc is 8 hex digits (RFC 7616 §3.4).
func validNC(nc string) bool {
	if len(nc) != 8 {
		return false
	}
	for i := 0; i < len(nc); i++ {
		if !strings.ContainsRune("0123456789abcdef", rune(nc[i])) {
			return false
		}
	}
	return true
}

// sameRequestURI reports whether the digest uri names the Request-URI
// (RFC 2617 §3.2.2.5: they must be the same resource; parameters and
// header order may be written differently).
func sameRequestURI(v string, ruri sip.Uri) bool {
	var u sip.Uri
	if err := sip.ParseUri(v, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Scheme, ruri.Scheme) && u.User == ruri.User &&
		strings.EqualFold(u.Host, ruri.Host) && u.Port == ruri.Port
}
