package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/internal/signing"
	"github.com/ponte-gw/ponte/store"
)

// Headers of an event POST. The signature covers the timestamp and the body
// (HMAC-SHA256 over "<timestamp>.<body>"), so a captured request cannot be
// replayed later with a fresh timestamp: a timestamp header outside the MAC
// would stop nothing. Receivers check both with VerifyWebhook, and dedupe on
// the event id (delivery is at-least-once: a crash between the receiver's 200
// and our bookkeeping sends the event again).
const (
	HeaderSignature = signing.HeaderSignature // sha256=<hex>
	HeaderTimestamp = signing.HeaderTimestamp // Unix seconds of this attempt
	HeaderEventID   = "X-Ponte-Event-Id"
	HeaderEvent     = "X-Ponte-Event" // call.offered, ...
)

// Webhook verification errors.
var (
	ErrSignature = errors.New("webhook: bad signature")
	ErrStale     = errors.New("webhook: timestamp outside the tolerance")
)

// Sign returns the X-Ponte-Signature value for a body sent at ts.
func Sign(secret, ts string, body []byte) string { return signing.Sign(secret, ts, body) }

// VerifyWebhook is what a receiver runs: the signature must match and the
// timestamp be within tolerance of now (5 minutes is usual).
func VerifyWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no timestamp", ErrStale)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off", ErrStale, d)
	}
	if !signing.Valid(secret, h.Get(HeaderSignature), ts, body) {
		return ErrSignature
	}
	return nil
}

// DelivererConfig configures the event deliverer.
type DelivererConfig struct {
	URL, Secret string // config events.url, events.secret
	Outbox      store.Outbox
	Client      *http.Client  // default: no redirects, Timeout per request
	Timeout     time.Duration // per POST (events.timeout), default 5s
	MinBackoff  time.Duration // first retry after about this, default 1s
	MaxBackoff  time.Duration // events.max_backoff, default 5m
	MaxAge      time.Duration // events.max_age: give up after, default 24h
	Poll        time.Duration // how often to look for due events, default 1s
	Batch       int           // events fetched per look, default 32
	Logger      *slog.Logger
}

// Deliverer posts outbox events to the business's webhook. Run owns its only
// goroutine; cancel Run's context to stop it. Events of one call go one at a
// time, in order: store.Outbox.Due only hands out a call's oldest pending
// event, so a failing event holds its call's later events until it is sent
// or given up, and other calls' events go on meanwhile.
type Deliverer struct {
	c   DelivererConfig
	log *slog.Logger
}

// NewDeliverer checks the config and fills defaults.
func NewDeliverer(c DelivererConfig) (*Deliverer, error) {
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return nil, fmt.Errorf("api: events url %q is not http(s)", c.URL)
	}
	if c.Secret == "" || c.Outbox == nil {
		return nil, errors.New("api: the deliverer needs a secret and an outbox")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 5*time.Second)
	def(&c.MinBackoff, time.Second)
	def(&c.MaxBackoff, 5*time.Minute)
	def(&c.MaxAge, 24*time.Hour)
	def(&c.Poll, time.Second)
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.Batch <= 0 {
		c.Batch = 32
	}
	if c.Client == nil {
		// A redirect would carry a signed call record to a host nobody
		// configured: treat 3xx as a failure instead of following it.
		c.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Deliverer{c: c, log: c.Logger}, nil
}

// Run delivers until ctx ends. It returns nil on cancellation; events in
// flight then are simply sent again on the next start.
func (d *Deliverer) Run(ctx context.Context) error {
	var pending <-chan struct{}
	if p, ok := d.c.Outbox.(interface{ Pending() <-chan struct{} }); ok {
		pending = p.Pending()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-pending:
		}
		for {
			n, err := d.deliverDue(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				d.log.Error("events: outbox failed", "err", err)
				break
			}
			if n < d.c.Batch {
				break // nothing more due now
			}
		}
		t.Reset(d.c.Poll)
	}
}

// deliverDue sends one batch of due events and returns how many it took.
func (d *Deliverer) deliverDue(ctx context.Context) (int, error) {
	evs, err := d.c.Outbox.Due(ctx, time.Now(), d.c.Batch)
	if err != nil {
		return 0, err
	}
	for _, ev := range evs {
		retryAfter, err := d.post(ctx, ev)
		if ctx.Err() != nil {
			return len(evs), nil
		}
		if err == nil {
			if err := d.c.Outbox.MarkSent(ctx, ev.Seq); err != nil {
				return len(evs), err
			}
			continue
		}
		now := time.Now()
		if now.Sub(ev.Created) >= d.c.MaxAge {
			d.log.Error("events: giving an event up", "event", ev.Type, "event_id", ev.ID, "call_id", ev.CallID,
				"attempts", ev.Attempts+1, "err", err)
			if err := d.c.Outbox.MarkDead(ctx, ev.Seq, err.Error()); err != nil {
				return len(evs), err
			}
			continue
		}
		wait := max(d.backoff(ev.Attempts+1), min(retryAfter, d.c.MaxBackoff))
		d.log.Warn("events: delivery failed; will retry", "event", ev.Type, "event_id", ev.ID, "call_id", ev.CallID,
			"attempts", ev.Attempts+1, "retry_in", wait, "err", err)
		if err := d.c.Outbox.MarkFailed(ctx, ev.Seq, now.Add(wait), err.Error()); err != nil {
			return len(evs), err
		}
	}
	return len(evs), nil
}

// backoff is exponential from MinBackoff, capped at MaxBackoff, with "equal
// jitter" (half fixed, half random) so receivers coming back up are not hit
// by every ponte at once, while a retry never comes sooner than half the step.
func (d *Deliverer) backoff(attempt int) time.Duration {
	step := d.c.MaxBackoff
	if attempt < 40 {
		if s := d.c.MinBackoff << (attempt - 1); s > 0 && s < step {
			step = s
		}
	}
	half := step / 2
	return half + rand.N(half+1)
}

// post sends one event; a non-2xx answer is an error. It returns the
// receiver's Retry-After (seconds form), if any.
func (d *Deliverer) post(ctx context.Context, ev store.Event) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.c.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ponte-events/1")
	req.Header.Set(HeaderEvent, string(ev.Type))
	req.Header.Set(HeaderEventID, ev.ID)
	signing.SetHeaders(req.Header, d.c.Secret, ev.Body, time.Now())
	resp, err := d.c.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode/100 == 2 {
		return 0, nil
	}
	var ra time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		ra = time.Duration(s) * time.Second
	}
	return ra, fmt.Errorf("receiver answered %s", resp.Status)
}
