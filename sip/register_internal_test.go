package sip

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// regResponse builds a raw 200 to a REGISTER with the given extra headers.
func regResponse(t testing.TB, hdrs ...string) *sip.Response {
	t.Helper()
	raw := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;rport=40000;received=198.51.100.9\r\n" +
		"From: <sip:ponte@pbx.test>;tag=a\r\nTo: <sip:ponte@pbx.test>;tag=b\r\n" +
		"Call-ID: c1\r\nCSeq: 2 REGISTER\r\n" + strings.Join(hdrs, "") + "Content-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m.(*sip.Response)
}

func TestGrantedExpires(t *testing.T) {
	ours := sip.Uri{Scheme: "sip", User: "ponte", Host: "10.0.0.5", Port: 5060}
	for _, tc := range []struct {
		name string
		hdrs []string
		want time.Duration
	}{
		{"our contact's expires wins", []string{"Contact: <sip:other@192.0.2.1>;expires=3600, <sip:ponte@10.0.0.5:5060>;expires=120\r\n", "Expires: 999\r\n"}, 120 * time.Second},
		{"separate headers", []string{"Contact: <sip:other@192.0.2.1>;expires=3600\r\n", "Contact: <sip:ponte@10.0.0.5>;expires=60\r\n"}, 60 * time.Second},
		{"default port matches 5060", []string{"Contact: <sip:ponte@10.0.0.5>;expires=45\r\n"}, 45 * time.Second},
		{"only another binding: Expires header", []string{"Contact: <sip:other@192.0.2.1>;expires=3600\r\n", "Expires: 600\r\n"}, 600 * time.Second},
		{"no expires anywhere: what we asked", []string{"Contact: <sip:ponte@10.0.0.5:5060>\r\n"}, 300 * time.Second},
		{"bad parameter falls back to the header", []string{"Contact: <sip:ponte@10.0.0.5:5060>;expires=soon\r\n", "Expires: 90\r\n"}, 90 * time.Second},
		{"zero granted", []string{"Contact: <sip:ponte@10.0.0.5:5060>;expires=0\r\n"}, 0},
		{"huge is capped", []string{"Expires: 99999999999999\r\n"}, maxDeltaSeconds * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := grantedExpires(regResponse(t, tc.hdrs...), ours, 300); got != tc.want {
				t.Fatalf("granted %v, want %v", got, tc.want)
			}
		})
	}
}

func TestViaPublic(t *testing.T) {
	for via, want := range map[string]string{
		"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;rport=40000;received=198.51.100.9": "198.51.100.9:40000",
		"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;received=198.51.100.9":             "198.51.100.9:5060",
		"SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK-1;rport=5070":                        "10.0.0.5:5070",
		"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1;rport=7000":                   "[2001:db8::1]:7000",
		"SIP/2.0/UDP ponte.example:5060;branch=z9hG4bK-1;rport=7000":                   "",
		"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;rport=70000":                       "",
	} {
		raw := "SIP/2.0 200 OK\r\nVia: " + via + "\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		ap, ok := viaPublic(m.(*sip.Response))
		got := ""
		if ok {
			got = ap.String()
		}
		if got != want {
			t.Errorf("Via %s: %q, want %q", via, got, want)
		}
	}
}

func TestRetryAfterMinExpires(t *testing.T) {
	for _, tc := range []struct {
		hdr  string
		ra   time.Duration
		raOK bool
		me   int
		meOK bool
	}{
		{"Retry-After: 18000;duration=3600\r\nMin-Expires: 60\r\n", time.Hour, true, 60, true}, // capped at maxRetryAfter
		{"Retry-After: 120 (I'm in a meeting)\r\nMin-Expires: 3600\r\n", 2 * time.Minute, true, 3600, true},
		{"Retry-After: 5\r\nMin-Expires: 0\r\n", 5 * time.Second, true, 0, false},
		{"Retry-After: soon\r\nMin-Expires: -5\r\n", 0, false, 0, false},
		{"", 0, false, 0, false},
	} {
		res := regResponse(t, tc.hdr)
		ra, ok := retryAfter(res)
		if ra != tc.ra || ok != tc.raOK {
			t.Errorf("%q: Retry-After %v %v", tc.hdr, ra, ok)
		}
		me, ok := minExpires(res)
		if me != tc.me || ok != tc.meOK {
			t.Errorf("%q: Min-Expires %d %v", tc.hdr, me, ok)
		}
	}
}

