package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeOutbound records what the API asked of the gateway.
type fakeOutbound struct {
	reqs  []PermissionRequest
	calls []ClickToCall
	err   error
}

func (f *fakeOutbound) RequestPermission(_ context.Context, r PermissionRequest) (PermissionRequestResult, error) {
	f.reqs = append(f.reqs, r)
	if f.err != nil {
		return PermissionRequestResult{}, f.err
	}
	return PermissionRequestResult{Kind: "interactive", MessageID: "wamid.1", User: r.User}, nil
}

func (f *fakeOutbound) Permission(_ context.Context, business, user string) (any, error) {
	if f.err != nil {
		return nil, f.err
	}
	return map[string]string{"user": user, "business": business, "state": "temporary"}, nil
}

func (f *fakeOutbound) ClickToCall(_ context.Context, r ClickToCall) (ClickToCallResult, error) {
	f.calls = append(f.calls, r)
	if f.err != nil {
		return ClickToCallResult{}, f.err
	}
	return ClickToCallResult{ID: "pc-1", User: r.User}, nil
}

func doBody(t *testing.T, h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestOutboundEndpoints(t *testing.T) {
	f := &fakeOutbound{}
	h := New(Config{Token: token, Outbound: f})
	cases := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"request", "POST", "/api/permission-requests", `{"user":"+5511987654321","body":"hi"}`, 202, `"message_id":"wamid.1"`},
		{"request without user", "POST", "/api/permission-requests", `{"body":"hi"}`, 400, "want"},
		{"request unknown field", "POST", "/api/permission-requests", `{"user":"1","bogus":1}`, 400, "want"},
		{"request by GET", "GET", "/api/permission-requests", ``, 405, "method not allowed"},
		{"status", "GET", "/api/permissions/5511987654321?business=123", ``, 200, `"business":"123"`},
		{"click", "POST", "/api/calls", `{"agent":"sip:1001@pbx","trunk":"pbx","user":"+5511987654321"}`, 202, `"id":"pc-1"`},
		{"click without agent", "POST", "/api/calls", `{"user":"+5511987654321"}`, 400, "want"},
		{"oversize", "POST", "/api/calls", `{"agent":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "64 KiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := doBody(t, h, tc.method, tc.path, tc.body)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, w.Code, w.Body.String(), tc.code, tc.want)
			}
		})
	}
	if len(f.reqs) != 1 || f.reqs[0].Body != "hi" || len(f.calls) != 1 || f.calls[0].Agent != "sip:1001@pbx" {
		t.Errorf("gateway asked %+v %+v", f.reqs, f.calls)
	}
}

// Refusals keep their status and Retry-After; anything else is a 500
// without internals.
func TestOutboundRefusals(t *testing.T) {
	f := &fakeOutbound{err: &RefusedError{Status: 429, Reason: "1 per 24 h", RetryAfter: 90*time.Minute + time.Second}}
	h := New(Config{Token: token, Outbound: f})
	w := doBody(t, h, "POST", "/api/permission-requests", `{"user":"+5511987654321"}`)
	if w.Code != 429 || w.Header().Get("Retry-After") != "5401" {
		t.Errorf("limit: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	f.err = errors.New("database is locked at /var/lib/x")
	w = doBody(t, h, "POST", "/api/calls", `{"agent":"1001","user":"+5511987654321"}`)
	var body map[string]string
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != 500 || strings.Contains(w.Body.String(), "/var/lib") {
		t.Errorf("internal error: %d %s", w.Code, w.Body.String())
	}
	// Without an Outbound the endpoints say so.
	h = New(Config{Token: token})
	if w := doBody(t, h, "POST", "/api/calls", `{}`); w.Code != 501 {
		t.Errorf("no outbound: %d", w.Code)
	}
}
