// Package wasim simulates Meta's side of the WhatsApp Business Calling API for tests, demos
// and load runs: a fake Graph API with Meta's validation and timers, signed webhooks in Meta's
// exact JSON shape, and WhatsApp caller peers shaped like Meta's media relay (ICE-lite, DTLS
// actpass, Opus 111 + telephone-event/8000 126, one SSRC) that record everything they receive.
//
// It plays both directions: users who call the business (Call, Caller) and users the business
// calls (SetUser, Callee: connect, RINGING/ACCEPTED/REJECTED, terminate), with their call
// permissions (GET call_permissions, permission requests on POST /messages, permission
// replies and user messages on the messages webhook field) and Meta's limits.
//
// Everything runs on 127.0.0.1. The rules it enforces are those of
// whatsapp-calling-api.md in the project's reference documents (cited by section).
package wasim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config configures the simulator.
type Config struct {
	WebhookURL    string // the gateway's webhook URL, e.g. http://127.0.0.1:8080/webhook
	AppSecret     string // signs X-Hub-Signature-256
	AccessToken   string // expected bearer token; anything else gets 401 code 190
	PhoneNumberID string
	DisplayNumber string
	WABAID        string // entry[].id (default "102290129340398")
	// AcceptWindow: no accept in time -> terminate webhook FAILED, like Meta's "Not Answered"
	// (§3.2: about 30-60 s; default 45 s).
	AcceptWindow time.Duration
	// NoMediaStart: after accept, no business RTP -> terminate with 138021 (§5.5: 20 s).
	NoMediaStart time.Duration
	// NoMediaMid: business media (RTP or RTCP) stopped mid-call -> terminate with 138021, or
	// 138022 when the caller itself cannot send (§5.5: 30 s).
	NoMediaMid time.Duration
	// StatusAsArray sends terminate status as ["Completed"] instead of "COMPLETED" (both are
	// in Meta's docs, §2.5).
	StatusAsArray bool
	// RingTimeout: a business-initiated call nobody answers ends with terminate FAILED after
	// this long (Meta's value is UNCONFIRMED, §5.5; default 60 s).
	RingTimeout time.Duration
	// PermissionsRate limits GET call_permissions to this many requests per second, answering
	// HTTP 429 code 613 above it (§3.5: 5 or 100 req/s); 0 means unlimited.
	PermissionsRate int
	// Now is the simulator's clock for webhook timestamps, permission expiry and the limit
	// windows (default time.Now). Ring and media timers run on real time.
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.WABAID == "" {
		c.WABAID = "102290129340398"
	}
	if c.PhoneNumberID == "" {
		c.PhoneNumberID = "106540352242922"
	}
	if c.DisplayNumber == "" {
		c.DisplayNumber = "16315553601"
	}
	if c.AcceptWindow <= 0 {
		c.AcceptWindow = 45 * time.Second
	}
	if c.NoMediaStart <= 0 {
		c.NoMediaStart = 20 * time.Second
	}
	if c.NoMediaMid <= 0 {
		c.NoMediaMid = 30 * time.Second
	}
	if c.RingTimeout <= 0 {
		c.RingTimeout = 60 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Errors of the simulator.
var (
	ErrWebhookRejected = errors.New("wasim: gateway rejected the webhook")
	ErrClosed          = errors.New("wasim: closed")
)

// Meta is a running simulator.
type Meta struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	http *http.Client
	ctx  context.Context // cancelled by Close: bounds background webhook deliveries
	stop context.CancelFunc

	mu         sync.Mutex
	closed     bool
	calls      map[string]*Caller
	callees    map[string]*Callee
	newCall    []*Callee     // business-initiated calls in creation order, for WaitCallee
	taken      int           // how many of newCall WaitCallee has returned
	calleeCh   chan struct{} // closed and replaced whenever a callee is added
	requests   []GraphRequest
	webhooks   []WebhookDelivery
	failures   map[string][]injected
	respDelays map[string]time.Duration // DelayResponse
	delays     map[string]time.Duration // per action: how long the Graph API takes to answer

	umu     sync.Mutex // guards users, permGets; never held while taking another lock
	users   map[string]*user
	permGet []time.Time // GET call_permissions arrivals in the last second (rate limit)

	wg sync.WaitGroup // background webhook deliveries and callers
}

type injected struct {
	status int
	body   string
}

// Start runs the fake Graph API on 127.0.0.1:0. Callers are created by Call.
func Start(ctx context.Context, cfg Config) (*Meta, error) {
	cfg.setDefaults()
	if cfg.WebhookURL == "" {
		return nil, errors.New("wasim: Config.WebhookURL is empty")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("wasim: listen: %w", err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	m := &Meta{
		cfg:      cfg,
		log:      cfg.Logger.With("sim", "wasim"),
		ln:       ln,
		http:     &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		ctx:      bg,
		stop:     stop,
		calls:    make(map[string]*Caller),
		callees:  make(map[string]*Callee),
		calleeCh: make(chan struct{}),
		failures: make(map[string][]injected),
		users:    make(map[string]*user),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{version}/{pnid}/calls", m.handleCalls)
	mux.HandleFunc("GET /{version}/{pnid}/call_permissions", m.handlePermissions)
	mux.HandleFunc("POST /{version}/{pnid}/messages", m.handleMessages)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("graph api server", "err", err)
		}
	}()
	return m, nil
}

// GraphURL is the base URL to configure as the Graph API, e.g. http://127.0.0.1:PORT/v23.0.
func (m *Meta) GraphURL() string { return "http://" + m.ln.Addr().String() + "/v23.0" }

// Config returns the effective configuration (defaults filled in).
func (m *Meta) Config() Config { return m.cfg }

// now is the simulator's clock (Config.Now).
func (m *Meta) now() time.Time { return m.cfg.Now() }

// Requests returns every Graph API request received so far.
func (m *Meta) Requests() []GraphRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]GraphRequest(nil), m.requests...)
}

