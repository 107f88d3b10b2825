package test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// scrape reads the admin listener's /metrics (Prometheus text format) into
// "name{k=v,...}" -> value, labels sorted, values unquoted.
func scrape(t *testing.T, adminURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[normSeries(line[:i])] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// normSeries turns `name{b="2",a="1"}` into `name{a=1,b=2}` (the test's
// label values contain no commas or quotes).
func normSeries(s string) string {
	name, labels, ok := strings.Cut(s, "{")
	if !ok {
		return name + "{}"
	}
	var ls []string
	for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		ls = append(ls, k+"="+strings.Trim(v, `"`))
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// expectSeries compares exact values; a missing series counts as absent,
// which is only right when want is 0 and absent is allowed (-1 means: must
// be absent or 0).
func expectSeries(t *testing.T, what string, got map[string]float64, want map[string]float64) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := want[k]
		v, ok := got[k]
		switch {
		case w < 0:
			if ok && v != 0 {
				t.Errorf("%s: %s = %v, want 0 or absent", what, k, v)
			}
		case !ok:
			t.Errorf("%s: %s absent, want %v", what, k, w)
		case v != w:
			t.Errorf("%s: %s = %v, want %v", what, k, v, w)
		}
	}
}

// waitSeries polls /metrics until key has value want (webhooks are
// delivered asynchronously), then returns the scrape.
func waitSeries(t *testing.T, env *scenario.Env, key string, want float64) map[string]float64 {
	t.Helper()
	var s map[string]float64
	waitFor(5*time.Second, func() bool {
		s = scrape(t, env.Server.AdminURL())
		return s[key] == want
	})
	return s
}

const (
	inbound  = "direction=inbound"
	support  = "route=support"
	webhookT = "ponte_webhook_events_total{event=terminate,field=calls}"
)

func ended(outcome, route string) string {
	return fmt.Sprintf("ponte_calls_ended_total{%s,outcome=%s,%s}", inbound, outcome, route)
}

