package whatsapp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// leakCheck verifies no goroutine outlives the test. Registered first, its cleanup runs after
// the harness cleanups (LIFO), i.e. after the server, client and Webhook are closed.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

const (
	testSecret = "app-secret"
	testToken  = "verify-me"
)

var testNow = time.Unix(1_800_000_000, 0).UTC()

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// recorder is a Sink that records events and lets tests wait for them.
type recorder struct {
	mu     sync.Mutex
	evs    []CallEvent
	notify chan struct{}
	gate   chan struct{} // if non-nil, every sink call waits for it to close (or ctx)
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) sink(ctx context.Context, ev CallEvent) {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
		}
	}
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) events() []CallEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]CallEvent(nil), r.evs...)
}

// waitFor waits until n events were delivered; it fails the test after 10 s (a hang guard,
// not a timing assertion).
func (r *recorder) waitFor(t *testing.T, n int) []CallEvent {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		if evs := r.events(); len(evs) >= n {
			return evs
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %d events, have %d", n, len(r.events()))
		}
	}
}

// summary renders events as "callid:event:status" for order assertions.
func summary(evs []CallEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = firstNonEmpty(ev.CallID, ev.MessageID) + ":" + ev.Event + ":" + ev.Status
	}
	return out
}

type harness struct {
	t      *testing.T
	w      *Webhook
	srv    *httptest.Server
	client *http.Client
	clock  atomic.Pointer[time.Time]
}

func newHarness(t *testing.T, cfg WebhookConfig, sink Sink) *harness {
	t.Helper()
	h := &harness{t: t}
	h.clock.Store(&testNow)
	if cfg.VerifyToken == "" {
		cfg.VerifyToken = testToken
	}
	if cfg.AppSecret == "" && !cfg.InsecureSkipSignature {
		cfg.AppSecret = testSecret
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	cfg.Now = func() time.Time { return *h.clock.Load() }
	h.w = NewWebhook(cfg, sink)
	h.srv = httptest.NewServer(h.w) // listens on 127.0.0.1
	h.client = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		h.srv.Close()
		h.client.CloseIdleConnections()
		h.w.Close()
	})
	return h
}

func (h *harness) advance(d time.Duration) {
	now := h.clock.Load().Add(d)
	h.clock.Store(&now)
}

func (h *harness) do(req *http.Request) (int, string) {
	h.t.Helper()
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// post sends body with the given X-Hub-Signature-256 ("" = header absent).
func (h *harness) post(body, sig string) int {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	code, _ := h.do(req)
	return code
}

func (h *harness) postSigned(body string) int {
	h.t.Helper()
	return h.post(body, sign(testSecret, []byte(body)))
}

func (h *harness) mustPost(body string) {
	h.t.Helper()
	if code := h.postSigned(body); code != http.StatusOK {
		h.t.Fatalf("POST = %d, want 200", code)
	}
}

// event bodies with timestamps relative to the harness clock.
func connectBody(id string, ts time.Time) string {
	return callsBody(fmt.Sprintf(`{"id":%q,"from":"16315553602","to":"16315553601","event":"connect","timestamp":"%d",
		"session":{"sdp_type":"offer","sdp":"v=0\r\n"}}`, id, ts.Unix()))
}

func terminateBody(id, status string, ts time.Time) string {
	return callsBody(fmt.Sprintf(`{"id":%q,"event":"terminate","status":%q,"timestamp":"%d"}`, id, status, ts.Unix()))
}

func statusBody(id, status string, ts time.Time) string {
	return valueBody("calls", fmt.Sprintf(`{"statuses":[{"id":%q,"type":"call","status":%q,"timestamp":"%d"}]}`, id, status, ts.Unix()))
}

func TestWebhookVerify(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name     string
		query    url.Values
		token    string // configured; "" keeps the default
		wantCode int
		wantBody string
	}{
		{"ok", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {testToken}, "hub.challenge": {"1158201444"}}, "", 200, "1158201444"},
		{"bad token", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"nope"}, "hub.challenge": {"1"}}, "", 403, ""},
		{"token prefix", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {testToken[:4]}, "hub.challenge": {"1"}}, "", 403, ""},
		{"bad mode", url.Values{"hub.mode": {"unsubscribe"}, "hub.verify_token": {testToken}, "hub.challenge": {"1"}}, "", 403, ""},
		{"missing mode", url.Values{"hub.verify_token": {testToken}, "hub.challenge": {"1"}}, "", 403, ""},
		{"missing challenge", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {testToken}}, "", 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WebhookConfig{VerifyToken: tc.token}, nil)
			req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/webhook?"+tc.query.Encode(), nil)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if tc.wantCode == 200 {
				if string(body) != tc.wantBody {
					t.Errorf("body %q, want raw challenge %q", body, tc.wantBody)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("Content-Type %q", ct)
				}
			} else if got := h.w.Stats().Rejected["verify"]; got != 1 {
				t.Errorf("Rejected[verify] = %d", got)
			}
		})
	}
}

