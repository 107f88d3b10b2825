package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The example's outbound settings load with Meta's documented limits as
// defaults, and the business number of a trunk's calls is found.
func TestOutboundDefaultsAndNumber(t *testing.T) {
	b, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("example.yaml", b, fullEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Outbound.Limits
	if l.RequestsPer24h != 1 || l.RequestsPer7d != 2 || l.ConnectedPer24h != 100 || l.InitiationsPer24h != 10000 ||
		l.WarnAfterUnanswered != 2 || l.RevokeAfterUnanswered != 4 || l.CacheTTL.D() != time.Minute || l.GetRate != 5 {
		t.Errorf("limits %+v", l)
	}
	if c.Outbound.NoAnswerTimeout.D() != 45*time.Second || c.SIP.Server.Unauthorized != "reject" || c.SIP.Server.NonceTTL.D() != 5*time.Minute {
		t.Errorf("outbound %+v server %+v", c.Outbound, c.SIP.Server)
	}
	in := c.SIP.Trunks[0].Inbound
	if in == nil || in.Username != "pbx" || in.Password != "in-secret" || len(in.Allow) != 1 {
		t.Fatalf("inbound %+v", in)
	}
	if n := c.BusinessNumberFor(&c.SIP.Trunks[0], ""); n == nil || n.PhoneNumberID != "1234567890" {
		t.Errorf("business number %+v", n)
	}
	if n := c.BusinessNumberFor(&c.SIP.Trunks[0], "nope"); n == nil || n.PhoneNumberID != "1234567890" {
		t.Errorf("an unknown header value falls back to the trunk's number, got %+v", n)
	}
	p, err := ParsePrefix("10.1.2.3")
	if err != nil || p.Bits() != 32 {
		t.Errorf("ParsePrefix(10.1.2.3) = %v, %v", p, err)
	}
}

func TestOutboundErrors(t *testing.T) {
	base, _ := os.ReadFile("example.yaml")
	cases := []struct{ name, from, to, want string }{
		{"bad allow", "allow: [ 10.0.0.0/8 ]", "allow: [ 10.0.0.0/33 ]", `sip.trunks[0].inbound.allow[0]: "10.0.0.0/33" is not an IP address or CIDR`},
		{"open trunk", "inbound: { allow: [ 10.0.0.0/8 ], username: pbx, password: \"${PBX_IN_PASSWORD}\" }", "inbound: { allow: [ ] }", "sip.trunks[0].inbound: needs allow, or username and password"},
		{"unauthorized", "store: { driver: sqlite, dsn: ./ponte.db }", "store: { driver: sqlite, dsn: ./ponte.db }\nsip_x: 1", "sip_x: unknown key"},
		{"no answer", "no_answer_timeout: 45s", "no_answer_timeout: 1s", "outbound.no_answer_timeout: 1s is under 5s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(string(base), tc.from, tc.to, 1)
			if b == string(base) {
				t.Fatalf("%q not in example.yaml", tc.from)
			}
			_, err := Parse("x.yaml", []byte(b), fullEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
