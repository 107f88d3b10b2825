// Package gateway owns the call: the registry, the state machine per
// direction, and the bridge between the WhatsApp leg and the SIP leg. It works
// on typed events from package whatsapp and the legs from packages webrtc and
// sip; it parses no wire format itself.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/permit"
	"github.com/ponte-gw/ponte/gateway/route"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/webrtc"
	"github.com/ponte-gw/ponte/whatsapp"
)

// GraphAPI is the part of Meta's Graph API the inbound flow uses
// (whatsapp.Client implements it; tests may fake it).
type GraphAPI interface {
	PreAccept(ctx context.Context, phoneNumberID, callID, sdp string) error
	Accept(ctx context.Context, phoneNumberID, callID, sdp, bizOpaque string) error
	Reject(ctx context.Context, phoneNumberID, callID string) error
	Terminate(ctx context.Context, phoneNumberID, callID string) error
}

// Deps are the gateway's collaborators, built by cmd/ponte.
type Deps struct {
	Config *config.Config
	Graph  GraphAPI
	WebRTC *webrtc.Engine
	SIP    *sip.UA
	Logger *slog.Logger
	// Observer is told about calls for metrics (observe.go); nil: none.
	Observer Observer
	// CPU is the host's CPU load (0..1) for admission.max_cpu; nil: no CPU limit.
	CPU interface{ Load() float64 }
	// Clock drives business hours and the sticky-agent window (nil: wall clock).
	Clock route.Clock
	// Agents remembers who answered each caller (nil: in memory, backed by
	// Store when there is one).
	Agents AgentStore
	// Store keeps the call records (nil: in memory only, see Records).
	Store CallStore
	// Permits is the business-initiated call policy and permission ledger
	// (nil: PBX-originated calls are refused with 403).
	Permits *permit.Service
	// Live keeps a row per call in progress for crash recovery (livecalls.go); nil: none.
	Live LiveStore
}

// AgentStore remembers the agent who answered a caller, for the sticky-agent
// rule; the call records store implements it durably.
type AgentStore interface {
	route.AgentMemory
	Remember(key, agent string, at time.Time)
}

// Admission refusals (issue 6 items 4-5): why a new call is not taken.
var (
	ErrDraining   = errors.New("gateway: draining: new calls are refused")
	ErrOverloaded = errors.New("gateway: over an admission limit")
)

// Gateway runs calls.
type Gateway struct {
	cfg   *config.Config
	graph GraphAPI
	rtc   *webrtc.Engine
	ua    *sip.UA
	log   *slog.Logger
	obs   Observer
	cpu   interface{ Load() float64 }

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	calls    map[string]*call // by wacid
	out      map[string]*call // business-initiated calls, by ponte's id (bic.go)
	outWACID map[string]*call // the same, by wacid once known
	stash    map[string]stashed
	tombs    map[string]tomb
	records  []Record
	draining atomic.Bool // set under mu, so no call is added to wg once Close waits on it

	routers     map[string]*route.Router // by route name
	clips       clipCache                // queue music and announcements, loaded once
	agents      AgentStore
	store       CallStore
	permits     *permit.Service
	storeErrors atomic.Int64
	live        LiveStore // CRASH (livecalls.go)

	trunkDown  map[string]*atomic.Bool // by trunk name; only trunks with OPTIONS pings
	monCancel  context.CancelFunc      // stops the trunk monitors
	monitorsWG sync.WaitGroup
}

// maxRecords bounds the in-memory history of ended calls (Records), which
// serves `ponte demo` and the tests; the store keeps every record. At 1000 it
// held about 5 MiB once full, which a 30-minute soak (about 1000 calls) saw
// as RSS growth (heap profiles at each pause: the records and their ids).
const maxRecords = 100