func TestWebhookSignature(t *testing.T) {
	leakCheck(t)
	body := connectBody("wacid.sig", testNow)
	mac := sign(testSecret, []byte(body))
	tests := []struct {
		name     string
		sig      string
		wantCode int
	}{
		{"valid", mac, 200},
		{"valid upper-case hex and prefix", "SHA256=" + strings.ToUpper(strings.TrimPrefix(mac, "sha256=")), 200},
		{"missing header", "", 401},
		{"prefix missing", strings.TrimPrefix(mac, "sha256="), 401},
		{"sha1 prefix", "sha1=" + strings.TrimPrefix(mac, "sha256="), 401},
		{"wrong secret", sign("other-secret", []byte(body)), 401},
		{"signature of another body", sign(testSecret, []byte(body+" ")), 401},
		{"truncated", mac[:len(mac)-2], 401},
		{"not hex", "sha256=" + strings.Repeat("zz", 32), 401},
		{"prefix only", "sha256=", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			h := newHarness(t, WebhookConfig{}, rec.sink)
			if code := h.post(body, tc.sig); code != tc.wantCode {
				t.Fatalf("POST = %d, want %d", code, tc.wantCode)
			}
			if tc.wantCode == 200 {
				if evs := rec.waitFor(t, 1); evs[0].CallID != "wacid.sig" {
					t.Errorf("delivered %+v", evs[0])
				}
				return
			}
			// Rejected before parsing: nothing counted as received, nothing queued, no sink call.
			h.w.mu.Lock()
			queued := len(h.w.queues)
			h.w.mu.Unlock()
			st := h.w.Stats()
			if queued != 0 || len(st.Received) != 0 || st.Rejected["signature"] != 1 {
				t.Errorf("queued=%d stats=%+v", queued, st)
			}
			h.w.Close()
			if n := len(rec.events()); n != 0 {
				t.Errorf("sink called %d times on a rejected signature", n)
			}
		})
	}
}

func TestWebhookEmptySecretFailsClosed(t *testing.T) {
	rec := newRecorder()
	w := NewWebhook(WebhookConfig{Logger: discardLogger()}, rec.sink)
	defer w.Close()
	body := connectBody("wacid.x", time.Now())
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", sign("", []byte(body)))
	rw := httptest.NewRecorder()
	w.ServeHTTP(rw, req)
	if rw.Code != http.StatusUnauthorized {
		t.Errorf("status %d, want 401 with no app secret configured", rw.Code)
	}
}

