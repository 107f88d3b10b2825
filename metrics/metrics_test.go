package metrics

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// series gathers the registry into "name{k=v,...}" -> value; histograms
// give name_count and name_sum.
func series(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = s.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()+"_count{"+strings.Join(ls, ",")+"}"] = float64(s.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum{"+strings.Join(ls, ",")+"}"] = s.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func newTest() *Metrics {
	return New(Options{Version: "test", Routes: []string{"support", "sales"}, Trunks: []string{"pbx"}})
}

// exercise calls every observer method once, so every family has a child.
func exercise(m *Metrics) {
	now := time.Now()
	m.CallOffered(DirInbound, "support")
	m.CallSetup(DirInbound, StageWebhookToPreAccept, 80*time.Millisecond)
	m.CallAnswered(DirInbound, "support", 3*time.Second)
	m.CallEnded(Call{Direction: DirInbound, Route: "support", Outcome: OutcomeAnswered, Reason: "completed",
		Offered: now.Add(-time.Minute), Accepted: now.Add(-50 * time.Second), Ended: now, Attempts: 2, Fallback: true,
		MetaErrors: []int{138021}, DigitsToPBX: 3, DigitsToWhatsApp: 1, JitterBufferMs: 20,
		Legs: []Leg{{Kind: LegSIP, Codec: "PCMU", PacketsIn: 100, PacketsOut: 100, Lost: 1}}})
	m.CallOffered(DirOutbound, "")
	m.CallRefused(DirOutbound, "", RefusedDraining)
	m.GraphRequest("accept", "ok", 0, 40*time.Millisecond)
	m.SIPRequest("OPTIONS", "out")
	m.SIPResponse("OPTIONS", 200, "in")
	m.TrunkState("pbx", true)
	m.Registration("pbx", true)
	m.PermissionCheck("allowed")
	m.StoreError("create")
	m.TranscodeCPU(time.Millisecond)
	m.SetDraining(false)
	m.SetLimits(10, 0.8)
	m.WatchCPU(func() float64 { return 0.25 })
	m.WatchWebhook(func() (map[string]uint64, map[string]uint64) { return nil, nil })
	m.WatchStoreSpool(func() (int, uint64) { return 2, 1 })
}

// Names is what the dashboard and alert test checks against: it must be
// exactly what the registry exposes once every collector has a child, so
// it can neither hide a metric nor claim one that does not exist.
func TestNamesMatchRegistry(t *testing.T) {
	m := newTest()
	exercise(m)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		n := mf.GetName()
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			got = append(got, n+"_bucket", n+"_sum", n+"_count")
		}
		got = append(got, n)
	}
	names := m.Names()
	for _, n := range names {
		if !slices.Contains(got, n) {
			t.Errorf("Names lists %s, which the registry does not expose", n)
		}
	}
	for _, n := range got {
		if (strings.HasPrefix(n, "ponte_") || n == "process_cpu_seconds_total") && !slices.Contains(names, n) {
			t.Errorf("the registry exposes %s, which Names does not list", n)
		}
	}
}

