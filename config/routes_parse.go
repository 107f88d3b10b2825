package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file holds the parsers for the small languages inside a route:
// opening ranges ("08:00-18:00"), weekday keys ("mon-fri"), holiday dates
// and the move_on policy. They are exported because package gateway/route
// compiles a validated route with the same functions, so the two can never
// disagree about what a string means.

// minutesPerDay is the length of a wall-clock day. A range is measured in
// wall-clock minutes, so on a daylight-saving day it may last an hour more or
// less in real time; that is what "we open at 08:00" means to a business.
const minutesPerDay = 24 * 60

// Span is one HH:MM-HH:MM range in minutes after the local midnight of the
// day it starts on. End > Start always; End > 1440 means the range runs past
// midnight into the next day (22:00-02:00 is {1320, 1560}) and still belongs
// to the day it starts on. A span is never longer than a day.
type Span struct {
	Start, End int
}

// Contains reports whether minute m (0..2879, counted from the midnight the
// span is anchored on) falls in [Start, End).
func (s Span) Contains(m int) bool { return s.Start <= m && m < s.End }

func (s Span) String() string {
	eh := (s.End / 60) % 24
	if s.End == minutesPerDay {
		eh = 24 // "22:00-24:00" reads better than "22:00-00:00" and parses back the same
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d", s.Start/60, s.Start%60, eh, s.End%60)
}

// ParseSpan parses "HH:MM-HH:MM" (the hour may have one digit). An end
// earlier than the start runs past midnight; "24:00" is allowed as an end
// only; a range that starts and ends at the same minute is refused because it
// could mean nothing or the whole day (write 00:00-24:00 for that).
func ParseSpan(s string) (Span, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Span{}, fmt.Errorf("%q: want HH:MM-HH:MM (e.g. 08:00-18:00)", s)
	}
	start, err := parseHM(strings.TrimSpace(a), false)
	if err != nil {
		return Span{}, fmt.Errorf("%q: start %v", s, err)
	}
	end, err := parseHM(strings.TrimSpace(b), true)
	if err != nil {
		return Span{}, fmt.Errorf("%q: end %v", s, err)
	}
	if end == start {
		return Span{}, fmt.Errorf("%q: starts and ends at the same time (write 00:00-24:00 for the whole day)", s)
	}
	if end < start {
		end += minutesPerDay // past midnight: belongs to the day it starts on
	}
	return Span{start, end}, nil
}

// parseHM reads H:MM or HH:MM with hours 0..23 (24:00 too when allowed).
func parseHM(s string, allow24 bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 || !digits(h) || !digits(m) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	hh, _ := strconv.Atoi(h)
	mm, _ := strconv.Atoi(m)
	switch {
	case mm > 59:
		return 0, fmt.Errorf("%q: minutes are 00..59", s)
	case hh == 24 && mm == 0 && allow24:
		return minutesPerDay, nil
	case hh > 23:
		return 0, fmt.Errorf("%q: hours are 00..23 (24:00 only as an end)", s)
	}
	return hh*60 + mm, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Days is a set of weekdays, bit i set for time.Weekday(i).
type Days uint8

// AllDays is every day of the week.
const AllDays Days = 1<<7 - 1

// Has reports whether d includes w.
func (d Days) Has(w time.Weekday) bool { return d&(1<<uint(w)) != 0 }

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// ParseDays parses a weekly key: a comma-separated list of days (mon, tue,
// wed, thu, fri, sat, sun) and ranges of days ("mon-fri"; "fri-mon" wraps
// over the weekend), or "daily". Case and spaces do not matter.
func ParseDays(s string) (Days, error) {
	if strings.TrimSpace(s) == "" {
		return 0, errors.New("empty weekday key (want e.g. mon, mon-fri, sat,sun or daily)")
	}
	var d Days
	for _, item := range strings.Split(s, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "daily" {
			d |= AllDays
			continue
		}
		a, b, isRange := strings.Cut(item, "-")
		from, ok1 := dayIndex(strings.TrimSpace(a))
		to, ok2 := from, true
		if isRange {
			to, ok2 = dayIndex(strings.TrimSpace(b))
		}
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("%q: %q is not a day or day range (use mon, tue, wed, thu, fri, sat, sun, mon-fri or daily)", s, item)
		}
		if isRange && from == to {
			return 0, fmt.Errorf("%q: range %q starts and ends on the same day (write the day alone, or daily)", s, item)
		}
		for i := from; ; i = (i + 1) % 7 {
			d |= 1 << uint(i)
			if i == to {
				break
			}
		}
	}
	return d, nil
}

