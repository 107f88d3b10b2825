package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestPSTNCheck(t *testing.T) {
	p := &PSTN{Trunks: []string{"carrier"}, Prefixes: []string{"+1900", "0800"}}
	tests := []struct {
		trunk, uri string
		refused    string // substring of the error; "" allowed
	}{
		{"carrier", "sip:2001@pbx", `trunk "carrier" is a PSTN trunk`},
		{"pbx", "sip:+19005551234@gw", `PSTN prefix "+1900"`},
		{"pbx", "sip:0019005551234@gw", `PSTN prefix "+1900"`},
		{"pbx", "tel:+1-900-555-1234", `PSTN prefix "+1900"`},
		{"pbx", "sip:%2B19005551234@gw", `PSTN prefix "+1900"`},
		{"pbx", "<sip:+19005551234@gw;transport=tcp>", `PSTN prefix "+1900"`},
		{"pbx", "sip:+19005551234;phone-context=x@gw", `PSTN prefix "+1900"`},
		{"pbx", "SIPS:+1(900)5551234@gw", `PSTN prefix "+1900"`},
		{"pbx", "sip:08001234@gw", `PSTN prefix "0800"`},
		{"pbx", "sip:%ZZ@gw", "malformed escape"},
		{"pbx", "sip:+15551234@gw", ""},
		{"pbx", "sip:19005551234@gw", ""}, // national form: not "+1900"
		{"pbx", "sip:2001@pbx", ""},
		{"pbx", "sip:pbx.example.com", ""},
		{"pbx", "sip:pbx.example.com;user=phone?x=+1900", ""},
		{"", "sip:+19005551234@gw", `PSTN prefix "+1900"`},
	}
	for _, tc := range tests {
		err := p.Check(tc.trunk, tc.uri)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("Check(%q, %q) = %v, want allowed", tc.trunk, tc.uri, err)
		case tc.refused != "" && (err == nil || !errors.Is(err, ErrPSTNPolicy) || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("Check(%q, %q) = %v, want ErrPSTNPolicy with %q", tc.trunk, tc.uri, err, tc.refused)
		}
	}
	allow := &PSTN{Trunks: []string{"carrier"}, Prefixes: []string{"+1900"}, Allow: true}
	if err := allow.Check("carrier", "sip:+19005551234@gw"); err != nil {
		t.Errorf("allow: true still refuses: %v", err)
	}
	var none *PSTN
	if err := none.Check("carrier", "sip:+19005551234@gw"); err != nil {
		t.Errorf("nil policy refuses: %v", err)
	}
}

// FuzzPSTNCheck: percent-encoding the user part never changes the verdict
// (a REFER's Refer-To is written by the far end, which may encode digits).
func FuzzPSTNCheck(f *testing.F) {
	p := &PSTN{Prefixes: []string{"+1900", "0800"}}
	f.Add("+19005551234")
	f.Add("0019005551234")
	f.Add("2001")
	f.Fuzz(func(t *testing.T, user string) {
		if strings.ContainsAny(user, "@;?:%<>") {
			return
		}
		var enc strings.Builder
		for i := 0; i < len(user); i++ {
			fmt.Fprintf(&enc, "%%%02X", user[i])
		}
		plain := p.Check("pbx", "sip:"+user+"@gw")
		coded := p.Check("pbx", "sip:"+enc.String()+"@gw")
		if (plain == nil) != (coded == nil) {
			t.Fatalf("user %q: plain %v, encoded %v", user, plain, coded)
		}
		if n := normalNumber(user); strings.HasPrefix(n, "+1900") && plain == nil {
			t.Fatalf("user %q (%q) under +1900 allowed", user, n)
		}
	})
}

// withServer puts a sip.server block into the example configuration and a
// PSTN carrier trunk next to the PBX.
func withServer(t *testing.T, server, target string) string {
	t.Helper()
	b, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range [][2]string{
		{"  trunks:\n    - name: pbx-main", "  server: " + server + "\n  trunks:\n    - name: carrier\n      address: sbc.carrier.example:5060\n      transport: udp\n    - name: pbx-main"},
		{`uri: "sip:sales@pbx.example.com", trunk: pbx-main`, target},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("%q not in example.yaml", r[0])
		}
		s = strings.Replace(s, r[0], r[1], 1)
	}
	return s
}

