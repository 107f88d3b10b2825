package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"

	"go.uber.org/goleak"
)

const token = "s3cret-token-0123456789"

var t0 = time.Date(2026, 11, 21, 14, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

func memStore(t testing.TB, events bool) *store.SQLite {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{Driver: "memory", Location: time.UTC, Events: events})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// seedCalls writes n calls, one a minute, alternating direction.
func seedCalls(t testing.TB, s store.Store, n int) []*store.Call {
	t.Helper()
	var out []*store.Call
	for i := range n {
		c := &store.Call{
			ID: fmt.Sprintf("pc-%03d", i), Direction: []store.Direction{store.Inbound, store.Outbound}[i%2],
			Offered: t0.Add(time.Duration(i) * time.Minute), Route: []string{"support", "sales"}[i%2],
			Caller: store.Party{Number: fmt.Sprintf("55119000000%02d", i%4)},
			Ended:  t0.Add(time.Duration(i)*time.Minute + 30*time.Second), Outcome: []store.Outcome{store.OutcomeAnswered, store.OutcomeMissed, store.OutcomeAbandoned}[i%3],
		}
		if err := s.Create(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func do(t *testing.T, h http.Handler, method, target, auth string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func errorOf(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error content-type %q, body %q", ct, w.Body.String())
	}
	var e struct{ Error string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return e.Error
}

func TestAuth(t *testing.T) {
	s := memStore(t, false)
	seedCalls(t, s, 1)
	on := New(Config{Token: token, Calls: s})
	off := New(Config{Calls: s})
	cases := []struct {
		name      string
		h         http.Handler
		path      string
		auth      string
		code      int
		challenge string
	}{
		{"no header", on, "/api/calls", "", 401, `Bearer realm="ponte"`},
		{"basic scheme", on, "/api/calls", "Basic dXNlcjpwYXNz", 401, `Bearer realm="ponte"`},
		{"wrong token", on, "/api/calls", "Bearer nope", 401, `Bearer realm="ponte", error="invalid_token"`},
		{"token prefix", on, "/api/calls", "Bearer " + token[:10], 401, `Bearer realm="ponte", error="invalid_token"`},
		{"token plus", on, "/api/calls", "Bearer " + token + "x", 401, `Bearer realm="ponte", error="invalid_token"`},
		{"unknown path hidden", on, "/api/secret", "", 401, `Bearer realm="ponte"`},
		{"good", on, "/api/calls", "Bearer " + token, 200, ""},
		{"scheme any case", on, "/api/calls", "bearer " + token, 200, ""},
		{"disabled", off, "/api/calls", "Bearer " + token, 401, `Bearer realm="ponte"`},
		{"disabled empty bearer", off, "/api/calls", "Bearer ", 401, `Bearer realm="ponte"`},
		{"unknown path", on, "/api/secret", "Bearer " + token, 404, ""},
		{"put", on, "/api/calls", "Bearer " + token, 405, ""},
	}
	for _, tc := range cases {
		method := http.MethodGet
		if tc.name == "put" {
			method = http.MethodPut
		}
		w := do(t, tc.h, method, tc.path, tc.auth)
		if w.Code != tc.code {
			t.Errorf("%s: %d, want %d (%s)", tc.name, w.Code, tc.code, w.Body.String())
			continue
		}
		if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got, tc.challenge)
		}
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: records must not be cached", tc.name)
		}
		if tc.code != 200 {
			errorOf(t, w)
		}
	}
}

func TestListAndGet(t *testing.T) {
	s := memStore(t, false)
	calls := seedCalls(t, s, 120)
	h := New(Config{Token: token, Calls: s})
	auth := "Bearer " + token
	list := func(q string) listResponse {
		t.Helper()
		w := do(t, h, "GET", "/api/calls?"+q, auth)
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", q, w.Code, w.Body.String())
		}
		var r listResponse
		if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Default page 50, newest first, then the rest through next_cursor.
	r := list("")
	if len(r.Calls) != 50 || r.Calls[0].ID != "pc-119" || r.NextCursor == "" {
		t.Fatalf("default page: %d calls, first %s, next %q", len(r.Calls), r.Calls[0].ID, r.NextCursor)
	}
	seen := 0
	q := url.Values{"limit": {"7"}, "direction": {"inbound"}, "from": {t0.Add(10 * time.Minute).Format(time.RFC3339)}}
	for page := 0; ; page++ {
		r := list(q.Encode())
		for _, c := range r.Calls {
			if c.Direction != store.Inbound || c.Offered.Before(t0.Add(10*time.Minute)) {
				t.Fatalf("filter let %s through", c.ID)
			}
			if want := fmt.Sprintf("pc-%03d", 118-2*seen); c.ID != want {
				t.Fatalf("page %d: %s, want %s", page, c.ID, want)
			}
			seen++
		}
		if r.NextCursor == "" {
			break
		}
		q.Set("cursor", r.NextCursor)
	}
	if seen != 55 { // inbound = even i; 10 <= i <= 118
		t.Fatalf("paged through %d inbound calls, want 55", seen)
	}
	// limit is clamped to store.MaxLimit before the store sees it.
	spy := &limitSpy{CallReader: s}
	if w := do(t, New(Config{Token: token, Calls: spy}), "GET", "/api/calls?limit=100000", auth); w.Code != 200 || spy.limit != store.MaxLimit {
		t.Fatalf("limit=100000 reached the store as %d (%d)", spy.limit, w.Code)
	}
	if r := list("outcome=missed&caller=%2B55+11+90000-0001&route=sales"); len(r.Calls) != 10 {
		// i%3==1 and i%4==1 (=> odd, route sales): i = 1, 13, 25, ..., 109
		t.Fatalf("combined filter: %d calls, want 10", len(r.Calls))
	}

	// One call, by id and by protocol.
	for _, key := range []string{calls[5].ID, calls[5].Protocol, strings.ReplaceAll(calls[5].Protocol, "-", "")} {
		w := do(t, h, "GET", "/api/calls/"+key, auth)
		var c store.Call
		if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &c) != nil || c.ID != calls[5].ID || c.Duration != 0 {
			t.Fatalf("get %s: %d %s", key, w.Code, w.Body.String())
		}
	}
	w := do(t, h, "GET", "/api/calls/pc-none", auth)
	if w.Code != 404 || errorOf(t, w) != "call not found" {
		t.Fatalf("missing call: %d %s", w.Code, w.Body.String())
	}

	// Bad parameters: 400 with a message naming them.
	for _, tc := range []struct{ q, want string }{
		{"from=yesterday", "from"},
		{"direction=up", "direction"},
		{"outcome=lost", "outcome"},
		{"limit=0", "limit"},
		{"limit=x", "limit"},
		{"cursor=%21%21", "cursor"},
		{"directon=inbound", "unknown parameter"},
		{"route=a&route=b", "route is given 2 times"},
		{"from=2026-11-22T00:00:00Z&to=2026-11-21T00:00:00Z", "from must be before to"},
	} {
		w := do(t, h, "GET", "/api/calls?"+tc.q, auth)
		if w.Code != 400 || !strings.Contains(errorOf(t, w), tc.want) {
			t.Errorf("%s: %d %s", tc.q, w.Code, w.Body.String())
		}
	}
}

// limitSpy records the limit List was called with.
type limitSpy struct {
	CallReader
	limit int
}

func (l *limitSpy) List(ctx context.Context, f store.Filter) (store.Page, error) {
	l.limit = f.Limit
	return l.CallReader.List(ctx, f)
}
