package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/internal/signing"
)

func TestHookClient(t *testing.T) {
	secret := []byte("crm-secret")
	req := HookRequest{CallID: "c1", WACID: "wacid.1", Route: "support", CallerNumber: "5511987654321", PhoneNumberID: "123", Open: true}
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, body []byte)
		want    error
		targets int
	}{
		{"success", func(w http.ResponseWriter, _ []byte) {
			_, _ = io.WriteString(w, `{"action":"route","targets":[{"uri":"sip:maria@pbx","trunk":"pbx","ring_timeout":8}],"headers":{"X-Case":"4711"}}`)
		}, nil, 1},
		{"empty body", func(w http.ResponseWriter, _ []byte) {}, nil, 0},
		{"timeout", func(w http.ResponseWriter, _ []byte) { time.Sleep(600 * time.Millisecond) }, ErrHookTimeout, 0},
		{"500", func(w http.ResponseWriter, _ []byte) { w.WriteHeader(500) }, ErrHookStatus, 0},
		{"malformed", func(w http.ResponseWriter, _ []byte) { _, _ = io.WriteString(w, `{"targets":[`) }, ErrHookReply, 0},
		{"bad action", func(w http.ResponseWriter, _ []byte) { _, _ = io.WriteString(w, `{"action":"pstn"}`) }, ErrHookReply, 0},
		{"non-X header", func(w http.ResponseWriter, _ []byte) { _, _ = io.WriteString(w, `{"headers":{"Via":"x"}}`) }, ErrHookReply, 0},
		{"tel target", func(w http.ResponseWriter, _ []byte) {
			_, _ = io.WriteString(w, `{"targets":[{"uri":"tel:+5511999999999","trunk":"pbx"}]}`)
		}, ErrHookReply, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var gotSig bool
			var got HookRequest
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				mu.Lock()
				gotSig = VerifyHookSignature(secret, r.Header.Get("X-Ponte-Signature"), r.Header.Get("X-Ponte-Timestamp"), body, time.Now(), time.Minute)
				_ = json.Unmarshal(body, &got)
				mu.Unlock()
				tc.handler(w, body)
			}))
			h := &hookClient{url: srv.URL, secret: secret, timeout: 300 * time.Millisecond, http: srv.Client()}
			start := time.Now()
			reply, err := h.ask(context.Background(), req, time.Now())
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			took := time.Since(start)
			srv.Close() // waits for the handler (the timeout case is still sleeping)
			mu.Lock()
			defer mu.Unlock()
			if !gotSig {
				t.Error("the receiver could not verify the signature")
			}
			if got.CallID != "c1" || got.CallerNumber != "5511987654321" || !got.Open {
				t.Errorf("hook received %+v", got)
			}
			if tc.want == ErrHookTimeout && took > 550*time.Millisecond {
				t.Errorf("timeout took %v, want about 300 ms", took)
			}
			if err == nil && len(reply.Targets) != tc.targets {
				t.Errorf("targets %+v", reply.Targets)
			}
			if tc.name == "success" && (reply.Targets[0].RingTimeout != 8 || reply.Headers["X-Case"] != "4711") {
				t.Errorf("reply %+v", reply)
			}
		})
	}
}

func TestVerifyHookSignature(t *testing.T) {
	secret, body := []byte("s"), []byte(`{"a":1}`)
	now := time.Unix(1_800_000_000, 0)
	ts := "1800000000"
	sig := signing.Sign(string(secret), ts, body)
	if !VerifyHookSignature(secret, sig, ts, body, now, time.Minute) {
		t.Fatal("a good signature was refused")
	}
	if VerifyHookSignature(secret, sig, ts, []byte(`{"a":2}`), now, time.Minute) {
		t.Error("a changed body was accepted")
	}
	if VerifyHookSignature([]byte("other"), sig, ts, body, now, time.Minute) {
		t.Error("another secret was accepted")
	}
	if VerifyHookSignature(secret, sig, ts, body, now.Add(10*time.Minute), time.Minute) {
		t.Error("a replay ten minutes later was accepted")
	}
}

func FuzzParseHookReply(f *testing.F) {
	f.Add([]byte(`{"action":"route","targets":[{"uri":"sip:a@b","trunk":"t","ring_timeout":5}],"headers":{"X-A":"b"}}`))
	f.Add([]byte(`{"action":"reject","reason":"blocked"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseHookReply(b)
		if err == nil && (r == nil || len(r.Targets) > 10) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
