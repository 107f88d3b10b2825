package gateway

import (
	"context"
	"strconv"
	"time"

	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/webrtc"
)

// Label values the registry (gateway.go) passes.
const (
	metricsInbound  = metrics.DirInbound
	refusedDraining = metrics.RefusedDraining
	refusedMaxCalls = metrics.RefusedMaxCalls
	refusedCPU      = metrics.RefusedCPU
)

// Observer is told what calls do, for metrics (*metrics.Metrics implements
// it). Labels it receives are bounded by the implementation; the gateway
// passes route names from the config and reasons from fixed lists.
//
// Call lifecycle: CallOffered for every new call; then either CallRefused
// (admission or drain, no leg was set up) or, once the call ends, CallEnded.
// CallSetup and CallAnswered happen in between, when they happen.
type Observer interface {
	CallOffered(direction, route string)
	CallRefused(direction, route, reason string)
	CallSetup(direction, stage string, d time.Duration)
	CallAnswered(direction, route string, ring time.Duration)
	CallEnded(c metrics.Call)
	SIPRequest(method, direction string)
	SIPResponse(method string, code int, direction string)
	TrunkState(trunk string, up bool)
	StoreError(op string)
	TranscodeCPU(d time.Duration)
	PermissionCheck(outcome string) // allowed | denied | error, before a business-initiated call
}

// NopObserver observes nothing: the default when Deps.Observer is nil.
type NopObserver struct{}

func (NopObserver) StoreError(string)                          {}
func (NopObserver) TranscodeCPU(time.Duration)                 {}
func (NopObserver) PermissionCheck(string)                     {}
func (NopObserver) CallOffered(string, string)                 {}
func (NopObserver) CallRefused(string, string, string)         {}
func (NopObserver) CallSetup(string, string, time.Duration)    {}
func (NopObserver) CallAnswered(string, string, time.Duration) {}
func (NopObserver) CallEnded(metrics.Call)                     {}
func (NopObserver) SIPRequest(string, string)                  {}
func (NopObserver) SIPResponse(string, int, string)            {}
func (NopObserver) TrunkState(string, bool)                    {}

// observedGraph tells the Observer when pre_accept and accept succeed, so
// setup latency and answers are counted when they happen, not when the call
// ends (a NOC's "answered in the last 5 minutes" must not wait for hang-up).
// Both are sent from the call's own goroutine, which also writes c.rec, so
// reading the record here needs no lock.
type observedGraph struct {
	GraphAPI
	g *Gateway
}

func (o observedGraph) PreAccept(ctx context.Context, phoneNumberID, callID, sdp string) error {
	err := o.GraphAPI.PreAccept(ctx, phoneNumberID, callID, sdp)
	if c := o.g.lookup(callID); err == nil && c != nil {
		o.g.obs.CallSetup(metrics.DirInbound, metrics.StageWebhookToPreAccept, time.Since(c.rec.Offered))
	}
	return err
}

func (o observedGraph) Accept(ctx context.Context, phoneNumberID, callID, sdp, bizOpaque string) error {
	err := o.GraphAPI.Accept(ctx, phoneNumberID, callID, sdp, bizOpaque)
	if c := o.g.lookup(callID); err == nil && c != nil {
		var ring time.Duration
		if !c.rec.PBXAnswered.IsZero() {
			o.g.obs.CallSetup(metrics.DirInbound, metrics.StagePBXAnswerToAccept, time.Since(c.rec.PBXAnswered))
			if !c.rec.PreAccepted.IsZero() {
				ring = c.rec.PBXAnswered.Sub(c.rec.PreAccepted) // the INVITE follows pre_accept at once
			}
		}
		o.g.obs.CallAnswered(metrics.DirInbound, c.rec.Route, ring)
	}
	return err
}

func (g *Gateway) lookup(wacid string) *call {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[wacid]
}