// TestMetricsAfterScriptedCalls: an answered call with DTMF both ways, a
// missed call (486) and a call with no route, each through the real gateway;
// /metrics then shows exact counters and observed histograms (issue 6
// acceptance). One environment per PBX behaviour: the PBX simulator answers
// every call the same way.
func TestMetricsAfterScriptedCalls(t *testing.T) {
	t.Run("answered with DTMF", func(t *testing.T) {
		env := startEnv(t, scenario.Options{})
		caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
		ctx := ctxT(t, 20*time.Second)
		caller.SendDTMF("123", 100*time.Millisecond, 100*time.Millisecond)
		if err := caller.WaitDTMF(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(2*time.Second, func() bool { return len(pc.Digits()) >= 3 })
		pc.SendDTMF("45", 100*time.Millisecond, 100*time.Millisecond)
		waitFor(3*time.Second, func() bool { return len(caller.Digits()) >= 2 })
		if digitString(pc.Digits()) != "123" || callerDigitString(caller.Digits()) != "45" {
			t.Fatalf("DTMF: PBX got %q, caller got %q", digitString(pc.Digits()), callerDigitString(caller.Digits()))
		}
		time.Sleep(time.Second) // audio to measure
		during := scrape(t, env.Server.AdminURL())
		expectSeries(t, "during the call", during, map[string]float64{
			"ponte_calls_active{" + inbound + "}":                                         1,
			"ponte_calls_answered_total{" + inbound + "," + support + "}":                 1, // counted at answer, not at hang-up
			ended("answered", support):                                                    0,
			"ponte_call_setup_seconds_count{" + inbound + ",stage=webhook_to_pre_accept}": 1,
		})
		hangupAndWait(t, env, caller, pc)
		s := waitSeries(t, env, webhookT, 1)
		expectSeries(t, "answered call", s, map[string]float64{
			"ponte_calls_offered_total{" + inbound + "," + support + "}":     1,
			"ponte_calls_answered_total{" + inbound + "," + support + "}":    1,
			ended("answered", support):                                       1,
			ended("missed", support):                                         0,
			ended("rejected", support):                                       0,
			ended("failed", support):                                         0,
			"ponte_call_end_reasons_total{" + inbound + ",reason=completed}": 1,
			"ponte_calls_active{" + inbound + "}":                            0,
			"ponte_calls_refused_total{" + inbound + ",reason=max_calls}":    0,
			"ponte_dtmf_events_total{direction=to_pbx}":                      3,
			"ponte_dtmf_events_total{direction=to_whatsapp}":                 2,
			"ponte_graph_requests_total{action=pre_accept,code=,outcome=ok}": 1,
			"ponte_graph_requests_total{action=accept,code=,outcome=ok}":     1,
			"ponte_graph_requests_total{action=reject,code=,outcome=ok}":     0, // the user hung up: nothing owed
			"ponte_graph_requests_total{action=terminate,code=,outcome=ok}":  0,
			"ponte_webhook_events_total{event=connect,field=calls}":          1,
			webhookT: 1,
			"ponte_webhook_rejected_total{reason=signature}":                    0,
			"ponte_webhook_rejected_total{reason=duplicate}":                    0,
			"ponte_sip_requests_total{direction=out,method=INVITE}":             1,
			"ponte_sip_responses_total{code=200,direction=in,method=INVITE}":    1,
			"ponte_call_target_attempts_total{" + inbound + "," + support + "}": 1,
			// Histograms observed once each.
			"ponte_call_setup_seconds_count{" + inbound + ",stage=webhook_to_pre_accept}": 1,
			"ponte_call_setup_seconds_count{" + inbound + ",stage=pbx_answer_to_accept}":  1,
			"ponte_call_ring_seconds_count{" + inbound + "}":                              1,
			"ponte_call_duration_seconds_count{" + inbound + "}":                          1,
			"ponte_graph_request_duration_seconds_count{action=pre_accept}":               1,
			"ponte_graph_request_duration_seconds_count{action=accept}":                   1,
			"ponte_call_mos_count{leg=whatsapp}":                                          1,
			"ponte_call_mos_count{leg=sip}":                                               1,
			"ponte_rtp_jitter_seconds_count{leg=whatsapp}":                                1,
			"ponte_rtp_jitter_seconds_count{leg=sip}":                                     1,
		})
		// Values that depend on timing: within what a loopback call allows.
		dur := s["ponte_call_duration_seconds_sum{"+inbound+"}"]
		setup := s["ponte_call_setup_seconds_sum{"+inbound+",stage=webhook_to_pre_accept}"]
		for _, c := range []struct {
			what      string
			v, lo, hi float64
		}{
			{"talk time (s)", dur, 1.5, 60},
			{"webhook->pre_accept (s)", setup, 0, 5},
			{"MOS whatsapp leg", s["ponte_call_mos_sum{leg=whatsapp}"], 4, 4.5},
			// PCMU <-> Opus costs about 0.3 ms of every 20 ms (see the
			// benchmarks): well above zero, far below real time.
			{"transcoding work (s)", s["ponte_transcode_cpu_seconds_total{}"], 0.001 * dur, 0.5 * dur},
			{"MOS sip leg", s["ponte_call_mos_sum{leg=sip}"], 4, 4.5},
			// 50 packets/s each way for the whole call.
			{"RTP packets in from the PBX", s["ponte_rtp_packets_total{direction=in,leg=sip}"], 40 * dur, 60 * dur},
			{"RTP packets out to Meta", s["ponte_rtp_packets_total{direction=out,leg=whatsapp}"], 40 * (dur - 1), 60 * dur},
			// PCMU audio is 160 bytes a packet; the PBX's telephone-events
			// for its two digits (4 bytes each, about 30 packets) pull the
			// mean down a little.
			{"bytes per RTP packet from the PBX", s["ponte_rtp_bytes_total{direction=in,leg=sip}"] / s["ponte_rtp_packets_total{direction=in,leg=sip}"], 120, 160},
		} {
			if c.v < c.lo || c.v > c.hi {
				t.Errorf("%s = %v, want within [%v, %v]", c.what, c.v, c.lo, c.hi)
			}
		}
	})

	t.Run("missed 486", func(t *testing.T) {
		env := startEnv(t, scenario.Options{PBX: pbx.Config{AnswerCode: 486}})
		caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r := callerEnded(t, caller, 10*time.Second); r != "gateway_reject" {
			t.Fatalf("caller end reason %q, want gateway_reject", r)
		}
		_ = env.WaitIdle(ctxT(t, 5*time.Second))
		s := waitSeries(t, env, webhookT, 1)
		expectSeries(t, "missed call", s, map[string]float64{
			"ponte_calls_offered_total{" + inbound + "," + support + "}":  1,
			"ponte_calls_answered_total{" + inbound + "," + support + "}": 0,
			ended("missed", support):   1,
			ended("answered", support): 0,
			"ponte_call_end_reasons_total{" + inbound + ",reason=target_4xx}":             1,
			"ponte_calls_active{" + inbound + "}":                                         0,
			"ponte_graph_requests_total{action=pre_accept,code=,outcome=ok}":              1,
			"ponte_graph_requests_total{action=reject,code=,outcome=ok}":                  1,
			"ponte_graph_requests_total{action=accept,code=,outcome=ok}":                  0,
			"ponte_sip_requests_total{direction=out,method=INVITE}":                       1,
			"ponte_sip_responses_total{code=486,direction=in,method=INVITE}":              1,
			"ponte_call_setup_seconds_count{" + inbound + ",stage=webhook_to_pre_accept}": 1,
			"ponte_call_setup_seconds_count{" + inbound + ",stage=pbx_answer_to_accept}":  -1,
			"ponte_call_duration_seconds_count{" + inbound + "}":                          -1,
			"ponte_call_mos_count{leg=sip}":                                               -1,
			"ponte_call_mos_count{leg=whatsapp}":                                          -1,
			"ponte_dtmf_events_total{direction=to_pbx}":                                   0,
		})
	})

	t.Run("rejected no route", func(t *testing.T) {
		env := startEnv(t, scenario.Options{Configure: func(c *config.Config) { c.WhatsApp.Numbers[0].InboundRoute = "" }})
		caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r := callerEnded(t, caller, 10*time.Second); r != "gateway_reject" {
			t.Fatalf("caller end reason %q, want gateway_reject", r)
		}
		if a := waitActions(env, caller.ID(), "reject"); a != "reject" {
			t.Errorf("Graph requests %q, want reject", a)
		}
		_ = env.WaitIdle(ctxT(t, 5*time.Second))
		s := waitSeries(t, env, webhookT, 1)
		expectSeries(t, "no-route call", s, map[string]float64{
			"ponte_calls_offered_total{" + inbound + ",route=none}":                       1,
			"ponte_calls_offered_total{" + inbound + "," + support + "}":                  0,
			ended("rejected", "route=none"):                                               1,
			"ponte_call_end_reasons_total{" + inbound + ",reason=no_route}":               1,
			"ponte_calls_active{" + inbound + "}":                                         0,
			"ponte_graph_requests_total{action=reject,code=,outcome=ok}":                  1,
			"ponte_graph_requests_total{action=pre_accept,code=,outcome=ok}":              0,
			"ponte_sip_requests_total{direction=out,method=INVITE}":                       -1,
			"ponte_calls_refused_total{" + inbound + ",reason=max_calls}":                 0,
			"ponte_call_setup_seconds_count{" + inbound + ",stage=webhook_to_pre_accept}": -1,
		})
	})
}

// TestAdmissionMaxCalls: with admission.max_calls 1, a second WhatsApp call
// is rejected with the Graph API before pre_accept and a PBX INVITE gets 503
// with Retry-After; both are counted, and the first call is untouched.
func TestAdmissionMaxCalls(t *testing.T) {
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.Admission.MaxCalls = 1
		c.Admission.RetryAfter = config.Duration(7 * time.Second)
	}})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})

	second, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{From: "5511912345678"})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, second, 10*time.Second); r != "gateway_reject" {
		t.Fatalf("second caller end reason %q, want gateway_reject", r)
	}
	if a := waitActions(env, second.ID(), "reject"); a != "reject" {
		t.Errorf("second call's Graph requests %q, want reject only (refused before pre_accept)", a)
	}
	code, retry := sipInvite(t, env.Server.UA.ListenAddr("udp").String())
	if code != 503 || retry != "7" {
		t.Errorf("PBX INVITE over the limit: %d Retry-After %q, want 503 Retry-After 7", code, retry)
	}
	select {
	case <-caller.Ended():
		t.Fatalf("the admitted call ended: %s", caller.EndReason())
	default:
	}
	s := waitSeries(t, env, webhookT, 1) // Meta's terminate for the rejected call
	expectSeries(t, "over the limit", s, map[string]float64{
		"ponte_calls_offered_total{" + inbound + "," + support + "}":      2,
		"ponte_calls_refused_total{" + inbound + ",reason=max_calls}":     1,
		"ponte_calls_refused_total{direction=outbound,reason=max_calls}":  1,
		ended("rejected", support):                                        1,
		"ponte_call_end_reasons_total{" + inbound + ",reason=max_calls}":  1,
		"ponte_calls_active{" + inbound + "}":                             1,
		"ponte_calls_active{direction=outbound}":                          0,
		"ponte_calls_limit{}":                                             1,
		"ponte_graph_requests_total{action=reject,code=,outcome=ok}":      1,
		"ponte_graph_requests_total{action=pre_accept,code=,outcome=ok}":  1,
		"ponte_sip_requests_total{direction=in,method=INVITE}":            1,
		"ponte_sip_responses_total{code=503,direction=out,method=INVITE}": 1,
	})
	hangupAndWait(t, env, caller, pc)
}

