// Package route decides where an inbound WhatsApp call goes: whether the
// route is open (business hours in the route's time zone, holidays), the
// ordered attempts (sticky agent, targets, default department, or the closed
// action), which failures move on to the next attempt, and who answered. It
// is pure logic over package config: no sockets, no SIP types, no goroutines,
// so the gateway can drive it and tests can pin every rule with a clock.
package route

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// ErrInvalid wraps a route that does not compile (one that skipped
// config validation).
var ErrInvalid = errors.New("route: invalid")

// Clock gives the current time; tests inject a fixed one.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AgentMemory remembers who last answered a caller. The key is the caller's
// wa_id, or the BSUID when Meta sends no number.
type AgentMemory interface {
	LastAgent(key string) (agent string, at time.Time, ok bool)
}

// Kind says what an attempt is, for logs and the call record.
type Kind string

// Attempt kinds.
const (
	KindSticky  Kind = "sticky_agent"
	KindTarget  Kind = "target"
	KindDefault Kind = "default_department"
	KindClosed  Kind = "closed"
)

// Attempt is one destination to ring.
type Attempt struct {
	Kind                 Kind
	Index                int    // position in targets for KindTarget; -1 otherwise
	Agent                string // KindSticky: the agent being dialled
	URI                  string
	Trunk                string
	RingTimeout          time.Duration
	NoProvisionalTimeout time.Duration
}

// Plan is what to do with one call.
type Plan struct {
	Route string
	// Mode is config.ModeRingThenAnswer or config.ModeAnswerThenHunt. A
	// closed-hours target is always ring_then_answer: it is one attempt
	// made before any accept.
	Mode string
	Open bool
	Why  string // "open: mon 08:00-18:00", "closed: holiday 2026-12-25", ...
	// Reject: closed with action reject; Attempts is empty.
	Reject   bool
	Attempts []Attempt
	// Sticky explains the sticky-agent decision for the record ("" when the
	// route has no sticky agent or the caller has no key).
	Sticky string
	// Queue is set for answer_then_hunt when open.
	Queue *config.Queue
}

// Router is one compiled route. It is immutable after New and safe for
// concurrent use.
type Router struct {
	name  string
	cfg   *config.Route
	sched *schedule // nil: always open
	move  config.MovePolicy
	clock Clock
}

// Option configures New.
type Option func(*Router)

// WithClock makes OpenNow and PlanNow read c instead of the wall clock.
func WithClock(c Clock) Option { return func(r *Router) { r.clock = c } }

// New compiles a route from a loaded or Finalized config (defaults applied,
// validation passed). The config must not be changed afterwards.
func New(name string, r *config.Route, opts ...Option) (*Router, error) {
	if r == nil || len(r.Targets) == 0 {
		return nil, fmt.Errorf("%w: route %q has no targets", ErrInvalid, name)
	}
	rt := &Router{name: name, cfg: r, clock: SystemClock{}}
	for _, o := range opts {
		o(rt)
	}
	var err error
	if rt.move, err = config.ParseMoveOn(r.MoveOn); err != nil {
		return nil, fmt.Errorf("%w: route %q: move_on%v", ErrInvalid, name, err)
	}
	if r.Hours != nil {
		if rt.sched, err = compileHours(r.Hours); err != nil {
			return nil, fmt.Errorf("%w: route %q: hours: %v", ErrInvalid, name, err)
		}
	}
	if s := r.StickyAgent; s != nil {
		if err := config.CheckURITemplate(s.URITemplate); err != nil {
			return nil, fmt.Errorf("%w: route %q: sticky_agent: %v", ErrInvalid, name, err)
		}
	}
	return rt, nil
}

// NewAll compiles every route of a config, by name.
func NewAll(c *config.Config, opts ...Option) (map[string]*Router, error) {
	out := make(map[string]*Router, len(c.Routes))
	names := make([]string, 0, len(c.Routes))
	for n := range c.Routes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r, err := New(n, c.Routes[n], opts...)
		if err != nil {
			return nil, err
		}
		out[n] = r
	}
	return out, nil
}

// Name is the route's key under routes.
func (r *Router) Name() string { return r.name }

// Config is the route as configured (read only).
func (r *Router) Config() *config.Route { return r.cfg }

// Now is the router's clock.
func (r *Router) Now() time.Time { return r.clock.Now() }

// Open reports whether the route takes calls at t, and why (for the record).
func (r *Router) Open(t time.Time) (open bool, why string) {
	if r.sched == nil {
		return true, "open: no hours configured"
	}
	return r.sched.open(t)
}

// OpenNow is Open at the router clock's time.
func (r *Router) OpenNow() (bool, string) { return r.Open(r.clock.Now()) }