// New builds a gateway.
func New(d Deps) *Gateway {
	ctx, cancel := context.WithCancel(context.Background())
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	obs := d.Observer
	if obs == nil {
		obs = NopObserver{}
	}
	g := &Gateway{
		cfg: d.Config, rtc: d.WebRTC, ua: d.SIP, log: log, obs: obs, cpu: d.CPU,
		ctx: ctx, cancel: cancel, calls: map[string]*call{},
		out: map[string]*call{}, outWACID: map[string]*call{}, stash: map[string]stashed{}, tombs: map[string]tomb{},
		permits: d.Permits, trunkDown: map[string]*atomic.Bool{},
	}
	g.graph = observedGraph{GraphAPI: d.Graph, g: g}
	var opts []route.Option
	if d.Clock != nil {
		opts = append(opts, route.WithClock(d.Clock))
	}
	routers, err := route.NewAll(d.Config, opts...)
	if err != nil {
		// Config validation compiles the same rules, so this is a config
		// built in code without Finalize: its calls fail with ErrNoRoute.
		log.Error("routes do not compile; calls to them are refused", "err", err)
	}
	g.routers = routers
	g.store = d.Store
	g.live = d.Live
	g.agents = d.Agents
	if g.agents == nil {
		w := stickyWindow(d.Config)
		g.agents = &agentStore{mem: route.NewMemory(w, 100000), st: d.Store, window: w}
	}
	monCtx, monCancel := context.WithCancel(context.Background())
	g.monCancel = monCancel
	for i := range d.Config.SIP.Trunks {
		t := &d.Config.SIP.Trunks[i]
		if t.OptionsInterval > 0 && d.SIP != nil {
			g.trunkDown[t.Name] = &atomic.Bool{}
			obs.TrunkState(t.Name, true)
			g.monitorsWG.Add(1)
			go func() { defer g.monitorsWG.Done(); g.monitorTrunk(monCtx, t) }()
		}
	}
	return g
}

// stickyWindow is the longest sticky-agent window of any route: how long the
// in-memory agent store keeps an answer.
func stickyWindow(c *config.Config) time.Duration {
	w := time.Duration(0)
	for _, r := range c.Routes {
		if r != nil && r.StickyAgent != nil {
			w = max(w, r.StickyAgent.Window.D())
		}
	}
	return max(w, time.Hour)
}

// monitorTrunk pings a trunk with OPTIONS until the gateway closes. Two
// unanswered pings in a row mark it down (its targets are skipped, so a call
// fails at once instead of waiting on a dead PBX); one answer marks it up.
func (g *Gateway) monitorTrunk(ctx context.Context, t *config.Trunk) {
	down := g.trunkDown[t.Name]
	st := sipTrunk(t) // the same addressing and TLS as its calls
	every := t.OptionsInterval.D()
	tick := time.NewTicker(every)
	defer tick.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, min(every, 5*time.Second))
		code, err := g.ua.Ping(pctx, st)
		cancel()
		if !errors.Is(err, sip.ErrNotStarted) && ctx.Err() == nil {
			g.obs.SIPRequest("OPTIONS", "out")
			g.obs.SIPResponse("OPTIONS", code, "in") // code 0: no answer
		}
		switch {
		case errors.Is(err, sip.ErrNotStarted):
			continue // the SIP listeners are not up yet
		case err == nil:
			misses = 0
			if down.Swap(false) {
				g.log.Info("trunk up again", "trunk", t.Name, "options_code", code)
				g.obs.TrunkState(t.Name, true)
			}
		default:
			misses++
			if misses >= 2 && !down.Swap(true) {
				g.log.Warn("trunk down: OPTIONS unanswered", "trunk", t.Name, "err", err)
				g.obs.TrunkState(t.Name, false)
			}
		}
	}
}

// TrunkUp reports whether a trunk is usable (always true without pings).
func (g *Gateway) TrunkUp(name string) bool {
	d := g.trunkDown[name]
	return d == nil || !d.Load()
}

