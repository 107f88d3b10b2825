package metrics

import (
	"runtime/debug"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values. Every label of every ponte collector takes its values from a
// fixed list or from the config (route and trunk names), never from a call or
// a payload, so the number of series stays bounded whatever the traffic
// (Prometheus naming and instrumentation practices: "do not use labels to
// store dimensions with high cardinality").
const (
	DirInbound  = "inbound"  // a WhatsApp user called the business
	DirOutbound = "outbound" // the business (PBX/agent) called a WhatsApp user

	LegWhatsApp = "whatsapp" // the WebRTC leg toward Meta
	LegSIP      = "sip"      // the RTP leg toward the PBX

	// Outcomes of a call: the store's coarse outcomes (store.Outcome), which
	// supervisors filter on, so records and metrics agree.
	OutcomeAnswered  = "answered"  // connected to an agent/callbot (or, outbound, the user)
	OutcomeMissed    = "missed"    // rang, nobody answered: ring timeout, busy, accept window
	OutcomeAbandoned = "abandoned" // the caller hung up before anyone answered
	OutcomeRejected  = "rejected"  // refused by policy: no route, closed, 603, admission, drain
	OutcomeFailed    = "failed"    // technical failure: media, Graph API, SIP, shutdown before answer

	// Reasons a call is refused before any leg is set up (admission control
	// and drain, issue 6 items 4-5).
	RefusedDraining = "draining"
	RefusedMaxCalls = "max_calls"
	RefusedCPU      = "cpu"

	// Setup stages of the setup latency histogram.
	StageWebhookToPreAccept = "webhook_to_pre_accept" // inbound: connect webhook in -> pre_accept sent
	StagePBXAnswerToAccept  = "pbx_answer_to_accept"  // inbound: PBX 200 -> accept sent
	StageInviteToConnect    = "invite_to_connect"     // outbound: PBX INVITE -> Graph connect sent

	other = "other" // any value outside a label's list
	none  = "none"  // no route (the number has none)
)

var (
	directions    = []string{DirInbound, DirOutbound}
	outcomes      = []string{OutcomeAnswered, OutcomeMissed, OutcomeAbandoned, OutcomeRejected, OutcomeFailed}
	refusals      = []string{RefusedDraining, RefusedMaxCalls, RefusedCPU}
	stages        = []string{StageWebhookToPreAccept, StagePBXAnswerToAccept, StageInviteToConnect}
	legs          = []string{LegWhatsApp, LegSIP}
	graphActions  = []string{"pre_accept", "accept", "reject", "terminate", "connect", "call_permissions", "messages"}
	graphOutcomes = []string{"ok", "error", "timeout", "network"}
	sipMethods    = []string{"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK"}
	// rejectReasons are whatsapp.WebhookStats.Rejected's keys.
	rejectReasons = []string{"signature", "stale", "replay", "duplicate", "tombstone", "malformed", "too_large",
		"read", "method", "verify", "no_call_id", "closed"}
	// webhookFields and webhookEvents are Meta's (reference §2, §8 item 4).
	webhookFields = []string{"calls", "messages", "account_update", "account_settings_update"}
	webhookEvents = []string{"connect", "terminate", "status", "call_created", "call_recording_available",
		"account_restriction", "account_violation", "call_permission_reply", "interactive", "text"}
)

// Options are what New needs to know from the config.
type Options struct {
	Version  string   // ponte's version (ponte_build_info)
	Revision string   // VCS revision when the binary has no VCS build info (container builds)
	Routes   []string // route names: the only values of the route label besides "none" and "other"
	Trunks   []string // trunk names: the only values of the trunk label besides "other"
}

// Metrics holds ponte's collectors in one registry. It implements the
// gateway's Observer, the Graph client's observer and the admission
// gauges; every method is safe for concurrent use.
type Metrics struct {
	// Registry is what /metrics serves: ponte's collectors plus the Go
	// runtime and process collectors (process_cpu_seconds_total, RSS, fds).
	Registry *prometheus.Registry

	routes, trunks map[string]bool
	names          []string // every metric family name ponte can expose

	offered, answered, ended, endReasons, refused *prometheus.CounterVec
	active                                        *prometheus.GaugeVec
	setup, ring, duration                         *prometheus.HistogramVec
	attempts, fallbacks                           *prometheus.CounterVec
	metaErrors                                    *prometheus.CounterVec

	graphReqs    *prometheus.CounterVec
	graphLatency *prometheus.HistogramVec

	sipReqs, sipResps *prometheus.CounterVec
	trunkUp           *prometheus.GaugeVec
	registered        *prometheus.GaugeVec

	rtpPackets, rtpBytes, rtpLost *prometheus.CounterVec
	jitter, mos                   *prometheus.HistogramVec
	dtmf                          *prometheus.CounterVec
	transcodeCPU                  prometheus.Counter

	permissions *prometheus.CounterVec
	storeErrors *prometheus.CounterVec

	draining, callsLimit, cpuLimit prometheus.Gauge

	sources // read at scrape time (meta.go)
}

// New builds the registry with every collector registered and every
// bounded label combination that alerts and ratios need initialised at 0,
// so rate() and increase() see the first event (a series that appears with
// value 1 has no increase).
func New(o Options) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), routes: map[string]bool{}, trunks: map[string]bool{}}
	for _, r := range o.Routes {
		m.routes[r] = true
	}
	for _, t := range o.Trunks {
		m.trunks[t] = true
	}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.names = append(m.names, "go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "process_open_fds", "process_max_fds")

	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.register(c, name)
		return c
	}
	hv := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.register(h, name, name+"_bucket", name+"_sum", name+"_count")
		return h
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		m.register(g, name)
		return g
	}

	// Calls.
	m.offered = cv("ponte_calls_offered_total", "Calls presented to ponte (connect webhook, or PBX INVITE for outbound), refused ones included.", "direction", "route")
	m.answered = cv("ponte_calls_answered_total", "Calls answered, counted when answered (inbound: accept returned 200).", "direction", "route")
	m.ended = cv("ponte_calls_ended_total", "Calls ended, by coarse outcome (answered, missed, abandoned, rejected, failed); refused calls included.", "direction", "route", "outcome")
	m.endReasons = cv("ponte_call_end_reasons_total", "Calls ended, by the gateway's reason (completed, no_answer, target_4xx, media_failed, shutdown, ...).", "direction", "reason")
	m.refused = cv("ponte_calls_refused_total", "Calls refused before any leg was set up: admission control (max_calls, cpu) or drain (draining).", "direction", "reason")
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ponte_calls_active", Help: "Calls in progress."}, []string{"direction"})
	m.register(m.active, "ponte_calls_active")
	m.setup = hv("ponte_call_setup_seconds", "Setup latency by stage: webhook_to_pre_accept, pbx_answer_to_accept (inbound), invite_to_connect (outbound).",
		[]float64{.025, .05, .1, .25, .5, 1, 2, 3, 5, 10}, "direction", "stage")
	m.ring = hv("ponte_call_ring_seconds", "Ring-to-answer time: INVITE sent (after pre_accept) to the PBX's 200.",
		[]float64{1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 45, 60}, "direction")
	m.duration = hv("ponte_call_duration_seconds", "Talk time of answered calls (accept to end).",
		[]float64{5, 15, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600}, "direction")
	m.attempts = cv("ponte_call_target_attempts_total", "SIP targets tried (INVITEs placed), summed over calls.", "direction", "route")
	m.fallbacks = cv("ponte_call_fallbacks_total", "Calls that went on to the route's default department.", "direction", "route")
	m.metaErrors = cv("ponte_meta_call_errors_total", "Error codes in Meta's terminate webhooks (138019-138023: media failures).", "code")

	// Graph API.
	m.graphReqs = cv("ponte_graph_requests_total", "Graph API requests (each attempt), by action, outcome (ok, error, timeout, network) and Meta error code.", "action", "outcome", "code")
	m.graphLatency = hv("ponte_graph_request_duration_seconds", "Graph API request latency (each attempt).",
		[]float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10}, "action")

	// SIP.
	m.sipReqs = cv("ponte_sip_requests_total", "SIP requests, by method and direction (out: sent by ponte, in: received).", "method", "direction")
	m.sipResps = cv("ponte_sip_responses_total", "SIP final responses, by method, code (or timeout) and direction (in: received by ponte, out: sent).", "method", "code", "direction")
	m.trunkUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ponte_trunk_up", Help: "1 when the trunk answers OPTIONS pings, 0 after two unanswered (trunks with options_interval only)."}, []string{"trunk"})
	m.register(m.trunkUp, "ponte_trunk_up")
	m.registered = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ponte_sip_registration_up", Help: "1 while ponte's registration to the trunk is bound, 0 after it failed or expired (trunks with register: only)."}, []string{"trunk"})
	m.register(m.registered, "ponte_sip_registration_up")

	// Media.
	m.rtpPackets = cv("ponte_rtp_packets_total", "RTP packets per leg (whatsapp, sip) and direction (in, out), added when a call ends.", "leg", "direction")
	m.rtpBytes = cv("ponte_rtp_bytes_total", "RTP payload bytes per leg and direction, added when a call ends.", "leg", "direction")
	m.rtpLost = cv("ponte_rtp_lost_packets_total", "RTP packets lost on arrival per leg (RFC 3550 A.3), added when a call ends.", "leg")
	m.jitter = hv("ponte_rtp_jitter_seconds", "Interarrival jitter per leg at the end of each call (RFC 3550 A.8).",
		[]float64{.001, .0025, .005, .01, .02, .04, .08, .16, .32}, "leg")
	m.mos = hv("ponte_call_mos", "Estimated MOS per leg of answered calls (simplified ITU-T G.107 E-model, emodel.go).",
		[]float64{1, 1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.3, 4.4, 4.5}, "leg")
	m.dtmf = cv("ponte_dtmf_events_total", "DTMF digits relayed, by direction (to_pbx, to_whatsapp).", "direction")
	m.transcodeCPU = prometheus.NewCounter(prometheus.CounterOpts{Name: "ponte_transcode_cpu_seconds_total", Help: "CPU time spent encoding and decoding audio."})
	m.register(m.transcodeCPU, "ponte_transcode_cpu_seconds_total")

	// Policy and storage.
	m.permissions = cv("ponte_permission_checks_total", "Call permission checks (GET call_permissions) before outbound calls, by outcome (allowed, denied, error).", "outcome")
	m.storeErrors = cv("ponte_store_errors_total", "Failed writes or reads of the call store, by operation.", "op")
	m.register(spoolCollector{m}, spoolNames...) // store.go
	m.register(panicCollector{m}, panicNames...) // panics.go

	// Capacity and lifecycle.
	m.draining = gauge("ponte_draining", "1 while ponte drains (SIGTERM): new calls are refused.")
	m.callsLimit = gauge("ponte_calls_limit", "admission.max_calls (0: no limit).")
	m.cpuLimit = gauge("ponte_cpu_load_limit", "admission.max_cpu as a fraction of the host's CPU (0: no limit).")
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ponte_build_info", Help: "1, labelled with the build's version, Go version and VCS revision."},
		[]string{"version", "goversion", "revision"})
	m.register(build, "ponte_build_info")
	goVer, rev := buildInfo()
	if rev == "unknown" && o.Revision != "" {
		rev = o.Revision
	}
	build.WithLabelValues(o.Version, goVer, rev).Set(1)

	m.Registry.MustRegister(sourceCollector{m}) // names in webhookNames

	m.initSeries(o)
	return m
}

