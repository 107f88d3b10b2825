package logmask

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestNumber(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"+5511987654321", "+55119****4321"}, // the brief's example: 13 digits
		{"5511987654321", "55119****4321"},
		{"16315553602", "163****3602"},        // 11 digits: at least four starred
		{"+1 (631) 555-3602", "+163****3602"}, // punctuation dropped
		{"12345678", "****5678"},
		{"1234567", "****567"},
		{"123456", "***456"},
		{"12345", "12345"},                       // too short to be a phone number: not one
		{"sales", "sales"},                       // not a number
		{"US.1234567890", "US.1234567890"},       // a BSUID is not a phone number
		{"1234567890123456", "1234567890123456"}, // 16 digits: longer than E.164
	} {
		if got := Number(c.in); got != c.want {
			t.Errorf("Number(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestHandlerMasksAtInfo(t *testing.T) {
	log := func(level slog.Level) string {
		var b bytes.Buffer
		l := slog.New(slog.NewTextHandler(&b, HandlerOptions(level)))
		l.Info("call", "from", "+5511987654321", "to_uri", "sip:+5511987654321@pbx.example.com",
			"wacid", "wacid.HBgLMTIzNDU2Nzg5MDEyFQIAEhgg", "target", "sip:1000@pbx", "port", 5060,
			"route", "support")
		l.Debug("debug line", "from", "+5511987654321")
		return b.String()
	}
	info := log(slog.LevelInfo)
	if strings.Contains(info, "87654321") || strings.Contains(info, "debug line") {
		t.Errorf("info-level log shows a full number or a debug line:\n%s", info)
	}
	for _, want := range []string{"from=+55119****4321", "to_uri=sip:+55119****4321@pbx.example.com",
		"wacid=wacid.HBgLMTIzNDU2Nzg5MDEyFQIAEhgg", "target=sip:1000@pbx", "port=5060", "route=support"} {
		if !strings.Contains(info, want) {
			t.Errorf("info-level log lacks %q:\n%s", want, info)
		}
	}
	debug := log(slog.LevelDebug)
	if !strings.Contains(debug, "from=+5511987654321") {
		t.Errorf("debug-level log masks numbers:\n%s", debug)
	}
}

// Whatever comes in, the output never shows more than a masked number's
// kept digits, and non-numbers pass through unchanged.
func FuzzNumber(f *testing.F) {
	for _, s := range []string{"+5511987654321", "16315553602", "+1 (631) 555-3602", "abc", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Number(s)
		d := digits(s)
		if d == "" {
			if out != s {
				t.Fatalf("non-number %q changed to %q", s, out)
			}
			return
		}
		// At least four digits hidden, or half of a short number.
		if stars := strings.Count(out, "*"); stars < min(4, (len(d)+1)/2) {
			t.Fatalf("%q -> %q hides %d of %d digits", s, out, stars, len(d))
		}
		if len(strings.TrimPrefix(out, "+")) != len(d) {
			t.Fatalf("%q -> %q changes the digit count", s, out)
		}
	})
}