func dayIndex(s string) (int, bool) {
	for i, n := range dayNames {
		if s == n {
			return i, true
		}
	}
	return 0, false
}

// HolidayDate is a calendar date; Year 0 means every year.
type HolidayDate struct {
	Year  int
	Month time.Month
	Day   int
}

// Matches reports whether the civil date y-m-d is this holiday.
func (h HolidayDate) Matches(y int, m time.Month, d int) bool {
	return h.Month == m && h.Day == d && (h.Year == 0 || h.Year == y)
}

func (h HolidayDate) String() string {
	if h.Year == 0 {
		return fmt.Sprintf("%02d-%02d", int(h.Month), h.Day)
	}
	return fmt.Sprintf("%04d-%02d-%02d", h.Year, int(h.Month), h.Day)
}

// ParseHolidayDate parses YYYY-MM-DD, or MM-DD for a holiday that comes back
// every year. yearly turns a full date into a yearly one (its year is only a
// reminder of when it was written).
func ParseHolidayDate(s string, yearly bool) (HolidayDate, error) {
	s = strings.TrimSpace(s)
	layout, yearless := "2006-01-02", false
	if len(s) == 5 {
		// 2000 is a leap year, so a yearly 02-29 is accepted (it then
		// matches only in leap years).
		layout, yearless, s = "2006-01-02", true, "2000-"+s
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		if yearless {
			s = s[5:]
		}
		return HolidayDate{}, fmt.Errorf("%q is not a date (want YYYY-MM-DD, or MM-DD for every year)", s)
	}
	h := HolidayDate{Year: t.Year(), Month: t.Month(), Day: t.Day()}
	if yearless || yearly {
		h.Year = 0
	}
	return h, nil
}

// Move-on events: the attempt ended without a SIP final response.
const (
	EventRingTimeout          = "ring_timeout"           // rang for ring_timeout, nobody answered
	EventNoProvisionalTimeout = "no_provisional_timeout" // no 100/18x within no_provisional_timeout
)

// DefaultMoveOn is the policy when move_on is left out: busy, unavailable,
// request timeout (also a Timer B expiry, RFC 3261 §8.1.3.1), every server
// error (a transport failure counts as 503, same section) and both timeouts
// move on; everything else, notably 603 Decline (RFC 3261 §21.6.2: the callee
// does not wish to participate), stops the hunt.
var DefaultMoveOn = []string{"408", "480", "486", "5xx", EventRingTimeout, EventNoProvisionalTimeout}

// MovePolicy says which failed attempts hand the call to the next target.
// An exact code beats its class: [5xx, -503] moves on every 5xx but 503.
type MovePolicy struct {
	code  map[int]bool
	class [7]int8 // by code/100: 0 unset, 1 move on, -1 stop
	event map[string]bool
}

// Code reports whether a final SIP response code moves on. 1xx and 2xx are
// not failures and never move on.
func (p MovePolicy) Code(code int) bool {
	if code < 300 || code > 699 {
		return false
	}
	if v, ok := p.code[code]; ok {
		return v
	}
	return p.class[code/100] > 0
}

// Event reports whether a non-SIP ending (EventRingTimeout,
// EventNoProvisionalTimeout) moves on.
func (p MovePolicy) Event(e string) bool { return p.event[e] }

// ItemError is a problem with one entry of a list, so validation can name
// the entry's key path and line.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("[%d]: %v", e.Index, e.Err) }
func (e *ItemError) Unwrap() error { return e.Err }

