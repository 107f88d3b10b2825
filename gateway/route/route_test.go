package route

import (
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// fixedClock is the injectable clock.
type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

const head = `whatsapp:
  access_token: tok
  app_secret: sec
  verify_token: ver
  numbers: [ { phone_number_id: "1", inbound_route: support } ]
sip:
  trunks:
    - { name: pbx, address: pbx.example.com:5060 }
    - { name: bots, address: bots.example.com:5060 }
store: { driver: memory }
routes:
`

// load parses a config whose routes section is body and compiles its
// "support" route, so every test route has passed check-config's validation.
func load(t *testing.T, body string, opts ...Option) *Router {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(head+body), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r, err := New("support", c.Routes["support"], opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const hoursRoute = `  support:
    targets: [ { uri: "sip:sales@pbx.example.com", trunk: pbx, ring_timeout: 15s } ]
    hours:
      timezone: America/Sao_Paulo
      weekly:
        mon-fri: [ "08:00-18:00" ]
        sat: [ "09:00-13:00" ]
        fri: [ "22:00-02:00" ]
      holidays:
        - 2026-12-25
        - { date: 2026-12-24, ranges: [ "13:00-23:59" ] }
        - { date: 2020-11-20, yearly: true }
        - { date: 2026-03-13, ranges: [ "23:00-01:00" ] }
        - 2026-05-02
`

func TestOpen(t *testing.T) {
	r := load(t, hoursRoute)
	sp := mustLoc(t, "America/Sao_Paulo")
	at := func(y int, m time.Month, d, hh, mm, ss int) time.Time { return time.Date(y, m, d, hh, mm, ss, 0, sp) }
	cases := []struct {
		name string
		t    time.Time
		open bool
		why  string
	}{
		{"weekday inside", at(2026, 3, 2, 10, 0, 0), true, "open: mon 08:00-18:00"},
		{"weekday just before opening", at(2026, 3, 2, 7, 59, 59), false, "closed: outside business hours"},
		{"last second of the range", at(2026, 3, 2, 17, 59, 59), true, "open: mon 08:00-18:00"},
		{"end is exclusive", at(2026, 3, 2, 18, 0, 0), false, "closed: outside business hours"},
		{"saturday", at(2026, 3, 7, 12, 59, 0), true, "open: sat 09:00-13:00"},
		{"sunday", at(2026, 3, 8, 10, 0, 0), false, "closed: outside business hours"},
		{"same instant seen from UTC", time.Date(2026, 3, 2, 13, 0, 0, 0, time.UTC), true, "open: mon 08:00-18:00"},
		{"UTC instant that is before opening locally", time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC), false, "closed: outside business hours"},
		{"past midnight, evening part", at(2026, 3, 6, 23, 0, 0), true, "open: fri 22:00-02:00"},
		{"past midnight, next-day part", at(2026, 3, 7, 1, 59, 0), true, "open: fri 22:00-02:00"},
		{"past midnight ends", at(2026, 3, 7, 2, 0, 0), false, "closed: outside business hours"},
		{"night range only on its own day", at(2026, 3, 5, 23, 0, 0), false, "closed: outside business hours"},
		{"whole holiday", at(2026, 12, 25, 10, 0, 0), false, "closed: holiday 2026-12-25"},
		{"whole holiday cancels the night range starting on it", at(2026, 12, 25, 23, 0, 0), false, "closed: holiday 2026-12-25"},
		{"... and its tail into the next day", at(2026, 12, 26, 1, 0, 0), false, "closed: outside business hours"},
		{"the day after the holiday opens normally", at(2026, 12, 26, 10, 0, 0), true, "open: sat 09:00-13:00"},
		{"partial holiday, before its range", at(2026, 12, 24, 12, 59, 0), true, "open: thu 08:00-18:00"},
		{"partial holiday, inside its range", at(2026, 12, 24, 13, 0, 0), false, "closed: holiday 2026-12-24 13:00-23:59"},
		{"yearly holiday in a later year", at(2026, 11, 20, 10, 0, 0), false, "closed: holiday 11-20 (yearly)"},
		{"the day before the yearly holiday", at(2026, 11, 19, 10, 0, 0), true, "open: thu 08:00-18:00"},
		{"partial holiday past midnight, evening", at(2026, 3, 13, 23, 30, 0), false, "closed: holiday 2026-03-13 23:00-01:00"},
		{"partial holiday past midnight, next day", at(2026, 3, 14, 0, 30, 0), false, "closed: holiday 2026-03-13 23:00-01:00"},
		{"after the partial closure the night range is open", at(2026, 3, 14, 1, 30, 0), true, "open: fri 22:00-02:00"},
		{"a whole holiday closes its whole date, also yesterday's tail", at(2026, 5, 2, 1, 0, 0), false, "closed: holiday 2026-05-02"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			open, why := r.Open(tc.t)
			if open != tc.open || why != tc.why {
				t.Fatalf("Open(%s) = %v %q, want %v %q", tc.t.In(sp).Format(time.RFC3339+" Mon"), open, why, tc.open, tc.why)
			}
		})
	}
}

// TestOpenDST: ranges are wall-clock time, so across a daylight-saving
// change they open and close at the stated local times and last an hour
// less or more in real time.
func TestOpenDST(t *testing.T) {
	utc := func(y int, m time.Month, d, hh, mm int) time.Time { return time.Date(y, m, d, hh, mm, 0, 0, time.UTC) }
	cases := []struct {
		name, zone, weekly string
		probes             []struct {
			t    time.Time
			open bool
		}
	}{
		{
			// 2026-03-29 01:00 UTC: Lisbon goes from 01:00 WET to 02:00 WEST.
			name: "Lisbon spring forward inside a range", zone: "Europe/Lisbon", weekly: `sun: [ "00:30-02:30" ]`,
			probes: []struct {
				t    time.Time
				open bool
			}{
				{utc(2026, 3, 29, 0, 29), false}, {utc(2026, 3, 29, 0, 30), true}, {utc(2026, 3, 29, 0, 59), true},
				{utc(2026, 3, 29, 1, 0), true}, {utc(2026, 3, 29, 1, 29), true}, // 02:00-02:29 WEST
				{utc(2026, 3, 29, 1, 30), false}, // 02:30 WEST: one real hour after opening
			},
		},
		{
			// 2026-10-25 01:00 UTC: Lisbon goes from 02:00 WEST back to 01:00 WET.
			name: "Lisbon fall back repeats a range", zone: "Europe/Lisbon", weekly: `sun: [ "01:00-01:30" ]`,
			probes: []struct {
				t    time.Time
				open bool
			}{
				{utc(2026, 10, 24, 23, 59), false}, {utc(2026, 10, 25, 0, 0), true}, {utc(2026, 10, 25, 0, 30), false},
				{utc(2026, 10, 25, 1, 0), true}, {utc(2026, 10, 25, 1, 29), true}, {utc(2026, 10, 25, 1, 30), false},
			},
		},
		{
			// 2018-11-04: Sao Paulo skipped from 00:00 (-03) to 01:00 (-02);
			// a Saturday night range loses an hour but keeps its local end.
			name: "Sao Paulo historic spring forward at midnight, past-midnight range", zone: "America/Sao_Paulo", weekly: `sat: [ "22:00-02:00" ]`,
			probes: []struct {
				t    time.Time
				open bool
			}{
				{utc(2018, 11, 4, 0, 59), false}, {utc(2018, 11, 4, 1, 0), true}, // 22:00 -03
				{utc(2018, 11, 4, 2, 59), true},                                  // 23:59 -03
				{utc(2018, 11, 4, 3, 0), true},                                   // 01:00 -02, Sunday: Saturday's tail
				{utc(2018, 11, 4, 3, 59), true}, {utc(2018, 11, 4, 4, 0), false}, // 02:00 -02
			},
		},
		{
			// 2019-02-17 02:00 UTC: Sao Paulo fell back from 00:00 (-02) to 23:00 (-03) on Saturday.
			name: "Sao Paulo historic fall back", zone: "America/Sao_Paulo", weekly: `sat: [ "22:00-23:30" ]`,
			probes: []struct {
				t    time.Time
				open bool
			}{
				{utc(2019, 2, 16, 23, 59), false}, {utc(2019, 2, 17, 0, 0), true}, {utc(2019, 2, 17, 1, 29), true},
				{utc(2019, 2, 17, 1, 30), false}, {utc(2019, 2, 17, 2, 0), true}, {utc(2019, 2, 17, 2, 30), false},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := load(t, `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx } ]
    hours: { timezone: `+tc.zone+`, weekly: { `+tc.weekly+` } }
`)
			loc := mustLoc(t, tc.zone)
			for _, p := range tc.probes {
				if open, why := r.Open(p.t); open != p.open {
					t.Errorf("%s (%s local): open=%v (%s), want %v", p.t.Format("2006-01-02 15:04Z"), p.t.In(loc).Format("15:04 -07"), open, why, p.open)
				}
			}
		})
	}
}

func TestOpenWithoutWeekly(t *testing.T) {
	r := load(t, `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx } ]
    hours: { timezone: UTC, holidays: [ 2026-01-01 ] }
`)
	if open, why := r.Open(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)); !open || why != "open: all day" {
		t.Errorf("no weekly table: %v %q", open, why)
	}
	if open, _ := r.Open(time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)); open {
		t.Error("holiday open")
	}
	r = load(t, "  support:\n    targets: [ { uri: \"sip:a@pbx.example.com\", trunk: pbx } ]\n")
	if open, why := r.Open(time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)); !open || why != "open: no hours configured" {
		t.Errorf("no hours: %v %q", open, why)
	}
}

