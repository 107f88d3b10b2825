package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// routeHead is a valid config up to "routes:"; it is 17 lines long, so the
// route text passed to routeYAML starts at line 18.
const routeHead = `whatsapp:
  access_token: tok
  app_secret: sec
  verify_token: ver
  accept_deadline: 30s
  numbers:
    - { phone_number_id: "1", inbound_route: support }
sip:
  trunks:
    - name: pbx
      address: pbx.example.com:5060
    - name: bots
      address: bots.example.com:5060
store: { driver: memory }
# routes follow
#
routes:
`

func routeYAML(route string) string { return routeHead + route }

func parseRoute(t *testing.T, route string) (*Config, error) {
	t.Helper()
	if n := strings.Count(routeHead, "\n"); n != 17 {
		t.Fatalf("routeHead has %d lines, the expected line numbers assume 17", n)
	}
	return Parse("r.yaml", []byte(routeYAML(route)), env(nil))
}

func TestRouteDefaults(t *testing.T) {
	c, err := parseRoute(t, `  support:
    hours: { timezone: Europe/Lisbon }
    closed: { uri: "sip:bot@bots.example.com", trunk: bots }
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 10s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 6s }
    sticky_agent: { uri_template: "sip:{agent}@pbx.example.com" }
    hook: { url: "https://crm.example.com/route", secret: s }
`)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes["support"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"mode", r.Mode, ModeRingThenAnswer},
		{"closed action inferred from uri", r.Closed.Action, ClosedTarget},
		{"closed ring", r.Closed.RingTimeout.D(), 20 * time.Second},
		{"closed noprov", r.Closed.NoProvisionalTimeout.D(), 3 * time.Second},
		{"default noprov", r.DefaultDepartment.NoProvisionalTimeout.D(), 3 * time.Second},
		{"sticky window", r.StickyAgent.Window.D(), 24 * time.Hour},
		{"sticky ring", r.StickyAgent.RingTimeout.D(), 10 * time.Second},
		{"sticky trunk = first target's", r.StickyAgent.Trunk, "pbx"},
		{"hook timeout", r.Hook.Timeout.D(), 1500 * time.Millisecond},
		{"queue only in queue mode", r.Queue == nil, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	c, err = parseRoute(t, `  support:
    mode: answer_then_hunt
    closed: {}
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 2m } ]
`)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Routes["support"]; r.Queue == nil || r.Queue.MaxWait.D() != 5*time.Minute || r.Closed.Action != ClosedReject {
		t.Fatalf("queue defaults: %+v %+v", r.Queue, r.Closed)
	}
}

// TestRouteFit pins the accept-window check's exact messages, including the
// issue's own examples (15 s + 12 s fits; 25 s + 30 s does not).
func TestRouteFit(t *testing.T) {
	cases := []struct {
		name, route string
		want        string // "" = valid
	}{
		{"15+12 fits", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 15s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 12s }
`, ""},
		{"25+30 does not", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 25s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 30s }
`, "line 18: routes.support: ring timeouts do not fit Meta's accept window: targets[0] 25s + default_department 30s = 55s, but only 29s is available (whatsapp.accept_deadline 30s - 1s margin for the answer's signalling); e.g. targets[0] 13s + default_department 15s = 28s would fit"},
		{"exactly the budget fits", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 17s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 12s }
`, ""},
		{"one second over", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 18s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 12s }
`, "line 18: routes.support: ring timeouts do not fit Meta's accept window: targets[0] 18s + default_department 12s = 30s, but only 29s is available (whatsapp.accept_deadline 30s - 1s margin for the answer's signalling); e.g. targets[0] 17s + default_department 11s = 28s would fit"},
		{"sticky and hook count", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 10s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 10s }
    sticky_agent: { uri_template: "sip:{agent}@pbx.example.com", ring_timeout: 8s }
    hook: { url: "https://crm.example.com/r", secret: s, timeout: 1500ms }
`, "line 18: routes.support: ring timeouts do not fit Meta's accept window: sticky_agent 8s + targets[0] 10s + default_department 10s = 28s, but only 27.5s is available (whatsapp.accept_deadline 30s - hook.timeout 1.5s - 1s margin for the answer's signalling); e.g. sticky_agent 7s + targets[0] 9s + default_department 9s = 25s would fit"},
		{"too many attempts", `  support:
    targets:
` + strings.Repeat("      - { uri: \"sip:a@pbx.example.com\", trunk: pbx, ring_timeout: 1s, no_provisional_timeout: 1s }\n", 30), "line 18: routes.support: ring timeouts do not fit Meta's accept window: " +
			strings.TrimSuffix(strings.Repeat("targets[%d] 1s + ", 30), " + ") + " = 30s, but only 29s is available (whatsapp.accept_deadline 30s - 1s margin for the answer's signalling); 30 attempts cannot each ring at least 1s in it: remove attempts or use mode: answer_then_hunt"},
		{"a lone target may use the whole window", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 30s } ]
`, ""},
		{"queue mode has no accept window", `  support:
    mode: answer_then_hunt
    queue: { music: /srv/ponte/hold.ogg, max_wait: 3m, closing: /srv/ponte/closing.wav }
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 100s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 40s }
`, ""},
		{"queue mode caps a ring at max_wait", `  support:
    mode: answer_then_hunt
    queue: { max_wait: 1m }
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 100s } ]
`, "line 21: routes.support.targets[0].ring_timeout: 1m40s must be >0 and no longer than queue.max_wait (1m0s)"},
		{"ring mode caps a lone ring at the deadline", `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 31s } ]
`, "line 19: routes.support.targets[0].ring_timeout: 31s must be >0 and fit in whatsapp.accept_deadline (30s)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.want, "%d") {
				var idx []any
				for i := 0; i < strings.Count(tc.want, "%d"); i++ {
					idx = append(idx, i)
				}
				tc.want = fmt.Sprintf(tc.want, idx...)
			}
			_, err := parseRoute(t, tc.route)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if len(ce.Problems) != 1 || ce.Problems[0] != tc.want {
				t.Fatalf("problems:\n  %s\nwant exactly:\n  %s", strings.Join(ce.Problems, "\n  "), tc.want)
			}
		})
	}
}