func TestWebhookInsecureSkipSignatureWarns(t *testing.T) {
	leakCheck(t)
	var logs syncBuffer
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{InsecureSkipSignature: true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}, rec.sink)
	startup := logs.String()
	if !strings.Contains(startup, "DISABLED") {
		t.Errorf("no startup warning: %q", startup)
	}
	if code := h.post(connectBody("wacid.dev", testNow), ""); code != 200 {
		t.Fatalf("POST = %d", code)
	}
	rec.waitFor(t, 1)
	if after := strings.TrimPrefix(logs.String(), startup); !strings.Contains(after, "WITHOUT signature verification") || !strings.Contains(after, "level=WARN") {
		t.Errorf("no per-request warning: %q", after)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWebhookBodyLimitsAndMalformed(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{MaxBodyBytes: 256}, rec.sink)

	big := callsBody(`{"id":"wacid.big","event":"connect","pad":"` + strings.Repeat("x", 300) + `"}`)
	if code := h.postSigned(big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized with Content-Length: %d, want 413", code)
	}
	// Without Content-Length (chunked) the limit is enforced while reading.
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL, io.MultiReader(strings.NewReader(big)))
	req.Header.Set("X-Hub-Signature-256", sign(testSecret, []byte(big)))
	if code, _ := h.do(req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized chunked: %d, want 413", code)
	}
	// A body of exactly the limit is read.
	exact := `{"pad":"` + strings.Repeat("y", 256-10) + `"}`
	if len(exact) != 256 {
		t.Fatalf("len %d", len(exact))
	}
	if code := h.postSigned(exact); code != 200 {
		t.Errorf("body at the limit: %d, want 200", code)
	}
	for _, bad := range []string{"not json", "[1,2]", `{"entry":`} {
		if code := h.postSigned(bad); code != http.StatusBadRequest {
			t.Errorf("malformed %q: %d, want 400", bad, code)
		}
	}
	req, _ = http.NewRequest(http.MethodPut, h.srv.URL, nil)
	if code, _ := h.do(req); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", code)
	}
	st := h.w.Stats()
	if st.Rejected["too_large"] != 2 || st.Rejected["malformed"] != 3 || st.Rejected["method"] != 1 {
		t.Errorf("stats %+v", st.Rejected)
	}
	h.w.Close()
	if n := len(rec.events()); n != 0 {
		t.Errorf("sink called %d times", n)
	}
}

func TestWebhookDedupe(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{DedupeTTL: time.Minute, StaleAfter: time.Hour}, rec.sink)
	connect := connectBody("wacid.d", testNow)
	h.mustPost(connect)
	h.mustPost(connect) // Meta redelivery after its ~20 s timeout
	h.mustPost(statusBody("wacid.d", "RINGING", testNow))
	h.mustPost(statusBody("wacid.d", "RINGING", testNow)) // duplicate
	h.mustPost(statusBody("wacid.d", "ACCEPTED", testNow))
	// Same events in one body are deduplicated too.
	h.mustPost(valueBody("calls", `{"statuses":[{"id":"wacid.d","type":"call","status":"ACCEPTED"},{"id":"wacid.e","type":"call","status":"ACCEPTED"}]}`))
	h.mustPost(terminateBody("wacid.d", "COMPLETED", testNow))
	h.mustPost(terminateBody("wacid.d", "COMPLETED", testNow))
	evs := rec.waitFor(t, 5)
	h.w.Close()
	got := summary(rec.events())
	var forD []string
	for _, s := range got {
		if strings.HasPrefix(s, "wacid.d:") {
			forD = append(forD, s)
		}
	}
	want := []string{"wacid.d:connect:", "wacid.d:status:RINGING", "wacid.d:status:ACCEPTED", "wacid.d:terminate:COMPLETED"}
	if fmt.Sprint(forD) != fmt.Sprint(want) || len(evs) != 5 {
		t.Errorf("delivered %v, want %v plus wacid.e", got, want)
	}
	if d := h.w.Stats().Rejected["duplicate"]; d != 4 {
		t.Errorf("duplicates counted %d, want 4", d)
	}
}

