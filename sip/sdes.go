package sip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SDES errors.
var (
	// ErrCryptoInvalid is an a=crypto value that does not follow RFC 4568 §9.1.
	ErrCryptoInvalid = errors.New("sip: invalid a=crypto attribute")
	// ErrSRTPRequired is a trunk with srtp: required whose answer has no
	// usable a=crypto line: the call is refused, never carried in clear.
	ErrSRTPRequired = errors.New("sip: SRTP required but the answer has no usable SDES crypto")
)

// CryptoSuite is an SRTP crypto suite name of RFC 4568 §6.2.
type CryptoSuite string

// The suites ponte offers and accepts, in preference order (RFC 4568 §6.2.1
// and §6.2.2: both AES counter mode with 128-bit keys, 80- or 32-bit tags).
const (
	SuiteAES128SHA1_80 CryptoSuite = "AES_CM_128_HMAC_SHA1_80"
	SuiteAES128SHA1_32 CryptoSuite = "AES_CM_128_HMAC_SHA1_32"
)

// OfferedSuites are offered as tags 1 and 2.
var OfferedSuites = []CryptoSuite{SuiteAES128SHA1_80, SuiteAES128SHA1_32}

// keySaltLen is the master key (16) plus master salt (14) length of both
// suites (RFC 4568 §6.2.1).
const keySaltLen = 30

// Bounds on hostile input.
const (
	maxCryptoLen     = 1024
	maxCryptoKeys    = 8
	maxCryptoAttrs   = 16
	maxMKILen        = 128 // RFC 4568 §9.2: mki-length 1..128
	maxLifetimeShift = 48  // RFC 3711 §9.2: at most 2^48 SRTP packets per key
)

// CryptoKey is one key-param (RFC 4568 §9.2 inline key-info).
type CryptoKey struct {
	KeySalt  []byte // master key || master salt
	Lifetime uint64 // in packets; 0 when not given (the suite's default)
	MKI      uint64 // master key identifier value, when MKILen > 0
	MKILen   int    // MKI length in bytes on the wire; 0: no MKI
}

// Crypto is one a=crypto attribute (RFC 4568 §4, §9.1).
//
// Its String method never prints key material: keys must not reach logs.
// SDPValue renders the attribute value for an SDP body.
type Crypto struct {
	Tag           int
	Suite         CryptoSuite
	Keys          []CryptoKey
	SessionParams []string // e.g. "WSH=64"; see Usable for the ones ponte accepts
}

// String describes c without its keys.
func (c Crypto) String() string {
	return fmt.Sprintf("%d %s inline:[%d key(s) redacted]", c.Tag, c.Suite, len(c.Keys))
}

// SDPValue renders c as the value of an a=crypto attribute, keys included.
func (c Crypto) SDPValue() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Tag))
	b.WriteByte(' ')
	b.WriteString(string(c.Suite))
	b.WriteByte(' ')
	for i, k := range c.Keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString("inline:")
		b.WriteString(base64.StdEncoding.EncodeToString(k.KeySalt))
		if k.Lifetime > 0 {
			b.WriteByte('|')
			if k.Lifetime > 1 && k.Lifetime&(k.Lifetime-1) == 0 {
				b.WriteString("2^")
				b.WriteString(strconv.Itoa(bitLen(k.Lifetime) - 1))
			} else {
				b.WriteString(strconv.FormatUint(k.Lifetime, 10))
			}
		}
		if k.MKILen > 0 {
			b.WriteByte('|')
			b.WriteString(strconv.FormatUint(k.MKI, 10))
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(k.MKILen))
		}
	}
	for _, p := range c.SessionParams {
		b.WriteByte(' ')
		b.WriteString(p)
	}
	return b.String()
}

func bitLen(v uint64) int {
	n := 0
	for ; v != 0; v >>= 1 {
		n++
	}
	return n
}

// knownSuite reports a suite ponte can run.
func knownSuite(s CryptoSuite) bool {
	return s == SuiteAES128SHA1_80 || s == SuiteAES128SHA1_32
}