// sipInvite sends one out-of-dialog INVITE over UDP from a raw socket and
// returns the final response's code and Retry-After; it ACKs a failure
// response as RFC 3261 §17.1.1.3 requires, so ponte stops retransmitting.
func sipInvite(t *testing.T, to string) (int, string) {
	t.Helper()
	conn, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	branch := fmt.Sprintf("z9hG4bK-ponte-test-%d", time.Now().UnixNano())
	head := func(method string) string {
		return fmt.Sprintf("%s sip:ponte@%s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=%s;rport\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:pbx@127.0.0.1>;tag=pbx-tag\r\n", method, to, local, branch)
	}
	inv := head("INVITE") + "To: <sip:ponte@127.0.0.1>\r\nCall-ID: admission-test@127.0.0.1\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:pbx@" + local + ">\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(inv)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no final response to the INVITE: %v", err)
		}
		msg := string(buf[:n])
		var code int
		if _, err := fmt.Sscanf(msg, "SIP/2.0 %d", &code); err != nil || code < 200 {
			continue // 100 Trying, or noise
		}
		retry, toHdr := "", ""
		for _, l := range strings.Split(msg, "\r\n") {
			k, v, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "retry-after":
				retry = strings.TrimSpace(v)
			case "to", "t":
				toHdr = strings.TrimSpace(v)
			}
		}
		ack := head("ACK") + "To: " + toHdr + "\r\nCall-ID: admission-test@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
		_, _ = conn.Write([]byte(ack))
		return code, retry
	}
}
