package config

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	// Business hours name IANA zones; embedding the database lets a minimal
	// container (no /usr/share/zoneinfo) load them. The system copy, when
	// present, still wins (time.LoadLocation looks there first).
	_ "time/tzdata"

	"gopkg.in/yaml.v3"
)

// Hunting modes (issue 4): whether the caller hears WhatsApp's own ringing
// while targets ring, or is accepted at once and queued.
const (
	// ModeRingThenAnswer: targets ring while the caller hears WhatsApp's
	// ringing; ponte accepts only when one answers, so the whole hunt must
	// fit Meta's accept window.
	ModeRingThenAnswer = "ring_then_answer"
	// ModeAnswerThenHunt: ponte accepts at once, plays ringback or the queue
	// music, and hunts without Meta's deadline up to queue.max_wait.
	ModeAnswerThenHunt = "answer_then_hunt"
)

// Closed actions.
const (
	ClosedReject = "reject"
	ClosedTarget = "target"
)

// AcceptMargin is kept free at the end of Meta's accept window when a route's
// ring timeouts are added up. The window is counted from the connect
// webhook's arrival, but the last target's 200 OK still has to become an
// accept: ACK it, finish DTLS if it has not, and make the accept POST to the
// Graph API (one HTTPS round trip, typically 0.2-0.6 s). One second covers
// that and the webhook's delivery delay, which ponte cannot see.
const AcceptMargin = time.Second

// Hours is when a route's agents work. Left out: always open.
type Hours struct {
	// Timezone is an IANA name (America/Sao_Paulo); required.
	Timezone string `yaml:"timezone"`
	// Weekly maps weekday keys (mon, mon-fri, sat,sun, daily) to opening
	// ranges (HH:MM-HH:MM; past midnight allowed and belonging to the day it
	// starts on). Keys add up. Left out: open all day, every day (then only
	// holidays close).
	Weekly map[string][]string `yaml:"weekly"`
	// Holidays close whole dates, or only the given ranges of a date.
	Holidays []Holiday `yaml:"holidays"`
}

// Holiday is "2026-12-25" (the whole day) or a mapping with ranges (closed
// only in those) and yearly.
type Holiday struct {
	Date   string   `yaml:"date"`   // YYYY-MM-DD, or MM-DD (every year)
	Ranges []string `yaml:"ranges"` // closed in these; none = the whole day
	Yearly bool     `yaml:"yearly"` // the date comes back every year
}

// UnmarshalYAML accepts the plain-date shorthand.
func (h *Holiday) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		h.Date = n.Value
		return nil
	}
	type plain Holiday
	return n.Decode((*plain)(h))
}

// Closed is what happens to calls outside hours and on holidays.
type Closed struct {
	// Action is reject (the caller sees the call declined) or target (ring
	// a closed-hours destination such as a callbot or voicemail). Left out:
	// target when uri is set, else reject.
	Action               string   `yaml:"action"`
	URI                  string   `yaml:"uri"`
	Trunk                string   `yaml:"trunk"`
	RingTimeout          Duration `yaml:"ring_timeout"`
	NoProvisionalTimeout Duration `yaml:"no_provisional_timeout"`
}

// Target returns the closed-hours destination as a Target.
func (c *Closed) Target() Target {
	return Target{URI: c.URI, Trunk: c.Trunk, RingTimeout: c.RingTimeout, NoProvisionalTimeout: c.NoProvisionalTimeout}
}

// Queue configures answer_then_hunt.
type Queue struct {
	Music   string   `yaml:"music"`    // WAV or Ogg/Opus played to the caller; empty: ringback tone
	MaxWait Duration `yaml:"max_wait"` // hunt the targets this long, then the default department (default 5m)
	Closing string   `yaml:"closing"`  // played before hanging up when nobody answered; empty: hang up
}

// StickyAgent sends a returning caller to the agent who last answered them.
type StickyAgent struct {
	Window               Duration `yaml:"window"`                 // how long an answer is remembered (default 24h)
	RingTimeout          Duration `yaml:"ring_timeout"`           // short: the hunt goes on if they are busy (default 10s)
	NoProvisionalTimeout Duration `yaml:"no_provisional_timeout"` // default 3s
	Header               string   `yaml:"header"`                 // e.g. X-Agent; else P-Asserted-Identity, else Contact
	URITemplate          string   `yaml:"uri_template"`           // sip:{agent}@pbx.example.com
	Trunk                string   `yaml:"trunk"`                  // default: the first target's trunk
}

