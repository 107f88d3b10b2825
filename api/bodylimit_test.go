package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// chunked hides the body's length from the handler, as a chunked upload
// does: only the bytes read can tell it is too large.
type chunked struct{ io.Reader }

// Every JSON POST refuses a body over 64 KiB with 413 and a JSON error,
// whether the length is declared or not, and the gateway never sees it;
// a body of exactly the limit is read and judged on its content.
func TestPostBodyLimit(t *testing.T) {
	big := `{"user":"+5511987654321","body":"` + strings.Repeat("a", maxAPIBody) + `"}`
	atLimit := `{"user":"+5511987654321","body":"` + strings.Repeat("a", maxAPIBody-len(`{"user":"+5511987654321","body":""}`)) + `"}`
	if len(atLimit) != maxAPIBody {
		t.Fatalf("atLimit is %d bytes", len(atLimit))
	}
	cases := []struct {
		name, path, body string
		hideLength       bool
		code             int
	}{
		{"permission declared", "/api/permission-requests", big, false, 413},
		{"permission chunked", "/api/permission-requests", big, true, 413},
		{"click declared", "/api/calls", big, false, 413},
		{"click chunked", "/api/calls", big, true, 413},
		{"permission at the limit", "/api/permission-requests", atLimit, false, 202},
		{"permission at the limit chunked", "/api/permission-requests", atLimit, true, 202},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeOutbound{}
			h := New(Config{Token: token, Outbound: f})
			var body io.Reader = strings.NewReader(tc.body)
			if tc.hideLength {
				body = chunked{body}
			}
			r := httptest.NewRequest(http.MethodPost, tc.path, body)
			if tc.hideLength && r.ContentLength != -1 {
				r.ContentLength = -1
			}
			r.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body.String(), tc.code)
			}
			if tc.code != 413 {
				if len(f.reqs) != 1 || len(f.reqs[0].Body) != maxAPIBody-len(`{"user":"+5511987654321","body":""}`) {
					t.Errorf("gateway saw %d requests", len(f.reqs))
				}
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, "64 KiB") {
				t.Errorf("413 body %q (%v), want a JSON error naming the limit", w.Body.String(), err)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			if len(f.reqs) != 0 || len(f.calls) != 0 {
				t.Errorf("gateway asked %+v %+v", f.reqs, f.calls)
			}
		})
	}
}
