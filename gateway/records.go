package gateway

import (
	"context"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/gateway/route"
	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/store"
)

// CallStore is what the gateway needs of the call records: a durable copy
// of each call at every step, and who answered a caller last.
type CallStore interface {
	Create(ctx context.Context, c *store.Call, events ...store.EventType) error
	Update(ctx context.Context, c *store.Call, events ...store.EventType) error
	LastAgent(ctx context.Context, callerKey string, since time.Time) (string, time.Time, error)
}

// storeTimeout bounds one record write: a slow disk must not hold a call.
const storeTimeout = 2 * time.Second

// persist writes the call's record with the given events. The first write
// creates it (and gives it its protocol number). A failed write is logged
// and the call goes on: nothing of the call waits on its record.
func (c *call) persist(events ...store.EventType) {
	st := c.g.store
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	sc := c.storeCall()
	var err error
	op := "update"
	if c.rec.Protocol == "" {
		op = "create"
		err = st.Create(ctx, sc, events...)
		c.rec.Protocol = sc.Protocol
	} else {
		err = st.Update(ctx, sc, events...)
	}
	if err != nil {
		c.g.storeErrors.Add(1)
		c.g.obs.StoreError(op)
		c.log.Error("call record not written", "err", err)
	}
}

// storeCall maps the gateway's record onto the store's model.
func (c *call) storeCall() *store.Call {
	r := &c.rec
	sc := &store.Call{
		ID: r.ID, Protocol: r.Protocol, WACID: r.WACID, SIPCallID: r.SIPCallID, Direction: store.Inbound, AnswerSignal: r.AnswerSignal,
		Caller:         store.Party{Number: strings.TrimPrefix(r.From, "+"), BSUID: c.ev.FromUserID, Name: r.FromName},
		BusinessNumber: r.To, PhoneNumberID: r.PhoneNumberID, Route: r.Route, Mode: r.Mode, RouteHook: r.Hook,
		AnsweredBy: r.AnsweredBy,
		Offered:    r.Offered, PreAccepted: r.PreAccepted, Accepted: r.Accepted, Answered: r.PBXAnswered, Ended: r.Ended,
		EndReason: r.Outcome, MetaStatus: r.MetaStatus, MetaErrors: r.MetaErrors,
		Attempts: []store.Attempt{}, Transfers: []store.Transfer{},
	}
	if c.out != nil {
		sc.Direction = store.Outbound
	}
	for _, a := range r.Attempts {
		sa := store.Attempt{Target: a.Target, Trunk: a.Trunk, SIPCallID: a.SIPCallID, Started: a.Started, Ended: a.Ended, Result: a.Result}
		if a.Result == "answered" {
			sa.Result, sa.Agent = "200", r.AnsweredBy
		}
		sc.Attempts = append(sc.Attempts, sa)
	}
	c.recMu.Lock()
	for _, t := range r.Transfers {
		sc.Transfers = append(sc.Transfers, store.Transfer{At: t.At, By: t.By, ReferTo: t.ReferTo, Target: t.ReferTo, Trunk: t.Trunk, Result: t.Result, Reason: t.Reason})
	}
	c.recMu.Unlock()
	if !r.Ended.IsZero() {
		sc.Outcome, sc.EndedBy = storeOutcome(r), storeEndedBy(r.EndedBy)
		sc.Media = mediaSummary(r)
	}
	return sc
}

// storeOutcome is the outcome supervisors filter on: the same classes as
// the metrics (outcomeClass), so the dashboard and the call history agree.
func storeOutcome(r *Record) store.Outcome { return store.Outcome(outcomeClass(*r)) }

func storeEndedBy(by string) string {
	switch by {
	case "caller":
		return store.EndedByCaller
	case "pbx":
		return store.EndedByBusiness
	}
	return store.EndedBySystem
}

// mediaSummary fills the media part of the record from the bridge's
// counters and the E-model (ITU-T G.107, simplified; metrics.EstimateMOS).
// ponte sees its own playout: loss is what its jitter buffers never played,
// jitter is not yet measured per leg (RTCP reports come with issue 6).
func mediaSummary(r *Record) store.Media {
	leg := func(codec string, in, out DirStats) store.LegMedia {
		// in: what this leg sent us (the direction it feeds); out: what we sent it.
		lost := in.Jitter.Lost
		m := store.LegMedia{Codec: codec, PacketsSent: out.Out, PacketsReceived: in.In, PacketsLost: lost}
		if in.In+lost > 0 {
			loss := 100 * float64(lost) / float64(in.In+lost)
			_, m.MOS = metrics.EstimateMOS(metrics.Conditions{
				Codec: metrics.CodecParams(codec), LossPct: loss,
				DelayMs: metrics.OneWayDelay(0, float64(maxDepthFrames)*20, 20),
			})
		}
		return m
	}
	m := store.Media{
		WhatsApp: leg("opus", r.ToPBX, r.ToMeta),
		SIP:      leg(r.Codec, r.ToMeta, r.ToPBX),
	}
	switch {
	case m.WhatsApp.MOS > 0 && m.SIP.MOS > 0:
		m.MOS = min(m.WhatsApp.MOS, m.SIP.MOS)
	default:
		m.MOS = max(m.WhatsApp.MOS, m.SIP.MOS)
	}
	return m
}

// agentStore remembers who answered each caller: in memory for speed, with
// the call records behind it so the rule survives a restart.
type agentStore struct {
	mem    *route.Memory
	st     CallStore // may be nil
	window time.Duration
}

func (a *agentStore) LastAgent(key string) (string, time.Time, bool) {
	if agent, at, ok := a.mem.LastAgent(key); ok {
		return agent, at, true
	}
	if a.st == nil || key == "" {
		return "", time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	agent, at, err := a.st.LastAgent(ctx, key, time.Now().Add(-a.window))
	if err != nil || agent == "" {
		return "", time.Time{}, false
	}
	return agent, at, true
}

func (a *agentStore) Remember(key, agent string, at time.Time) { a.mem.Remember(key, agent, at) }
