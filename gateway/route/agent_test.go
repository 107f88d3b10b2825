package route

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// headers is a case-insensitive header lookup, as the gateway's wrapper over
// a SIP response is (RFC 3261 §7.3.5).
type headers map[string][]string

func (h headers) get(name string) []string {
	var out []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			out = append(out, v...)
		}
	}
	return out
}

func TestExtractAgent(t *testing.T) {
	cases := []struct {
		name, header string
		h            headers
		agent, src   string
	}{
		{"configured header", "X-Agent", headers{"x-agent": {"1007"}, "Contact": {"<sip:9999@10.0.0.5>"}}, "1007", "X-Agent"},
		{"configured header with a name-addr", "X-Agent", headers{"X-Agent": {`"Ana Silva" <sip:ana.silva@pbx.example.com>`}}, "ana.silva", "X-Agent"},
		{"configured header with a bare URI", "X-Agent", headers{"X-Agent": {"sip:1007@pbx;transport=tcp"}}, "1007", "X-Agent"},
		{"unusable configured header falls back to PAI", "X-Agent", headers{"X-Agent": {"Ana Silva"}, "P-Asserted-Identity": {`"Agent 7" <sip:1007@pbx.example.com>`}}, "1007", "P-Asserted-Identity"},
		{"no configured header: PAI", "", headers{"X-Agent": {"2000"}, "P-Asserted-Identity": {`"Agent 7" <sip:1007@pbx.example.com>`}, "Contact": {"<sip:9@h>"}}, "1007", "P-Asserted-Identity"},
		{"PAI prefers the sip identity over tel", "", headers{"P-Asserted-Identity": {"<tel:+15551234567>, <sip:1007@pbx.example.com>"}}, "1007", "P-Asserted-Identity"},
		{"PAI as two header fields", "", headers{"P-Asserted-Identity": {"<tel:+15551234567>", "<sip:1007@pbx.example.com>"}}, "1007", "P-Asserted-Identity"},
		{"PAI tel only", "", headers{"P-Asserted-Identity": {"<tel:+15551234567;cpc=ordinary>"}}, "+15551234567", "P-Asserted-Identity"},
		{"PAI without a user goes on to Contact", "", headers{"P-Asserted-Identity": {"<sip:pbx.example.com>"}, "Contact": {"<sip:1007@10.0.0.5:5060;transport=udp>;expires=60"}}, "1007", "Contact"},
		{"Contact without angle brackets: params are the header's", "", headers{"Contact": {"sip:1007@10.0.0.5;expires=60"}}, "1007", "Contact"},
		{"compact Contact", "", headers{"m": {"<sip:1007@10.0.0.5>"}}, "1007", "Contact"},
		{"escaped user is unescaped", "", headers{"Contact": {"<sip:%31007@10.0.0.5>"}}, "1007", "Contact"},
		{"password dropped", "", headers{"Contact": {"<sips:1007:secret@10.0.0.5>"}}, "1007", "Contact"},
		{"user parameters dropped", "", headers{"Contact": {"<sip:+5511999;phone-context=example.com@10.0.0.5;user=phone>"}}, "+5511999", "Contact"},
		{"quoted display name with brackets and commas", "", headers{"Contact": {`"Desk <3>, east" <sip:1007@10.0.0.5>`}}, "1007", "Contact"},
		{"case of scheme", "", headers{"Contact": {"<SIP:1007@10.0.0.5>"}}, "1007", "Contact"},
		{"user parameter after ; dropped", "", headers{"Contact": {"<sip:a;b@10.0.0.5>"}, "X-Agent": {"not configured"}}, "a", "Contact"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, src, ok := ExtractAgent(tc.header, tc.h.get)
			if !ok || a != tc.agent || src != tc.src {
				t.Fatalf("got %q from %q (ok=%v), want %q from %q", a, src, ok, tc.agent, tc.src)
			}
		})
	}
	none := []headers{
		{},
		{"Contact": {"<sip:10.0.0.5:5060>"}},  // no user part
		{"Contact": {"<sip:a%40b@10.0.0.5>"}}, // unescapes to a@b: not dialable as is
		{"Contact": {"<sip:a%zz@10.0.0.5>"}},  // bad escape
		{"P-Asserted-Identity": {`"unterminated <sip:1@h>`}},            // quote never closed
		{"Contact": {"<tel:+15551234567>"}},                             // a tel Contact is no SIP agent
		{"Contact": {"<sip:" + strings.Repeat("9", 65) + "@10.0.0.5>"}}, // too long
	}
	for i, h := range none {
		if a, src, ok := ExtractAgent("", h.get); ok {
			t.Errorf("case %d: got %q from %s, want none", i, a, src)
		}
	}
}