// promlint: Prometheus's naming conventions (units, _total, base units).
func TestLint(t *testing.T) {
	m := newTest()
	exercise(m)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ponte_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func TestCallCounters(t *testing.T) {
	m := newTest()
	t0 := time.Now()
	m.CallOffered(DirInbound, "support")
	m.CallOffered(DirInbound, "support")
	m.CallOffered(DirInbound, "sales")
	m.CallOffered(DirInbound, "")
	m.CallRefused(DirInbound, "sales", RefusedMaxCalls)
	m.CallAnswered(DirInbound, "support", 0)
	s := series(t, m)
	if got := s["ponte_calls_active{direction=inbound}"]; got != 3 {
		t.Errorf("active while 3 calls run = %v", got)
	}
	m.CallEnded(Call{Direction: DirInbound, Route: "support", Outcome: OutcomeAnswered, Reason: "completed",
		Accepted: t0, Ended: t0.Add(90 * time.Second), Attempts: 1})
	m.CallEnded(Call{Direction: DirInbound, Route: "support", Outcome: OutcomeMissed, Reason: "target_486", Attempts: 1})
	m.CallEnded(Call{Direction: DirInbound, Route: "", Outcome: OutcomeRejected, Reason: "no_route"})

	s = series(t, m)
	want := map[string]float64{
		"ponte_calls_offered_total{direction=inbound,route=support}":                2,
		"ponte_calls_offered_total{direction=inbound,route=sales}":                  1,
		"ponte_calls_offered_total{direction=inbound,route=none}":                   1,
		"ponte_calls_offered_total{direction=outbound,route=support}":               0,
		"ponte_calls_answered_total{direction=inbound,route=support}":               1,
		"ponte_calls_ended_total{direction=inbound,outcome=answered,route=support}": 1,
		"ponte_calls_ended_total{direction=inbound,outcome=missed,route=support}":   1,
		"ponte_calls_ended_total{direction=inbound,outcome=rejected,route=sales}":   1,
		"ponte_calls_ended_total{direction=inbound,outcome=rejected,route=none}":    1,
		"ponte_calls_ended_total{direction=inbound,outcome=failed,route=support}":   0,
		"ponte_call_end_reasons_total{direction=inbound,reason=completed}":          1,
		"ponte_call_end_reasons_total{direction=inbound,reason=target_4xx}":         1,
		"ponte_call_end_reasons_total{direction=inbound,reason=no_route}":           1,
		"ponte_call_end_reasons_total{direction=inbound,reason=max_calls}":          1,
		"ponte_calls_refused_total{direction=inbound,reason=max_calls}":             1,
		"ponte_calls_refused_total{direction=inbound,reason=cpu}":                   0,
		"ponte_calls_active{direction=inbound}":                                     0,
		"ponte_call_duration_seconds_count{direction=inbound}":                      1,
		"ponte_call_duration_seconds_sum{direction=inbound}":                        90,
		"ponte_call_target_attempts_total{direction=inbound,route=support}":         2,
	}
	for k, v := range want {
		got, ok := s[k]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if _, ok := s["ponte_call_ring_seconds_count{direction=inbound}"]; ok {
		t.Error("ring time observed although CallAnswered said it was unknown (0)")
	}
}

// Labels from outside the fixed lists collapse to "other": 500 distinct
// routes, actions, codes and reasons add a bounded number of series.
func TestLabelsBounded(t *testing.T) {
	m := newTest()
	before := len(series(t, m))
	for i := range 500 {
		r := fmt.Sprintf("route-%d", i)
		m.CallOffered("sideways", r)
		m.CallEnded(Call{Direction: "sideways", Route: r, Outcome: "weird", Reason: fmt.Sprintf("reason-%d", i),
			MetaErrors: []int{900000 + i}, Legs: []Leg{{Kind: "carrier-pigeon", PacketsIn: 1}}})
		m.GraphRequest(fmt.Sprintf("act-%d", i), fmt.Sprintf("o-%d", i), 700000+i, time.Millisecond)
		m.SIPResponse(fmt.Sprintf("M%d", i), 100+i, "sideways")
		m.TrunkState(fmt.Sprintf("t%d", i), false)
	}
	s := series(t, m)
	if grown := len(s) - before; grown > 60 {
		t.Errorf("500 distinct outside values added %d series", grown)
	}
	for k, v := range map[string]float64{
		"ponte_calls_offered_total{direction=inbound,route=other}":                500,
		"ponte_calls_ended_total{direction=inbound,outcome=other,route=other}":    500,
		"ponte_call_end_reasons_total{direction=inbound,reason=other}":            500,
		"ponte_meta_call_errors_total{code=other}":                                500,
		"ponte_graph_requests_total{action=other,code=,outcome=other}":            500,
		"ponte_trunk_up{trunk=other}":                                             0,
		"ponte_rtp_packets_total{direction=in,leg=other}":                         500,
		"ponte_sip_responses_total{code=5xx,direction=out,method=other}":          95, // 500-599 less 500-504
		"ponte_sip_responses_total{code=486,direction=out,method=other}":          1,
		"ponte_calls_offered_total{direction=inbound,route=support}":              0,
		"ponte_calls_ended_total{direction=inbound,outcome=answered,route=other}": 0,
	} {
		if got := s[k]; got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

func TestLabelMaps(t *testing.T) {
	for _, c := range []struct {
		f    func() string
		want string
	}{
		{func() string { return endReason("target_486") }, "target_4xx"},
		{func() string { return endReason("target_503") }, "target_5xx"},
		{func() string { return endReason("target_603") }, "target_6xx"},
		{func() string { return endReason("target_999") }, "other"},
		{func() string { return endReason("target_48") }, "other"},
		{func() string { return endReason("shutdown") }, "shutdown"},
		{func() string { return sipCode(0) }, "timeout"},
		{func() string { return sipCode(486) }, "486"},
		{func() string { return sipCode(415) }, "4xx"},
		{func() string { return sipCode(42) }, "other"},
		{func() string { return metaCode(190) }, "190"},
		{func() string { return metaCode(138014) }, "138014"},
		{func() string { return metaCode(138024) }, "other"},
	} {
		if got := c.f(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestGraphRequest(t *testing.T) {
	m := newTest()
	m.GraphRequest("accept", "ok", 0, 30*time.Millisecond)
	m.GraphRequest("accept", "error", 190, 20*time.Millisecond)
	m.GraphRequest("reject", "error", 0, 20*time.Millisecond)
	m.GraphRequest("pre_accept", "timeout", 0, 5*time.Second)
	s := series(t, m)
	for k, v := range map[string]float64{
		"ponte_graph_requests_total{action=accept,code=,outcome=ok}":          1,
		"ponte_graph_requests_total{action=accept,code=190,outcome=error}":    1,
		"ponte_graph_requests_total{action=reject,code=0,outcome=error}":      1,
		"ponte_graph_requests_total{action=pre_accept,code=,outcome=timeout}": 1,
		"ponte_graph_request_duration_seconds_count{action=accept}":           2,
		"ponte_graph_request_duration_seconds_sum{action=pre_accept}":         5,
	} {
		if got := s[k]; math.Abs(got-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

func TestWebhookCollector(t *testing.T) {
	m := newTest()
	s := series(t, m)
	for _, k := range []string{"ponte_webhook_rejected_total{reason=signature}", "ponte_webhook_events_total{event=connect,field=calls}",
		"ponte_webhook_events_total{event=account_restriction,field=account_update}"} {
		if v, ok := s[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before any webhook, want 0", k, v, ok)
		}
	}
	m.WatchWebhook(func() (map[string]uint64, map[string]uint64) {
		return map[string]uint64{"calls/connect": 3, "calls/terminate": 2, "calls/weird": 1, "nonsense/x": 4,
				"account_update/account_restriction": 1},
			map[string]uint64{"signature": 2, "duplicate": 1, "brand-new": 5}
	})
	s = series(t, m)
	for k, v := range map[string]float64{
		"ponte_webhook_events_total{event=connect,field=calls}":                      3,
		"ponte_webhook_events_total{event=terminate,field=calls}":                    2,
		"ponte_webhook_events_total{event=other,field=calls}":                        1,
		"ponte_webhook_events_total{event=other,field=other}":                        4,
		"ponte_webhook_events_total{event=account_restriction,field=account_update}": 1,
		"ponte_webhook_rejected_total{reason=signature}":                             2,
		"ponte_webhook_rejected_total{reason=duplicate}":                             1,
		"ponte_webhook_rejected_total{reason=other}":                                 5,
		"ponte_webhook_rejected_total{reason=stale}":                                 0,
	} {
		if got := s[k]; got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

// LegMOS against values worked by hand from emodel.go's formulas.
func TestLegMOS(t *testing.T) {
	for _, c := range []struct {
		name string
		leg  Leg
		jb   float64
		want float64
	}{
		// G.711+PLC, 5 % loss: Ie,eff = 95*5/(5+25.1) = 15.7807; delay 0/2+20+20 = 40 ms,
		// Id = 0.96; R = 76.4593; MOS = 3.8835.
		{"pcmu 5% loss", Leg{Codec: "PCMU", PacketsIn: 95, Lost: 5}, 20, 3.8835},
		// Opus, no loss, RTT 100 ms: delay 50+20+20 = 90 ms, Id = 2.16; R = 91.04; MOS = 4.3636.
		{"opus rtt 100ms", Leg{Codec: "opus", PacketsIn: 1000, RTT: 100 * time.Millisecond}, 20, 4.3636},
		// Duplicates (negative loss) count as no loss.
		{"negative loss", Leg{Codec: "opus", PacketsIn: 1000, Lost: -3, RTT: 100 * time.Millisecond}, 20, 4.3636},
	} {
		if got := LegMOS(c.leg, c.jb); math.Abs(got-c.want) > 5e-4 {
			t.Errorf("%s: MOS %.4f, want %.4f", c.name, got, c.want)
		}
	}
}

func TestMediaCounters(t *testing.T) {
	m := newTest()
	now := time.Now()
	m.CallOffered(DirInbound, "support")
	m.CallEnded(Call{Direction: DirInbound, Route: "support", Outcome: OutcomeAnswered, Reason: "completed",
		Accepted: now.Add(-10 * time.Second), Ended: now, DigitsToPBX: 8, DigitsToWhatsApp: 2, JitterBufferMs: 20,
		Legs: []Leg{
			{Kind: LegWhatsApp, Codec: "opus", PacketsIn: 500, BytesIn: 40000, PacketsOut: 490, BytesOut: 39000, Lost: 2, Jitter: 4 * time.Millisecond},
			{Kind: LegSIP, Codec: "PCMU", PacketsIn: 495, BytesIn: 79200, PacketsOut: 500, BytesOut: 80000},
		}})
	// A call that never got media: no jitter or MOS sample.
	m.CallOffered(DirInbound, "support")
	m.CallEnded(Call{Direction: DirInbound, Route: "support", Outcome: OutcomeFailed, Reason: "media_failed",
		Legs: []Leg{{Kind: LegWhatsApp}}})
	s := series(t, m)
	for k, v := range map[string]float64{
		"ponte_rtp_packets_total{direction=in,leg=whatsapp}": 500,
		"ponte_rtp_packets_total{direction=out,leg=sip}":     500,
		"ponte_rtp_bytes_total{direction=in,leg=sip}":        79200,
		"ponte_rtp_lost_packets_total{leg=whatsapp}":         2,
		"ponte_rtp_lost_packets_total{leg=sip}":              0,
		"ponte_rtp_jitter_seconds_count{leg=whatsapp}":       1,
		"ponte_rtp_jitter_seconds_sum{leg=whatsapp}":         0.004,
		"ponte_call_mos_count{leg=whatsapp}":                 1,
		"ponte_call_mos_count{leg=sip}":                      1,
		"ponte_dtmf_events_total{direction=to_pbx}":          8,
		"ponte_dtmf_events_total{direction=to_whatsapp}":     2,
	} {
		if got := s[k]; math.Abs(got-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

func TestBuildInfoAndLimits(t *testing.T) {
	m := New(Options{Version: "v1.2.3"})
	m.SetLimits(40, 0.85)
	m.SetDraining(true)
	s := series(t, m)
	var build []string
	for k, v := range s {
		if strings.HasPrefix(k, "ponte_build_info{") && v == 1 && strings.Contains(k, "version=v1.2.3") {
			build = append(build, k)
		}
	}
	sort.Strings(build)
	if len(build) != 1 || !strings.Contains(build[0], "goversion=go1.") {
		t.Errorf("build info series %v", build)
	}
	if s["ponte_calls_limit{}"] != 40 || s["ponte_cpu_load_limit{}"] != 0.85 || s["ponte_draining{}"] != 1 {
		t.Errorf("limits/draining: %v %v %v", s["ponte_calls_limit{}"], s["ponte_cpu_load_limit{}"], s["ponte_draining{}"])
	}
}

// TestSIPSecurityCounters: every counter the SIP server keeps reaches
// ponte_sip_inbound_invites_total (an unknown key is not invented), and the
// banned-now figure is the ponte_sip_banned_sources gauge.
func TestSIPSecurityCounters(t *testing.T) {
	m := newTest()
	in := map[string]uint64{"accepted": 1, "challenged": 2, "auth_failed": 3, "forbidden": 4, "dropped": 5,
		"rate_limited": 6, "invite_limited": 7, "scanner": 8, "stranger": 9, "banned": 10, "ban_dropped": 11,
		"banned_now": 3, "made_up": 99}
	m.WatchSIPInbound(func() map[string]uint64 { return in })
	got := series(t, m)
	for k, v := range in {
		key := "ponte_sip_inbound_invites_total{result=" + k + "}"
		switch k {
		case "banned_now", "made_up":
			if _, ok := got[key]; ok {
				t.Errorf("%s exported as a result", k)
			}
		default:
			if got[key] != float64(v) {
				t.Errorf("%s = %v, want %d", key, got[key], v)
			}
		}
	}
	if g := got["ponte_sip_banned_sources{}"]; g != 3 {
		t.Errorf("ponte_sip_banned_sources = %v, want 3", g)
	}
}
