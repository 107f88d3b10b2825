package sip

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// RFC 7616 §3.9.1: the example request both algorithms are worked out for.
const (
	rfcUser   = "Mufasa"
	rfcRealm  = "http-auth@example.org"
	rfcPass   = "Circle of Life"
	rfcURI    = "/dir/index.html"
	rfcNonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
	rfcCNonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
	rfcOpaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
)

func TestDigestResponseRFC7616(t *testing.T) {
	tests := []struct {
		alg, want string
	}{
		{"MD5", "8ca523f5e9506fed4657c9700eebdbec"},
		{"SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
		{"sha-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
		{"", "8ca523f5e9506fed4657c9700eebdbec"}, // RFC 7616 §3.3: absent means MD5
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			got, ok := digestResponse(tc.alg, rfcUser, rfcRealm, rfcPass, "GET", rfcURI, rfcNonce, "00000001", rfcCNonce, "auth")
			if !ok || got != tc.want {
				t.Fatalf("response %q ok=%v, want %q", got, ok, tc.want)
			}
		})
	}
	if _, ok := digestResponse("SHA-512-256", rfcUser, rfcRealm, rfcPass, "GET", rfcURI, rfcNonce, "00000001", rfcCNonce, "auth"); ok {
		t.Fatal("SHA-512-256 accepted; ponte only offers SHA-256 and MD5")
	}
}