func TestWebhookDedupeExpires(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{DedupeTTL: time.Minute}, rec.sink)
	h.mustPost(statusBody("wacid.x", "RINGING", testNow))
	rec.waitFor(t, 1)
	h.advance(61 * time.Second)
	// Meta's own redelivery carries the original timestamp; a fresh one keeps this test about
	// the dedupe entry's expiry and not the replay window (TestWebhookReplaySameBody).
	h.mustPost(statusBody("wacid.x", "RINGING", *h.clock.Load()))
	rec.waitFor(t, 2)
	h.w.mu.Lock()
	entries := len(h.w.seen)
	h.w.mu.Unlock()
	if entries != 1 {
		t.Errorf("dedupe map holds %d entries after expiry sweep, want 1", entries)
	}
}

// TestWebhookReplaySameBody: an attacker who captured signed bodies posts the
// very same bytes later (the signature still verifies: it covers no time).
// Inside the dedupe window the dedupe drops them; past it, the payload
// timestamp does: the connect is stale, the status a replay. Only the
// terminate is handed on, and its call is long gone (tombstone), so nothing
// is started and no Graph request is made for it.
func TestWebhookReplaySameBody(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{}, rec.sink) // the defaults: 60 s staleness, 10 min dedupe
	bodies := []string{
		connectBody("wacid.r", testNow),
		statusBody("wacid.r", "ACCEPTED", testNow),
		terminateBody("wacid.r", "COMPLETED", testNow),
	}
	for _, b := range bodies {
		h.mustPost(b)
	}
	rec.waitFor(t, 3)
	h.advance(30 * time.Second) // replayed soon: the dedupe window
	for _, b := range bodies {
		h.mustPost(b)
	}
	h.advance(11 * time.Minute) // replayed late: the timestamp window
	for _, b := range bodies {
		h.mustPost(b)
	}
	h.mustPost(statusBody("wacid.barrier", "RINGING", *h.clock.Load()))
	rec.waitFor(t, 5)
	h.w.Close()
	if got, want := fmt.Sprint(summary(rec.events())),
		"[wacid.r:connect: wacid.r:status:ACCEPTED wacid.r:terminate:COMPLETED wacid.r:terminate:COMPLETED wacid.barrier:status:RINGING]"; got != want {
		t.Errorf("delivered %s, want %s", got, want)
	}
	st := h.w.Stats()
	if st.Rejected["duplicate"] != 3 || st.Rejected["stale"] != 1 || st.Rejected["replay"] != 1 {
		t.Errorf("rejected %v, want 3 duplicates, 1 stale connect and 1 replayed status", st.Rejected)
	}
}