func TestChallengeStale(t *testing.T) {
	for hdr, want := range map[string]bool{
		`WWW-Authenticate: Digest realm="r", nonce="n", stale=true` + "\r\n":   true,
		`WWW-Authenticate: Digest realm="r", nonce="n", stale=FALSE` + "\r\n":  false,
		`WWW-Authenticate: Digest realm="r", nonce="n"` + "\r\n":               false,
		`Proxy-Authenticate: Digest realm="r", nonce="n", stale=true` + "\r\n": false, // a 401 reads WWW-Authenticate
	} {
		res := regResponse(t, hdr)
		res.StatusCode = 401
		if got := challengeStale(res); got != want {
			t.Errorf("%q: stale %v", hdr, got)
		}
	}
}

// TestBackoffBounds: RetryMin doubling to RetryMax, within ±20 %, raised to
// a Retry-After.
func TestBackoffBounds(t *testing.T) {
	r := &Registrar{cfg: Registration{RetryMin: DefaultRetryMin, RetryMax: DefaultRetryMax}}
	base := []time.Duration{5, 10, 20, 40, 80, 160, 300, 300, 300}
	for i, b := range base {
		r.fails = i + 1
		lo, hi := b*time.Second*8/10, b*time.Second*12/10
		for range 50 {
			if d := r.backoffLocked(nil); d < lo || d > hi {
				t.Fatalf("failure %d: %v outside [%v, %v]", i+1, d, lo, hi)
			}
		}
	}
	r.fails = 1
	if d := r.backoffLocked(regResponse(t, "Retry-After: 120\r\n")); d != 2*time.Minute {
		t.Fatalf("with Retry-After 120: %v", d)
	}
	for g, want := range map[time.Duration]time.Duration{
		300 * time.Second: 150 * time.Second, 2 * time.Second: time.Second, time.Second: minRefresh, 0: minRefresh,
	} {
		if got := refreshDelay(g); got != want {
			t.Errorf("refreshDelay(%v) = %v, want %v", g, got, want)
		}
	}
}

func FuzzDeltaSeconds(f *testing.F) {
	for _, s := range []string{"0", "3600", " 42 ", "4294967296", "99999999999999999999", "-1", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := deltaSeconds(s)
		// Reference: 1*DIGIT (at most 20 of them), value capped at 2**32-1.
		d := strings.TrimSpace(s)
		wantOK := d != "" && len(d) <= 20 && strings.Trim(d, "0123456789") == ""
		if ok != wantOK {
			t.Fatalf("%q: ok=%v, want %v", s, ok, wantOK)
		}
		if !ok {
			return
		}
		want := uint64(maxDeltaSeconds)
		if v, err := strconv.ParseUint(d, 10, 64); err == nil {
			want = min(v, maxDeltaSeconds)
		}
		if n != want {
			t.Fatalf("%q: %d, want %d", s, n, want)
		}
	})
}

// FuzzRegisterResponse feeds a registrar's answer, outside input, to every
// reader of it.
func FuzzRegisterResponse(f *testing.F) {
	f.Add("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1;rport=1;received=192.0.2.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:ponte@10.0.0.5>;expires=60, <sip:x@y>;expires=9\r\nExpires: 30\r\nContent-Length: 0\r\n\r\n")
	f.Add("SIP/2.0 423 Interval Too Brief\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK-2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nMin-Expires: 3600\r\nContent-Length: 0\r\n\r\n")
	f.Add("SIP/2.0 503 Busy\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-3\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nRetry-After: 30 (x);duration=5\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\", stale=true\r\nContent-Length: 0\r\n\r\n")
	ours := sip.Uri{Scheme: "sip", User: "ponte", Host: "10.0.0.5", Port: 5060}
	f.Fuzz(func(t *testing.T, raw string) {
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			return
		}
		res, ok := m.(*sip.Response)
		if !ok {
			return
		}
		if g := grantedExpires(res, ours, 300); g < 0 || g > maxDeltaSeconds*time.Second {
			t.Fatalf("granted %v", g)
		}
		if ap, ok := viaPublic(res); ok && (!ap.IsValid() || ap.Port() == 0) {
			t.Fatalf("public address %v", ap)
		}
		if me, ok := minExpires(res); ok && me <= 0 {
			t.Fatalf("Min-Expires %d", me)
		}
		if ra, ok := retryAfter(res); ok && (ra < 0 || ra > maxRetryAfter) {
			t.Fatalf("Retry-After %v", ra)
		}
		challengeStale(res)
	})
}