// Hook is the optional routing hook (issue 4 item 4).
type Hook struct {
	URL     string   `yaml:"url"`
	Secret  string   `yaml:"secret"`  // HMAC key; use ${ENV}
	Timeout Duration `yaml:"timeout"` // default 1.5s; then the static route is used
}

// Default timeouts for route attempts.
const (
	defaultRingTimeout   = 20 * time.Second
	defaultNoProvisional = 3 * time.Second
	defaultStickyRing    = 10 * time.Second
	defaultStickyWindow  = 24 * time.Hour
	defaultQueueMaxWait  = 5 * time.Minute
	defaultHookTimeout   = 1500 * time.Millisecond
)

func defTarget(t *Target) {
	if t.RingTimeout == 0 {
		t.RingTimeout = Duration(defaultRingTimeout)
	}
	if t.NoProvisionalTimeout == 0 {
		t.NoProvisionalTimeout = Duration(defaultNoProvisional)
	}
}

// routeDefaults fills a route's left-out keys.
func (r *Route) routeDefaults() {
	for i := range r.Targets {
		defTarget(&r.Targets[i])
	}
	if r.Mode == "" {
		r.Mode = ModeRingThenAnswer
	}
	if r.DefaultDepartment != nil {
		defTarget(r.DefaultDepartment)
	}
	if c := r.Closed; c != nil {
		if c.Action == "" {
			c.Action = ClosedReject
			if c.URI != "" {
				c.Action = ClosedTarget
			}
		}
		if c.Action == ClosedTarget {
			t := c.Target()
			defTarget(&t)
			c.RingTimeout, c.NoProvisionalTimeout = t.RingTimeout, t.NoProvisionalTimeout
		}
	}
	if r.Mode == ModeAnswerThenHunt && r.Queue == nil {
		r.Queue = &Queue{}
	}
	if q := r.Queue; q != nil && q.MaxWait == 0 {
		q.MaxWait = Duration(defaultQueueMaxWait)
	}
	if s := r.StickyAgent; s != nil {
		if s.Window == 0 {
			s.Window = Duration(defaultStickyWindow)
		}
		if s.RingTimeout == 0 {
			s.RingTimeout = Duration(defaultStickyRing)
		}
		if s.NoProvisionalTimeout == 0 {
			s.NoProvisionalTimeout = Duration(defaultNoProvisional)
		}
		if s.Trunk == "" && len(r.Targets) > 0 {
			s.Trunk = r.Targets[0].Trunk
		}
	}
	if h := r.Hook; h != nil && h.Timeout == 0 {
		h.Timeout = Duration(defaultHookTimeout)
	}
}

// validateRoutes checks every route; names are sorted so the problems come
// out in the same order every run.
func (c *Config) validateRoutes(add func(path, format string, a ...any)) {
	names := make([]string, 0, len(c.Routes))
	for name := range c.Routes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.validateRoute("routes."+name, c.Routes[name], add)
	}
}