func TestParseDigestAuthorization(t *testing.T) {
	rfc := `Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256,
	nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
	qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`
	rfc = strings.ReplaceAll(rfc, "\n\t", " ")
	tests := []struct {
		name string
		in   string
		want digestCreds
		err  bool
	}{
		{name: "RFC 7616 example", in: rfc, want: digestCreds{
			Username: rfcUser, Realm: rfcRealm, Nonce: rfcNonce, URI: rfcURI,
			Response:  "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
			Algorithm: "SHA-256", CNonce: rfcCNonce, Opaque: rfcOpaque, QOP: "auth", NC: "00000001",
		}},
		{name: "scheme any case, tabs, empty elements, unknown param, upper hex", in: "digest\tusername=\"a\",,realm=\"r\" , nonce=\"n\",uri=\"sip:x@h\",response=\"ABCDEF\",foo=bar, qop=\"AUTH\"",
			want: digestCreds{Username: "a", Realm: "r", Nonce: "n", URI: "sip:x@h", Response: "abcdef", QOP: "auth"}},
		{name: "quoted-pair in username", in: `Digest username="a\"b\\c", realm="r", nonce="n", uri="u", response="0"`,
			want: digestCreds{Username: `a"b\c`, Realm: "r", Nonce: "n", URI: "u", Response: "0"}},
		{name: "comma inside quotes", in: `Digest username="a,b", realm="r", nonce="n", uri="u", response="0"`,
			want: digestCreds{Username: "a,b", Realm: "r", Nonce: "n", URI: "u", Response: "0"}},
		{name: "Basic", in: `Basic dXNlcjpwYXNz`, err: true},
		{name: "missing response", in: `Digest username="a", realm="r", nonce="n", uri="u"`, err: true},
		{name: "repeated param", in: `Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0"`, err: true},
		{name: "unterminated quote", in: `Digest username="a, realm="r`, err: true},
		{name: "dangling escape", in: `Digest username="a\`, err: true},
		{name: "CR in quoted string", in: "Digest username=\"a\rb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"", err: true},
		{name: "no equals", in: `Digest username`, err: true},
		{name: "empty token value", in: `Digest username=, realm="r"`, err: true},
		{name: "garbage between params", in: `Digest username="a" realm="r"`, err: true},
		{name: "userhash", in: `Digest username="a", realm="r", nonce="n", uri="u", response="0", userhash=true`, err: true},
		{name: "username*", in: `Digest username*=UTF-8''a, realm="r", nonce="n", uri="u", response="0"`, err: true},
		{name: "too long", in: `Digest username="` + strings.Repeat("a", maxAuthHeader) + `"`, err: true},
		{name: "too many params", in: "Digest " + strings.Repeat("x=1, ", maxAuthParams+1), err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDigestAuthorization(tc.in)
			if tc.err {
				if !errors.Is(err, ErrDigestSyntax) {
					t.Fatalf("got %+v, %v; want ErrDigestSyntax", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

// credsFor builds what a client would send for a challenge of a.
func credsFor(alg, user, realm, pass, method, uri, nonce, opaque string) digestCreds {
	r, _ := digestResponse(alg, user, realm, pass, method, uri, nonce, "00000001", "c0ffee", "auth")
	return digestCreds{Username: user, Realm: realm, Nonce: nonce, URI: uri, Response: r,
		Algorithm: alg, CNonce: "c0ffee", Opaque: opaque, QOP: "auth", NC: "00000001"}
}

func TestDigestVerify(t *testing.T) {
	a := newDigestAuth(time.Minute)
	ip := netip.MustParseAddr("192.0.2.7")
	now := time.Unix(1_700_000_000, 0)
	var ruri sip.Uri
	if err := sip.ParseUri("sip:+5511999@ponte.example:5060", &ruri); err != nil {
		t.Fatal(err)
	}
	const uri = "sip:+5511999@ponte.example:5060"
	n := a.nonce(ip, now)
	tests := []struct {
		name string
		c    func() digestCreds
		at   time.Time
		from netip.Addr
		want authResult
	}{
		{"SHA-256", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", uri, n, a.opaque) }, now, ip, authOK},
		{"MD5", func() digestCreds { return credsFor("MD5", "pbx", "r", "pw", "INVITE", uri, n, a.opaque) }, now, ip, authOK},
		{"uri with params still names the Request-URI", func() digestCreds {
			return credsFor("MD5", "pbx", "r", "pw", "INVITE", uri+";user=phone", n, a.opaque)
		}, now, ip, authOK},
		{"no opaque echoed", func() digestCreds { return credsFor("MD5", "pbx", "r", "pw", "INVITE", uri, n, "") }, now, ip, authOK},
		{"wrong password", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "nope", "INVITE", uri, n, a.opaque) }, now, ip, authFailed},
		{"wrong method", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "pw", "REGISTER", uri, n, a.opaque) }, now, ip, authFailed},
		{"other uri", func() digestCreds {
			return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", "sip:other@ponte.example:5060", n, a.opaque)
		}, now, ip, authFailed},
		{"wrong opaque", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", uri, n, "x") }, now, ip, authFailed},
		{"RFC 2069, no qop", func() digestCreds {
			c := credsFor("MD5", "pbx", "r", "pw", "INVITE", uri, n, a.opaque)
			c.QOP, c.NC, c.CNonce = "", "", ""
			return c
		}, now, ip, authFailed},
		{"qop auth-int", func() digestCreds {
			c := credsFor("MD5", "pbx", "r", "pw", "INVITE", uri, n, a.opaque)
			c.QOP = "auth-int"
			return c
		}, now, ip, authFailed},
		{"bad nc", func() digestCreds {
			c := credsFor("MD5", "pbx", "r", "pw", "INVITE", uri, n, a.opaque)
			c.NC = "1"
			return c
		}, now, ip, authFailed},
		{"unknown algorithm", func() digestCreds {
			return credsFor("SHA-512", "pbx", "r", "pw", "INVITE", uri, n, a.opaque)
		}, now, ip, authFailed},
		{"expired nonce, right password", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", uri, n, a.opaque) },
			now.Add(2 * time.Minute), ip, authStale},
		{"nonce of another address", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", uri, n, a.opaque) },
			now, netip.MustParseAddr("192.0.2.8"), authStale},
		{"forged nonce, right password", func() digestCreds {
			return credsFor("SHA-256", "pbx", "r", "pw", "INVITE", uri, rfcNonce, a.opaque)
		}, now, ip, authStale},
		{"expired nonce, wrong password", func() digestCreds { return credsFor("SHA-256", "pbx", "r", "x", "INVITE", uri, n, a.opaque) },
			now.Add(2 * time.Minute), ip, authFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.verify(tc.c(), "INVITE", ruri, "pw", tc.from, tc.at); got != tc.want {
				t.Fatalf("verify = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestNonce(t *testing.T) {
	a := newDigestAuth(5 * time.Minute)
	ip := netip.MustParseAddr("2001:db8::1")
	now := time.Unix(1_700_000_000, 123)
	n := a.nonce(ip, now)
	tests := []struct {
		name  string
		nonce string
		ip    netip.Addr
		at    time.Time
		want  nonceState
	}{
		{"fresh", n, ip, now, nonceValid},
		{"at TTL", n, ip, now.Add(5 * time.Minute), nonceValid},
		{"past TTL", n, ip, now.Add(5*time.Minute + time.Nanosecond), nonceExpired},
		{"from the future", n, ip, now.Add(-2 * time.Minute), nonceExpired},
		{"other address", n, netip.MustParseAddr("2001:db8::2"), now, nonceForged},
		{"other server", newDigestAuth(time.Minute).nonce(ip, now), ip, now, nonceForged},
		{"not base64", "!!!", ip, now, nonceForged},
		{"truncated", n[:len(n)-2], ip, now, nonceForged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.checkNonce(tc.nonce, tc.ip, tc.at); got != tc.want {
				t.Fatalf("checkNonce = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestChallengeHeaders(t *testing.T) {
	a := newDigestAuth(time.Minute)
	ip := netip.MustParseAddr("192.0.2.1")
	hs := a.challenges(`pbx "main"`, true, ip, time.Now())
	if len(hs) != 2 {
		t.Fatalf("%d challenges, want 2", len(hs))
	}
	for i, alg := range []string{"SHA-256", "MD5"} {
		v := hs[i].Value()
		for _, want := range []string{`Digest realm="pbx \"main\""`, "algorithm=" + alg + ",", `qop="auth"`, `opaque="` + a.opaque + `"`, "stale=true"} {
			if !strings.Contains(v, want) {
				t.Fatalf("challenge %d %q lacks %q", i, v, want)
			}
		}
		if hs[i].Name() != "WWW-Authenticate" {
			t.Fatalf("header %s", hs[i].Name())
		}
	}
}

// renderDigest writes creds back as a header, quoting every value.
func renderDigest(c digestCreds) string {
	q := func(s string) string { return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"` }
	parts := []string{"username=" + q(c.Username), "realm=" + q(c.Realm), "nonce=" + q(c.Nonce), "uri=" + q(c.URI), "response=" + q(c.Response)}
	for _, kv := range [][2]string{{"algorithm", c.Algorithm}, {"cnonce", c.CNonce}, {"opaque", c.Opaque}, {"qop", c.QOP}, {"nc", c.NC}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+q(kv[1]))
		}
	}
	return "Digest " + strings.Join(parts, ", ")
}

