package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// drainConfig is a complete ponte config against the simulators, written as
// an operator would (config.Load checks it before the child sees it).
const drainConfig = `node_id: ponte-drain-test
log: { level: info, format: text }
http: { public: "%[1]s", admin: "%[2]s" }
whatsapp:
  graph_url: "%[3]s"
  access_token: "%[4]s"
  app_secret: "%[5]s"
  verify_token: "%[6]s"
  request_timeout: 3s
  numbers:
    - { phone_number_id: "%[7]s", display_phone_number: "%[8]s", inbound_route: support }
media: { bind_ip: 127.0.0.1, webrtc_udp_port: %[9]d, rtp_ip: 127.0.0.1, rtp_ports: 40000-49999 }
sip:
  listen: [ "udp:127.0.0.1:%[10]d" ]
  trunks: [ { name: pbx, address: "%[11]s", transport: udp, codecs: [ PCMU ], inbound: { allow: [ 127.0.0.1 ] } } ]
routes:
  support: { targets: [ { uri: "sip:agent@%[11]s", trunk: pbx, ring_timeout: 25s } ] }
store: { driver: memory }
drain: { timeout: %[12]s, retry_after: 45s }
`

// buildPonte builds cmd/ponte into a temporary directory.
func buildPonte(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "ponte")
	cmd := exec.Command(goBin, "build", "-tags", "nolibopusfile", "-o", bin, "./cmd/ponte")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func getStatus(url string) int {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDrainOnSIGTERM runs the real binary: SIGTERM during an active call
// makes /readyz fail, refuses a new WhatsApp call (Graph reject, nothing
// else) and a new SIP INVITE (503 Retry-After), keeps the call's audio going
// both ways until drain.timeout, then ends it cleanly (terminate toward Meta,
// BYE with a Reason toward the PBX, recorded as "shutdown") and exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	const drainTimeout = 4 * time.Second
	bin := buildPonte(t)
	w := startStallWatch(t)

	life, stop := context.WithCancel(context.Background())
	defer stop()
	pub, err := scenario.FreeTCP()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := scenario.FreeTCP()
	if err != nil {
		t.Fatal(err)
	}
	rtcPort, err := scenario.FreeUDP()
	if err != nil {
		t.Fatal(err)
	}
	sipPort, err := scenario.FreeUDP()
	if err != nil {
		t.Fatal(err)
	}
	meta, err := wasim.Start(life, wasim.Config{WebhookURL: "http://" + pub + "/webhook", AppSecret: scenario.AppSecret,
		AccessToken: scenario.AccessToken, PhoneNumberID: scenario.PhoneNumberID, DisplayNumber: scenario.DisplayNumber,
		Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	pbxSim, err := pbx.Start(life, pbx.Config{Listen: "127.0.0.1:0", ExpectToneHz: 440, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pbxSim.Close()

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "ponte.yaml")
	body := fmt.Sprintf(drainConfig, pub, admin, meta.GraphURL(), scenario.AccessToken, scenario.AppSecret, scenario.VerifyToken,
		scenario.PhoneNumberID, scenario.DisplayNumber, rtcPort, sipPort, pbxSim.Addr().String(), drainTimeout)
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "ponte.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("ponte log:\n%s", b)
		}
	}()
	adminURL := "http://" + admin
	if !waitFor(15*time.Second, func() bool { return getStatus(adminURL+"/readyz") == http.StatusOK }) {
		t.Fatalf("ponte never became ready (/readyz %d)", getStatus(adminURL+"/readyz"))
	}

	ctx := ctxT(t, 40*time.Second)
	caller, err := meta.Call(ctx, wasim.CallOptions{ExpectHz: 1000})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pbxSim.NextCall(ctx)
	if err != nil {
		t.Fatalf("PBX never rung: %v", err)
	}
	if err := caller.WaitAccepted(ctx); err != nil {
		t.Fatalf("never accepted: %v (%s)", err, caller.EndReason())
	}
	time.Sleep(time.Second)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	if !waitFor(2*time.Second, func() bool { return getStatus(adminURL+"/readyz") == http.StatusServiceUnavailable }) {
		t.Errorf("/readyz still %d after SIGTERM, want 503", getStatus(adminURL+"/readyz"))
	}
	if code := getStatus(adminURL + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while draining, want 200 (alive)", code)
	}

	// A new WhatsApp call is rejected with the Graph API, nothing else.
	second, err := meta.Call(ctx, wasim.CallOptions{From: "5511912345678"})
	if err != nil {
		t.Fatal(err)
	}
	if r := callerEnded(t, second, 5*time.Second); r != "gateway_reject" {
		t.Errorf("call offered while draining ended %q, want gateway_reject", r)
	}
	// A new SIP INVITE gets 503 with the configured Retry-After.
	if code, retry := sipInvite(t, fmt.Sprintf("127.0.0.1:%d", sipPort)); code != 503 || retry != "45" {
		t.Errorf("INVITE while draining: %d Retry-After %q, want 503 Retry-After 45", code, retry)
	}
	s := scrape(t, adminURL)
	expectSeries(t, "while draining", s, map[string]float64{
		"ponte_draining{}": 1,
		"ponte_calls_refused_total{" + inbound + ",reason=draining}":      1,
		"ponte_calls_refused_total{direction=outbound,reason=draining}":   1,
		"ponte_calls_active{" + inbound + "}":                             1,
		"ponte_sip_responses_total{code=503,direction=out,method=INVITE}": 1,
	})

	// The call in progress keeps its audio both ways during the drain.
	listen(t, w, termAt.Add(300*time.Millisecond), time.Second, func(from, to time.Time, skip []audio.Span) string {
		var msg []string
		if r := caller.Heard().Report(from, to, skip...); r.ToneRatio < 0.95 {
			msg = append(msg, fmt.Sprintf("caller heard the PBX in %.0f%% of windows", 100*r.ToneRatio))
		}
		if r := pc.Received().Report(from, to, skip...); r.ToneRatio < 0.95 {
			msg = append(msg, fmt.Sprintf("PBX heard the caller in %.0f%% of windows", 100*r.ToneRatio))
		}
		return strings.Join(msg, "; ")
	})
	select {
	case <-caller.Ended():
		t.Fatalf("the call ended %v into a %v drain: %s", time.Since(termAt), drainTimeout, caller.EndReason())
	default:
	}

	// At drain.timeout the call is ended cleanly on both sides.
	if r := callerEnded(t, caller, drainTimeout+10*time.Second); r != "gateway_terminate" {
		t.Errorf("caller end reason %q, want gateway_terminate", r)
	}
	if d := time.Since(termAt); d < drainTimeout-200*time.Millisecond {
		t.Errorf("the call was ended %v after SIGTERM, before drain.timeout %v", d, drainTimeout)
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "bye" || !strings.Contains(pc.ByeReason(), "shutting down") {
		t.Errorf("PBX leg ended by %q with Reason %q, want a BYE saying the gateway is shutting down", by, pc.ByeReason())
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred cleanup
		if err != nil {
			t.Errorf("ponte exited with %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ponte did not exit after the drain")
	}
	if a := actions(requestsOf(meta, caller.ID())); a != "pre_accept,accept,terminate" {
		t.Errorf("Graph requests for the drained call %q, want pre_accept,accept,terminate", a)
	}
	if a := actions(requestsOf(meta, second.ID())); a != "reject" {
		t.Errorf("Graph requests for the refused call %q, want reject", a)
	}
	// The record is complete: the call's end line carries its outcome.
	logText, _ := os.ReadFile(logPath)
	var endLine string
	for _, l := range strings.Split(string(logText), "\n") {
		if strings.Contains(l, "call ended") && strings.Contains(l, "wacid="+caller.ID()) {
			endLine = l
		}
	}
	for _, want := range []string{"outcome=shutdown", "ended_by=ponte", "to_meta_packets="} {
		if !strings.Contains(endLine, want) {
			t.Errorf("call end log line lacks %q: %q", want, endLine)
		}
	}
	if strings.Contains(endLine, "to_meta_packets=0 ") {
		t.Errorf("the drained call sent no audio toward Meta: %q", endLine)
	}
	if !strings.Contains(string(logText), "msg=stopped") {
		t.Error("ponte did not log a clean stop")
	}
}

func requestsOf(m *wasim.Meta, callID string) []wasim.GraphRequest {
	var out []wasim.GraphRequest
	for _, r := range m.Requests() {
		if r.CallID == callID {
			out = append(out, r)
		}
	}
	return out
}
