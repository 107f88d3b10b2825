package signing

import (
	"net/http"
	"testing"
	"time"
)

func TestSignAndCheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	body := []byte(`{"a":1}`)
	SetHeaders(h, "s3cret", body, now)
	ts, sig := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	// openssl: printf '1800000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
	if want := Sign("s3cret", "1800000000", body); ts != "1800000000" || sig != want {
		t.Fatalf("headers %q %q", ts, sig)
	}
	if !Valid("s3cret", sig, ts, body) || Valid("other", sig, ts, body) || Valid("s3cret", sig, ts, []byte(`{"a":2}`)) {
		t.Error("Valid accepts a wrong secret or body, or refuses the right one")
	}
	if !Fresh(ts, now.Add(59*time.Second), time.Minute) || Fresh(ts, now.Add(61*time.Second), time.Minute) || Fresh("x", now, time.Minute) {
		t.Error("Fresh does not bound the timestamp")
	}
}
