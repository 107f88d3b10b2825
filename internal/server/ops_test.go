package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/config"
)

// Shutdown must stop everything New and Start began, the CPU sampler too.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flakyStore fails Ping while broken is set.
type flakyStore struct{ broken atomic.Bool }

func (f *flakyStore) Ping(context.Context) error {
	if f.broken.Load() {
		return errors.New("disk full")
	}
	return nil
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// startServer runs ponte on loopback with nothing behind it: no call is
// placed, so the Graph URL and the trunk are never contacted.
func startServer(t *testing.T, st Pinger) *Server {
	t.Helper()
	return startServerHTTP(t, st, config.HTTP{})
}

// startServerHTTP starts a server with extra http settings (listeners are
// always ephemeral loopback ports).
func startServerHTTP(t *testing.T, st Pinger, h config.HTTP) *Server {
	t.Helper()
	h.Public, h.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg := &config.Config{
		HTTP: h,
		WhatsApp: config.WhatsApp{GraphURL: "http://127.0.0.1:1/v23.0", AccessToken: "t", AppSecret: "s", VerifyToken: "v",
			Numbers: []config.Number{{PhoneNumberID: "1", DisplayPhoneNumber: "5511400001234", InboundRoute: "support"}}},
		Media: config.Media{BindIP: "127.0.0.1", WebRTCUDPPort: freeUDPPort(t), RTPIP: "127.0.0.1", RTPPorts: "40000-40100"},
		SIP: config.SIP{Listen: []string{"udp:127.0.0.1:0"},
			Trunks: []config.Trunk{{Name: "pbx", Address: "127.0.0.1:9", Transport: "udp",
				Inbound: &config.TrunkInbound{Allow: []string{"127.0.0.1"}}}}},
		Routes: map[string]*config.Route{"support": {Targets: []config.Target{{URI: "sip:agent@127.0.0.1:9", Trunk: "pbx"}}}},
		Store:  config.Store{Driver: "memory"},
	}
	if err := cfg.Finalize(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.StoreCheck = st
	if err := s.Start(context.Background()); err != nil {
		_ = s.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyz(t *testing.T) {
	st := &flakyStore{}
	s := startServer(t, st)
	steps := []struct {
		name   string
		before func()
		code   int
		body   []string
	}{
		{"all good", func() {}, 200, []string{"sip: ok", "store: ok", "drain: ok"}},
		{"store refuses writes", func() { st.broken.Store(true) }, 503, []string{"sip: ok", "store: disk full"}},
		{"store back", func() { st.broken.Store(false) }, 200, []string{"store: ok"}},
		{"draining", func() {
			if err := s.Drain(context.Background()); err != nil { // no call in progress: returns at once
				t.Fatal(err)
			}
		}, 503, []string{"sip: ok", "store: ok", "drain: gateway: draining"}},
	}
	for _, step := range steps {
		step.before()
		code, body := get(t, s.AdminURL()+"/readyz")
		if code != step.code {
			t.Errorf("%s: /readyz %d, want %d (%q)", step.name, code, step.code, body)
		}
		for _, want := range step.body {
			if !strings.Contains(body, want) {
				t.Errorf("%s: /readyz body %q lacks %q", step.name, body, want)
			}
		}
	}
	if code, _ := get(t, s.AdminURL()+"/healthz"); code != 200 {
		t.Errorf("/healthz %d while draining, want 200", code)
	}
	_, metrics := get(t, s.AdminURL()+"/metrics")
	for _, want := range []string{"ponte_draining 1", `ponte_store_errors_total{op="ping"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// A PBX-originated INVITE from the trunk's allowed address: 484 for a
// Request-URI user that is no WhatsApp number, 503 with drain.retry_after
// once draining (RFC 3261 §21.5.4).
// TestPprofOnlyWhenEnabled: the profiler is on the admin listener only with
// http.pprof, never on the public one.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	off := startServer(t, nil)
	if code, _ := get(t, off.AdminURL()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof off: /debug/pprof/ gave %d, want 404", code)
	}
	on := startServerHTTP(t, nil, config.HTTP{Pprof: true})
	if code, body := get(t, on.AdminURL()+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: /debug/pprof/ gave %d %.80q", code, body)
	}
	if code, _ := get(t, on.AdminURL()+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("pprof on: cmdline gave %d", code)
	}
}

func TestInviteAdmission(t *testing.T) {
	s := startServer(t, nil)
	addr := s.UA.ListenAddr("udp").String()
	if code, _ := invite(t, addr, "c1"); code != 484 {
		t.Errorf("INVITE to sip:ponte@ before drain: %d, want 484 (not a number)", code)
	}
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, retry := invite(t, addr, "c2"); code != 503 || retry != "60" {
		t.Errorf("INVITE while draining: %d Retry-After %q, want 503 and 60", code, retry)
	}
	want := []string{
		`ponte_sip_requests_total{direction="in",method="INVITE"} 2`,
		`ponte_sip_responses_total{code="484",direction="out",method="INVITE"} 1`,
		`ponte_sip_responses_total{code="503",direction="out",method="INVITE"} 1`,
		`ponte_calls_refused_total{direction="outbound",reason="draining"} 1`,
	}
	// A response is counted once sent, so the PBX may read it a moment
	// before the counter moves.
	var metrics string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		_, metrics = get(t, s.AdminURL()+"/metrics")
		if containsAll(metrics, want) {
			break
		}
	}
	for _, want := range []string{
		`ponte_sip_requests_total{direction="in",method="INVITE"} 2`,
		`ponte_sip_responses_total{code="484",direction="out",method="INVITE"} 1`,
		`ponte_sip_responses_total{code="503",direction="out",method="INVITE"} 1`,
		`ponte_calls_refused_total{direction="outbound",reason="draining"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// invite sends a bare INVITE over UDP and returns the final response's code
// and Retry-After, ACKing it (RFC 3261 §17.1.1.3).
func invite(t *testing.T, to, callID string) (int, string) {
	t.Helper()
	c, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	msg := func(method, toHdr string) string {
		return fmt.Sprintf("%s sip:ponte@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:pbx@127.0.0.1>;tag=t1\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 %s\r\nContact: <sip:pbx@%s>\r\nContent-Length: 0\r\n\r\n",
			method, to, local, callID, toHdr, callID, method, local)
	}
	if _, err := c.Write([]byte(msg("INVITE", "<sip:ponte@127.0.0.1>"))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no final response: %v", err)
		}
		var code int
		if _, err := fmt.Sscanf(string(buf[:n]), "SIP/2.0 %d", &code); err != nil || code < 200 {
			continue
		}
		retry, toHdr := "", ""
		for _, l := range strings.Split(string(buf[:n]), "\r\n") {
			k, v, _ := strings.Cut(l, ":")
			switch strings.ToLower(k) {
			case "retry-after":
				retry = strings.TrimSpace(v)
			case "to":
				toHdr = strings.TrimSpace(v)
			}
		}
		_, _ = c.Write([]byte(msg("ACK", toHdr)))
		return code, retry
	}
}

func containsAll(s string, subs []string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