// HandleEvent is the webhook sink: package whatsapp calls it serially per
// call id, in arrival order, after signature check and dedupe. It must return
// quickly, so a new call runs in its own goroutine owned by the gateway.
func (g *Gateway) HandleEvent(ctx context.Context, ev whatsapp.CallEvent) {
	switch ev.Kind {
	case whatsapp.EventConnect:
		if ev.Direction == whatsapp.DirBusinessInitiated || ev.SDPType == "answer" {
			g.routeBIC(ev)
			return
		}
		g.userActivity(ev)
		g.startInbound(ctx, ev)
	case whatsapp.EventStatus:
		g.routeBIC(ev)
	case whatsapp.EventPermissionReply, whatsapp.EventMessage:
		g.permissionEvent(ev)
	case whatsapp.EventTerminate:
		if g.routeBIC(ev) {
			return
		}
		g.mu.Lock()
		c := g.calls[ev.CallID]
		g.mu.Unlock()
		if c == nil {
			g.log.Debug("terminate for a call not running here", "wacid", ev.CallID, "status", ev.Status)
			return
		}
		c.metaTerminated(ev)
	default:
		g.log.Debug("webhook event ignored", "wacid", ev.CallID, "field", ev.Field, "event", ev.Event)
	}
}

// startInbound admits or refuses a user-initiated call. ctx is the
// webhook's (cancelled when it closes).
func (g *Gateway) startInbound(ctx context.Context, ev whatsapp.CallEvent) {
	log := g.log.With("wacid", ev.CallID)
	route := ""
	if n := g.cfg.Number(ev.PhoneNumberID); n != nil {
		route = n.InboundRoute
	}
	g.mu.Lock()
	if _, dup := g.calls[ev.CallID]; dup {
		g.mu.Unlock()
		log.Info("connect for a call already running: ignored")
		return
	}
	err := g.admitLocked()
	var c *call
	if err == nil {
		c = newCall(g, ev)
		g.calls[ev.CallID] = c
		g.wg.Add(1)
	}
	g.mu.Unlock()
	g.obs.CallOffered(metricsInbound, route)
	if err != nil {
		g.refuseInbound(ctx, ev, route, err)
		return
	}

	go func() {
		defer g.wg.Done()
		c.run()
		g.callEnded(c)
		g.mu.Lock()
		delete(g.calls, ev.CallID)
		c.recMu.Lock()
		g.records = append(g.records, c.rec)
		c.recMu.Unlock()
		if len(g.records) > maxRecords {
			g.records = g.records[len(g.records)-maxRecords:]
		}
		g.mu.Unlock()
	}()
}

// StoreErrors counts record writes that failed.
func (g *Gateway) StoreErrors() int64 { return g.storeErrors.Load() }

// Active returns the number of calls in progress.
func (g *Gateway) Active() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls) + len(g.out)
}

// Records returns the records of ended calls, oldest first.
func (g *Gateway) Records() []Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Record(nil), g.records...)
}

// Admit reports whether a new call would be taken now: nil, or ErrDraining,
// or ErrOverloaded wrapped with the limit ("max_calls", "cpu"). The SIP
// INVITE guard (internal/server) asks it before a PBX-originated call.
func (g *Gateway) Admit() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitLocked()
}

// admitLocked applies drain and admission control (admission.max_calls,
// admission.max_cpu). Caller holds mu.
func (g *Gateway) admitLocked() error {
	if g.draining.Load() {
		return ErrDraining
	}
	a := g.cfg.Admission
	if n := len(g.calls) + len(g.out); a.MaxCalls > 0 && n >= a.MaxCalls {
		return &OverloadError{Limit: refusedMaxCalls, Detail: fmt.Sprintf("%d calls, max %d", n, a.MaxCalls)}
	}
	if g.cpu != nil && a.MaxCPU > 0 {
		if l := g.cpu.Load(); l >= a.MaxCPU {
			return &OverloadError{Limit: refusedCPU, Detail: fmt.Sprintf("load %.2f, max %.2f", l, a.MaxCPU)}
		}
	}
	return nil
}

// OverloadError is ErrOverloaded naming the limit that refused a call.
type OverloadError struct{ Limit, Detail string }

func (e *OverloadError) Error() string {
	return ErrOverloaded.Error() + ": " + e.Limit + " (" + e.Detail + ")"
}

// Is makes errors.Is(err, ErrOverloaded) hold.
func (e *OverloadError) Is(target error) bool { return target == ErrOverloaded }

