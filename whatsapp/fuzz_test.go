package whatsapp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseWebhook: any input parses without panicking, deterministically, into events that
// respect the normalisation rules, and only non-objects are malformed.
func FuzzParseWebhook(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := ParseWebhook(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || evs != nil {
				t.Fatalf("err %v with %d events", err, len(evs))
			}
			return
		}
		again, _ := ParseWebhook(body)
		if !reflect.DeepEqual(evs, again) {
			t.Fatal("parse is not deterministic")
		}
		for _, ev := range evs {
			if ev.Kind < EventUnknown || ev.Kind > EventMessage {
				t.Fatalf("kind %d", ev.Kind)
			}
			if ev.Event != strings.ToLower(ev.Event) || ev.SDPType != strings.ToLower(ev.SDPType) {
				t.Fatalf("event %q / sdp_type %q not lower-cased", ev.Event, ev.SDPType)
			}
			if ev.Status != strings.ToUpper(ev.Status) {
				t.Fatalf("status %q not upper-cased", ev.Status)
			}
			if (ev.Permission != nil) != (ev.Kind == EventPermissionReply) {
				t.Fatalf("permission %v on kind %v", ev.Permission, ev.Kind)
			}
			if ev.Raw != nil && ev.Kind != EventUnknown {
				t.Fatalf("raw on kind %v", ev.Kind)
			}
			if ev.Kind == EventMessage && (ev.Field != "messages" || ev.MessageID == "" ||
				ev.Event == "call_permission_reply" || ev.Event == "system" || ev.From+ev.FromUserID+ev.WaID == "") {
				t.Fatalf("message event %+v", ev)
			}
			for _, ts := range []time.Time{ev.Timestamp, ev.StartTime, ev.EndTime} {
				if !ts.IsZero() && (ts.Unix() <= 0 || ts.Unix() > maxUnix) {
					t.Fatalf("timestamp %v out of range", ts)
				}
			}
		}
	})
}

// FuzzWebhookHandler drives the handler with arbitrary bodies and signature headers: a request
// whose signature is not the HMAC of its body never reaches the sink, and a correctly signed
// one is accepted exactly when the body parses.
func FuzzWebhookHandler(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(i%4), "sha256=00")
	}
	f.Add([]byte(sampleUICConnect), uint8(1), sign(testSecret, []byte(sampleUICConnect)))
	f.Add([]byte(`{}`), uint8(1), "sha256=")
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, header string) {
		const maxBody = 4096
		var calls atomic.Int32
		w := NewWebhook(WebhookConfig{
			VerifyToken: testToken, AppSecret: testSecret, MaxBodyBytes: maxBody,
			Now: func() time.Time { return testNow }, Logger: discardLogger(),
		}, func(context.Context, CallEvent) { calls.Add(1) })
		good := sign(testSecret, body)
		sent := body
		switch mode % 4 {
		case 0:
			header = good
		case 1: // header as fuzzed
		case 2: // signed, then altered in transit
			header = good
			sent = append(append([]byte(nil), body...), ' ')
		case 3:
			header = ""
		}
		req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(sent)))
		if header != "" {
			req.Header.Set("X-Hub-Signature-256", header)
		}
		rec := httptest.NewRecorder()
		w.ServeHTTP(rec, req)
		w.Close() // waits for every sink call
		st := w.Stats()

		authentic := mode%4 == 0 || (mode%4 == 1 && strings.EqualFold(header, good))
		switch {
		case len(sent) > maxBody:
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("oversized body: %d", rec.Code)
			}
		case !authentic:
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("forged request answered %d", rec.Code)
			}
		default:
			evs, err := ParseWebhook(sent)
			want := http.StatusOK
			if err != nil {
				want = http.StatusBadRequest
			}
			if rec.Code != want {
				t.Fatalf("status %d, want %d (parse err %v)", rec.Code, want, err)
			}
			if int(calls.Load()) > len(evs) {
				t.Fatalf("%d sink calls for %d events", calls.Load(), len(evs))
			}
			return
		}
		if calls.Load() != 0 || len(st.Received) != 0 {
			t.Fatalf("rejected request reached the sink (%d) or was parsed (%v)", calls.Load(), st.Received)
		}
	})
}

// FuzzParseAPIError: Graph error bodies are outside input too.
func FuzzParseAPIError(f *testing.F) {
	f.Add(400, []byte(metaError))
	f.Add(500, []byte(`<html>oops</html>`))
	f.Add(401, []byte(`{"error":{"code":"190","error_data":"x"}}`))
	f.Add(429, []byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := parseAPIError(status, body)
		if e.HTTPStatus != status {
			t.Fatalf("status %d, want %d", e.HTTPStatus, status)
		}
		s := e.Error()
		if !utf8.ValidString(s) || !strings.HasPrefix(s, "whatsapp: graph api error") {
			t.Fatalf("Error() = %q", s)
		}
		_ = errors.Is(e, ErrAuth)
		_ = e.alreadyInState()
	})
}
