package whatsapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebhookConfig configures the webhook handler. Zero values take the documented defaults.
type WebhookConfig struct {
	VerifyToken, AppSecret string
	MaxBodyBytes           int64         // default 1 MiB; larger -> 413
	StaleAfter             time.Duration // default 60s: a *connect* older than this (by payload timestamp) is ignored
	// DedupeTTL also bounds replays: a call status older than it (by payload timestamp) can no
	// longer be told from a replay of the same body, so it is ignored ("replay"). Terminates are
	// acted on whatever their age (ending a call Meta says ended is always safe).
	DedupeTTL             time.Duration // default 10 min
	TombstoneTTL          time.Duration // default 10 min
	InsecureSkipSignature bool          // dev only; logged loudly at startup and on every request (warn)
	// DeliverUnknown also hands EventUnknown events (call_created, recordings, account_update,
	// message statuses, ...) to the sink. By default they are only counted.
	DeliverUnknown bool
	Now            func() time.Time // injectable clock (default time.Now)
	Logger         *slog.Logger
}

// Sink receives events. It is called serially for events of one call (or one user, for events
// without a call id) and concurrently across calls. ctx is cancelled by Webhook.Close.
type Sink func(ctx context.Context, ev CallEvent)

// WebhookStats are counters since NewWebhook.
type WebhookStats struct {
	Received map[string]uint64 // key "field/event", every parsed event including unknown ones
	// Rejected keys: "signature", "stale", "replay", "duplicate", "tombstone", "malformed", "too_large",
	// "read", "method", "verify", "no_call_id", "closed" (request refused or queued events
	// dropped by Close).
	Rejected map[string]uint64
	Unknown  uint64
	Panics   uint64 // sink panics recovered (the event is dropped, the node goes on)
}

// Webhook is the http.Handler for Meta's webhook callback URL (ref §2.1, §8 items 1–5).
//
// A POST is answered as soon as it is authenticated, parsed and queued, well inside Meta's
// ~20 s delivery timeout (ref §2.1); the sink runs on per-key worker goroutines owned by the
// Webhook and stopped by Close.
type Webhook struct {
	cfg  WebhookConfig
	sink Sink
	log  *slog.Logger

	ctx    context.Context // cancelled by Close; passed to the sink
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running queue worker

	mu        sync.Mutex
	closed    bool
	queues    map[string]*eventQueue // key -> pending events; present while a worker runs
	seen      map[dedupeKey]time.Time
	tombs     map[string]time.Time // wacid -> expiry
	nextSweep time.Time
	received  map[string]uint64
	rejected  map[string]uint64
	unknown   uint64
	panics    atomic.Uint64 // sink panics recovered (deliver)
}

type eventQueue struct{ evs []CallEvent }

// dedupeKey is (wacid, event, status) per ref §8 item 5. For messages-field events without a
// wacid the wamid takes its place.
type dedupeKey struct{ id, event, status string }