// ParseMoveOn compiles a move_on list. nil means DefaultMoveOn. Entries: a
// final code ("486"), a class ("5xx"), an event (ring_timeout,
// no_provisional_timeout), "default" (the whole default list); a leading "-"
// makes the entry stop the hunt instead ("-503"). Explicit entries override
// what "default" brought in; an explicit entry and its negation together are
// refused as contradictory.
func ParseMoveOn(items []string) (MovePolicy, error) {
	p := MovePolicy{code: map[int]bool{}, event: map[string]bool{}}
	if items == nil {
		items = []string{"default"}
	}
	// Two passes: "default" first at the lowest priority, then the
	// explicit entries on top of it.
	for _, it := range items {
		if strings.TrimSpace(strings.ToLower(it)) == "default" {
			for _, d := range DefaultMoveOn {
				e, _ := parseMoveItem(d)
				e.apply(&p)
			}
		}
	}
	seen := map[string]int{} // canonical entry without sign -> index
	var parsed []moveItem
	for i, it := range items {
		if strings.TrimSpace(strings.ToLower(it)) == "default" {
			continue
		}
		e, err := parseMoveItem(it)
		if err != nil {
			return MovePolicy{}, &ItemError{i, err}
		}
		if j, ok := seen[e.key]; ok && parsed[j].move != e.move {
			return MovePolicy{}, &ItemError{i, fmt.Errorf("%q contradicts entry [%d] %q", it, j, items[parsed[j].index])}
		}
		seen[e.key] = len(parsed)
		e.index = i
		parsed = append(parsed, e)
	}
	for _, e := range parsed {
		e.apply(&p)
	}
	return p, nil
}

type moveItem struct {
	key   string // "486", "5xx", "ring_timeout"
	move  bool
	code  int // exact code, or 0
	class int // 3..6, or 0
	event string
	index int
}

func (e moveItem) apply(p *MovePolicy) {
	v := int8(-1)
	if e.move {
		v = 1
	}
	switch {
	case e.code != 0:
		p.code[e.code] = e.move
	case e.class != 0:
		p.class[e.class] = v
	default:
		p.event[e.event] = e.move
	}
}

func parseMoveItem(s string) (moveItem, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	e := moveItem{move: true}
	if strings.HasPrefix(t, "-") {
		e.move, t = false, strings.TrimSpace(t[1:])
	}
	e.key = t
	switch {
	case t == EventRingTimeout || t == EventNoProvisionalTimeout:
		e.event = t
	case len(t) == 3 && t[1:] == "xx" && t[0] >= '3' && t[0] <= '6':
		e.class = int(t[0] - '0')
	case len(t) == 3 && digits(t):
		n, _ := strconv.Atoi(t)
		if n < 300 || n > 699 {
			return e, fmt.Errorf("%q: only final failure codes 300..699 end an attempt", s)
		}
		e.code = n
	default:
		return e, fmt.Errorf("%q is not a SIP code (486), class (5xx), event (ring_timeout, no_provisional_timeout) or default; prefix - to stop instead", s)
	}
	return e, nil
}

// CheckURITemplate checks a sticky-agent URI template: a sip: or sips: URI
// with exactly one {agent} placeholder in its user part, so the expansion is
// always a user@host URI whatever (valid) agent goes in.
func CheckURITemplate(t string) error {
	rest, ok := cutPrefixFold(t, "sip:")
	if !ok {
		rest, ok = cutPrefixFold(t, "sips:")
	}
	if !ok {
		return fmt.Errorf("%q is not a sip: or sips: URI", t)
	}
	if n := strings.Count(t, "{agent}"); n != 1 {
		return fmt.Errorf("%q must contain {agent} exactly once (it has %d)", t, n)
	}
	user, host, ok := strings.Cut(rest, "@")
	if !ok || !strings.Contains(user, "{agent}") {
		return fmt.Errorf("%q: {agent} must be in the user part, before the @ (e.g. sip:{agent}@pbx.example.com)", t)
	}
	if h, _, _ := strings.Cut(host, ";"); h == "" || strings.ContainsAny(t, " \t\r\n<>\"") || strings.ContainsAny(host, "{}@") {
		return fmt.Errorf("%q: want sip:{agent}@host[:port][;params] with no spaces, quotes or angle brackets", t)
	}
	return nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// validToken reports whether s is an RFC 3261 §25.1 token (a header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0) {
			return false
		}
	}
	return true
}
