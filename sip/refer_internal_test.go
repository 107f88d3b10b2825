package sip

import (
	"strings"
	"testing"
)

func TestReferTarget(t *testing.T) {
	for in, want := range map[string]string{
		"<sip:2000@pbx.example.com>":            "sip:2000@pbx.example.com",
		`"Sales" <sip:2000@pbx;user=phone?X=1>`: "sip:2000@pbx;user=phone",
		"sip:2000@pbx;tag=x":                    "sip:2000@pbx",
		"<tel:+5511999999999>":                  "tel:+5511999999999",
		"<http://evil>":                         "",
		"<sip:>":                                "",
		"<sip:2000@pbx":                         "",
		"sip:>":                                 "",
	} {
		got, ok := referTarget(in)
		if got != want || ok != (want != "") {
			t.Errorf("referTarget(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func FuzzReferTarget(f *testing.F) {
	f.Add("<sip:2000@pbx.example.com?Replaces=x>")
	f.Add(`"A" <sips:a@b;transport=tls>`)
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := referTarget(s)
		if ok && (strings.ContainsAny(got, "<>?") || !strings.Contains(got, ":")) {
			t.Fatalf("referTarget(%q) = %q", s, got)
		}
	})
}