// TestRouteErrors: every problem names its key path and line.
func TestRouteErrors(t *testing.T) {
	const tg = "    targets: [ { uri: \"sip:a@pbx.example.com\", trunk: pbx, ring_timeout: 10s } ]\n"
	cases := []struct{ name, route, want string }{
		{"timezone", "  support:\n" + tg + "    hours: { timezone: Mars/Olympus }\n",
			`line 20: routes.support.hours.timezone: "Mars/Olympus" is not an IANA time zone`},
		{"timezone required", "  support:\n" + tg + "    hours: { weekly: { mon: [ 08:00-18:00 ] } }\n",
			"line 20: routes.support.hours.timezone: is required"}, // the missing key: its parent's line
		{"weekly key", "  support:\n" + tg + "    hours:\n      timezone: UTC\n      weekly:\n        mon-fry: [ 08:00-18:00 ]\n",
			`line 23: routes.support.hours.weekly.mon-fry: "mon-fry": "mon-fry" is not a day or day range`},
		{"weekly range", "  support:\n" + tg + "    hours:\n      timezone: UTC\n      weekly:\n        mon-fri: [ 08:00-18:00, \"13:00-13:00\" ]\n",
			`line 23: routes.support.hours.weekly.mon-fri[1]: "13:00-13:00": starts and ends at the same time`},
		{"holiday date", "  support:\n" + tg + "    hours:\n      timezone: UTC\n      holidays:\n        - 2026-12-25\n        - 2026-02-30\n",
			`line 24: routes.support.hours.holidays[1]: "2026-02-30" is not a date`},
		{"holiday range", "  support:\n" + tg + "    hours:\n      timezone: UTC\n      holidays:\n        - { date: 2026-12-24, ranges: [ \"13:00-25:00\" ] }\n",
			`line 23: routes.support.hours.holidays[0].ranges[0]: "13:00-25:00": end "25:00": hours are 00..23`},
		{"holiday unknown key", "  support:\n" + tg + "    hours:\n      timezone: UTC\n      holidays:\n        - { date: 2026-12-24, range: [ \"13:00-18:00\" ] }\n",
			"line 23: routes.support.hours.holidays[0].range: unknown key"},
		{"mode", "  support:\n" + tg + "    mode: queue\n",
			`line 20: routes.support.mode: "queue" is not one of ring_then_answer, answer_then_hunt`},
		{"move_on item", "  support:\n" + tg + "    move_on: [ 486, 4x4 ]\n",
			`line 20: routes.support.move_on[1]: "4x4" is not a SIP code (486), class (5xx), event`},
		{"move_on contradiction", "  support:\n" + tg + "    move_on:\n      - 486\n      - -486\n",
			`line 22: routes.support.move_on[1]: "-486" contradicts entry [0] "486"`},
		{"move_on empty", "  support:\n" + tg + "    move_on: []\n",
			"line 20: routes.support.move_on: is empty"},
		{"closed action", "  support:\n" + tg + "    closed: { action: voicemail }\n",
			`line 20: routes.support.closed.action: "voicemail" is not one of reject, target`},
		{"closed reject with uri", "  support:\n" + tg + "    closed: { action: reject, uri: \"sip:x@y\" }\n",
			"line 20: routes.support.closed.action: reject takes no uri or trunk"},
		{"closed target trunk", "  support:\n" + tg + "    closed: { uri: \"sip:x@y\", trunk: nope }\n",
			`line 20: routes.support.closed.trunk: trunk "nope" is not defined under sip.trunks`},
		{"queue outside queue mode", "  support:\n" + tg + "    queue: { music: a.wav }\n",
			"line 20: routes.support.queue: is only used with mode: answer_then_hunt"},
		{"queue music format", "  support:\n" + tg + "    mode: answer_then_hunt\n    queue: { music: hold.mp3 }\n",
			`line 21: routes.support.queue.music: "hold.mp3": want a .wav or .ogg/.opus file`},
		{"template placeholder", "  support:\n" + tg + "    sticky_agent: { uri_template: \"sip:agent@pbx.example.com\" }\n",
			`line 20: routes.support.sticky_agent.uri_template: "sip:agent@pbx.example.com" must contain {agent} exactly once (it has 0)`},
		{"template in host", "  support:\n" + tg + "    sticky_agent: { uri_template: \"sip:pbx.example.com;a={agent}\" }\n",
			"line 20: routes.support.sticky_agent.uri_template: \"sip:pbx.example.com;a={agent}\": {agent} must be in the user part"},
		{"sticky header", "  support:\n" + tg + "    sticky_agent: { uri_template: \"sip:{agent}@pbx\", header: \"X Agent\" }\n",
			`line 20: routes.support.sticky_agent.header: "X Agent" is not a SIP header name`},
		{"hook secret", "  support:\n" + tg + "    hook: { url: \"https://crm.example.com/r\" }\n",
			"line 20: routes.support.hook.secret: is required"},
		{"hook timeout", "  support:\n" + tg + "    hook: { url: \"https://crm.example.com/r\", secret: s, timeout: 20s }\n",
			"line 20: routes.support.hook.timeout: 20s is outside 100ms..10s"},
		{"default department uri", "  support:\n" + tg + "    default_department: { uri: \"tel:100\", trunk: pbx, ring_timeout: 5s }\n",
			`line 20: routes.support.default_department.uri: "tel:100" is not a sip: URI`},
		{"unknown route key", "  support:\n" + tg + "    sticky: 24h\n",
			"line 20: routes.support.sticky: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseRoute(t, tc.route)
			if err == nil {
				t.Fatal("expected an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nlacks:\n%s", err, tc.want)
			}
		})
	}
}