func (c *Config) validateRoute(p string, r *Route, add func(path, format string, a ...any)) {
	if r == nil || len(r.Targets) == 0 {
		add(p+".targets", "a route needs at least one target")
		return
	}
	deadline := c.WhatsApp.AcceptDeadline.D()
	queue := false
	switch r.Mode {
	case ModeRingThenAnswer:
	case ModeAnswerThenHunt:
		queue = true
	default:
		add(p+".mode", "%q is not one of ring_then_answer, answer_then_hunt", r.Mode)
	}
	// In queue mode the caller is already accepted, so Meta's window no
	// longer bounds a ring; the queue's max_wait does.
	ringCap := func(tp string, t Target) {
		switch {
		case queue && r.Queue != nil:
			if t.RingTimeout.D() <= 0 || t.RingTimeout > r.Queue.MaxWait {
				add(tp+".ring_timeout", "%s must be >0 and no longer than queue.max_wait (%s)", t.RingTimeout.D(), r.Queue.MaxWait.D())
			}
		default:
			if t.RingTimeout.D() <= 0 || t.RingTimeout.D() > deadline {
				add(tp+".ring_timeout", "%s must be >0 and fit in whatsapp.accept_deadline (%s)", t.RingTimeout.D(), deadline)
			}
		}
	}
	for i, t := range r.Targets {
		tp := fmt.Sprintf("%s.targets[%d]", p, i)
		c.checkTarget(tp, t, add)
		ringCap(tp, t)
	}
	if d := r.DefaultDepartment; d != nil {
		tp := p + ".default_department"
		c.checkTarget(tp, *d, add)
		if queue {
			// It rings after max_wait, so only a positive timeout is needed.
			if d.RingTimeout.D() <= 0 {
				add(tp+".ring_timeout", "%s must be >0", d.RingTimeout.D())
			}
		} else {
			ringCap(tp, *d)
		}
	}
	if cl := r.Closed; cl != nil {
		switch cl.Action {
		case ClosedReject:
			if cl.URI != "" || cl.Trunk != "" {
				add(p+".closed.action", "reject takes no uri or trunk (use action: target to ring them)")
			}
		case ClosedTarget:
			// The closed target is a lone attempt made before any accept,
			// so Meta's window bounds it in both modes.
			t := cl.Target()
			c.checkTarget(p+".closed", t, add)
			if t.RingTimeout.D() <= 0 || t.RingTimeout.D() > deadline {
				add(p+".closed.ring_timeout", "%s must be >0 and fit in whatsapp.accept_deadline (%s)", t.RingTimeout.D(), deadline)
			}
		default:
			add(p+".closed.action", "%q is not one of reject, target", cl.Action)
		}
	}
	if r.Hours != nil {
		validateHours(p+".hours", r.Hours, add)
	}
	if r.MoveOn != nil && len(r.MoveOn) == 0 {
		add(p+".move_on", "is empty: list what moves on (e.g. [default, 404]), or leave move_on out for the default")
	} else if _, err := ParseMoveOn(r.MoveOn); err != nil {
		if ie, ok := err.(*ItemError); ok {
			add(fmt.Sprintf("%s.move_on[%d]", p, ie.Index), "%v", ie.Err)
		} else {
			add(p+".move_on", "%v", err)
		}
	}
	if q := r.Queue; q != nil {
		if !queue {
			add(p+".queue", "is only used with mode: answer_then_hunt")
		}
		if q.MaxWait.D() <= 0 {
			add(p+".queue.max_wait", "%s must be >0", q.MaxWait.D())
		}
		for _, f := range []struct{ key, v string }{{"music", q.Music}, {"closing", q.Closing}} {
			if f.v == "" {
				continue
			}
			switch strings.ToLower(filepath.Ext(f.v)) {
			case ".wav", ".ogg", ".opus":
			default:
				add(p+".queue."+f.key, "%q: want a .wav or .ogg/.opus file", f.v)
			}
		}
	}
	if s := r.StickyAgent; s != nil {
		sp := p + ".sticky_agent"
		if err := CheckURITemplate(s.URITemplate); err != nil {
			add(sp+".uri_template", "%v", err)
		}
		if s.Header != "" && !validToken(s.Header) {
			add(sp+".header", "%q is not a SIP header name", s.Header)
		}
		if c.Trunk(s.Trunk) == nil {
			add(sp+".trunk", "trunk %q is not defined under sip.trunks", s.Trunk)
		}
		if s.Window.D() <= 0 {
			add(sp+".window", "%s must be >0", s.Window.D())
		}
		t := Target{RingTimeout: s.RingTimeout, NoProvisionalTimeout: s.NoProvisionalTimeout}
		checkTimeouts(sp, t, add)
		ringCap(sp, t)
	}
	if h := r.Hook; h != nil {
		hp := p + ".hook"
		if !strings.HasPrefix(h.URL, "https://") && !strings.HasPrefix(h.URL, "http://") {
			add(hp+".url", "%q is not an http(s) URL", h.URL)
		}
		if h.Secret == "" {
			add(hp+".secret", "is required: the hook's requests are HMAC-signed with it (use ${ENV})")
		}
		if h.Timeout.D() < 100*time.Millisecond || h.Timeout.D() > 10*time.Second {
			add(hp+".timeout", "%s is outside 100ms..10s", h.Timeout.D())
		}
	}
	if !queue {
		if msg := fitProblem(r, deadline); msg != "" {
			add(p, "%s", msg)
		}
	}
}

// checkTarget checks what every dialled destination needs.
func (c *Config) checkTarget(tp string, t Target, add func(path, format string, a ...any)) {
	if !strings.HasPrefix(t.URI, "sip:") && !strings.HasPrefix(t.URI, "sips:") {
		add(tp+".uri", "%q is not a sip: URI", t.URI)
	}
	if c.Trunk(t.Trunk) == nil {
		add(tp+".trunk", "trunk %q is not defined under sip.trunks", t.Trunk)
	}
	checkTimeouts(tp, t, add)
}