func (m *Metrics) register(c prometheus.Collector, names ...string) {
	m.Registry.MustRegister(c)
	m.names = append(m.names, names...)
}

// initSeries creates the series the dashboard and the alerts compute rates
// and ratios from, at 0.
func (m *Metrics) initSeries(o Options) {
	routes := append([]string{none}, o.Routes...)
	for _, d := range directions {
		m.active.WithLabelValues(d)
		for _, r := range routes {
			m.offered.WithLabelValues(d, r)
			m.answered.WithLabelValues(d, r)
			for _, oc := range outcomes {
				m.ended.WithLabelValues(d, r, oc)
			}
		}
		for _, rf := range refusals {
			m.refused.WithLabelValues(d, rf)
		}
	}
	for _, a := range graphActions[:4] {
		m.graphReqs.WithLabelValues(a, "ok", "")
	}
	// The alerts on Graph auth failures and Meta restrictions count these.
	for _, code := range []string{"190", "138014"} {
		for _, a := range graphActions {
			m.graphReqs.WithLabelValues(a, "error", code)
		}
	}
	for _, l := range legs {
		m.rtpLost.WithLabelValues(l)
		for _, d := range []string{"in", "out"} {
			m.rtpPackets.WithLabelValues(l, d)
			m.rtpBytes.WithLabelValues(l, d)
		}
	}
	if len(o.Trunks) > 0 {
		m.sipResps.WithLabelValues("OPTIONS", "timeout", "in")
	}
	for _, d := range []string{"to_pbx", "to_whatsapp"} {
		m.dtmf.WithLabelValues(d)
	}
}

// Names returns every metric family (and histogram series) name ponte can
// expose, sorted: the dashboard and alert files may use only these.
func (m *Metrics) Names() []string {
	out := slices.Clone(m.names)
	out = append(out, webhookNames...)
	sort.Strings(out)
	return slices.Compact(out)
}

// buildInfo reads the Go version and VCS revision the binary was built
// from (runtime/debug.ReadBuildInfo: "-dirty" appended when the tree had
// uncommitted changes).
func buildInfo() (goVersion, revision string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "unknown"
	}
	revision, dirty := "unknown", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		revision += "-dirty"
	}
	return bi.GoVersion, revision
}

// pick returns v when it is in list, else "other".
func pick(v string, list []string) string {
	if slices.Contains(list, v) {
		return v
	}
	return other
}

func pickDirection(d string) string {
	if d == DirOutbound {
		return DirOutbound
	}
	return DirInbound
}

func (m *Metrics) route(r string) string {
	switch {
	case r == "":
		return none
	case m.routes[r]:
		return r
	}
	return other
}

func (m *Metrics) trunk(t string) string {
	if m.trunks[t] {
		return t
	}
	return other
}