func TestExpandURI(t *testing.T) {
	const tpl = "sip:{agent}@pbx.example.com;transport=tcp"
	good := map[string]string{
		"1007":        "sip:1007@pbx.example.com;transport=tcp",
		"ana.silva":   "sip:ana.silva@pbx.example.com;transport=tcp",
		"+5511999":    "sip:+5511999@pbx.example.com;transport=tcp",
		"a-b_c!~*'()": "sip:a-b_c!~*'()@pbx.example.com;transport=tcp",
		"x&y=z$,":     "sip:x&y=z$,@pbx.example.com;transport=tcp",
	}
	for a, want := range good {
		if got, err := ExpandURI(tpl, a); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", a, got, err, want)
		}
	}
	for _, a := range []string{"", "a b", "a@b", "a;b", "a?b", "a/b", "a:b", "a%20b", "a<b", "é", "a\r\nVia: x", strings.Repeat("1", 65)} {
		if got, err := ExpandURI(tpl, a); !errors.Is(err, ErrBadAgent) {
			t.Errorf("%q: %q %v, want ErrBadAgent", a, got, err)
		}
	}
	if _, err := ExpandURI("sip:pbx.example.com", "1007"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad template: %v", err)
	}
}

func TestRouterAgentAndStickyURI(t *testing.T) {
	r := load(t, planRoute) // header: X-Agent
	h := headers{"X-Agent": {"2001"}, "P-Asserted-Identity": {"<sip:1007@pbx>"}}
	if a, src, ok := r.Agent(h.get); !ok || a != "2001" || src != "X-Agent" {
		t.Errorf("Agent: %q %q %v", a, src, ok)
	}
	if u, err := r.StickyURI("2001"); err != nil || u != "sip:2001@agents.example.com" {
		t.Errorf("StickyURI: %q %v", u, err)
	}
	plain := load(t, "  support:\n    targets: [ { uri: \"sip:a@pbx.example.com\", trunk: pbx } ]\n")
	if a, src, ok := plain.Agent(h.get); !ok || a != "1007" || src != SourcePAI {
		t.Errorf("Agent without sticky config: %q %q %v", a, src, ok)
	}
	if _, err := plain.StickyURI("1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("StickyURI without sticky config: %v", err)
	}
}

// FuzzExtractAgent: whatever the PBX sends, an extracted agent is valid and
// expands to a URI whose user part is exactly that agent.
func FuzzExtractAgent(f *testing.F) {
	f.Add("1007", `"Agent 7" <sip:1007@pbx>`, "<sip:1007@10.0.0.5>;expires=60")
	f.Add(`"a,b" <sip:x@y>`, "<tel:+1555>, <sip:%31@h>", "sip:u:p@h;x")
	f.Add("", `"unterminated`, "<sip:a;b@h>")
	f.Fuzz(func(t *testing.T, custom, pai, contact string) {
		h := headers{"X-Agent": {custom}, "P-Asserted-Identity": {pai}, "Contact": {contact}}
		a, _, ok := ExtractAgent("X-Agent", h.get)
		if !ok {
			return
		}
		if err := ValidAgent(a); err != nil {
			t.Fatalf("extracted %q: %v", a, err)
		}
		u, err := ExpandURI("sip:{agent}@pbx.example.com", a)
		if err != nil {
			t.Fatalf("expand %q: %v", a, err)
		}
		if back, isTel := uriUser(u); isTel || back != a {
			t.Fatalf("%q -> %q -> user %q", a, u, back)
		}
	})
}

func TestMemory(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	m := NewMemory(time.Hour, 16)
	m.Remember("k", "1007", t0)
	m.Remember("k", "1008", t0.Add(-time.Minute)) // an older call ending late does not win
	if a, at, ok := m.LastAgent("k"); !ok || a != "1007" || !at.Equal(t0) {
		t.Fatalf("LastAgent: %q %v %v", a, at, ok)
	}
	m.Remember("k", "1009", t0.Add(time.Minute))
	if a, _, _ := m.LastAgent("k"); a != "1009" {
		t.Fatalf("newer answer: %q", a)
	}
	m.Remember("", "1", t0)
	m.Remember("x", "", t0)
	if _, _, ok := m.LastAgent(""); ok || m.Len() != 1 {
		t.Fatalf("empty key or agent stored: len %d", m.Len())
	}
	// Full of fresh entries: the oldest eighth goes, never the newest.
	for i := 0; i < 100; i++ {
		m.Remember(string(rune('A'+i%26))+string(rune('a'+i/26)), "1", t0.Add(time.Duration(i)*time.Second))
		if m.Len() > 16 {
			t.Fatalf("len %d over max", m.Len())
		}
	}
	if _, _, ok := m.LastAgent("Vd"); !ok { // i = 99, the newest
		t.Fatal("newest entry evicted")
	}
	// Entries past the window are dropped first when full.
	m2 := NewMemory(time.Hour, 4)
	for i, k := range []string{"a", "b", "c"} {
		m2.Remember(k, "1", t0.Add(time.Duration(i)*time.Minute))
	}
	m2.Remember("d", "1", t0.Add(3*time.Hour))
	m2.Remember("e", "1", t0.Add(3*time.Hour))
	if m2.Len() != 2 {
		t.Fatalf("expired entries kept: len %d", m2.Len())
	}
}
