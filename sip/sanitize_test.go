package sip_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ponte-gw/ponte/sip"
)

func TestSanitizeHeaderValue(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "wa-123:abc", 0, "wa-123:abc"},
		{"crlf injection", "x\r\nVia: SIP/2.0/UDP evil", 0, "x%0D%0AVia: SIP/2.0/UDP evil"},
		{"bare lf and nul", "a\nb\x00c", 0, "a%0Ab%00c"},
		{"non-ascii utf8", "José", 0, "Jos%C3%A9"},
		{"tab and del", "a\tb\x7f", 0, "a%09b%7F"},
		{"trim spaces", "  v  ", 0, "v"},
		{"cap plain", strings.Repeat("a", 300), 0, strings.Repeat("a", 256)},
		{"cap custom", "abcdefgh", 5, "abcde"},
		{"cap never splits escape", "abcd\x01", 6, "abcd"},
		{"escape fits exactly", "abc\x01", 6, "abc%01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sip.SanitizeHeaderValue(tc.in, tc.max); got != tc.want {
				t.Fatalf("SanitizeHeaderValue(%q,%d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func TestQuoteDisplayName(t *testing.T) {
	tests := []struct{ in, want string }{
		{`Maria`, `Maria`},
		{`Bob "the" \ builder`, `Bob \"the\" \\ builder`},
		{"evil\r\nVia: x", "evilVia: x"},
		{"Zoë 😀", "Zoë 😀"},
		{"bad\xffutf8", "badutf8"},
		{strings.Repeat("é", 100), strings.Repeat("é", 64)},
	}
	for _, tc := range tests {
		if got := sip.QuoteDisplayName(tc.in); got != tc.want {
			t.Errorf("QuoteDisplayName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEscapeUser(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+5511999990000", "+5511999990000"},
		{"BR.abc-1_2", "BR.abc-1_2"},
		{"a@b:c>d e", "a%40b%3Ac%3Ed%20e"},
		{"x;y?z", "x%3By%3Fz"},
	}
	for _, tc := range tests {
		if got := sip.EscapeUser(tc.in); got != tc.want {
			t.Errorf("EscapeUser(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    sip.Reason
		want string
	}{
		{sip.Reason{Protocol: "Q.850", Cause: 16, Text: "Normal call clearing"}, `Q.850;cause=16;text="Normal call clearing"`},
		{sip.Reason{Protocol: "SIP", Cause: 487}, `SIP;cause=487`},
		{sip.Reason{Protocol: "Q.850", Cause: 17, Text: "busy \"x\"\r\n"}, `Q.850;cause=17;text="busy \"x\""`},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v: got %q want %q", tc.r, got, tc.want)
		}
	}
}

func FuzzSanitizeHeaderValue(f *testing.F) {
	f.Add("x\r\nVia: evil", 256)
	f.Add("José ☎", 10)
	f.Add(strings.Repeat("\x01", 100), 3)
	f.Fuzz(func(t *testing.T, in string, max int) {
		if max > 4096 || max < -10 {
			return
		}
		out := sip.SanitizeHeaderValue(in, max)
		limit := max
		if limit <= 0 {
			limit = sip.DefaultMaxHeaderValue
		}
		if len(out) > limit {
			t.Fatalf("len %d > %d", len(out), limit)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c > 0x7E {
				t.Fatalf("byte %#x in output %q", c, out)
			}
		}
		if i := strings.LastIndexByte(out, '%'); i >= 0 && i > len(out)-3 && strings.Count(in, "%") == 0 {
			t.Fatalf("escape cut in half: %q", out)
		}
		// Display names obey the same "never CR/LF" rule and stay valid UTF-8.
		q := sip.QuoteDisplayName(in)
		if strings.ContainsAny(q, "\r\n") || !utf8.ValidString(q) || utf8.RuneCountInString(q) > 2*sip.MaxDisplayName {
			t.Fatalf("bad display name %q", q)
		}
		// Every '"' in the quoted name is escaped.
		for i := 0; i < len(q); i++ {
			if q[i] == '\\' {
				i++
				continue
			}
			if q[i] == '"' {
				t.Fatalf("unescaped quote in %q", q)
			}
		}
	})
}
