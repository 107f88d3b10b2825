package wasim_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/webrtc"
	"github.com/ponte-gw/ponte/whatsapp"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// whook is one webhook the BIC test gateway received, keyed for order assertions:
// "connect", "terminate", "status:RINGING", "permission_reply", "message:text",
// "msgstatus:sent" ...
type whook struct {
	key   string
	field string
	raw   []byte
	value map[string]any
	elem  map[string]any // calls[0], statuses[0] or messages[0]
	at    time.Time
}

// bicGW is a test "gateway" for business-initiated calls: a webhook endpoint that checks the
// signature and keeps every webhook, a webrtc engine making offers like ponte, and ponte's own
// Graph API client pointed at the simulator.
type bicGW struct {
	t      *testing.T
	srv    *httptest.Server
	meta   *wasim.Meta
	eng    *webrtc.Engine
	client *whatsapp.Client
	clock  *clock

	mu     sync.Mutex
	hooks  []whook
	cursor int
	notify chan struct{}
}

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func newBIC(t *testing.T, mod func(*wasim.Config)) *bicGW {
	t.Helper()
	g := &bicGW{t: t, clock: &clock{t: t0}, notify: make(chan struct{}, 1)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(raw)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(r.Header.Get("X-Hub-Signature-256")), []byte(want)) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h, err := decodeHook(raw)
		if err != nil {
			t.Errorf("webhook: %v: %s", err, raw)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.hooks = append(g.hooks, h)
		g.mu.Unlock()
		select {
		case g.notify <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(g.srv.Close)
	cfg := wasim.Config{
		WebhookURL: g.srv.URL + "/webhook", AppSecret: secret, AccessToken: token,
		PhoneNumberID: pnid, DisplayNumber: "16315553601", Now: g.clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := wasim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	g.meta = m
	g.eng, err = webrtc.NewEngine(webrtc.Config{ListenUDP: "127.0.0.1:0", IncludeLoopback: true,
		ConnectTimeout: 5 * time.Second, RTCPInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.eng.Close() })
	g.client = whatsapp.NewClient(whatsapp.ClientConfig{BaseURL: m.GraphURL(), AccessToken: token,
		Timeout: 5 * time.Second, Retries: -1, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(g.client.CloseIdleConnections)
	return g
}

func decodeHook(raw []byte) (whook, error) {
	var body struct {
		Object string `json:"object"`
		Entry  []struct {
			Changes []struct {
				Field string         `json:"field"`
				Value map[string]any `json:"value"`
			} `json:"changes"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return whook{}, err
	}
	if body.Object != "whatsapp_business_account" || len(body.Entry) != 1 || len(body.Entry[0].Changes) != 1 {
		return whook{}, fmt.Errorf("envelope")
	}
	ch := body.Entry[0].Changes[0]
	h := whook{field: ch.Field, raw: raw, value: ch.Value, at: time.Now()}
	first := func(k string) map[string]any {
		if a, ok := ch.Value[k].([]any); ok && len(a) > 0 {
			m, _ := a[0].(map[string]any)
			return m
		}
		return nil
	}
	switch {
	case ch.Field == "calls" && first("calls") != nil:
		h.elem = first("calls")
		h.key = fmt.Sprint(h.elem["event"])
	case ch.Field == "calls" && first("statuses") != nil:
		h.elem = first("statuses")
		h.key = "status:" + fmt.Sprint(h.elem["status"])
	case ch.Field == "messages" && first("messages") != nil:
		h.elem = first("messages")
		h.key = "message:" + fmt.Sprint(h.elem["type"])
		if i, ok := h.elem["interactive"].(map[string]any); ok && i["type"] == "call_permission_reply" {
			h.key = "permission_reply"
		}
	case ch.Field == "messages" && first("statuses") != nil:
		h.elem = first("statuses")
		h.key = "msgstatus:" + fmt.Sprint(h.elem["status"])
	default:
		return whook{}, fmt.Errorf("unexpected change %s", ch.Field)
	}
	return h, nil
}

// next returns the next webhook in arrival order, failing after 10 s (a hang guard).
func (g *bicGW) next(t *testing.T) whook {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		if g.cursor < len(g.hooks) {
			h := g.hooks[g.cursor]
			g.cursor++
			g.mu.Unlock()
			return h
		}
		g.mu.Unlock()
		select {
		case <-g.notify:
		case <-deadline.C:
			t.Fatal("no webhook within 10 s")
		}
	}
}

// expect reads the next webhooks and requires their keys in this order.
func (g *bicGW) expect(t *testing.T, keys ...string) []whook {
	t.Helper()
	var out []whook
	for _, k := range keys {
		h := g.next(t)
		if h.key != k {
			t.Fatalf("webhook %q, want %q: %s", h.key, k, h.raw)
		}
		out = append(out, h)
	}
	return out
}

// none requires that no further webhook arrives within d.
func (g *bicGW) none(t *testing.T, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cursor < len(g.hooks) {
		t.Fatalf("unexpected webhook %q: %s", g.hooks[g.cursor].key, g.hooks[g.cursor].raw)
	}
}

// graph sends a raw Graph request; path is relative to the version, e.g. "/PNID/calls".
func (g *bicGW) graph(method, path string, body any) (int, map[string]any) {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.meta.GraphURL()+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// offer makes a ponte leg and its offer; the leg is closed at cleanup.
func (g *bicGW) offer(t *testing.T) (*webrtc.Leg, *legMedia, string) {
	t.Helper()
	leg, err := g.eng.NewLeg(fmt.Sprintf("bic-%d", time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	lm := newLegMedia(t, leg)
	offer, err := leg.Offer()
	if err != nil {
		t.Fatal(err)
	}
	return leg, lm, offer
}

// dial places a business-initiated call with ponte's client and applies Meta's answer from the
// connect webhook (ConnectWebhook "ringing"); it returns after the connect webhook and RINGING.
func (g *bicGW) dial(t *testing.T, to, opaque string) (*wasim.Callee, *webrtc.Leg, *legMedia) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	leg, lm, offer := g.offer(t)
	wacid, err := g.client.Connect(ctx, pnid, to, "", offer, opaque)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.meta.WaitCallee(ctx)
	if err != nil || c.ID() != wacid {
		t.Fatalf("callee %v err %v, want %s", c, err, wacid)
	}
	hs := g.expect(t, "connect", "status:RINGING")
	if err := leg.SetAnswer(sessionSDP(t, hs[0])); err != nil {
		t.Fatal(err)
	}
	if err := leg.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return c, leg, lm
}

func sessionSDP(t *testing.T, h whook) string {
	t.Helper()
	s, _ := h.elem["session"].(map[string]any)
	sdp, _ := s["sdp"].(string)
	if s["sdp_type"] != "answer" || sdp == "" {
		t.Fatalf("connect session %v", s)
	}
	return sdp
}

func apiCode(err error) int {
	var e *whatsapp.APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func hasLine(sdp, line string) bool { return strings.Contains(sdp, "\r\n"+line+"\r\n") }
