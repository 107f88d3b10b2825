package whatsapp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const testAccessToken = "EAAG-secret-token"

type recordedReq struct {
	method, path, auth, contentType string
	body                            string
}

// graphFake is a scripted Graph API on 127.0.0.1: the i-th request gets responders[i] (the last
// one repeats).
type graphFake struct {
	mu         sync.Mutex
	reqs       []recordedReq
	responders []http.HandlerFunc
	srv        *httptest.Server
}

func newGraphFake(t *testing.T, responders ...http.HandlerFunc) *graphFake {
	t.Helper()
	g := &graphFake{responders: responders}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		i := len(g.reqs)
		g.reqs = append(g.reqs, recordedReq{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		resp := g.responders[min(i, len(g.responders)-1)]
		g.mu.Unlock()
		resp(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *graphFake) requests() []recordedReq {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]recordedReq(nil), g.reqs...)
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hang never answers; it returns when the client gives up (connection closed).
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

const okBody = `{"messaging_product":"whatsapp","success":true}`

func newTestClient(t *testing.T, g *graphFake, cfg ClientConfig) *Client {
	t.Helper()
	cfg.BaseURL = g.srv.URL + "/v23.0/"
	cfg.AccessToken = testAccessToken
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	c := NewClient(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

const testSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=setup:active\r\n"
const testSDPJSON = `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=setup:active\r\n`

func TestClientRequestBodies(t *testing.T) {
	tests := []struct {
		name string
		call func(c *Client) error
		want string
	}{
		{"pre_accept", func(c *Client) error { return c.PreAccept(context.Background(), "pnid", "wacid.1", testSDP) },
			`{"messaging_product":"whatsapp","call_id":"wacid.1","action":"pre_accept","session":{"sdp_type":"answer","sdp":"` + testSDPJSON + `"}}`},
		{"accept", func(c *Client) error {
			return c.Accept(context.Background(), "pnid", "wacid.1", testSDP, "corr-<42>&x")
		}, `{"messaging_product":"whatsapp","call_id":"wacid.1","action":"accept","session":{"sdp_type":"answer","sdp":"` + testSDPJSON + `"},"biz_opaque_callback_data":"corr-<42>&x"}`},
		{"accept without opaque", func(c *Client) error { return c.Accept(context.Background(), "pnid", "wacid.1", testSDP, "") },
			`{"messaging_product":"whatsapp","call_id":"wacid.1","action":"accept","session":{"sdp_type":"answer","sdp":"` + testSDPJSON + `"}}`},
		{"reject", func(c *Client) error { return c.Reject(context.Background(), "pnid", "wacid.1") },
			`{"messaging_product":"whatsapp","call_id":"wacid.1","action":"reject"}`},
		{"terminate", func(c *Client) error { return c.Terminate(context.Background(), "pnid", "wacid.1") },
			`{"messaging_product":"whatsapp","call_id":"wacid.1","action":"terminate"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, reply(200, okBody))
			c := newTestClient(t, g, ClientConfig{})
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			reqs := g.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/v23.0/pnid/calls" {
				t.Errorf("%s %s", r.method, r.path)
			}
			if r.auth != "Bearer "+testAccessToken || r.contentType != "application/json" {
				t.Errorf("Authorization %q Content-Type %q", r.auth, r.contentType)
			}
			if r.body != tc.want {
				t.Errorf("body\n got %s\nwant %s", r.body, tc.want)
			}
		})
	}
}

// The accept SDP must equal the pre_accept SDP (ref §3.1), both as sdp_type "answer".
func TestClientAcceptRepeatsPreAcceptSDP(t *testing.T) {
	g := newGraphFake(t, reply(200, okBody))
	c := newTestClient(t, g, ClientConfig{})
	ctx := context.Background()
	if err := c.PreAccept(ctx, "pnid", "wacid.1", testSDP); err != nil {
		t.Fatal(err)
	}
	if err := c.Accept(ctx, "pnid", "wacid.1", testSDP, "gw-123"); err != nil {
		t.Fatal(err)
	}
	var bodies [2]struct {
		Action    string      `json:"action"`
		Session   callSession `json:"session"`
		BizOpaque string      `json:"biz_opaque_callback_data"`
	}
	for i, r := range g.requests() {
		if err := json.Unmarshal([]byte(r.body), &bodies[i]); err != nil {
			t.Fatal(err)
		}
	}
	if bodies[0].Session != bodies[1].Session || bodies[1].Session.SDP != testSDP || bodies[1].Session.SDPType != "answer" {
		t.Errorf("sessions differ or wrong: %+v vs %+v", bodies[0].Session, bodies[1].Session)
	}
	if bodies[0].Action != "pre_accept" || bodies[1].Action != "accept" || bodies[1].BizOpaque != "gw-123" {
		t.Errorf("%+v", bodies)
	}
}

func TestClientConnect(t *testing.T) {
	g := newGraphFake(t, reply(200, `{"messaging_product":"whatsapp","calls":[{"id":"wacid.NEW"}]}`))
	c := newTestClient(t, g, ClientConfig{})
	wacid, err := c.Connect(context.Background(), "pnid", "14085551234", "US.1349", testSDP, "0fS5cePMok")
	if err != nil || wacid != "wacid.NEW" {
		t.Fatalf("wacid %q err %v", wacid, err)
	}
	want := `{"messaging_product":"whatsapp","to":"14085551234","recipient":"US.1349","action":"connect","session":{"sdp_type":"offer","sdp":"` + testSDPJSON + `"},"biz_opaque_callback_data":"0fS5cePMok"}`
	if got := g.requests()[0].body; got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
	// BSUID only.
	if _, err := c.Connect(context.Background(), "pnid", "", "US.1349", testSDP, ""); err != nil {
		t.Fatal(err)
	}
	want = `{"messaging_product":"whatsapp","recipient":"US.1349","action":"connect","session":{"sdp_type":"offer","sdp":"` + testSDPJSON + `"}}`
	if got := g.requests()[1].body; got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}

func TestClientConnectBadResponse(t *testing.T) {
	g := newGraphFake(t, reply(200, `{"messaging_product":"whatsapp","calls":[]}`))
	c := newTestClient(t, g, ClientConfig{})
	if _, err := c.Connect(context.Background(), "pnid", "1", "", testSDP, ""); !errors.Is(err, ErrBadResponse) {
		t.Errorf("err %v, want ErrBadResponse", err)
	}
	g2 := newGraphFake(t, reply(200, `{"success":false}`))
	c2 := newTestClient(t, g2, ClientConfig{})
	if err := c2.Terminate(context.Background(), "pnid", "w"); !errors.Is(err, ErrBadResponse) {
		t.Errorf("err %v, want ErrBadResponse", err)
	}
}

const metaError = `{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,
	"error_subcode":2494010,"error_data":{"messaging_product":"whatsapp","details":"SDP validation failed: no fingerprint"},
	"fbtrace_id":"AbCdEf123"}}`

func TestClientAPIErrorParsedNotRetried(t *testing.T) {
	var logs syncBuffer
	g := newGraphFake(t, reply(400, metaError))
	c := newTestClient(t, g, ClientConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	err := c.PreAccept(context.Background(), "pnid", "wacid.1", testSDP)
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err %v is not *APIError", err)
	}
	want := APIError{HTTPStatus: 400, Code: 100, Subcode: 2494010, Type: "OAuthException",
		Message: "(#100) Invalid parameter", Details: "SDP validation failed: no fingerprint", FBTraceID: "AbCdEf123"}
	if *apiErr != want {
		t.Errorf("got %+v\nwant %+v", *apiErr, want)
	}
	if n := len(g.requests()); n != 1 {
		t.Errorf("400 sent %d times, want 1", n)
	}
	if !strings.Contains(err.Error(), "AbCdEf123") || !strings.Contains(err.Error(), "wacid.1") {
		t.Errorf("error text %q lacks fbtrace_id or wacid", err)
	}
	if errors.Is(err, ErrAuth) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) {
		t.Errorf("400 matched a sentinel: %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "fbtrace_id=AbCdEf123") {
		t.Errorf("fbtrace_id not logged: %s", l)
	}
	if strings.Contains(l, testAccessToken) {
		t.Errorf("access token logged: %s", l)
	}
}

func TestClientRetries(t *testing.T) {
	e500 := reply(500, `{"error":{"message":"Internal error","code":138004,"fbtrace_id":"T500"}}`)
	already := reply(400, `{"error":{"message":"Call Already Terminated","code":100,"fbtrace_id":"TA"}}`)
	tests := []struct {
		name      string
		resp      []http.HandlerFunc
		cfg       ClientConfig
		wantErr   error // nil: success
		wantAPI   int   // expected APIError.HTTPStatus when wantErr != nil (0 = none)
		wantTries int
	}{
		{"500 then success", []http.HandlerFunc{e500, e500, reply(200, okBody)}, ClientConfig{}, nil, 0, 3},
		{"500 exhausts retries", []http.HandlerFunc{e500}, ClientConfig{}, ErrUnavailable, 500, 3},
		{"more retries", []http.HandlerFunc{e500}, ClientConfig{Retries: 4}, ErrUnavailable, 500, 5},
		{"no retries", []http.HandlerFunc{e500}, ClientConfig{Retries: -1}, ErrUnavailable, 500, 1},
		{"429 retried", []http.HandlerFunc{reply(429, `{"error":{"code":613}}`), reply(200, okBody)}, ClientConfig{}, nil, 0, 2},
		{"404 not retried", []http.HandlerFunc{reply(404, `{"error":{"code":100}}`), reply(200, okBody)}, ClientConfig{}, errAny, 404, 1},
		{"already on retry is success", []http.HandlerFunc{e500, already}, ClientConfig{}, nil, 0, 2},
		{"already on first attempt is an error", []http.HandlerFunc{already, reply(200, okBody)}, ClientConfig{}, errAny, 400, 1},
		{"timeout then already", []http.HandlerFunc{hang, already}, ClientConfig{Timeout: 50 * time.Millisecond}, nil, 0, 2},
		{"timeout exhausts retries", []http.HandlerFunc{hang}, ClientConfig{Timeout: 50 * time.Millisecond}, ErrTimeout, 0, 3},
		{"timeout no retries", []http.HandlerFunc{hang}, ClientConfig{Timeout: 50 * time.Millisecond, Retries: -1}, ErrTimeout, 0, 1},
		{"non-JSON 502", []http.HandlerFunc{reply(502, "<html>Bad Gateway</html>")}, ClientConfig{Retries: -1}, ErrUnavailable, 502, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, tc.resp...)
			c := newTestClient(t, g, tc.cfg)
			err := c.Terminate(context.Background(), "pnid", "wacid.r")
			if n := len(g.requests()); n != tc.wantTries {
				t.Errorf("%d attempts, want %d", n, tc.wantTries)
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("err %v, want success", err)
			case tc.wantErr == nil:
				return
			case err == nil:
				t.Fatalf("success, want error %v", tc.wantErr)
			case tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			var apiErr *APIError
			if got := errors.As(err, &apiErr); got != (tc.wantAPI != 0) || (got && apiErr.HTTPStatus != tc.wantAPI) {
				t.Errorf("APIError %+v, want HTTP %d", apiErr, tc.wantAPI)
			}
		})
	}
	// All request bodies of a retried action are identical.
	g := newGraphFake(t, e500, e500, reply(200, okBody))
	c := newTestClient(t, g, ClientConfig{})
	if err := c.Accept(context.Background(), "pnid", "wacid.r", testSDP, "x"); err != nil {
		t.Fatal(err)
	}
	reqs := g.requests()
	if len(reqs) != 3 || reqs[0].body != reqs[1].body || reqs[1].body != reqs[2].body {
		t.Errorf("retried bodies differ: %+v", reqs)
	}
}

var errAny = errors.New("any error")

func TestClientConnectNeverRetried(t *testing.T) {
	tests := []struct {
		name    string
		resp    http.HandlerFunc
		wantErr error
	}{
		{"500", reply(500, `{"error":{"message":"Connection error","code":138004}}`), ErrUnavailable},
		{"timeout", hang, ErrTimeout},
		{"429", reply(429, `{"error":{"message":"Concurrent calls limit","code":138002}}`), errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, tc.resp, reply(200, `{"calls":[{"id":"wacid.second"}]}`))
			c := newTestClient(t, g, ClientConfig{Timeout: 50 * time.Millisecond, Retries: 5})
			wacid, err := c.Connect(context.Background(), "pnid", "14085551234", "", testSDP, "")
			if err == nil || wacid != "" {
				t.Fatalf("wacid %q err %v, want error", wacid, err)
			}
			if tc.wantErr != errAny && !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if n := len(g.requests()); n != 1 {
				t.Errorf("connect sent %d times, want 1", n)
			}
		})
	}
}

func TestClientAuthErrors(t *testing.T) {
	tests := []struct {
		status   int
		body     string
		wantAuth bool
	}{
		{401, `{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"fbtrace_id":"X"}}`, true},
		{400, `{"error":{"message":"Invalid OAuth access token","code":190}}`, true},
		{401, `{"error":{"message":"No approved call permission","code":138006}}`, false},
		{401, `{"error":{"message":"Calling not enabled","code":138000}}`, false},
		{401, `not json`, true},
		{403, `{"error":{"code":10}}`, false},
	}
	for _, tc := range tests {
		g := newGraphFake(t, reply(tc.status, tc.body))
		c := newTestClient(t, g, ClientConfig{})
		err := c.Reject(context.Background(), "pnid", "wacid.a")
		if got := errors.Is(err, ErrAuth); got != tc.wantAuth {
			t.Errorf("HTTP %d %s: errors.Is(ErrAuth) = %v, want %v (err %v)", tc.status, tc.body, got, tc.wantAuth, err)
		}
		if n := len(g.requests()); n != 1 {
			t.Errorf("HTTP %d retried %d times", tc.status, n)
		}
	}
}

func TestClientContextBoundsRetries(t *testing.T) {
	e503 := reply(503, `{"error":{"code":1}}`)
	// A deadline shorter than the next backoff: give up at once with the server's error.
	g := newGraphFake(t, e503)
	c := newTestClient(t, g, ClientConfig{Backoff: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Terminate(ctx, "pnid", "w")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != 503 || len(g.requests()) != 1 {
		t.Errorf("err %v after %d requests", err, len(g.requests()))
	}
	// A cancelled context during the backoff wait ends the call with context.Canceled.
	c2 := newTestClient(t, g, ClientConfig{Backoff: time.Hour})
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		for len(g.requests()) < 2 {
			time.Sleep(time.Millisecond)
		}
		cancel2()
	}()
	err = c2.Terminate(ctx2, "pnid", "w")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	// The caller's own deadline is reported as ErrTimeout.
	g3 := newGraphFake(t, hang)
	c3 := newTestClient(t, g3, ClientConfig{Timeout: time.Hour})
	ctx3, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	if err := c3.Reject(ctx3, "pnid", "w"); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
	if n := len(g3.requests()); n != 1 {
		t.Errorf("%d requests after the caller's deadline", n)
	}
}

func TestClientConnectionRefused(t *testing.T) {
	g := newGraphFake(t, reply(200, okBody))
	c := newTestClient(t, g, ClientConfig{Retries: 1})
	g.srv.Close() // nothing listens on that 127.0.0.1 port any more
	if err := c.Terminate(context.Background(), "pnid", "w"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("err %v, want ErrUnavailable", err)
	}
}

func TestClientInvalidArguments(t *testing.T) {
	g := newGraphFake(t, reply(200, okBody))
	c := newTestClient(t, g, ClientConfig{})
	ctx := context.Background()
	long := strings.Repeat("é", MaxBizOpaqueLen+1)
	checks := []error{
		c.Accept(ctx, "pnid", "w", testSDP, long),
		c.Accept(ctx, "pnid", "w", "", ""),
		c.PreAccept(ctx, "pnid", "", testSDP),
		c.PreAccept(ctx, "", "w", testSDP),
		c.Reject(ctx, "pnid", ""),
		c.Terminate(ctx, "", "w"),
	}
	_, err := c.Connect(ctx, "pnid", "", "", testSDP, "")
	checks = append(checks, err)
	_, err = c.Connect(ctx, "pnid", "1", "", testSDP, long)
	checks = append(checks, err)
	for i, err := range checks {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("check %d: err %v, want ErrInvalidArgument", i, err)
		}
	}
	if n := len(g.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid arguments", n)
	}
	// Exactly 512 characters (multi-byte) is allowed; the phone number id is path-escaped.
	if err := c.Accept(ctx, "pn/id", "w", testSDP, long[:len(long)-len("é")]); err != nil {
		t.Fatal(err)
	}
	if p := g.requests()[0].path; p != "/v23.0/pn%2Fid/calls" {
		t.Errorf("path %q", p)
	}
}

func TestRetryTable(t *testing.T) {
	got := map[string]RetryRule{}
	for _, r := range RetryTable() {
		got[r.Action] = r
	}
	for _, a := range []string{"pre_accept", "accept", "reject", "terminate"} {
		if r, ok := got[a]; !ok || !r.Retried || !r.AlreadyIsSuccess || !retryRule(a).Retried {
			t.Errorf("%s: %+v", a, r)
		}
	}
	if r := got["connect"]; r.Retried || r.AlreadyIsSuccess || retryRule("connect").Retried || retryRule("bogus").Retried {
		t.Errorf("connect: %+v", r)
	}
	if r := got["messages"]; r.Action != "messages" || r.Retried || retryRule("messages").Retried {
		t.Errorf("messages: %+v", r)
	}
	if len(got) != 7 || !got["call_permissions"].Retried || got["call_permissions"].AlreadyIsSuccess {
		t.Errorf("table has %d actions", len(got))
	}
}

func TestParseRetryAfterAndAPIErrorText(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, " 10 ": 10 * time.Second, "-1": 0,
		"Wed, 21 Oct 2015 07:28:00 GMT": 0, "999999": time.Hour} {
		if got := parseRetryAfter(in); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
	e := parseAPIError(503, []byte("upstream \x00 down\n"))
	if e.HTTPStatus != 503 || e.Message != "Service Unavailable" || e.Details != "upstream   down" {
		t.Errorf("%+v", e)
	}
	e = parseAPIError(400, []byte(`{"error":{"code":"138003","message":"Duplicate call","error_data":"already ongoing"}}`))
	if e.Code != 138003 || e.Details != "already ongoing" {
		t.Errorf("%+v", e)
	}
	if s := (&APIError{HTTPStatus: 400, Code: 100, Subcode: 7, Message: "m", Details: "d", FBTraceID: "f"}).Error(); s != "whatsapp: graph api error (HTTP 400, code 100, subcode 7): m: d [fbtrace_id f]" {
		t.Errorf("Error() = %q", s)
	}
}