const planRoute = `  support:
    targets:
      - { uri: "sip:sales@pbx.example.com", trunk: pbx, ring_timeout: 8s }
      - { uri: "sip:support@pbx.example.com", trunk: pbx, ring_timeout: 7s, no_provisional_timeout: 2s }
    default_department: { uri: "sip:reception@pbx.example.com", trunk: pbx, ring_timeout: 6s }
    sticky_agent: { window: 24h, ring_timeout: 5s, header: X-Agent, uri_template: "sip:{agent}@agents.example.com" }
    hours: { timezone: UTC, weekly: { mon-fri: [ "08:00-18:00" ] } }
`

func attemptsString(p Plan) string {
	var b strings.Builder
	for _, a := range p.Attempts {
		b.WriteString(string(a.Kind) + " " + a.URI + " " + a.Trunk + " " + a.RingTimeout.String() + "/" + a.NoProvisionalTimeout.String() + "; ")
	}
	return b.String()
}

func TestPlan(t *testing.T) {
	open := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)   // Monday
	closed := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC) // Sunday
	mem := NewMemory(0, 0)
	mem.Remember("wa:5511999", "1007", open.Add(-23*time.Hour))
	mem.Remember("wa:5511888", "1008", open.Add(-25*time.Hour))
	mem.Remember("bsuid:BR.x", "bad agent", open.Add(-time.Hour))
	const targets = "target sip:sales@pbx.example.com pbx 8s/3s; target sip:support@pbx.example.com pbx 7s/2s; default_department sip:reception@pbx.example.com pbx 6s/3s; "
	closedRejects := `  support:
    targets: [ { uri: "sip:sales@pbx.example.com", trunk: pbx } ]
    hours: { timezone: UTC, weekly: { mon-fri: [ "08:00-18:00" ] } }
    closed: { action: reject }
`
	closedRings := `  support:
    mode: answer_then_hunt
    targets: [ { uri: "sip:sales@pbx.example.com", trunk: pbx } ]
    hours: { timezone: UTC, weekly: { mon-fri: [ "08:00-18:00" ] } }
    closed: { uri: "sip:callbot@bots.example.com", trunk: bots, ring_timeout: 25s }
`
	cases := []struct {
		name, route, key string
		mem              AgentMemory
		t                time.Time
		want             string // attemptsString
		reject           bool
		mode, sticky     string
	}{
		{"open, unknown caller", planRoute, "wa:5511777", mem, open, targets, false, "ring_then_answer", "no previous answered call"},
		{"sticky inside the window", planRoute, "wa:5511999", mem, open, "sticky_agent sip:1007@agents.example.com pbx 5s/3s; " + targets, false, "ring_then_answer", "last agent 1007"},
		{"sticky outside the window", planRoute, "wa:5511888", mem, open, targets, false, "ring_then_answer", "last agent 1008 answered 25h0m0s ago, outside the 24h0m0s window"},
		{"stored agent that cannot be dialled", planRoute, "bsuid:BR.x", mem, open, targets, false, "ring_then_answer", `last agent not dialled: route: agent identity not usable: "bad agent" has ' ', not allowed unescaped in a SIP user part`},
		{"no caller key", planRoute, "", mem, open, targets, false, "ring_then_answer", ""},
		{"no memory", planRoute, "wa:5511999", nil, open, targets, false, "ring_then_answer", "no agent memory"},
		{"closed: no agents, not even the sticky one; default action rejects", planRoute, "wa:5511999", mem, closed, "", true, "ring_then_answer", ""},
		{"closed: reject", closedRejects, "", nil, closed, "", true, "ring_then_answer", ""},
		{"closed: target, rung before any accept even in queue mode", closedRings, "", nil, closed, "closed sip:callbot@bots.example.com bots 25s/3s; ", false, "ring_then_answer", ""},
		{"open in queue mode", closedRings, "", nil, open, "target sip:sales@pbx.example.com pbx 20s/3s; ", false, "answer_then_hunt", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := load(t, tc.route)
			p := r.Plan(tc.t, tc.key, tc.mem)
			if got := attemptsString(p); got != tc.want {
				t.Errorf("attempts:\n got %s\nwant %s", got, tc.want)
			}
			if p.Reject != tc.reject || p.Mode != tc.mode || p.Sticky != tc.sticky || p.Route != "support" {
				t.Errorf("plan %+v; want reject=%v mode=%s sticky=%q", p, tc.reject, tc.mode, tc.sticky)
			}
			if p.Reject && len(p.Attempts) != 0 {
				t.Error("a rejection with attempts")
			}
			if (p.Queue != nil) != (tc.mode == "answer_then_hunt") {
				t.Errorf("queue %+v in mode %s", p.Queue, tc.mode)
			}
			if open, _ := r.Open(tc.t); open != p.Open {
				t.Error("plan and Open disagree")
			}
		})
	}
}

