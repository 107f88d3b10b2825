// Package signing signs the HTTP requests ponte sends to a business's own
// systems (the routing hook, call event webhooks): HMAC-SHA256 over the
// timestamp, a dot and the body, so a receiver can check both who sent it
// and that it is not a replay of an old request.
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// The headers a signed request carries.
const (
	HeaderSignature = "X-Ponte-Signature" // sha256=<hex>
	HeaderTimestamp = "X-Ponte-Timestamp" // Unix seconds of this attempt
)

// Sign is the X-Ponte-Signature value for body sent at Unix time ts.
func Sign(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// SetHeaders stamps req with the timestamp of now and body's signature.
func SetHeaders(h http.Header, secret string, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, Sign(secret, ts, body))
}

// Fresh reports whether the Unix timestamp ts is within skew of now.
func Fresh(ts string, now time.Time, skew time.Duration) bool {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	d := now.Sub(time.Unix(sec, 0))
	return d <= skew && d >= -skew
}

// Valid reports whether sig is body's signature at ts, in constant time.
func Valid(secret, sig, ts string, body []byte) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, ts, body)))
}