// FuzzParseDigestAuthorization: no panic on any input; whatever parses has
// the required fields and survives a render/parse round trip unchanged.
func FuzzParseDigestAuthorization(f *testing.F) {
	f.Add(`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf", nc=00000001, cnonce="f2", qop=auth, response="7539", opaque="FQhe"`)
	f.Add(`Digest username="a\"b", realm="r", nonce="n", uri="u", response="0"`)
	f.Add(`digest ,,username=x,realm=y,nonce=z,uri=w,response=v`)
	f.Add(`Digest username="a`)
	f.Add(`Basic abc`)
	f.Fuzz(func(t *testing.T, v string) {
		c, err := parseDigestAuthorization(v)
		if err != nil {
			if !errors.Is(err, ErrDigestSyntax) {
				t.Fatalf("error %v does not wrap ErrDigestSyntax", err)
			}
			return
		}
		if c.Username == "" || c.Realm == "" || c.Nonce == "" || c.URI == "" || c.Response == "" {
			t.Fatalf("accepted without a required field: %+v", c)
		}
		r := renderDigest(c)
		if len(r) > maxAuthHeader {
			return // quoting grew a value-heavy header past the cap
		}
		again, err := parseDigestAuthorization(r)
		if err != nil || again != c {
			t.Fatalf("round trip: %+v -> %v %+v", c, err, again)
		}
	})
}