func TestWebhookTombstones(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{DedupeTTL: time.Minute, TombstoneTTL: 10 * time.Minute, StaleAfter: time.Hour}, rec.sink)

	// terminate overtakes its connect (ref §2.1): the late connect must not start a call.
	h.mustPost(terminateBody("wacid.early", "FAILED", testNow))
	h.mustPost(connectBody("wacid.early", testNow))
	h.mustPost(statusBody("wacid.early", "REJECTED", testNow)) // barrier on the same queue
	evs := rec.waitFor(t, 2)
	if got, want := fmt.Sprint(summary(evs)), "[wacid.early:terminate:FAILED wacid.early:status:REJECTED]"; got != want {
		t.Errorf("delivered %s, want %s", got, want)
	}

	// A normal call: connect, terminate; the connect redelivered after the dedupe window is
	// still dropped by the tombstone.
	h.mustPost(connectBody("wacid.norm", testNow))
	h.mustPost(terminateBody("wacid.norm", "COMPLETED", testNow))
	rec.waitFor(t, 4)
	h.advance(2 * time.Minute)
	h.mustPost(connectBody("wacid.norm", testNow))
	h.mustPost(statusBody("wacid.norm", "X", *h.clock.Load())) // fresh: older than DedupeTTL is a replay
	evs = rec.waitFor(t, 5)
	if got := summary(evs[2:]); fmt.Sprint(got) != "[wacid.norm:connect: wacid.norm:terminate:COMPLETED wacid.norm:status:X]" {
		t.Errorf("delivered %v", got)
	}
	if n := h.w.Stats().Rejected["tombstone"]; n != 2 {
		t.Errorf("tombstone drops %d, want 2", n)
	}

	// Only terminate tombstones: on BIC a RINGING status may precede the connect carrying
	// Meta's SDP answer (ref §2.3 UNCONFIRMED ordering), which must still be delivered.
	h.mustPost(statusBody("wacid.bic", "RINGING", *h.clock.Load()))
	h.mustPost(connectBody("wacid.bic", *h.clock.Load()))
	evs = rec.waitFor(t, 7)
	if got := summary(evs[5:]); fmt.Sprint(got) != "[wacid.bic:status:RINGING wacid.bic:connect:]" {
		t.Errorf("delivered %v", got)
	}

	// Tombstones expire.
	h.advance(10 * time.Minute)
	h.mustPost(connectBody("wacid.early", *h.clock.Load()))
	if evs = rec.waitFor(t, 8); evs[7].Kind != EventConnect || evs[7].CallID != "wacid.early" {
		t.Errorf("connect after tombstone expiry: %+v", evs[7])
	}
}

func TestWebhookStaleness(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{StaleAfter: 60 * time.Second}, rec.sink)
	h.mustPost(connectBody("wacid.stale", testNow.Add(-61*time.Second)))
	h.mustPost(terminateBody("wacid.stale", "COMPLETED", testNow.Add(-time.Hour)))
	h.mustPost(statusBody("wacid.old", "ACCEPTED", testNow.Add(-time.Hour)))        // past DedupeTTL (10 min): a replay
	h.mustPost(statusBody("wacid.recent", "ACCEPTED", testNow.Add(-9*time.Minute))) // inside it: acted on
	h.mustPost(connectBody("wacid.fresh", testNow.Add(-59*time.Second)))
	h.mustPost(callsBody(`{"id":"wacid.nots","event":"connect"}`))                                // no timestamp: cannot judge, act
	h.mustPost(callsBody(`{"event":"connect","timestamp":"` + fmt.Sprint(testNow.Unix()) + `"}`)) // no wacid: dropped
	h.mustPost(connectBody("wacid.future", testNow.Add(30*time.Second)))
	evs := rec.waitFor(t, 5)
	h.w.Close()
	got := map[string]bool{}
	for _, s := range summary(rec.events()) {
		got[s] = true
	}
	for _, want := range []string{"wacid.stale:terminate:COMPLETED", "wacid.recent:status:ACCEPTED", "wacid.fresh:connect:",
		"wacid.nots:connect:", "wacid.future:connect:"} {
		if !got[want] {
			t.Errorf("missing %s in %v", want, summary(evs))
		}
	}
	if got["wacid.stale:connect:"] || got["wacid.old:status:ACCEPTED"] || len(rec.events()) != 5 {
		t.Errorf("stale connect or replayed status delivered: %v", summary(rec.events()))
	}
	if st := h.w.Stats(); st.Rejected["stale"] != 1 || st.Rejected["replay"] != 1 || st.Rejected["no_call_id"] != 1 {
		t.Errorf("rejected %v, want one stale, one replay and one without call id", st.Rejected)
	}
}

// BenchmarkWebhookPost measures one signed POST through ServeHTTP (verify, parse, admit, queue).
func BenchmarkWebhookPost(b *testing.B) {
	w := NewWebhook(WebhookConfig{AppSecret: testSecret, VerifyToken: testToken, Logger: discardLogger(),
		StaleAfter: time.Hour * 24 * 365 * 100}, nil)
	defer w.Close()
	body := []byte(sampleUICConnect)
	sig := sign(testSecret, body)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		w.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