func checkTimeouts(tp string, t Target, add func(path, format string, a ...any)) {
	if t.NoProvisionalTimeout.D() < 500*time.Millisecond || t.NoProvisionalTimeout > t.RingTimeout {
		add(tp+".no_provisional_timeout", "%s must be at least 500ms and no longer than ring_timeout", t.NoProvisionalTimeout.D())
	}
}

func validateHours(hp string, h *Hours, add func(path, format string, a ...any)) {
	if h.Timezone == "" {
		add(hp+".timezone", "is required: an IANA name such as America/Sao_Paulo")
	} else if _, err := time.LoadLocation(h.Timezone); err != nil {
		add(hp+".timezone", "%q is not an IANA time zone (e.g. America/Sao_Paulo, Europe/Lisbon, UTC)", h.Timezone)
	}
	keys := make([]string, 0, len(h.Weekly))
	for k := range h.Weekly {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := ParseDays(k); err != nil {
			add(hp+".weekly."+k, "%v", err)
		}
		for i, s := range h.Weekly[k] {
			if _, err := ParseSpan(s); err != nil {
				add(fmt.Sprintf("%s.weekly.%s[%d]", hp, k, i), "%v", err)
			}
		}
	}
	for i, hd := range h.Holidays {
		p := fmt.Sprintf("%s.holidays[%d]", hp, i)
		if _, err := ParseHolidayDate(hd.Date, hd.Yearly); err != nil {
			add(p, "%v", err)
		}
		for j, s := range hd.Ranges {
			if _, err := ParseSpan(s); err != nil {
				add(fmt.Sprintf("%s.ranges[%d]", p, j), "%v", err)
			}
		}
	}
}

// fitProblem checks that a ring_then_answer hunt fits Meta's accept window:
// the caller is not accepted until someone answers, so the sticky agent, the
// targets and the default department ring one after another inside the
// window, after the routing hook (whose reply the hunt waits for) and before
// AcceptMargin. A lone attempt is exempt: the gateway already cuts it at the
// deadline and there is no later attempt to starve, which is what this check
// protects (issue 4: "leave the default department its share").
func fitProblem(r *Route, deadline time.Duration) string {
	type item struct {
		name string
		d    time.Duration
	}
	var items []item
	if s := r.StickyAgent; s != nil {
		items = append(items, item{"sticky_agent", s.RingTimeout.D()})
	}
	for i, t := range r.Targets {
		items = append(items, item{fmt.Sprintf("targets[%d]", i), t.RingTimeout.D()})
	}
	if d := r.DefaultDepartment; d != nil {
		items = append(items, item{"default_department", d.RingTimeout.D()})
	}
	if len(items) < 2 {
		return ""
	}
	var sum time.Duration
	terms := make([]string, len(items))
	for i, it := range items {
		sum += it.d
		terms[i] = fmt.Sprintf("%s %s", it.name, it.d)
	}
	budget := deadline - AcceptMargin
	how := fmt.Sprintf("whatsapp.accept_deadline %s - %s margin for the answer's signalling", deadline, AcceptMargin)
	if r.Hook != nil {
		budget -= r.Hook.Timeout.D()
		how = fmt.Sprintf("whatsapp.accept_deadline %s - hook.timeout %s - %s margin for the answer's signalling", deadline, r.Hook.Timeout.D(), AcceptMargin)
	}
	if sum <= budget {
		return ""
	}
	msg := fmt.Sprintf("ring timeouts do not fit Meta's accept window: %s = %s, but only %s is available (%s)",
		strings.Join(terms, " + "), sum, max(budget, 0), how)
	// Suggest a split that fits: every timeout scaled down in proportion,
	// rounded down to whole seconds.
	var fit time.Duration
	for i, it := range items {
		s := time.Duration(math.Floor(float64(it.d)*float64(budget)/float64(sum)/float64(time.Second))) * time.Second
		if s < time.Second {
			return msg + fmt.Sprintf("; %d attempts cannot each ring at least 1s in it: remove attempts or use mode: answer_then_hunt", len(items))
		}
		fit += s
		terms[i] = fmt.Sprintf("%s %s", it.name, s)
	}
	return msg + fmt.Sprintf("; e.g. %s = %s would fit", strings.Join(terms, " + "), fit)
}