// Usable reports whether ponte can use c: a known suite, keys of the
// suite's length, and only session parameters that keep media encrypted
// and authenticated (RFC 4568 §6.3: an answerer must not accept a line
// whose session parameters it does not support). UNENCRYPTED_SRTP,
// UNENCRYPTED_SRTCP and UNAUTHENTICATED_SRTP would put media in clear or
// unauthenticated, which defeats the point of a secure trunk; a non-zero
// KDR and FEC parameters are not implemented by pion/srtp; WSH is only a
// replay window hint.
func (c Crypto) Usable() bool {
	if !knownSuite(c.Suite) || len(c.Keys) == 0 {
		return false
	}
	mkiLen := c.Keys[0].MKILen
	for _, k := range c.Keys {
		if len(k.KeySalt) != keySaltLen || k.MKILen != mkiLen || (len(c.Keys) > 1 && k.MKILen == 0) {
			return false
		}
	}
	for _, p := range c.SessionParams {
		name, val, _ := strings.Cut(p, "=")
		switch strings.ToUpper(name) {
		case "WSH":
		case "KDR":
			if val != "0" {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// ParseCrypto parses the value of an a=crypto attribute (what follows
// "a=crypto:"), RFC 4568 §9.1:
//
//	tag SP crypto-suite SP key-params *(SP session-param)
//	key-params = key-param *(";" key-param)
//	key-param  = "inline:" key-salt ["|" lifetime] ["|" mki-value ":" mki-length]
//
// Unknown suites parse (their keys are kept opaque-length checked only by
// Usable); malformed values return ErrCryptoInvalid. Keys are never put in
// error messages.
func ParseCrypto(v string) (Crypto, error) {
	var c Crypto
	if len(v) > maxCryptoLen {
		return c, fmt.Errorf("%w: too long", ErrCryptoInvalid)
	}
	f := strings.Fields(v)
	if len(f) < 3 {
		return c, fmt.Errorf("%w: want tag, suite and key-params", ErrCryptoInvalid)
	}
	if len(f[0]) > 9 || !allDigits(f[0]) {
		return c, fmt.Errorf("%w: bad tag", ErrCryptoInvalid)
	}
	c.Tag, _ = strconv.Atoi(f[0])
	if !validToken(f[1]) {
		return c, fmt.Errorf("%w: bad suite", ErrCryptoInvalid)
	}
	c.Suite = CryptoSuite(strings.ToUpper(f[1]))
	params := strings.Split(f[2], ";")
	if len(params) > maxCryptoKeys {
		return c, fmt.Errorf("%w: too many key-params", ErrCryptoInvalid)
	}
	for _, p := range params {
		k, err := parseKeyParam(p)
		if err != nil {
			return Crypto{}, err
		}
		c.Keys = append(c.Keys, k)
	}
	for _, s := range f[3:] {
		if !validToken(strings.ReplaceAll(s, "=", "")) {
			return Crypto{}, fmt.Errorf("%w: bad session parameter", ErrCryptoInvalid)
		}
		c.SessionParams = append(c.SessionParams, s)
	}
	return c, nil
}

func parseKeyParam(p string) (CryptoKey, error) {
	var k CryptoKey
	method, info, ok := strings.Cut(p, ":")
	if !ok || !strings.EqualFold(method, "inline") {
		return k, fmt.Errorf("%w: key method is not inline", ErrCryptoInvalid)
	}
	parts := strings.Split(info, "|")
	if len(parts) > 3 || parts[0] == "" {
		return k, fmt.Errorf("%w: bad key-info", ErrCryptoInvalid)
	}
	key, err := decodeKey(parts[0])
	if err != nil {
		return k, fmt.Errorf("%w: key is not base64", ErrCryptoInvalid)
	}
	k.KeySalt = key
	for _, x := range parts[1:] {
		switch {
		case strings.Contains(x, ":"): // mki-value ":" mki-length
			if k.MKILen != 0 {
				return CryptoKey{}, fmt.Errorf("%w: two MKIs", ErrCryptoInvalid)
			}
			vs, ls, _ := strings.Cut(x, ":")
			mv, err1 := strconv.ParseUint(vs, 10, 64)
			ml, err2 := strconv.Atoi(ls)
			if err1 != nil || err2 != nil || !allDigits(vs) || !allDigits(ls) || ml < 1 || ml > maxMKILen {
				return CryptoKey{}, fmt.Errorf("%w: bad MKI", ErrCryptoInvalid)
			}
			if ml < 8 && mv >= 1<<(8*uint(ml)) {
				return CryptoKey{}, fmt.Errorf("%w: MKI value does not fit its length", ErrCryptoInvalid)
			}
			k.MKI, k.MKILen = mv, ml
		default: // lifetime: ["2^"] 1*DIGIT
			if k.Lifetime != 0 || k.MKILen != 0 {
				return CryptoKey{}, fmt.Errorf("%w: lifetime out of place", ErrCryptoInvalid)
			}
			lt, err := parseLifetime(x)
			if err != nil {
				return CryptoKey{}, err
			}
			k.Lifetime = lt
		}
	}
	return k, nil
}

func parseLifetime(s string) (uint64, error) {
	if e, ok := strings.CutPrefix(s, "2^"); ok {
		n, err := strconv.Atoi(e)
		if err != nil || !allDigits(e) || n < 1 || n > maxLifetimeShift {
			return 0, fmt.Errorf("%w: bad lifetime", ErrCryptoInvalid)
		}
		return 1 << uint(n), nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || !allDigits(s) || n == 0 || n > 1<<maxLifetimeShift {
		return 0, fmt.Errorf("%w: bad lifetime", ErrCryptoInvalid)
	}
	return n, nil
}

// decodeKey accepts padded and unpadded standard base64 (RFC 4568 §6.1
// uses RFC 3548 base64; some stacks drop the padding).
func decodeKey(s string) ([]byte, error) {
	if len(s) > 256 {
		return nil, ErrCryptoInvalid
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validToken accepts the characters of RFC 4568 suite names and session
// parameters: letters, digits, "_", "^", "-", ".", "|", ":", "/".
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case strings.IndexByte("_^-.|:/", ch) >= 0:
		default:
			return false
		}
	}
	return true
}

// newCrypto makes an offer line with a fresh random key (RFC 4568 §6.1:
// keys come from a cryptographically strong source; one key per line so
// that no key is shared between suites).
func newCrypto(tag int, suite CryptoSuite) (Crypto, error) {
	k := make([]byte, keySaltLen)
	if _, err := rand.Read(k); err != nil {
		return Crypto{}, fmt.Errorf("sip: SRTP key: %w", err)
	}
	return Crypto{Tag: tag, Suite: suite, Keys: []CryptoKey{{KeySalt: k}}}, nil
}

// mkiBytes encodes an MKI value in its wire length, big-endian.
func mkiBytes(v uint64, n int) []byte {
	b := make([]byte, n)
	for i := n - 1; i >= 0 && v > 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}