// TestLoneTargetFinalize: a code-built config whose single target rings as
// long as the accept window (the end-to-end accept-deadline test does this)
// stays valid: the fit check only guards routes with several attempts.
func TestLoneTargetFinalize(t *testing.T) {
	c := &Config{
		WhatsApp: WhatsApp{AccessToken: "t", AppSecret: "s", VerifyToken: "v", AcceptDeadline: Duration(5 * time.Second),
			Numbers: []Number{{PhoneNumberID: "1", InboundRoute: "support"}}},
		SIP:    SIP{Trunks: []Trunk{{Name: "pbx", Address: "127.0.0.1:5060"}}},
		Routes: map[string]*Route{"support": {Targets: []Target{{URI: "sip:a@127.0.0.1", Trunk: "pbx", RingTimeout: Duration(5 * time.Second)}}}},
		Store:  Store{Driver: "memory"},
	}
	if err := c.Finalize(); err != nil {
		t.Fatal(err)
	}
	c.Routes["support"].DefaultDepartment = &Target{URI: "sip:b@127.0.0.1", Trunk: "pbx", RingTimeout: Duration(time.Second)}
	err := c.Finalize()
	want := "routes.support: ring timeouts do not fit Meta's accept window: targets[0] 5s + default_department 1s = 6s, but only 4s is available"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}