// TestPlanNowClock: the sticky window is measured on the injected clock.
func TestPlanNowClock(t *testing.T) {
	clk := &fixedClock{time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	r := load(t, planRoute, WithClock(clk))
	mem := NewMemory(24*time.Hour, 10)
	mem.Remember("wa:1", "1007", clk.t)
	if p := r.PlanNow("wa:1", mem); len(p.Attempts) != 4 || p.Attempts[0].Kind != KindSticky || p.Attempts[0].Agent != "1007" {
		t.Fatalf("second call in the window: %s", attemptsString(p))
	}
	clk.t = clk.t.Add(24 * time.Hour) // Tuesday 10:00, exactly the window: still sticky
	if p := r.PlanNow("wa:1", mem); p.Attempts[0].Kind != KindSticky {
		t.Fatalf("at the window's edge: %s", attemptsString(p))
	}
	clk.t = clk.t.Add(time.Second)
	if p := r.PlanNow("wa:1", mem); p.Attempts[0].Kind != KindTarget || len(p.Attempts) != 3 {
		t.Fatalf("past the window: %s", attemptsString(p))
	}
	clk.t = time.Date(2026, 3, 7, 10, 0, 0, 0, time.UTC) // Saturday
	if open, why := r.OpenNow(); open || why != "closed: outside business hours" {
		t.Fatalf("OpenNow on Saturday: %v %q", open, why)
	}
}

func TestMovesOn(t *testing.T) {
	def := load(t, planRoute)
	custom := load(t, `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx } ]
    move_on: [ default, 404, -503, -ring_timeout ]
`)
	only := load(t, `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx } ]
    move_on: [ 486 ]
`)
	cases := []struct {
		code           int
		event          string
		def, cus, only bool
	}{
		{code: 408, def: true, cus: true, only: false},
		{code: 480, def: true, cus: true, only: false},
		{code: 486, def: true, cus: true, only: true},
		{code: 500, def: true, cus: true, only: false},
		{code: 503, def: true, cus: false, only: false},
		{code: 603, def: false, cus: false, only: false},
		{code: 404, def: false, cus: true, only: false},
		{event: config.EventRingTimeout, def: true, cus: false, only: false},
		{event: config.EventNoProvisionalTimeout, def: true, cus: true, only: false},
	}
	for _, tc := range cases {
		for _, x := range []struct {
			r    *Router
			want bool
			name string
		}{{def, tc.def, "default"}, {custom, tc.cus, "custom"}, {only, tc.only, "only 486"}} {
			got := x.r.MovesOn(tc.code)
			if tc.event != "" {
				got = x.r.MovesOnEvent(tc.event)
			}
			if got != x.want {
				t.Errorf("%s policy, %d%s: moves on = %v, want %v", x.name, tc.code, tc.event, got, x.want)
			}
		}
	}
}

func TestNewRefusesUnvalidated(t *testing.T) {
	bad := []*config.Route{
		nil,
		{},
		{Targets: []config.Target{{URI: "sip:a@b"}}, MoveOn: []string{"busy"}},
		{Targets: []config.Target{{URI: "sip:a@b"}}, Hours: &config.Hours{Timezone: "Nowhere/Land"}},
		{Targets: []config.Target{{URI: "sip:a@b"}}, Hours: &config.Hours{Timezone: "UTC", Weekly: map[string][]string{"mon": {"8-18"}}}},
		{Targets: []config.Target{{URI: "sip:a@b"}}, StickyAgent: &config.StickyAgent{URITemplate: "sip:x@y"}},
	}
	for i, r := range bad {
		if _, err := New("x", r); err == nil {
			t.Errorf("case %d compiled", i)
		}
	}
}
