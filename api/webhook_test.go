package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"
)

const secret = "whsec-0123456789abcdef"

// receiver records verified deliveries.
type receiver struct {
	mu   sync.Mutex
	got  []delivery
	fail func(eventID string) int // non-zero: answer this status instead
	bad  []error
}

type delivery struct {
	id, callID string
	typ        store.EventType
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := VerifyWebhook(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		rc.bad = append(rc.bad, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev struct {
		ID   string          `json:"id"`
		Type store.EventType `json:"type"`
		Call store.Call      `json:"call"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get(HeaderEventID) || string(ev.Type) != r.Header.Get(HeaderEvent) {
		rc.bad = append(rc.bad, errors.New("body and headers disagree"))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if rc.fail != nil {
		if code := rc.fail(ev.ID); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	rc.got = append(rc.got, delivery{ev.ID, ev.Call.ID, ev.Type})
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

// waitFor polls cond until it holds or the deadline (a failure bound, not a
// performance assertion) passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runDeliverer(t *testing.T, c DelivererConfig) (stop func()) {
	t.Helper()
	d, err := NewDeliverer(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// record makes two calls' worth of events: A offered, answered, ended; B
// offered, transferred, ended.
func record(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	a := &store.Call{ID: "A", Direction: store.Inbound, Offered: t0}
	b := &store.Call{ID: "B", Direction: store.Outbound, Offered: t0}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Create(ctx, a, store.EventOffered))
	must(s.Create(ctx, b, store.EventOffered))
	a.Answered, a.AnsweredBy = t0.Add(time.Second), "agent1"
	must(s.Update(ctx, a, store.EventAnswered))
	b.Transfers = []store.Transfer{{At: t0.Add(2 * time.Second), ReferTo: "sip:x@pbx", Result: "200"}}
	must(s.Update(ctx, b, store.EventTransferred))
	a.Ended, b.Ended = t0.Add(time.Minute), t0.Add(time.Minute)
	must(s.Update(ctx, a, store.EventEnded))
	must(s.Update(ctx, b, store.EventEnded))
}

var wantOrder = map[string][]store.EventType{
	"A": {store.EventOffered, store.EventAnswered, store.EventEnded},
	"B": {store.EventOffered, store.EventTransferred, store.EventEnded},
}

// checkOnceInOrder: every event exactly once, each call's in order.
func checkOnceInOrder(t *testing.T, got []delivery) {
	t.Helper()
	ids := map[string]bool{}
	perCall := map[string][]store.EventType{}
	for _, d := range got {
		if ids[d.id] {
			t.Fatalf("event %s delivered twice: %+v", d.id, got)
		}
		ids[d.id] = true
		perCall[d.callID] = append(perCall[d.callID], d.typ)
	}
	for call, want := range wantOrder {
		if !slices.Equal(perCall[call], want) {
			t.Fatalf("call %s got %v, want %v", call, perCall[call], want)
		}
	}
}

func TestDeliveryAfterReceiverReturns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ponte.db")
	s, err := store.Open(context.Background(), store.Options{Driver: "sqlite", Path: path, Location: time.UTC, Events: true})
	if err != nil {
		t.Fatal(err)
	}
	record(t, s)

	// The receiver is down: its port refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := DelivererConfig{URL: "http://" + addr + "/events", Secret: secret, Outbox: s,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, Poll: 10 * time.Millisecond, Timeout: time.Second}
	stop := runDeliverer(t, cfg)
	// Events wait: both calls' first events are retried, the rest held.
	waitFor(t, "retries while the receiver is down", func() bool {
		evs, _ := s.Due(context.Background(), time.Now().Add(time.Hour), 10)
		return len(evs) == 2 && evs[0].Attempts >= 3 && evs[1].Attempts >= 3
	})
	stop()
	if err := s.Close(); err != nil { // ponte restarts
		t.Fatal(err)
	}

	s, err = store.Open(context.Background(), store.Options{Driver: "sqlite", Path: path, Location: time.UTC, Events: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc := &receiver{}
	srv := httptest.NewUnstartedServer(rc)
	if srv.Listener, err = net.Listen("tcp", addr); err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	srv.Start()
	defer srv.Close()
	cfg.Outbox = s
	stop = runDeliverer(t, cfg)
	defer stop()
	waitFor(t, "six deliveries", func() bool { return len(rc.deliveries()) >= 6 })
	waitFor(t, "an empty outbox", func() bool {
		evs, _ := s.Due(context.Background(), time.Now().Add(time.Hour), 10)
		return len(evs) == 0
	})
	checkOnceInOrder(t, rc.deliveries())
	if len(rc.bad) != 0 {
		t.Fatalf("receiver rejected: %v", rc.bad)
	}
}

func TestFailingEventHoldsOnlyItsCall(t *testing.T) {
	s := memStore(t, true)
	record(t, s)
	evs, _ := s.Due(context.Background(), time.Now(), 10)
	aOffered := evs[0].ID // A's first event
	rc := &receiver{}
	var failures int
	rc.fail = func(id string) int {
		if id == aOffered && failures < 3 {
			failures++
			return http.StatusServiceUnavailable
		}
		return 0
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	stop := runDeliverer(t, DelivererConfig{URL: srv.URL, Secret: secret, Outbox: s,
		MinBackoff: 30 * time.Millisecond, MaxBackoff: 60 * time.Millisecond, Poll: 10 * time.Millisecond})
	defer stop()
	waitFor(t, "six deliveries", func() bool { return len(rc.deliveries()) == 6 })
	got := rc.deliveries()
	checkOnceInOrder(t, got)
	// B was not held behind A's failures: all of B arrived before A's first.
	firstA := slices.IndexFunc(got, func(d delivery) bool { return d.callID == "A" })
	if firstA != 3 {
		t.Fatalf("B's events should pass A's failing one: %+v", got)
	}
}

func TestGiveUpAfterMaxAge(t *testing.T) {
	s := memStore(t, true)
	record(t, s)
	evs, _ := s.Due(context.Background(), time.Now(), 10)
	aOffered := evs[0].ID
	rc := &receiver{fail: func(id string) int {
		if id == aOffered {
			return http.StatusInternalServerError
		}
		return 0
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	stop := runDeliverer(t, DelivererConfig{URL: srv.URL, Secret: secret, Outbox: s, MaxAge: time.Nanosecond, Poll: 10 * time.Millisecond})
	defer stop()
	waitFor(t, "five deliveries", func() bool { return len(rc.deliveries()) == 5 })
	dead, err := s.DeadEvents(context.Background(), 10)
	if err != nil || len(dead) != 1 || dead[0].ID != aOffered || dead[0].LastError != "receiver answered 500 Internal Server Error" {
		t.Fatalf("dead: %+v %v", dead, err)
	}
}

func TestRedirectIsAFailure(t *testing.T) {
	s := memStore(t, true)
	if err := s.Create(context.Background(), &store.Call{ID: "R", Direction: store.Inbound, Offered: t0}, store.EventOffered); err != nil {
		t.Fatal(err)
	}
	rc := &receiver{}
	target := httptest.NewServer(rc)
	defer target.Close()
	redir := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redir.Close()
	stop := runDeliverer(t, DelivererConfig{URL: redir.URL, Secret: secret, Outbox: s, MinBackoff: time.Hour, Poll: 10 * time.Millisecond})
	waitFor(t, "a failed attempt", func() bool {
		evs, _ := s.Due(context.Background(), time.Now().Add(2*time.Hour), 1)
		return len(evs) == 1 && evs[0].Attempts == 1
	})
	stop()
	if n := len(rc.deliveries()); n != 0 {
		t.Fatalf("followed a redirect: %d deliveries", n)
	}
}

func TestSignature(t *testing.T) {
	body := []byte(`{"id":"ev-1"}`)
	now := time.Unix(1_790_000_000, 0)
	h := http.Header{}
	h.Set(HeaderTimestamp, "1790000000")
	// HMAC-SHA256("whsec-0123456789abcdef", "1790000000.{\"id\":\"ev-1\"}"),
	// computed independently with: printf '%s' '1790000000.{"id":"ev-1"}' |
	// openssl dgst -sha256 -hmac whsec-0123456789abcdef
	const known = "sha256=926b3a55fead63f0691ccfaedb3a7feb3b00da51c999f0c04c182e2a7e964105"
	if got := Sign(secret, "1790000000", body); got != known {
		t.Fatalf("Sign = %s, want %s", got, known)
	}
	h.Set(HeaderSignature, known)
	cases := []struct {
		name string
		mod  func(h http.Header, b []byte) (http.Header, []byte, time.Time)
		err  error
	}{
		{"valid", func(h http.Header, b []byte) (http.Header, []byte, time.Time) { return h, b, now }, nil},
		{"body changed", func(h http.Header, b []byte) (http.Header, []byte, time.Time) { return h, []byte(`{"id":"ev-2"}`), now }, ErrSignature},
		{"replayed later", func(h http.Header, b []byte) (http.Header, []byte, time.Time) { return h, b, now.Add(10 * time.Minute) }, ErrStale},
		{"timestamp bumped", func(h http.Header, b []byte) (http.Header, []byte, time.Time) {
			h = h.Clone()
			h.Set(HeaderTimestamp, "1790000600")
			return h, b, now.Add(10 * time.Minute)
		}, ErrSignature},
		{"no timestamp", func(h http.Header, b []byte) (http.Header, []byte, time.Time) {
			h = h.Clone()
			h.Del(HeaderTimestamp)
			return h, b, now
		}, ErrStale},
	}
	for _, tc := range cases {
		hh, b, at := tc.mod(h, body)
		if err := VerifyWebhook(secret, hh, b, at, 5*time.Minute); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestBackoff(t *testing.T) {
	d, err := NewDeliverer(DelivererConfig{URL: "http://127.0.0.1:1/", Secret: "x", Outbox: memStore(t, true),
		MinBackoff: time.Second, MaxBackoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		attempt int
		step    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {6, 32 * time.Second}, {7, time.Minute}, {64, time.Minute}, {1000, time.Minute}} {
		for range 50 {
			if b := d.backoff(tc.attempt); b < tc.step/2 || b > tc.step {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tc.attempt, b, tc.step/2, tc.step)
			}
		}
	}
}
