package whatsapp

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recObserver records GraphObserver calls.
type recObserver struct {
	mu    sync.Mutex
	calls []string
}

func (o *recObserver) GraphRequest(action, outcome string, code int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d <= 0 {
		o.calls = append(o.calls, "non-positive latency")
	}
	o.calls = append(o.calls, fmt.Sprintf("%s/%s/%d", action, outcome, code))
}

// The observer sees every attempt, retries included, classified by outcome
// and Meta error code.
func TestGraphObserver(t *testing.T) {
	for _, c := range []struct {
		name       string
		retries    int
		responders []http.HandlerFunc
		call       func(*Client) error
		want       string
	}{
		{"ok", -1, []http.HandlerFunc{reply(200, okBody)},
			func(c *Client) error { return c.Reject(context.Background(), "1", "wacid.A") }, "reject/ok/0"},
		{"5xx then ok: two attempts", 1, []http.HandlerFunc{reply(503, `{"error":{"code":138004,"message":"x"}}`), reply(200, okBody)},
			func(c *Client) error { return c.PreAccept(context.Background(), "1", "wacid.A", "v=0") },
			"pre_accept/error/138004 pre_accept/ok/0"},
		{"token expired", 1, []http.HandlerFunc{reply(401, `{"error":{"code":190,"message":"expired"}}`)},
			func(c *Client) error { return c.Accept(context.Background(), "1", "wacid.A", "v=0", "") }, "accept/error/190"},
		{"error without a body", 1, []http.HandlerFunc{reply(400, `nope`)},
			func(c *Client) error { return c.Terminate(context.Background(), "1", "wacid.A") }, "terminate/error/0"},
		{"timeout", -1, []http.HandlerFunc{hang},
			func(c *Client) error { return c.Reject(context.Background(), "1", "wacid.A") }, "reject/timeout/0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			obs := &recObserver{}
			g := newGraphFake(t, c.responders...)
			cl := newTestClient(t, g, ClientConfig{Observer: obs, Retries: c.retries, Timeout: 200 * time.Millisecond})
			_ = c.call(cl)
			obs.mu.Lock()
			got := strings.Join(obs.calls, " ")
			obs.mu.Unlock()
			if got != c.want {
				t.Errorf("observed %q, want %q", got, c.want)
			}
		})
	}
}

func TestAttemptOutcomeNetwork(t *testing.T) {
	obs := &recObserver{}
	c := NewClient(ClientConfig{BaseURL: "http://127.0.0.1:1/v23.0", AccessToken: "x", Retries: -1,
		Timeout: time.Second, Observer: obs, Logger: discardLogger()})
	defer c.CloseIdleConnections()
	if err := c.Reject(context.Background(), "1", "wacid.A"); err == nil {
		t.Fatal("reject to a closed port succeeded")
	}
	if got := strings.Join(obs.calls, " "); got != "reject/network/0" {
		t.Errorf("observed %q, want reject/network/0", got)
	}
}
