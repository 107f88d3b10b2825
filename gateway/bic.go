package gateway

import (
	"context"
	"time"

	"github.com/ponte-gw/ponte/whatsapp"
)

// Webhooks of business-initiated calls find their call by wacid, or by
// biz_opaque_callback_data (ponte's call id, sent on connect) when the wacid
// is not known yet: Meta's connect webhook can overtake connect's HTTP answer,
// and after a connect timeout the webhooks are the only news (reference §2.1
// "ordering is not guaranteed", §3.1).

// stashed are events for a business-initiated call not known yet.
type stashed struct {
	evs []whatsapp.CallEvent
	at  time.Time
}

// tomb marks a call ponte gave up on before learning its wacid: if Meta
// created it anyway, the first webhook naming it gets a terminate.
type tomb struct {
	phoneNumberID string
	at            time.Time
}

const (
	stashTTL    = 30 * time.Second
	stashMax    = 1000
	tombTTL     = 10 * time.Minute
	tombMax     = 10000
	stashPerKey = 16
)

// routeBIC hands a webhook event of a business-initiated call to its call.
// It reports whether the event was one (so the inbound path ignores it).
func (g *Gateway) routeBIC(ev whatsapp.CallEvent) bool {
	now := time.Now()
	g.mu.Lock()
	c := g.outWACID[ev.CallID]
	if c == nil && ev.BizOpaque != "" {
		c = g.out[ev.BizOpaque]
	}
	if c == nil {
		if t, ok := g.tombs[ev.BizOpaque]; ok && ev.BizOpaque != "" && ev.CallID != "" && ev.Kind != whatsapp.EventTerminate {
			delete(g.tombs, ev.BizOpaque)
			g.mu.Unlock()
			g.terminateOrphan(t.phoneNumberID, ev.CallID)
			return true
		}
		bic := ev.Direction == whatsapp.DirBusinessInitiated || ev.Kind == whatsapp.EventStatus || ev.SDPType == "answer"
		if !bic || ev.CallID == "" {
			g.mu.Unlock()
			return bic
		}
		g.sweepLocked(now)
		if s, ok := g.stash[ev.CallID]; ok || len(g.stash) < stashMax {
			if len(s.evs) < stashPerKey {
				s.evs = append(s.evs, ev)
			}
			if s.at.IsZero() {
				s.at = now
			}
			g.stash[ev.CallID] = s
		}
		g.mu.Unlock()
		g.log.Debug("webhook for a business-initiated call not known yet: held", "wacid", ev.CallID, "event", ev.Event)
		return true
	}
	g.mu.Unlock()
	c.deliver(ev)
	return true
}

// deliver queues ev for the call's goroutine; it never blocks the webhook.
func (c *call) deliver(ev whatsapp.CallEvent) {
	select {
	case c.out.events <- ev:
	default:
		c.log.Warn("webhook event dropped: the call's queue is full", "event", ev.Event, "status", ev.Status)
	}
}

// takeStash hands the call the events that arrived before its wacid.
func (g *Gateway) takeStash(c *call, wacid string) {
	g.mu.Lock()
	s := g.stash[wacid]
	delete(g.stash, wacid)
	g.mu.Unlock()
	for _, ev := range s.evs {
		c.deliver(ev)
	}
}

func (g *Gateway) sweepLocked(now time.Time) {
	for k, s := range g.stash {
		if now.Sub(s.at) > stashTTL {
			delete(g.stash, k)
		}
	}
	for k, t := range g.tombs {
		if now.Sub(t.at) > tombTTL {
			delete(g.tombs, k)
		}
	}
}

// tombstone remembers a call given up before its wacid was known.
func (g *Gateway) tombstone(id, phoneNumberID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweepLocked(time.Now())
	if len(g.tombs) < tombMax {
		g.tombs[id] = tomb{phoneNumberID: phoneNumberID, at: time.Now()}
	}
	// Events that came under this id while the call was ending.
	for wacid, s := range g.stash {
		for _, ev := range s.evs {
			if ev.BizOpaque == id {
				delete(g.stash, wacid)
				delete(g.tombs, id)
				go g.terminateOrphan(phoneNumberID, wacid)
				return
			}
		}
	}
}

// terminateOrphan ends a call Meta created for a PBX call that is gone.
func (g *Gateway) terminateOrphan(phoneNumberID, wacid string) {
	g.log.Warn("Meta created a call ponte had given up on: terminating it", "wacid", wacid)
	ctx, cancel := context.WithTimeout(g.ctx, 10*time.Second)
	defer cancel()
	if err := g.outGraph().Terminate(ctx, phoneNumberID, wacid); err != nil {
		g.log.Warn("terminate of an orphan call failed", "wacid", wacid, "err", err)
	}
}

// outGraph is the Graph API of business-initiated calls.
func (g *Gateway) outGraph() outboundGraph {
	if og, ok := g.graph.(observedGraph).GraphAPI.(outboundGraph); ok {
		return og
	}
	return noOutboundGraph{}
}

type noOutboundGraph struct{}

func (noOutboundGraph) Connect(context.Context, string, string, string, string, string) (string, error) {
	return "", ErrOutboundOff
}
func (noOutboundGraph) Terminate(context.Context, string, string) error { return ErrOutboundOff }

// permissionEvent feeds the ledger: permission replies, and user messages
// that open the customer-service window (reference §2.8, §4.2, §7).
func (g *Gateway) permissionEvent(ev whatsapp.CallEvent) {
	if g.permits == nil {
		return
	}
	user := ev.WaID
	if user == "" {
		user = ev.From
	}
	if user == "" {
		user = ev.FromUserID
	}
	if user == "" {
		return
	}
	at := ev.Timestamp
	if at.IsZero() {
		at = time.Now()
	}
	ctx, cancel := context.WithTimeout(g.ctx, storeTimeout)
	defer cancel()
	switch ev.Kind {
	case whatsapp.EventPermissionReply:
		if ev.Permission != nil {
			g.permits.OnPermissionReply(ctx, ev.PhoneNumberID, user, *ev.Permission, at)
		}
	case whatsapp.EventMessage:
		g.permits.OnUserActivity(ctx, ev.PhoneNumberID, user, at)
	}
}

// userActivity: a user-initiated call opens the customer-service window,
// answered or not (reference §7).
func (g *Gateway) userActivity(ev whatsapp.CallEvent) {
	ev.Kind = whatsapp.EventMessage
	g.permissionEvent(ev)
}

// uicConnected resets the pair's request counters and unanswered run: any
// connected call does (reference §4.3).
func (c *call) uicConnected() {
	if c.g.permits == nil || c.out != nil {
		return
	}
	user := c.ev.WaID
	if user == "" {
		user = c.ev.From
	}
	if user == "" {
		user = c.ev.FromUserID
	}
	ctx, cancel := context.WithTimeout(c.ctx, storeTimeout)
	defer cancel()
	c.g.permits.CallEnded(ctx, c.ev.PhoneNumberID, user, c.ev.CallID, "connected")
}
