package pbx

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestPickChallenge: the topmost challenge with MD5 or SHA-256 and qop
// auth (or none) wins (RFC 8760 §2.4); others are skipped.
func TestPickChallenge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hdrs    []string
		wantAlg string // "" → none usable
		wantQOP []string
	}{
		{"md5 default", []string{`Digest realm="r", nonce="n1", qop="auth"`}, "", []string{"auth"}},
		{"sha-256 first", []string{`Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"`, `Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"`}, "SHA-256", []string{"auth"}},
		{"lowercase and auth-int,auth", []string{`Digest realm="r", nonce="n", algorithm=sha-256, qop="auth-int, auth"`}, "SHA-256", []string{"auth"}},
		{"skip SHA-512-256", []string{`Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"`, `Digest realm="r", nonce="n", algorithm=MD5`}, "MD5", nil},
		{"skip auth-int only", []string{`Digest realm="r", nonce="n", qop="auth-int"`}, "-", nil},
		{"skip no nonce", []string{`Digest realm="r", qop="auth"`}, "-", nil},
		{"skip Basic", []string{`Basic realm="r"`}, "-", nil},
		{"none", nil, "-", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hs []sip.Header
			for _, v := range tc.hdrs {
				hs = append(hs, sip.NewHeader("WWW-Authenticate", v))
			}
			chal, ok := pickChallenge(hs)
			if tc.wantAlg == "-" {
				if ok {
					t.Fatalf("picked %+v", chal)
				}
				return
			}
			if !ok || chal.Algorithm != tc.wantAlg || len(chal.QOP) != len(tc.wantQOP) || (len(tc.wantQOP) > 0 && chal.QOP[0] != tc.wantQOP[0]) {
				t.Fatalf("picked %+v, %v", chal, ok)
			}
		})
	}
}

// FuzzPickChallenge: challenges from the far end never panic the parser or
// the digest, and what is picked is something the simulator can answer.
func FuzzPickChallenge(f *testing.F) {
	f.Add(`Digest realm="ponte", nonce="abc", algorithm=SHA-256, qop="auth"`, `Digest realm="ponte", nonce="abc"`)
	f.Add(`Digest nonce=, qop="auth-int,auth"`, `Basic x`)
	f.Add(`Digest realm="a\"b", nonce="n", algorithm=md5, opaque="o", stale=true`, ``)
	f.Fuzz(func(t *testing.T, a, b string) {
		hs := []sip.Header{sip.NewHeader("Proxy-Authenticate", a), sip.NewHeader("Proxy-Authenticate", b)}
		chal, ok := pickChallenge(hs)
		if !ok {
			return
		}
		if !supportedAlgorithms[chal.Algorithm] || chal.Nonce == "" || (len(chal.QOP) > 0 && (len(chal.QOP) != 1 || chal.QOP[0] != "auth")) {
			t.Fatalf("picked %+v", chal)
		}
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1", Host: "127.0.0.1"})
		res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
		for _, h := range hs {
			res.AppendHeader(h)
		}
		h, err := credentials(req, res, &Auth{Username: "u", Password: "p"})
		if err != nil || h.Name() != "Proxy-Authorization" {
			t.Fatalf("credentials %v %v", h, err)
		}
	})
}
