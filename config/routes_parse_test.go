package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseSpan(t *testing.T) {
	cases := []struct {
		in         string
		start, end int
		err        string
	}{
		{"08:00-18:00", 480, 1080, ""},
		{"8:30-12:00", 510, 720, ""},
		{" 08:00 - 18:00 ", 480, 1080, ""},
		{"00:00-24:00", 0, 1440, ""},
		{"22:00-24:00", 1320, 1440, ""},
		{"22:00-00:00", 1320, 1440, ""},
		{"22:00-02:00", 1320, 1560, ""}, // past midnight: belongs to the day it starts
		{"23:59-23:58", 1439, 2878, ""},
		{"13:00-13:00", 0, 0, "starts and ends at the same time"},
		{"00:00-00:00", 0, 0, "starts and ends at the same time"},
		{"24:00-02:00", 0, 0, `start "24:00": hours are 00..23`},
		{"08:00-24:01", 0, 0, `end "24:01": hours are 00..23`},
		{"08:60-09:00", 0, 0, "minutes are 00..59"},
		{"8-18", 0, 0, "is not HH:MM"},
		{"08:00", 0, 0, "want HH:MM-HH:MM"},
		{"08:0-09:00", 0, 0, "is not HH:MM"},
		{"+8:00-09:00", 0, 0, "is not HH:MM"},
		{"108:00-09:00", 0, 0, "is not HH:MM"},
	}
	for _, tc := range cases {
		s, err := ParseSpan(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || s.Start != tc.start || s.End != tc.end {
			t.Errorf("%q: got %+v %v, want {%d %d}", tc.in, s, err, tc.start, tc.end)
		}
	}
	if got := (Span{1320, 1560}).String(); got != "22:00-02:00" {
		t.Errorf("String %q", got)
	}
	if got := (Span{0, 1440}).String(); got != "00:00-24:00" {
		t.Errorf("String %q", got)
	}
}

func TestParseDays(t *testing.T) {
	const (
		sun = 1 << iota
		mon
		tue
		wed
		thu
		fri
		sat
	)
	cases := []struct {
		in   string
		want Days
		err  string
	}{
		{"mon", mon, ""},
		{"MON-fri", mon | tue | wed | thu | fri, ""},
		{"sat,sun", sat | sun, ""},
		{"sat, sun", sat | sun, ""},
		{"fri-mon", fri | sat | sun | mon, ""}, // wraps over the weekend
		{"sun-sat", AllDays, ""},
		{"daily", AllDays, ""},
		{"mon-wed,fri", mon | tue | wed | fri, ""},
		{"mon-mon", 0, "starts and ends on the same day"},
		{"monday", 0, "is not a day or day range"},
		{"mon-", 0, "is not a day or day range"},
		{"mon,,tue", 0, "is not a day or day range"},
		{"", 0, "empty weekday key"},
		{"mon-fri-sat", 0, "is not a day or day range"},
	}
	for _, tc := range cases {
		d, err := ParseDays(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || d != tc.want {
			t.Errorf("%q: got %07b %v, want %07b", tc.in, d, err, tc.want)
		}
	}
}

func TestParseHolidayDate(t *testing.T) {
	cases := []struct {
		in     string
		yearly bool
		want   HolidayDate
		err    bool
	}{
		{"2026-12-25", false, HolidayDate{2026, time.December, 25}, false},
		{"2026-12-25", true, HolidayDate{0, time.December, 25}, false},
		{"12-25", false, HolidayDate{0, time.December, 25}, false},
		{"02-29", false, HolidayDate{0, time.February, 29}, false},
		{"2026-02-29", false, HolidayDate{}, true},
		{"2026-13-01", false, HolidayDate{}, true},
		{"25/12/2026", false, HolidayDate{}, true},
		{"13-01", false, HolidayDate{}, true},
	}
	for _, tc := range cases {
		h, err := ParseHolidayDate(tc.in, tc.yearly)
		if (err != nil) != tc.err || h != tc.want {
			t.Errorf("%q yearly=%v: got %+v %v, want %+v err=%v", tc.in, tc.yearly, h, err, tc.want, tc.err)
		}
	}
	y := HolidayDate{0, time.December, 25}
	if !y.Matches(2031, time.December, 25) || y.Matches(2031, time.December, 24) {
		t.Error("yearly match")
	}
	if d := (HolidayDate{2026, time.December, 25}); d.Matches(2027, time.December, 25) || !d.Matches(2026, time.December, 25) {
		t.Error("dated match")
	}
}

func TestMoveOn(t *testing.T) {
	type probe struct {
		code  int
		event string
		move  bool
	}
	cases := []struct {
		name   string
		items  []string
		probes []probe
		err    string
	}{
		{"defaults", nil, []probe{
			{code: 408, move: true}, {code: 480, move: true}, {code: 486, move: true},
			{code: 500, move: true}, {code: 503, move: true}, {code: 599, move: true},
			{code: 603, move: false}, {code: 404, move: false}, {code: 487, move: false}, {code: 302, move: false},
			{code: 200, move: false}, {code: 180, move: false},
			{event: EventRingTimeout, move: true}, {event: EventNoProvisionalTimeout, move: true}, {event: "other", move: false},
		}, ""},
		{"override replaces the default", []string{"486"}, []probe{
			{code: 486, move: true}, {code: 408, move: false}, {code: 503, move: false}, {event: EventRingTimeout, move: false},
		}, ""},
		{"default plus extras and a stop", []string{"default", "404", "-503", "-ring_timeout"}, []probe{
			{code: 404, move: true}, {code: 486, move: true}, {code: 500, move: true},
			{code: 503, move: false}, {event: EventRingTimeout, move: false}, {event: EventNoProvisionalTimeout, move: true},
		}, ""},
		{"exact beats class", []string{"-5xx", "502"}, []probe{{code: 502, move: true}, {code: 500, move: false}}, ""},
		{"603 can be made to move on", []string{"6xx"}, []probe{{code: 603, move: true}, {code: 486, move: false}}, ""},
		{"default may stop what it moves", []string{"-486", "default"}, []probe{{code: 486, move: false}, {code: 480, move: true}}, ""},
		{"bad", []string{"486", "busy"}, nil, `[1]: "busy" is not a SIP code`},
		{"not a failure", []string{"200"}, nil, "only final failure codes 300..699"},
		{"contradiction", []string{"5xx", "-5xx"}, nil, `[1]: "-5xx" contradicts entry [0] "5xx"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseMoveOn(tc.items)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, pr := range tc.probes {
				got := p.Code(pr.code)
				if pr.event != "" {
					got = p.Event(pr.event)
				}
				if got != pr.move {
					t.Errorf("%d%s: moves on = %v, want %v", pr.code, pr.event, got, pr.move)
				}
			}
		})
	}
}

func TestCheckURITemplate(t *testing.T) {
	ok := []string{"sip:{agent}@pbx.example.com", "sips:{agent}@pbx.example.com:5061;transport=tls", "sip:agent-{agent}@10.0.0.1", "SIP:{agent}@pbx"}
	for _, s := range ok {
		if err := CheckURITemplate(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	bad := map[string]string{
		"{agent}@pbx":                   "not a sip: or sips: URI",
		"sip:{agent}{agent}@pbx":        "exactly once (it has 2)",
		"sip:{agent}":                   "must be in the user part",
		"sip:pbx@{agent}":               "must be in the user part",
		"sip:{agent}@":                  "want sip:{agent}@host",
		"sip:{agent}@pbx <x>":           "want sip:{agent}@host",
		"sip:{agent}@pbx.example.com@x": "want sip:{agent}@host",
	}
	for s, want := range bad {
		if err := CheckURITemplate(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", s, err, want)
		}
	}
}

// FuzzParseSpan: a parsed span is well formed and its String parses back
// to the same span.
func FuzzParseSpan(f *testing.F) {
	for _, s := range []string{"08:00-18:00", "22:00-02:00", "00:00-24:00", "9:05-9:04", "24:00-01:00", "1:1-2:2", "-", "::-::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSpan(in)
		if err != nil {
			return
		}
		if s.Start < 0 || s.Start >= minutesPerDay || s.End <= s.Start || s.End-s.Start > minutesPerDay {
			t.Fatalf("%q: malformed %+v", in, s)
		}
		back, err := ParseSpan(s.String())
		if err != nil || back != s {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", in, s, s.String(), back, err)
		}
	})
}

// FuzzParseDays: a parsed key is a non-empty set of real weekdays, and every
// day it names on its own parses to a subset.
func FuzzParseDays(f *testing.F) {
	for _, s := range []string{"mon", "mon-fri", "sat,sun", "fri-mon", "daily", "Mon - Fri", "mon-mon", ",", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ParseDays(in)
		if err != nil {
			return
		}
		if d == 0 || d&^AllDays != 0 {
			t.Fatalf("%q: %07b", in, d)
		}
		for _, item := range strings.Split(in, ",") {
			sub, err := ParseDays(item)
			if err != nil || sub&^d != 0 {
				t.Fatalf("%q: item %q -> %07b %v not within %07b", in, item, sub, err, d)
			}
		}
	})
}

// FuzzParseMoveOn: never panics; a parsed policy answers for every code.
func FuzzParseMoveOn(f *testing.F) {
	f.Add("default,404,-503")
	f.Add("5xx,-5xx")
	f.Add("-ring_timeout,6xx")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParseMoveOn(strings.Split(in, ","))
		if err != nil {
			return
		}
		for c := 0; c < 800; c++ {
			if p.Code(c) && (c < 300 || c > 699) {
				t.Fatalf("%q: %d moves on", in, c)
			}
		}
	})
}