// callEnded reports an ended call. It runs on the call's goroutine after
// run returned, so the record and the bridge are final.
func (g *Gateway) callEnded(c *call) {
	rec := c.rec
	dir := metrics.DirInbound
	if c.out != nil {
		dir = metrics.DirOutbound
	}
	mc := metrics.Call{
		Direction: dir, Route: rec.Route,
		Outcome: outcomeClass(rec), Reason: rec.Outcome,
		Offered: rec.Offered, Accepted: rec.Accepted, Ended: rec.Ended,
		MetaErrors:  rec.MetaErrors,
		DigitsToPBX: rec.ToPBX.Digits, DigitsToWhatsApp: rec.ToMeta.Digits,
		JitterBufferMs: float64(g.cfg.Media.JitterFrames) * float64(frameDur/time.Millisecond),
		Legs:           legStats(c),
	}
	// Every INVITE of the hunt and of transfers, with its final response
	// when it had one (a cancelled attempt's 487 is recorded as its event).
	for _, a := range rec.Attempts {
		if a.Result == "trunk_down" {
			continue // skipped without an INVITE
		}
		mc.Attempts++
		if a.Kind == "default_department" {
			mc.Fallback = true
		}
		g.obs.SIPRequest("INVITE", "out")
		if code, err := strconv.Atoi(a.Result); err == nil {
			g.obs.SIPResponse("INVITE", code, "in")
		} else if a.Result == "answered" {
			g.obs.SIPResponse("INVITE", 200, "in")
		}
	}
	// The playout clock's work: the transcoding cost of the call (near
	// zero in Opus passthrough).
	g.obs.TranscodeCPU(rec.MediaWork)
	g.obs.CallEnded(mc)
}

// outcomeClass maps the gateway's end reason to the coarse outcome records
// and metrics share (store.Outcome): answered once accept succeeded, however
// it ended; busy, unavailable and ring timeouts are missed; 403/603 and no
// route are policy refusals; a caller who hung up first abandoned.
func outcomeClass(rec Record) string {
	// Answered means an agent or callbot took the call: in queue mode the
	// WhatsApp side is accepted before anyone answers.
	if !rec.PBXAnswered.IsZero() {
		return metrics.OutcomeAnswered
	}
	switch rec.Outcome {
	case "completed":
		if rec.EndedBy == "caller" {
			return metrics.OutcomeAbandoned
		}
		return metrics.OutcomeFailed
	case "no_answer", "queue_timeout", "target_408", "target_480", "target_486", "target_487", "target_600":
		return metrics.OutcomeMissed
	case "no_route", "closed", "rejected_by_hook", "target_403", "target_603":
		return metrics.OutcomeRejected
	}
	return metrics.OutcomeFailed
}

// legStats reads both media legs' counters once the call is over (the
// legs are closed, their counters final).
func legStats(c *call) []metrics.Leg {
	if c.bridge == nil {
		return nil
	}
	var out []metrics.Leg
	if l, ok := c.bridge.wa.(interface{ Stats() webrtc.LegStats }); ok {
		s := l.Stats()
		out = append(out, metrics.Leg{Kind: metrics.LegWhatsApp, Codec: "opus",
			PacketsIn: s.PacketsIn, BytesIn: s.BytesIn, PacketsOut: s.PacketsOut, BytesOut: s.BytesOut,
			Lost: s.Lost, Jitter: s.Jitter, RTT: s.RTT})
	}
	if l, ok := c.bridge.pbx.(interface{ Stats() sip.RTPStats }); ok {
		s := l.Stats()
		out = append(out, metrics.Leg{Kind: metrics.LegSIP, Codec: c.rec.Codec,
			PacketsIn: s.PacketsIn, BytesIn: s.BytesIn, PacketsOut: s.PacketsOut, BytesOut: s.BytesOut,
			Lost: s.Lost, Jitter: s.Jitter, RTT: s.RTT})
	}
	return out
}
