package metrics

import (
	"strconv"
	"time"
)

// Call is what the gateway reports when a call it admitted ends.
type Call struct {
	Direction string // DirInbound or DirOutbound
	Route     string // config route name; "" when the number has none
	Outcome   string // one of the Outcome* constants
	// Reason is the gateway's finer end reason (completed, no_answer,
	// target_486, media_failed, shutdown, ...); values outside
	// EndReasons are counted as "other", target_NNN by class.
	Reason string

	Offered, Accepted, Ended time.Time // Accepted zero: never answered

	Attempts int  // SIP targets tried (INVITEs placed)
	Fallback bool // the route's default department was tried

	MetaErrors []int // error codes of Meta's terminate webhook

	DigitsToPBX, DigitsToWhatsApp uint64 // DTMF digits relayed each way

	// JitterBufferMs is ponte's playout depth, part of the one-way delay
	// the MOS estimate uses.
	JitterBufferMs float64
	Legs           []Leg // the media legs that existed (none for a call refused before media)
}

// Leg is one media leg's counters at the end of a call (RFC 3550
// receiver statistics).
type Leg struct {
	Kind                 string // LegWhatsApp or LegSIP
	Codec                string // SDP name of what the leg received (opus, PCMU, PCMA)
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64
	Lost                 int64 // cumulative, RFC 3550 A.3 (duplicates can make it negative)
	Jitter               time.Duration
	RTT                  time.Duration // 0: unknown
}

// EndReasons are the gateway's end reasons counted by name; target_NNN
// are counted as target_4xx, target_5xx, target_6xx.
var EndReasons = []string{
	"completed", "no_answer", "trunk_down", "target_unreachable", "accept_failed", "pre_accept_failed",
	"media_failed", "meta_failed", "shutdown", "no_route", "bad_offer", "closed", "failed",
	"target_4xx", "target_5xx", "target_6xx",
	RefusedDraining, RefusedMaxCalls, RefusedCPU,
}

func endReason(r string) string {
	if len(r) == len("target_000") && r[:7] == "target_" {
		if code, err := strconv.Atoi(r[7:]); err == nil && code >= 400 && code < 700 {
			return "target_" + strconv.Itoa(code/100) + "xx"
		}
	}
	return pick(r, EndReasons)
}

// CallOffered counts a call presented to ponte, before admission.
func (m *Metrics) CallOffered(direction, route string) {
	d := pickDirection(direction)
	m.offered.WithLabelValues(d, m.route(route)).Inc()
	m.active.WithLabelValues(d).Inc()
}

// CallRefused counts an offered call refused by admission control or drain
// (reason: RefusedDraining, RefusedMaxCalls, RefusedCPU). No CallEnded
// follows.
func (m *Metrics) CallRefused(direction, route, reason string) {
	d := pickDirection(direction)
	reason = pick(reason, refusals)
	m.refused.WithLabelValues(d, reason).Inc()
	m.ended.WithLabelValues(d, m.route(route), OutcomeRejected).Inc()
	m.endReasons.WithLabelValues(d, reason).Inc()
	m.active.WithLabelValues(d).Dec()
}

// CallSetup observes one setup stage's latency (Stage* constants).
func (m *Metrics) CallSetup(direction, stage string, d time.Duration) {
	m.setup.WithLabelValues(pickDirection(direction), pick(stage, stages)).Observe(d.Seconds())
}

// CallAnswered counts an answer when it happens (so a long call counts at
// once, not when it ends); ring is the time the target rang (0: unknown).
func (m *Metrics) CallAnswered(direction, route string, ring time.Duration) {
	d := pickDirection(direction)
	m.answered.WithLabelValues(d, m.route(route)).Inc()
	if ring > 0 {
		m.ring.WithLabelValues(d).Observe(ring.Seconds())
	}
}

// CallEnded counts an admitted call's end with its media statistics.
func (m *Metrics) CallEnded(c Call) {
	d := pickDirection(c.Direction)
	m.active.WithLabelValues(d).Dec()
	route := m.route(c.Route)
	m.ended.WithLabelValues(d, route, pick(c.Outcome, outcomes)).Inc()
	m.endReasons.WithLabelValues(d, endReason(c.Reason)).Inc()
	if !c.Accepted.IsZero() && c.Ended.After(c.Accepted) {
		m.duration.WithLabelValues(d).Observe(c.Ended.Sub(c.Accepted).Seconds())
	}
	if c.Attempts > 0 {
		m.attempts.WithLabelValues(d, route).Add(float64(c.Attempts))
	}
	if c.Fallback {
		m.fallbacks.WithLabelValues(d, route).Inc()
	}
	for _, code := range c.MetaErrors {
		m.metaErrors.WithLabelValues(metaCode(code)).Inc()
	}
	m.dtmf.WithLabelValues("to_pbx").Add(float64(c.DigitsToPBX))
	m.dtmf.WithLabelValues("to_whatsapp").Add(float64(c.DigitsToWhatsApp))
	for _, l := range c.Legs {
		m.legEnded(l, c.JitterBufferMs, !c.Accepted.IsZero())
	}
}