func TestPSTNConfig(t *testing.T) {
	const pbxTarget = `uri: "sip:sales@pbx.example.com", trunk: pbx-main`
	tests := []struct {
		name, server, target string
		want                 []string // error lines; none: valid
	}{
		{"PSTN trunk as route target", "{ pstn: { trunks: [ carrier ] } }", `uri: "sip:sales@sbc.carrier.example", trunk: carrier`,
			[]string{`routes.support.targets[0]: PSTN policy: trunk "carrier" is a PSTN trunk: WhatsApp calls may not be bridged to the PSTN`}},
		{"PSTN prefix as route target", `{ pstn: { prefixes: [ "+1900" ] } }`, `uri: "sip:+19005550000@pbx.example.com", trunk: pbx-main`,
			[]string{`routes.support.targets[0]: PSTN policy: "sip:+19005550000@pbx.example.com" is under the PSTN prefix "+1900"`}},
		{"PBX trunk listed: inbound and outbound_trunk too", "{ pstn: { trunks: [ pbx-main ] } }", pbxTarget,
			[]string{"routes.support.targets[0]: PSTN policy", "sip.trunks[1].inbound: PSTN policy", "whatsapp.numbers[0].outbound_trunk: PSTN policy"}},
		{"allow: true", "{ pstn: { trunks: [ carrier ], allow: true } }", `uri: "sip:sales@sbc.carrier.example", trunk: carrier`, nil},
		{"unknown PSTN trunk", "{ pstn: { trunks: [ nosuch ] } }", pbxTarget, []string{`sip.server.pstn.trunks[0]: trunk "nosuch" is not defined`}},
		{"bad prefix", `{ pstn: { prefixes: [ "+19a" ] } }`, pbxTarget, []string{`sip.server.pstn.prefixes[0]: "+19a": want digits`}},
		{"carrier unused", "{ pstn: { trunks: [ carrier ], prefixes: [ \"+1900\" ] } }", pbxTarget, nil},
		{"negative invite rate", "{ invite_rate: -1 }", pbxTarget, []string{"sip.server.invite_rate: rate -1 and burst 40 must not be negative"}},
		{"negative ban", "{ ban: { for: -1m } }", pbxTarget, []string{"sip.server.ban.for: -1m0s must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(withServer(t, tc.server, tc.target)), fullEnv)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestSecurityDefaults(t *testing.T) {
	tests := []struct {
		server      string
		rate        float64
		burst       int
		after       int
		within, ban time.Duration
	}{
		{"{ unauthorized: reject }", 20, 40, 10, time.Minute, 10 * time.Minute},
		{"{ invite_rate: 5, invite_burst: 8, ban: { after: 3, within: 30s, for: 1h } }", 5, 8, 3, 30 * time.Second, time.Hour},
		{"{ ban: { for: 0s } }", 20, 40, 10, time.Minute, -1},
	}
	for _, tc := range tests {
		c, err := Parse("x.yaml", []byte(withServer(t, tc.server, `uri: "sip:sales@pbx.example.com", trunk: pbx-main`)), fullEnv)
		if err != nil {
			t.Fatalf("%s: %v", tc.server, err)
		}
		s := c.SIP.Server
		if s.InviteRate != tc.rate || s.InviteBurst != tc.burst || s.Ban.After != tc.after || s.Ban.Within.D() != tc.within || s.Ban.Period() != tc.ban {
			t.Errorf("%s: rate %v burst %d after %d within %s period %s", tc.server, s.InviteRate, s.InviteBurst, s.Ban.After, s.Ban.Within.D(), s.Ban.Period())
		}
		if c.PSTNPolicy() != &c.SIP.Server.PSTN {
			t.Error("PSTNPolicy does not point at the configuration")
		}
	}
}
