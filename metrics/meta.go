package metrics

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metaCodes are the Graph API and Calling API error codes counted by number
// (reference §3.6 and Meta's error code list); any other code is "other".
// 190: access token expired or invalid; 4, 80007, 130429, 131056: rate
// limits; 131xxx: messaging/platform errors seen on calling; 138000-138023:
// Calling API errors (138014: calling temporarily disabled for low quality,
// 138019-138023: media failures in terminate webhooks).
var metaCodes = func() []int {
	c := []int{1, 2, 4, 10, 100, 190, 200, 368, 80007, 130429, 131000, 131005, 131008, 131009,
		131026, 131030, 131044, 131055, 131056}
	for i := 138000; i <= 138023; i++ {
		c = append(c, i)
	}
	return c
}()

func metaCode(code int) string {
	for _, c := range metaCodes {
		if c == code {
			return strconv.Itoa(code)
		}
	}
	return other
}

// GraphRequest counts one Graph API request attempt (whatsapp.GraphObserver):
// outcome "ok", "error" (Meta answered with an error: code is its error
// code, 0 when the body had none), "timeout" or "network".
func (m *Metrics) GraphRequest(action, outcome string, code int, d time.Duration) {
	action = pick(action, graphActions)
	c := ""
	if outcome = pick(outcome, graphOutcomes); outcome == "error" {
		c = "0"
		if code != 0 {
			c = metaCode(code)
		}
	}
	m.graphReqs.WithLabelValues(action, outcome, c).Inc()
	m.graphLatency.WithLabelValues(action).Observe(d.Seconds())
}

// webhookNames are the families of webhookCollector.
var webhookNames = []string{"ponte_webhook_events_total", "ponte_webhook_rejected_total", "ponte_cpu_load", "ponte_sip_inbound_invites_total", "ponte_sip_banned_sources"}

// WebhookStats returns the webhook's cumulative counters:
// whatsapp.WebhookStats.Received ("field/event" keys) and .Rejected
// (reason keys).
type WebhookStats func() (received, rejected map[string]uint64)

// WatchWebhook makes /metrics read the webhook's own counters at each
// scrape, so the whatsapp package needs no metrics hook for them.
func (m *Metrics) WatchWebhook(f WebhookStats) { m.webhook.Store(&f) }

// WatchCPU makes ponte_cpu_load read f (the admission sampler's load) at
// each scrape.
func (m *Metrics) WatchCPU(f func() float64) { m.cpu.Store(&f) }

// sourceCollector exports values read from other packages at scrape time.
type sourceCollector struct{ m *Metrics }

var (
	webhookEventsDesc = prometheus.NewDesc("ponte_webhook_events_total",
		"Webhook events received and authenticated, by field and event (unknown values: other).", []string{"field", "event"}, nil)
	webhookRejectedDesc = prometheus.NewDesc("ponte_webhook_rejected_total",
		"Webhook requests or events refused, by reason (signature, stale, duplicate, malformed, ...).", []string{"reason"}, nil)
	sipInboundDesc = prometheus.NewDesc("ponte_sip_inbound_invites_total",
		"PBX-originated INVITEs and strangers' requests by what the SIP server did: accepted (a trunk matched and authenticated), challenged (401), auth_failed, forbidden (no trunk: 403), dropped (unauthorized: drop), rate_limited, invite_limited (over invite_rate: 480), scanner (scanner User-Agent dropped), stranger (OPTIONS/REGISTER/other from unknown sources), banned (bans imposed), ban_dropped (messages and connections from banned sources).", []string{"result"}, nil)
	sipBannedDesc = prometheus.NewDesc("ponte_sip_banned_sources",
		"Source addresses banned by the SIP server at this moment (sip.server.ban).", nil, nil)
	cpuLoadDesc = prometheus.NewDesc("ponte_cpu_load",
		"Host CPU busy fraction (0..1) over admission.cpu_window, as admission control sees it.", nil, nil)
)

func (c sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webhookEventsDesc
	ch <- webhookRejectedDesc
	ch <- cpuLoadDesc
	ch <- sipInboundDesc
	ch <- sipBannedDesc
}

func (c sourceCollector) Collect(ch chan<- prometheus.Metric) {
	var received, rejected map[string]uint64
	if f := c.m.webhook.Load(); f != nil {
		received, rejected = (*f)()
	}
	// Known series at 0 first, so alerts see their first increase.
	events := map[[2]string]float64{{"calls", "connect"}: 0, {"calls", "terminate"}: 0,
		{"account_update", "account_restriction"}: 0, {"account_update", "account_violation"}: 0}
	for k, v := range received {
		field, event, _ := strings.Cut(k, "/")
		events[[2]string{pick(field, webhookFields), pick(event, webhookEvents)}] += float64(v)
	}
	for k, v := range events {
		ch <- prometheus.MustNewConstMetric(webhookEventsDesc, prometheus.CounterValue, v, k[0], k[1])
	}
	reasons := map[string]float64{}
	for _, r := range rejectReasons {
		reasons[r] = 0
	}
	for k, v := range rejected {
		reasons[pick(k, rejectReasons)] += float64(v)
	}
	for r, v := range reasons {
		ch <- prometheus.MustNewConstMetric(webhookRejectedDesc, prometheus.CounterValue, v, r)
	}
	load := 0.0
	if f := c.m.cpu.Load(); f != nil {
		load = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(cpuLoadDesc, prometheus.GaugeValue, load)
	var inv map[string]uint64
	if f := c.m.sipInbound.Load(); f != nil {
		inv = (*f)()
	}
	for _, r := range sipInboundResults {
		ch <- prometheus.MustNewConstMetric(sipInboundDesc, prometheus.CounterValue, float64(inv[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(sipBannedDesc, prometheus.GaugeValue, float64(inv[sipBannedNow]))
}

// sipInboundResults are the values of ponte_sip_inbound_invites_total's
// result label.
var sipInboundResults = []string{"accepted", "challenged", "auth_failed", "forbidden", "dropped", "rate_limited",
	"invite_limited", "scanner", "stranger", "banned", "ban_dropped"}

// sipBannedNow is the key of WatchSIPInbound's map that carries the
// ponte_sip_banned_sources gauge rather than a counter.
const sipBannedNow = "banned_now"

// WatchSIPInbound makes ponte_sip_inbound_invites_total read f (the SIP
// server's counters by result) at each scrape, and ponte_sip_banned_sources
// its "banned_now" entry.
func (m *Metrics) WatchSIPInbound(f func() map[string]uint64) { m.sipInbound.Store(&f) }

// sources are set after New by the server wiring.
type sources struct {
	webhook    atomic.Pointer[WebhookStats]
	cpu        atomic.Pointer[func() float64]
	sipInbound atomic.Pointer[func() map[string]uint64]
	spool      atomic.Pointer[func() (int, uint64)]     // store.go
	panics     atomic.Pointer[func() map[string]uint64] // panics.go
}