// NewWebhook returns a handler delivering events to sink. Close it to stop its workers.
func NewWebhook(cfg WebhookConfig, sink Sink) *Webhook {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 60 * time.Second
	}
	if cfg.DedupeTTL <= 0 {
		cfg.DedupeTTL = 10 * time.Minute
	}
	if cfg.TombstoneTTL <= 0 {
		cfg.TombstoneTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if sink == nil {
		sink = func(context.Context, CallEvent) {}
	}
	w := &Webhook{
		cfg: cfg, sink: sink, log: cfg.Logger,
		queues:   make(map[string]*eventQueue),
		seen:     make(map[dedupeKey]time.Time),
		tombs:    make(map[string]time.Time),
		received: make(map[string]uint64),
		rejected: make(map[string]uint64),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	switch {
	case cfg.InsecureSkipSignature:
		w.log.Error("whatsapp: webhook signature verification is DISABLED (insecure_skip_signature); anyone can forge calls. Development only.")
	case cfg.AppSecret == "":
		w.log.Error("whatsapp: webhook app secret is empty; every event POST will be rejected with 401")
	}
	if cfg.VerifyToken == "" {
		w.log.Warn("whatsapp: webhook verify token is empty; subscription verification (GET) will be refused")
	}
	return w
}

// ServeHTTP implements the GET verification handshake and the signed event POST.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if w.cfg.InsecureSkipSignature {
		w.log.Warn("whatsapp: accepting webhook request WITHOUT signature verification", "method", r.Method)
	}
	switch r.Method {
	case http.MethodGet:
		w.serveVerify(rw, r)
	case http.MethodPost:
		w.serveEvent(rw, r)
	default:
		w.count("method")
		rw.Header().Set("Allow", "GET, POST")
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// serveVerify answers Meta's subscription check (ref §2.1 Verification, [WH-GS]): echo
// hub.challenge only when hub.mode is "subscribe" and the token matches.
func (w *Webhook) serveVerify(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	challenge := q.Get("hub.challenge")
	if w.cfg.VerifyToken == "" || q.Get("hub.mode") != "subscribe" || challenge == "" ||
		!equalSecret(q.Get("hub.verify_token"), w.cfg.VerifyToken) {
		w.count("verify")
		w.log.Warn("whatsapp: webhook verification refused", "mode", q.Get("hub.mode"))
		http.Error(rw, "forbidden", http.StatusForbidden)
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff") // the challenge is reflected input
	rw.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(rw, challenge)
	w.log.Info("whatsapp: webhook subscription verified")
}

// equalSecret compares in constant time. Hashing first also hides the secret's length, which
// subtle.ConstantTimeCompare would leak by returning early on a length mismatch.
func equalSecret(got, want string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (w *Webhook) serveEvent(rw http.ResponseWriter, r *http.Request) {
	if r.ContentLength > w.cfg.MaxBodyBytes {
		w.count("too_large")
		http.Error(rw, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			w.count("too_large")
			http.Error(rw, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		w.count("read")
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	// Authenticate before looking at the body at all (ref §8 item 2).
	if !w.validSignature(r.Header.Get("X-Hub-Signature-256"), body) {
		w.count("signature")
		w.log.Warn("whatsapp: webhook signature missing or invalid", "remote", r.RemoteAddr, "bytes", len(body))
		http.Error(rw, "invalid signature", http.StatusUnauthorized)
		return
	}
	evs, err := ParseWebhook(body)
	if err != nil {
		w.count("malformed")
		w.log.Warn("whatsapp: malformed webhook body", "bytes", len(body), "err", err)
		http.Error(rw, "malformed body", http.StatusBadRequest)
		return
	}
	if !w.dispatch(evs) {
		// Shutting down: a non-2xx makes Meta redeliver, possibly to another node.
		http.Error(rw, "shutting down", http.StatusServiceUnavailable)
		return
	}
	rw.WriteHeader(http.StatusOK)
}

// validSignature checks X-Hub-Signature-256: "sha256=" + hex(HMAC-SHA256(raw body, app
// secret)) (ref §2.1 Signing), comparing with hmac.Equal. An empty app secret fails closed.
func (w *Webhook) validSignature(header string, body []byte) bool {
	if w.cfg.InsecureSkipSignature {
		return true
	}
	const prefix = "sha256="
	if w.cfg.AppSecret == "" || len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return false
	}
	got, err := hex.DecodeString(strings.TrimSpace(header[len(prefix):]))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, []byte(w.cfg.AppSecret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// dispatch applies dedupe, tombstones and staleness to the events of one body and queues the
// survivors. It reports false when the Webhook is closed.
func (w *Webhook) dispatch(evs []CallEvent) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.rejected["closed"]++
		return false
	}
	now := w.cfg.Now()
	w.sweepLocked(now)
	for i := range evs {
		w.admitLocked(&evs[i], now)
	}
	return true
}

func (w *Webhook) admitLocked(ev *CallEvent, now time.Time) {
	w.received[ev.Field+"/"+ev.Event]++
	if ev.Kind == EventUnknown {
		w.unknown++
		if !w.cfg.DeliverUnknown {
			w.log.Debug("whatsapp: unknown webhook event ignored", "field", ev.Field, "event", ev.Event, "wacid", ev.CallID)
			return
		}
	}
	if ev.CallID == "" && (ev.Kind == EventConnect || ev.Kind == EventTerminate || ev.Kind == EventStatus) {
		// Nothing can be done for a call event without its wacid: no Graph action takes one.
		w.rejected["no_call_id"]++
		w.log.Warn("whatsapp: call event without call id dropped", "field", ev.Field, "event", ev.Event)
		return
	}
	// Meta redelivers after its ~20 s timeout and on fan-out/queue replays (ref §2.1), so the
	// same (wacid, event, status) within DedupeTTL is dropped.
	if id := firstNonEmpty(ev.CallID, ev.MessageID); id != "" {
		k := dedupeKey{id, ev.Event, ev.Status}
		if exp, ok := w.seen[k]; ok && now.Before(exp) {
			w.rejected["duplicate"]++
			w.log.Debug("whatsapp: duplicate webhook event dropped", "wacid", ev.CallID, "event", ev.Event, "status", ev.Status)
			return
		}
		w.seen[k] = now.Add(w.cfg.DedupeTTL)
	}
	switch ev.Kind {
	case EventConnect:
		// Ordering is not guaranteed: a terminate may overtake its connect (ref §2.1). A
		// connect arriving after the call ended must not start a call.
		if exp, ok := w.tombs[ev.CallID]; ok && now.Before(exp) {
			w.rejected["tombstone"]++
			w.log.Info("whatsapp: connect for an already terminated call dropped", "wacid", ev.CallID)
			return
		}
		// Staleness is decided from the payload timestamp, and no Graph API call may be made
		// for a stale call ([FAQ] via ref §2.1). Only connect is gated: a late terminate or
		// status must still tear down or update state.
		if !ev.Timestamp.IsZero() && now.Sub(ev.Timestamp) > w.cfg.StaleAfter {
			w.rejected["stale"]++
			w.log.Info("whatsapp: stale connect ignored", "wacid", ev.CallID, "age", now.Sub(ev.Timestamp).Round(time.Second))
			return
		}
	case EventStatus:
		// A signed body stays valid forever (the HMAC covers no time), so a replay after the
		// dedupe entry expired would pass. Past DedupeTTL the call a status describes has
		// long been decided (no call rings for 10 minutes), so an old status is dropped as a
		// replay rather than acted on (issue 8: replays ignored by timestamp window + dedupe).
		if !ev.Timestamp.IsZero() && now.Sub(ev.Timestamp) > w.cfg.DedupeTTL {
			w.rejected["replay"]++
			w.log.Info("whatsapp: call status older than the replay window ignored", "wacid", ev.CallID, "status", ev.Status, "age", now.Sub(ev.Timestamp).Round(time.Second))
			return
		}
	case EventTerminate:
		if ev.CallID != "" {
			w.tombs[ev.CallID] = now.Add(w.cfg.TombstoneTTL)
		}
	}
	w.log.Debug("whatsapp: webhook event queued", "wacid", ev.CallID, "event", ev.Event, "status", ev.Status)
	w.enqueueLocked(queueKey(ev), *ev)
}

// queueKey orders events of one call (wacid); events without one (permission replies) are
// ordered per user, preferring the BSUID which is always present (ref §2.2 BSUID changes).
func queueKey(ev *CallEvent) string {
	switch {
	case ev.CallID != "":
		return "call:" + ev.CallID
	case ev.FromUserID != "":
		return "user:" + ev.FromUserID
	case ev.From != "":
		return "user:" + ev.From
	case ev.WaID != "":
		return "user:" + ev.WaID
	}
	return "field:" + ev.Field
}

// enqueueLocked appends ev to its key's queue, starting a worker when the key has none. The
// worker exits once the queue drains, so idle calls cost no goroutine.
func (w *Webhook) enqueueLocked(key string, ev CallEvent) {
	if q, ok := w.queues[key]; ok {
		q.evs = append(q.evs, ev)
		return
	}
	q := &eventQueue{evs: []CallEvent{ev}}
	w.queues[key] = q
	w.wg.Add(1)
	go w.runQueue(key, q)
}

func (w *Webhook) runQueue(key string, q *eventQueue) {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(q.evs) == 0 || w.ctx.Err() != nil {
			if n := len(q.evs); n > 0 {
				w.rejected["closed"] += uint64(n)
			}
			delete(w.queues, key)
			w.mu.Unlock()
			return
		}
		ev := q.evs[0]
		q.evs[0] = CallEvent{} // drop references held by the backing array
		q.evs = q.evs[1:]
		w.mu.Unlock()
		w.deliver(ev)
	}
}

// deliver calls the sink, containing a panic to the event that caused it (as net/http does for
// handlers) so one bad event cannot take down every call on the node.
func (w *Webhook) deliver(ev CallEvent) {
	defer func() {
		if p := recover(); p != nil {
			w.panics.Add(1)
			w.log.Error("whatsapp: webhook sink panicked", "wacid", ev.CallID, "event", ev.Event,
				"panic", p, "stack", string(debug.Stack()))
		}
	}()
	w.sink(w.ctx, ev)
}

// sweepLocked drops expired dedupe and tombstone entries. It runs on access at most every
// quarter of the shorter TTL, so no janitor goroutine or per-entry timer is needed; lookups
// check expiry themselves, so entries awaiting a sweep are never acted on.
func (w *Webhook) sweepLocked(now time.Time) {
	if now.Before(w.nextSweep) {
		return
	}
	for k, exp := range w.seen {
		if !now.Before(exp) {
			delete(w.seen, k)
		}
	}
	for k, exp := range w.tombs {
		if !now.Before(exp) {
			delete(w.tombs, k)
		}
	}
	w.nextSweep = now.Add(min(w.cfg.DedupeTTL, w.cfg.TombstoneTTL) / 4)
}

func (w *Webhook) count(reason string) {
	w.mu.Lock()
	w.rejected[reason]++
	w.mu.Unlock()
}

// Panics is WebhookStats.Panics without copying the counter maps.
func (w *Webhook) Panics() uint64 { return w.panics.Load() }

// Stats returns a copy of the counters.
func (w *Webhook) Stats() WebhookStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := WebhookStats{
		Received: make(map[string]uint64, len(w.received)),
		Rejected: make(map[string]uint64, len(w.rejected)),
		Unknown:  w.unknown,
		Panics:   w.panics.Load(),
	}
	for k, v := range w.received {
		s.Received[k] = v
	}
	for k, v := range w.rejected {
		s.Rejected[k] = v
	}
	return s
}

// Close refuses further POSTs (503), cancels the context passed to the sink, drops queued
// events and waits for in-flight sink calls to return. It is safe to call more than once.
func (w *Webhook) Close() {
	w.mu.Lock()
	w.closed = true
	w.cancel()
	w.mu.Unlock()
	w.wg.Wait()
}