// RefusalReason names an Admit error for metrics and logs: "draining",
// "max_calls" or "cpu".
func RefusalReason(err error) string {
	var oe *OverloadError
	if errors.As(err, &oe) {
		return oe.Limit
	}
	return refusedDraining
}

// refuseInbound rejects an offered call with the Graph API (before
// pre_accept: Meta's "reject", reference §3.2) and counts it. It runs on the
// webhook's worker for this call id, which serialises only this call's
// events, so waiting on the Graph API here delays no other call; Webhook.Close
// waits for it.
func (g *Gateway) refuseInbound(ctx context.Context, ev whatsapp.CallEvent, route string, err error) {
	reason := RefusalReason(err)
	g.obs.CallRefused(metricsInbound, route, reason)
	g.log.Warn("call refused", "wacid", ev.CallID, "route", route, "reason", reason, "err", err)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := g.graph.Reject(rctx, ev.PhoneNumberID, ev.CallID); rerr != nil {
		g.log.Warn("reject failed", "wacid", ev.CallID, "err", rerr)
	}
}

// Drain refuses new calls; calls in progress go on.
func (g *Gateway) Drain() {
	g.mu.Lock()
	g.draining.Store(true)
	g.mu.Unlock()
}

// Draining reports whether Drain or Close was called.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// WaitIdle waits until no call is in progress, or ctx ends (its error).
// With Drain first, this is the graceful part of a shutdown: calls end on
// their own while new ones are refused.
func (g *Gateway) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for g.Active() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close ends every call cleanly (terminate toward Meta, BYE toward the PBX,
// each recorded as "shutdown") and waits for them, or for ctx.
func (g *Gateway) Close(ctx context.Context) error {
	g.Drain()
	g.monCancel()
	g.monitorsWG.Wait()
	g.mu.Lock()
	for _, c := range g.calls {
		c.end(ErrShutdown)
	}
	for _, c := range g.out {
		c.end(ErrShutdown)
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		g.cancel()
		return nil
	case <-ctx.Done():
		g.cancel()
		<-done
		return ctx.Err()
	}
}

// newID returns ponte's own call id, carried to Meta as
// biz_opaque_callback_data and to the PBX as X-Ponte-Call-Id.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "pc-" + hex.EncodeToString(b[:])
}

// Record is what ponte keeps of one call.
type Record struct {
	Protocol                                     string // the number people read out on the phone, given by the store
	ID, WACID, From, FromName, To, PhoneNumberID string
	Route, Target, SIPCallID, Codec              string
	DTMFMode                                     string // rfc4733 | info | inband on the PBX leg
	Offered, PreAccepted, PBXAnswered, Accepted  time.Time
	Ended                                        time.Time
	Outcome, EndedBy, MetaStatus                 string
	MetaErrors                                   []int
	ToPBX, ToMeta                                DirStats
	Attempts                                     []AttemptRecord
	Transfers                                    []TransferRecord
	// Mode is the hunting mode; Hours why the route was open or closed;
	// Hook what the routing hook decided (or why the static route was used).
	Mode, Hours, Hook string
	Queue             string        // queue mode: how long the caller waited, over how many rounds
	MediaWork         time.Duration // time the bridge's playout clock worked (codecs), see Bridge.Work
	// AnsweredBy is the agent who answered and AgentSource where that came
	// from (X-Agent header, P-Asserted-Identity, Contact); on outbound calls
	// the agent who placed the call.
	AnsweredBy, AgentSource string
	// Direction is "outbound" for business-initiated calls ("" inbound);
	// AnswerSignal what produced their 200: "accepted" (Meta's ACCEPTED
	// status) or "media" (the user's media, outbound.early_media_answers).
	Direction, AnswerSignal string
}

// AttemptRecord is one target tried during the hunt.
type AttemptRecord struct {
	Kind, Agent, Target, Trunk, SIPCallID string
	Started, Ended                        time.Time
	Result                                string // "answered", a SIP code ("486"), or an event ("ring_timeout")
}

func (r Record) String() string {
	return fmt.Sprintf("call %s wacid=%s outcome=%s ended_by=%s codec=%s", r.ID, r.WACID, r.Outcome, r.EndedBy, r.Codec)
}
