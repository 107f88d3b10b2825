package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var fullEnv = env(map[string]string{"WA_ACCESS_TOKEN": "tok", "WA_APP_SECRET": "sec", "WA_VERIFY_TOKEN": "ver", "PBX_PASSWORD": "p:w#1", "PBX_IN_PASSWORD": "in-secret"})

func TestExampleLoads(t *testing.T) {
	b, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("example.yaml", b, fullEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.WhatsApp.AccessToken != "tok" || c.SIP.Trunks[0].Auth.Password != "p:w#1" {
		t.Fatalf("env not expanded: %+v", c.WhatsApp)
	}
	if c.WhatsApp.AcceptDeadline.D() != 30*time.Second || c.Media.OpusComplexity != 5 || c.SIP.Trunks[0].DTMFPT != 101 {
		t.Fatalf("defaults: %+v %+v", c.WhatsApp, c.Media)
	}
	if c.Routes["support"].Targets[0].RingTimeout.D() != 25*time.Second {
		t.Fatal("ring timeout")
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	base, _ := os.ReadFile("example.yaml")
	cases := []struct {
		name, from, to string
		env            func(string) (string, bool)
		want           []string
	}{
		{"missing env", "", "", env(nil), []string{"line 9: whatsapp.access_token: environment variable WA_ACCESS_TOKEN is not set"}},
		{"unknown key", "ring_timeout: 25s", "ring_timout: 25s", fullEnv, []string{"line 41: routes.support.targets[0].ring_timout: unknown key"}},
		{"bad codec", "[ PCMU, PCMA ]", "[ PCMU, G729 ]", fullEnv, []string{"line 27: sip.trunks[0].codecs[1]: \"G729\" is not one of PCMU, PCMA, opus"}},
		{"bad duration", "accept_deadline: 30s", "accept_deadline: soon", fullEnv, []string{"line 12", "not a duration"}},
		{"undefined trunk", "trunk: pbx-main, ring", "trunk: pbx-x, ring", fullEnv, []string{"line 41: routes.support.targets[0].trunk: trunk \"pbx-x\" is not defined"}},
		{"early media", "early_media: ignore", "early_media: maybe", fullEnv, []string{"line 29: sip.trunks[0].early_media"}},
		{"ring too long", "ring_timeout: 25s", "ring_timeout: 45s", fullEnv, []string{"ring_timeout: 45s must be >0 and fit in whatsapp.accept_deadline"}},
		{"ports", "20000-29999", "29999-20000", fullEnv, []string{"line 18: media.rtp_ports"}},
		{"national needs cc", "caller_id: e164_plus", "caller_id: national", fullEnv, []string{"sip.trunks[0].country_code: caller_id: national needs"}},
		{"caller id", "caller_id: e164_plus", "caller_id: local", fullEnv, []string{"line 30: sip.trunks[0].caller_id: \"local\" is not one of"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(string(base), tc.from, tc.to, 1)
			_, err := Parse("x.yaml", []byte(b), tc.env)
			if err == nil {
				t.Fatal("expected an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("not ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("example.yaml")
	f.Add(b)
	f.Add([]byte("routes: {a: {targets: [ {uri: x} ]}}"))
	f.Add([]byte("sip: [1,2]"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse("f.yaml", in, fullEnv)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

// TestSecretFiles: ${file:/path} reads a secret from its own file (a Docker
// or Kubernetes secret), one trailing newline trimmed; a missing or empty
// file is an error naming the key and the path, never the content.
func TestSecretFiles(t *testing.T) {
	base, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := dir + "/app_secret"
	if err := os.WriteFile(good, []byte("s3cr3t-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := dir + "/empty"
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	with := func(ref string) []byte {
		return []byte(strings.Replace(string(base), "${WA_APP_SECRET}", ref, 1))
	}
	c, err := Parse("x.yaml", with("${file:"+good+"}"), fullEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.WhatsApp.AppSecret != "s3cr3t-from-file" {
		t.Errorf("app_secret %q, want the file's content without its newline", c.WhatsApp.AppSecret)
	}
	for _, tc := range []struct{ ref, want string }{
		{"${file:" + dir + "/missing}", "whatsapp.app_secret: secret file open " + dir + "/missing"},
		{"${file:" + empty + "}", "whatsapp.app_secret: secret file " + empty + ": empty"},
	} {
		_, err := Parse("x.yaml", with(tc.ref), fullEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.ref, err, tc.want)
		}
	}
}