// MovesOn reports whether an attempt that ended with this final SIP status
// hands the call to the next attempt (else the hunt stops and the caller is
// rejected). Map a transport failure to 503 and a Timer B expiry to 408
// (RFC 3261 §8.1.3.1) before asking.
func (r *Router) MovesOn(code int) bool { return r.move.Code(code) }

// MovesOnEvent is MovesOn for attempts that ended without a final response:
// config.EventRingTimeout or config.EventNoProvisionalTimeout.
func (r *Router) MovesOnEvent(event string) bool { return r.move.Event(event) }

// Plan returns what to do with a call offered at t from the caller with the
// given key (wa_id or BSUID; "" disables the sticky agent). mem may be nil.
//
// Open: the sticky agent first (if the caller's last answering agent is
// within the window), then the targets in order, then the default
// department. Closed: the closed target, or a rejection. Agents never ring
// outside hours: the sticky agent is a shortcut inside the open hunt.
func (r *Router) Plan(t time.Time, callerKey string, mem AgentMemory) Plan {
	p := Plan{Route: r.name, Mode: r.cfg.Mode}
	if p.Mode == "" {
		p.Mode = config.ModeRingThenAnswer
	}
	p.Open, p.Why = r.Open(t)
	if !p.Open {
		p.Mode = config.ModeRingThenAnswer
		if c := r.cfg.Closed; c != nil && c.Action == config.ClosedTarget {
			p.Attempts = []Attempt{attempt(KindClosed, -1, c.Target())}
			return p
		}
		p.Reject = true
		return p
	}
	if s := r.cfg.StickyAgent; s != nil && callerKey != "" {
		var a *Attempt
		a, p.Sticky = r.sticky(t, callerKey, mem)
		if a != nil {
			p.Attempts = append(p.Attempts, *a)
		}
	}
	for i, tg := range r.cfg.Targets {
		p.Attempts = append(p.Attempts, attempt(KindTarget, i, tg))
	}
	if d := r.cfg.DefaultDepartment; d != nil {
		p.Attempts = append(p.Attempts, attempt(KindDefault, -1, *d))
	}
	if p.Mode == config.ModeAnswerThenHunt && r.cfg.Queue != nil {
		q := *r.cfg.Queue
		p.Queue = &q
	}
	return p
}

// PlanNow is Plan at the router clock's time.
func (r *Router) PlanNow(callerKey string, mem AgentMemory) Plan {
	return r.Plan(r.clock.Now(), callerKey, mem)
}

func attempt(k Kind, i int, t config.Target) Attempt {
	return Attempt{Kind: k, Index: i, URI: t.URI, Trunk: t.Trunk,
		RingTimeout: t.RingTimeout.D(), NoProvisionalTimeout: t.NoProvisionalTimeout.D()}
}

// sticky builds the sticky-agent attempt, or says why there is none.
func (r *Router) sticky(t time.Time, key string, mem AgentMemory) (*Attempt, string) {
	s := r.cfg.StickyAgent
	if mem == nil {
		return nil, "no agent memory"
	}
	agent, at, ok := mem.LastAgent(key)
	if !ok {
		return nil, "no previous answered call"
	}
	// An answer stamped a little after t (clocks of two nodes) still counts.
	if age := t.Sub(at); age > s.Window.D() {
		return nil, fmt.Sprintf("last agent %s answered %s ago, outside the %s window", agent, age.Round(time.Second), s.Window.D())
	}
	uri, err := ExpandURI(s.URITemplate, agent)
	if err != nil {
		return nil, fmt.Sprintf("last agent not dialled: %v", err)
	}
	return &Attempt{Kind: KindSticky, Index: -1, Agent: agent, URI: uri, Trunk: s.Trunk,
		RingTimeout: s.RingTimeout.D(), NoProvisionalTimeout: s.NoProvisionalTimeout.D()}, "last agent " + agent
}

// StickyURI expands the route's sticky-agent template for an agent (e.g. one
// the routing hook named).
func (r *Router) StickyURI(agent string) (string, error) {
	if r.cfg.StickyAgent == nil {
		return "", fmt.Errorf("%w: route %q has no sticky_agent", ErrInvalid, r.name)
	}
	return ExpandURI(r.cfg.StickyAgent.URITemplate, agent)
}

// Agent extracts the answering agent from a 200 OK's headers with the
// route's configured header (see ExtractAgent). get returns a header's
// values by name, case-insensitively.
func (r *Router) Agent(get func(name string) []string) (agent, source string, ok bool) {
	h := ""
	if r.cfg.StickyAgent != nil {
		h = r.cfg.StickyAgent.Header
	}
	return ExtractAgent(h, get)
}