func (m *Metrics) legEnded(l Leg, jbMs float64, answered bool) {
	k := pick(l.Kind, legs)
	m.rtpPackets.WithLabelValues(k, "in").Add(float64(l.PacketsIn))
	m.rtpPackets.WithLabelValues(k, "out").Add(float64(l.PacketsOut))
	m.rtpBytes.WithLabelValues(k, "in").Add(float64(l.BytesIn))
	m.rtpBytes.WithLabelValues(k, "out").Add(float64(l.BytesOut))
	if l.Lost > 0 {
		m.rtpLost.WithLabelValues(k).Add(float64(l.Lost))
	}
	if l.PacketsIn == 0 {
		return // nothing arrived: no jitter, and no quality to estimate
	}
	m.jitter.WithLabelValues(k).Observe(l.Jitter.Seconds())
	if answered {
		m.mos.WithLabelValues(k).Observe(LegMOS(l, jbMs))
	}
}

// LegMOS estimates the MOS of what one leg received with the E-model of
// emodel.go: the leg's codec, its loss ratio (RFC 3550 A.3), and a one-way
// delay of half the RTCP round trip plus ponte's jitter buffer and one 20 ms
// frame (OneWayDelay).
func LegMOS(l Leg, jitterBufferMs float64) float64 {
	lossPct := 0.0
	if lost := max(l.Lost, 0); l.PacketsIn+uint64(lost) > 0 {
		lossPct = 100 * float64(lost) / float64(l.PacketsIn+uint64(lost))
	}
	delay := OneWayDelay(float64(l.RTT)/float64(time.Millisecond), jitterBufferMs, 20)
	_, mos := EstimateMOS(Conditions{Codec: CodecParams(l.Codec), DelayMs: delay, LossPct: lossPct})
	return mos
}

// SIPRequest counts a SIP request (direction "out": sent by ponte, "in":
// received).
func (m *Metrics) SIPRequest(method, direction string) {
	m.sipReqs.WithLabelValues(pick(method, sipMethods), inOut(direction)).Inc()
}

// SIPResponse counts a final response to method; code 0 means no response
// came (transaction timeout) and is counted as "timeout".
func (m *Metrics) SIPResponse(method string, code int, direction string) {
	m.sipResps.WithLabelValues(pick(method, sipMethods), sipCode(code), inOut(direction)).Inc()
}

// TrunkState sets ponte_trunk_up for a monitored trunk.
func (m *Metrics) TrunkState(trunk string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.trunkUp.WithLabelValues(m.trunk(trunk)).Set(v)
}

// Registration sets ponte_sip_registration_up for a registration trunk.
func (m *Metrics) Registration(trunk string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.registered.WithLabelValues(m.trunk(trunk)).Set(v)
}

// PermissionCheck counts a call_permissions check before an outbound call
// (outcome: allowed, denied, error). Fed by outbound calls (issue 5).
func (m *Metrics) PermissionCheck(outcome string) {
	m.permissions.WithLabelValues(pick(outcome, []string{"allowed", "denied", "error"})).Inc()
}

// StoreError counts a failed store operation (op: create, update, get,
// list, outbox, ping). Fed by the store wiring.
func (m *Metrics) StoreError(op string) {
	m.storeErrors.WithLabelValues(pick(op, []string{"create", "update", "get", "list", "outbox", "ping"})).Inc()
}

// TranscodeCPU adds CPU time spent in codecs.
func (m *Metrics) TranscodeCPU(d time.Duration) {
	if d > 0 {
		m.transcodeCPU.Add(d.Seconds())
	}
}

// SetDraining sets ponte_draining.
func (m *Metrics) SetDraining(on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.draining.Set(v)
}

// SetLimits publishes the admission limits (0: none) next to the values
// they bound, for the capacity panels and the near-capacity alert.
func (m *Metrics) SetLimits(maxCalls int, maxCPU float64) {
	m.callsLimit.Set(float64(max(maxCalls, 0)))
	m.cpuLimit.Set(max(maxCPU, 0))
}

func inOut(d string) string {
	if d == "in" {
		return "in"
	}
	return "out"
}

// sipCodes are counted by number; any other code by class (4xx, ...).
var sipCodes = []int{100, 180, 181, 182, 183, 200, 202, 401, 403, 404, 407, 408, 420, 422, 480, 481, 484, 486, 487, 488, 491, 500, 501, 502, 503, 504, 603}

func sipCode(code int) string {
	switch {
	case code <= 0:
		return "timeout"
	case code < 100 || code >= 700:
		return other
	}
	for _, c := range sipCodes {
		if c == code {
			return strconv.Itoa(code)
		}
	}
	return strconv.Itoa(code/100) + "xx"
}
