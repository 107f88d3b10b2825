package route

import (
	"fmt"
	"sort"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// schedule is compiled business hours.
//
// Every rule is in wall-clock time of the route's zone, because that is how
// a business states its hours. On a daylight-saving day a range therefore
// lasts an hour less (spring forward: the skipped wall times never happen)
// or an hour more (fall back: the repeated wall times are open both times).
// A range past midnight belongs to the day it starts on: "fri: 22:00-02:00"
// is open early Saturday, and a whole-day holiday on Friday cancels it.
type schedule struct {
	loc      *time.Location
	allDay   bool              // no weekly table: open every day, all day
	week     [7][]config.Span  // by time.Weekday
	labels   [7][]string       // "mon 08:00-18:00", parallel to week
	holidays []compiledHoliday // in file order
}

type compiledHoliday struct {
	date  config.HolidayDate
	spans []config.Span // empty: the whole day
}

func compileHours(h *config.Hours) (*schedule, error) {
	loc, err := time.LoadLocation(h.Timezone)
	if err != nil || h.Timezone == "" {
		return nil, fmt.Errorf("timezone %q: %v", h.Timezone, err)
	}
	s := &schedule{loc: loc, allDay: h.Weekly == nil}
	// Sorted keys: with overlapping ranges, the same one explains "open"
	// on every run.
	keys := make([]string, 0, len(h.Weekly))
	for k := range h.Weekly {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		ranges := h.Weekly[key]
		days, err := config.ParseDays(key)
		if err != nil {
			return nil, err
		}
		for _, rs := range ranges {
			sp, err := config.ParseSpan(rs)
			if err != nil {
				return nil, err
			}
			for d := time.Sunday; d <= time.Saturday; d++ {
				if days.Has(d) {
					s.week[d] = append(s.week[d], sp)
					s.labels[d] = append(s.labels[d], fmt.Sprintf("%s %s", dayAbbrev(d), sp))
				}
			}
		}
	}
	for _, hd := range h.Holidays {
		date, err := config.ParseHolidayDate(hd.Date, hd.Yearly)
		if err != nil {
			return nil, err
		}
		ch := compiledHoliday{date: date}
		for _, rs := range hd.Ranges {
			sp, err := config.ParseSpan(rs)
			if err != nil {
				return nil, err
			}
			ch.spans = append(ch.spans, sp)
		}
		s.holidays = append(s.holidays, ch)
	}
	return s, nil
}

func dayAbbrev(d time.Weekday) string {
	return [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}[d]
}

// civil is a calendar date in the route's zone.
type civil struct {
	y int
	m time.Month
	d int
}

func (c civil) weekday() time.Weekday {
	return time.Date(c.y, c.m, c.d, 12, 0, 0, 0, time.UTC).Weekday()
}

func (c civil) prev() civil {
	t := time.Date(c.y, c.m, c.d-1, 12, 0, 0, 0, time.UTC)
	return civil{t.Year(), t.Month(), t.Day()}
}

// wholeHoliday returns the whole-day holiday on c, if any.
func (s *schedule) wholeHoliday(c civil) (config.HolidayDate, bool) {
	for _, h := range s.holidays {
		if len(h.spans) == 0 && h.date.Matches(c.y, c.m, c.d) {
			return h.date, true
		}
	}
	return config.HolidayDate{}, false
}

func (s *schedule) open(t time.Time) (bool, string) {
	lt := t.In(s.loc)
	y, mo, d := lt.Date()
	today := civil{y, mo, d}
	yest := today.prev()
	// Wall-clock minute of the local day; ranges are whole minutes, so
	// flooring the seconds is exact (17:59:59 is inside 08:00-18:00).
	m := lt.Hour()*60 + lt.Minute()

	// 1. A whole-day holiday closes its whole date.
	if hd, ok := s.wholeHoliday(today); ok {
		return false, "closed: holiday " + holidayLabel(hd)
	}
	// 2. Partial holidays close their ranges; a range past midnight is
	// anchored on the holiday's date and reaches into the next day.
	for _, h := range s.holidays {
		for _, sp := range h.spans {
			if (h.date.Matches(today.y, today.m, today.d) && sp.Contains(m)) ||
				(h.date.Matches(yest.y, yest.m, yest.d) && sp.Contains(m+24*60)) {
				return false, fmt.Sprintf("closed: holiday %s %s", holidayLabel(h.date), sp)
			}
		}
	}
	// 3. Weekly hours: today's ranges, then yesterday's that run past
	// midnight (unless yesterday was a whole-day holiday, which cancels the
	// ranges that start on it).
	if s.allDay {
		return true, "open: all day"
	}
	wd := today.weekday()
	for i, sp := range s.week[wd] {
		if sp.Contains(m) {
			return true, "open: " + s.labels[wd][i]
		}
	}
	if _, hol := s.wholeHoliday(yest); !hol {
		pw := yest.weekday()
		for i, sp := range s.week[pw] {
			if sp.Contains(m + 24*60) {
				return true, "open: " + s.labels[pw][i]
			}
		}
	}
	return false, "closed: outside business hours"
}

func holidayLabel(h config.HolidayDate) string {
	if h.Year == 0 {
		return h.String() + " (yearly)"
	}
	return h.String()
}