// Webhooks returns every webhook POST made so far.
func (m *Meta) Webhooks() []WebhookDelivery {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]WebhookDelivery(nil), m.webhooks...)
}

// InjectFailure makes the next `times` requests with this action fail with status and body
// (a Meta error JSON, or "" for a generic code 1 error), before any validation.
func (m *Meta) InjectFailure(action string, status int, body string, times int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range times {
		m.failures[action] = append(m.failures[action], injected{status: status, body: body})
	}
}

// DelayResponse makes the Graph API carry out action at once and hold its
// response d: Meta has acted, the client does not know yet (a slow or lost
// response, so a test can end a call while an accept that took effect is
// in flight).
func (m *Meta) DelayResponse(action string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.respDelays == nil {
		m.respDelays = map[string]time.Duration{}
	}
	m.respDelays[action] = d
}

// DelayAction makes the Graph API take d before handling action (e.g. a slow
// accept, so a test can hang up while it is in flight).
func (m *Meta) DelayAction(action string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.delays == nil {
		m.delays = map[string]time.Duration{}
	}
	m.delays[action] = d
}

func (m *Meta) takeFailure(action string) (injected, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.failures[action]
	if len(q) == 0 {
		return injected{}, false
	}
	m.failures[action] = q[1:]
	return q[0], true
}

func (m *Meta) call(id string) *Caller {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[id]
}

// goWebhook delivers a webhook in the background; Close waits for it.
func (m *Meta) goWebhook(event, callID string, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_, _ = m.post(m.ctx, event, callID, body, true)
	}()
}

// Close ends every call without webhooks, stops the Graph API and waits for all goroutines.
func (m *Meta) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	calls := make([]*Caller, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	callees := make([]*Callee, 0, len(m.callees))
	for _, c := range m.callees {
		callees = append(callees, c)
	}
	m.mu.Unlock()

	for _, c := range calls {
		c.end("sim_closed", endOpts{silent: true})
	}
	for _, c := range callees {
		c.end("sim_closed", calleeEnd{silent: true})
	}
	m.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	m.wg.Wait()
	for _, c := range calls {
		c.wg.Wait()
	}
	for _, c := range callees {
		c.wg.Wait()
	}
	m.http.CloseIdleConnections()
	return err
}

// newID returns a WACID shaped like Meta's ("wacid." + 28 base64url characters).
func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
