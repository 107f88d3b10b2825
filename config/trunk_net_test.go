package config

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// withTrunkNet adds lines under the example's first trunk (after
// options_interval, line 32).
func withTrunkNet(t *testing.T, lines string) []byte {
	t.Helper()
	b, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "      options_interval: 0s         # e.g. 30s: OPTIONS pings; two unanswered mark the trunk down (0 = off)\n"
	if !strings.Contains(string(b), anchor) {
		t.Fatal("example.yaml changed: anchor line not found")
	}
	return []byte(strings.Replace(string(b), anchor, anchor+lines, 1))
}

func TestTrunkAdvertiseValid(t *testing.T) {
	cases := []struct {
		name, yaml     string
		host           string
		media          netip.Addr
		rewriteContact bool
	}{
		{"unset", "", "", netip.Addr{}, false},
		{"public ip both", "      advertise: { sip_host: 203.0.113.10, media_ip: 203.0.113.10 }\n", "203.0.113.10", netip.MustParseAddr("203.0.113.10"), false},
		{"host and port", "      advertise:\n        sip_host: \"gw.example.com:5080\"\n", "gw.example.com:5080", netip.Addr{}, false},
		{"ipv6 with port", "      advertise: { sip_host: \"[2001:db8::1]:5060\", media_ip: \"2001:db8::1\" }\n", "[2001:db8::1]:5060", netip.MustParseAddr("2001:db8::1"), false},
		{"bare ipv6", "      advertise: { sip_host: \"2001:db8::2\" }\n", "2001:db8::2", netip.Addr{}, false},
		{"rewrite contact", "      rewrite_contact: true\n", "", netip.Addr{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.yaml", withTrunkNet(t, tc.yaml), fullEnv)
			if err != nil {
				t.Fatal(err)
			}
			tr := c.SIP.Trunks[0]
			if tr.Advertise.SIPHost != tc.host || tr.Advertise.MediaAddr() != tc.media || tr.RewriteContact != tc.rewriteContact {
				t.Fatalf("got sip_host %q media %v rewrite_contact %v, want %q %v %v",
					tr.Advertise.SIPHost, tr.Advertise.MediaAddr(), tr.RewriteContact, tc.host, tc.media, tc.rewriteContact)
			}
		})
	}
}

func TestTrunkAdvertiseErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"media not ip", "      advertise: { media_ip: pbx.example.com }\n",
			`line 33: sip.trunks[0].advertise.media_ip: "pbx.example.com" is not an IP address`},
		{"media unspecified", "      advertise: { media_ip: 0.0.0.0 }\n",
			`line 33: sip.trunks[0].advertise.media_ip: "0.0.0.0" cannot receive RTP`},
		{"media multicast", "      advertise: { media_ip: 239.1.1.1 }\n",
			`sip.trunks[0].advertise.media_ip: "239.1.1.1" cannot receive RTP`},
		{"host unspecified", "      advertise: { sip_host: 0.0.0.0 }\n",
			`line 33: sip.trunks[0].advertise.sip_host: "0.0.0.0": 0.0.0.0 is not reachable`},
		{"bad port", "      advertise: { sip_host: \"gw.example.com:70000\" }\n",
			`sip.trunks[0].advertise.sip_host: "gw.example.com:70000": port "70000" is not 1..65535`},
		{"uri not host", "      advertise: { sip_host: \"sip:gw@example.com\" }\n",
			`sip.trunks[0].advertise.sip_host: "sip:gw@example.com": want an IP address or a host name`},
		{"space", "      advertise: { sip_host: \"gw example.com\" }\n",
			`sip.trunks[0].advertise.sip_host: "gw example.com": want an IP address or a host name`},
		{"unknown key", "      advertise: { sip_ip: 203.0.113.10 }\n",
			`line 33: sip.trunks[0].advertise.sip_ip: unknown key`},
		{"rewrite not bool", "      rewrite_contact: sometimes\n", `line 33`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", withTrunkNet(t, tc.yaml), fullEnv)
			if err == nil {
				t.Fatal("expected an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("not ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestCheckSIPHost(t *testing.T) {
	for _, ok := range []string{"203.0.113.10", "203.0.113.10:5080", "gw.example.com", "gw-1.example.com.", "::1", "[::1]:5060", "[2001:db8::1]", "localhost"} {
		if err := checkSIPHost(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ":5060", "gw..example.com", "-gw.example.com", "gw.example.com:0", "gw.example.com:x", "[::]:5060", "a@b", "gw.example.com/x", "[::1"} {
		if err := checkSIPHost(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
