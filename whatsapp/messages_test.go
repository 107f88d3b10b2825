package whatsapp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

const sampleMessagesResponse = `{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],` +
	`"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}`

func TestSendPermissionRequestBodies(t *testing.T) {
	tests := []struct {
		name string
		to   string
		req  PermissionRequest
		want string // exact body, field order of ref §4.2
	}{
		{"interactive with body (ref 4.2 sample)", "14085551234",
			PermissionRequest{Body: "We would like to call you to help support your query on Order No: ON-12853."},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"14085551234","type":"interactive",` +
				`"interactive":{"type":"call_permission_request","action":{"name":"call_permission_request"},` +
				`"body":{"text":"We would like to call you to help support your query on Order No: ON-12853."}}}`},
		{"interactive without body, + prefix kept", "+14085551234", PermissionRequest{},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"+14085551234","type":"interactive",` +
				`"interactive":{"type":"call_permission_request","action":{"name":"call_permission_request"}}}`},
		{"interactive to a BSUID goes as recipient, HTML kept", "US.13491208655302741918", PermissionRequest{Body: "Call <you> & me"},
			`{"messaging_product":"whatsapp","recipient_type":"individual","recipient":"US.13491208655302741918","type":"interactive",` +
				`"interactive":{"type":"call_permission_request","action":{"name":"call_permission_request"},"body":{"text":"Call <you> & me"}}}`},
		{"template with body params", "5511987654321",
			PermissionRequest{Body: "ignored when a template is set", Template: &Template{Name: "sample_cpr_template", Language: "pt_BR",
				BodyParams: []string{"ON-12345", "Avocados"}}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","to":"5511987654321","type":"template",` +
				`"template":{"name":"sample_cpr_template","language":{"code":"pt_BR"},"components":[{"type":"body","parameters":[` +
				`{"type":"text","text":"ON-12345"},{"type":"text","text":"Avocados"}]}]}}`},
		{"template without params", "BR.55", PermissionRequest{Template: &Template{Name: "cpr", Language: "en"}},
			`{"messaging_product":"whatsapp","recipient_type":"individual","recipient":"BR.55","type":"template",` +
				`"template":{"name":"cpr","language":{"code":"en"}}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, reply(200, sampleMessagesResponse))
			c := newTestClient(t, g, ClientConfig{})
			res, err := c.SendPermissionRequest(context.Background(), "pnid", tc.to, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			want := MessageResult{MessageID: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
				Input: "+16505551234", WaID: "16505551234"}
			if res != want {
				t.Errorf("result %+v, want %+v", res, want)
			}
			reqs := g.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/v23.0/pnid/messages" ||
				r.auth != "Bearer "+testAccessToken || r.contentType != "application/json" {
				t.Errorf("%s %s auth %q type %q", r.method, r.path, r.auth, r.contentType)
			}
			if r.body != tc.want {
				t.Errorf("body\n got %s\nwant %s", r.body, tc.want)
			}
		})
	}
}

func TestSendPermissionRequestInvalid(t *testing.T) {
	tests := []struct {
		name, pnid, to string
		req            PermissionRequest
	}{
		{"no recipient", "pnid", " ", PermissionRequest{}},
		{"no phone number id", "", "1555", PermissionRequest{}},
		{"template without language", "pnid", "1555", PermissionRequest{Template: &Template{Name: "x"}}},
		{"template without name", "pnid", "1555", PermissionRequest{Template: &Template{Language: "en"}}},
		{"empty template parameter", "pnid", "1555", PermissionRequest{Template: &Template{Name: "x", Language: "en", BodyParams: []string{"a", ""}}}},
		{"body too long", "pnid", "1555", PermissionRequest{Body: strings.Repeat("é", MaxInteractiveBodyLen+1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, reply(200, sampleMessagesResponse))
			c := newTestClient(t, g, ClientConfig{})
			if _, err := c.SendPermissionRequest(context.Background(), tc.pnid, tc.to, tc.req); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("err %v, want ErrInvalidArgument", err)
			}
			if n := len(g.requests()); n != 0 {
				t.Errorf("%d requests sent", n)
			}
		})
	}
	// Exactly the limit is allowed.
	g := newGraphFake(t, reply(200, sampleMessagesResponse))
	c := newTestClient(t, g, ClientConfig{})
	if _, err := c.SendPermissionRequest(context.Background(), "pnid", "1555", PermissionRequest{Body: strings.Repeat("é", MaxInteractiveBodyLen)}); err != nil {
		t.Error(err)
	}
}

// A send is never retried: not on 5xx, not on 429, not on a timeout (RetryTable "messages").
func TestSendPermissionRequestNotRetried(t *testing.T) {
	tests := []struct {
		name     string
		resp     http.HandlerFunc
		wantCode int
		check    func(error) bool
	}{
		{"limit 138009", reply(400, `{"error":{"message":"Permission request limit reached","type":"OAuthException","code":138009,"fbtrace_id":"Ab1"}}`), 138009, nil},
		{"permanent exists 138017", reply(400, `{"error":{"message":"Permanent permission exists","code":138017}}`), 138017, nil},
		{"old client 131026", reply(400, `{"error":{"message":"Message undeliverable","code":131026}}`), 131026, nil},
		{"server error", reply(503, `{"error":{"code":2,"message":"Service temporarily unavailable"}}`), 2,
			func(err error) bool { return errors.Is(err, ErrUnavailable) }},
		{"rate limited", reply(429, `{"error":{"code":130429,"message":"Rate limit hit"}}`), 130429, nil},
		{"timeout", hang, 0, func(err error) bool { return errors.Is(err, ErrTimeout) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraphFake(t, tc.resp, reply(200, sampleMessagesResponse))
			obs := &recObserver{}
			c := newTestClient(t, g, ClientConfig{Timeout: 50 * time.Millisecond, Retries: 3, Observer: obs})
			_, err := c.SendPermissionRequest(context.Background(), "pnid", "1555", PermissionRequest{})
			if err == nil {
				t.Fatal("no error")
			}
			if n := len(g.requests()); n != 1 {
				t.Errorf("%d requests, want exactly 1", n)
			}
			if tc.wantCode != 0 {
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.Code != tc.wantCode {
					t.Errorf("err %v, want *APIError code %d", err, tc.wantCode)
				}
			}
			if tc.check != nil && !tc.check(err) {
				t.Errorf("err %v", err)
			}
			obs.mu.Lock()
			seen := append([]string(nil), obs.calls...)
			obs.mu.Unlock()
			if len(seen) != 1 || !strings.HasPrefix(seen[0], "messages/") {
				t.Errorf("observer saw %v", seen)
			}
		})
	}
}

func TestParseMessageResult(t *testing.T) {
	tests := []struct {
		name string
		body string
		want MessageResult
		err  bool
	}{
		{"sample", sampleMessagesResponse, MessageResult{MessageID: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
			Input: "+16505551234", WaID: "16505551234"}, false},
		{"no contacts", `{"messages":[{"id":"wamid.1","message_status":"accepted"}]}`, MessageResult{MessageID: "wamid.1"}, false},
		{"BSUID contact", `{"contacts":[{"input":"US.1","user_id":"US.1"}],"messages":[{"id":"wamid.2"}]}`,
			MessageResult{MessageID: "wamid.2", Input: "US.1", UserID: "US.1"}, false},
		{"odd types", `{"contacts":"x","messages":[{"id":12}]}`, MessageResult{MessageID: "12"}, false},
		{"contact of wrong type", `{"contacts":[{"input":["a"],"wa_id":5511}],"messages":[{"id":"w"}]}`,
			MessageResult{MessageID: "w", WaID: "5511"}, false},
		{"no messages", `{"contacts":[{"input":"1","wa_id":"1"}]}`, MessageResult{}, true},
		{"empty id", `{"messages":[{"id":""}]}`, MessageResult{}, true},
		{"success only", `{"success":true}`, MessageResult{}, true},
		{"not json", `<html>`, MessageResult{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMessageResult([]byte(tc.body))
			if (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrBadResponse)) {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseMessageResult(f *testing.F) {
	f.Add([]byte(sampleMessagesResponse))
	f.Add([]byte(`{"messages":[{"id":"wamid.1"}]}`))
	f.Add([]byte(`{"contacts":[{"input":1}],"messages":"x"}`))
	f.Add([]byte(`{"error":{"code":138009}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := parseMessageResult(data)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) || res != (MessageResult{}) {
				t.Fatalf("res %+v err %v", res, err)
			}
			return
		}
		if res.MessageID == "" {
			t.Fatal("accepted without a message id")
		}
		again, _ := parseMessageResult(data)
		if again != res {
			t.Fatal("not deterministic")
		}
	})
}

// FuzzPermissionRequestBody: whatever the inputs, the body is valid JSON that round-trips the
// user's text, names the recipient in exactly one of to/recipient, and is of the right type.
func FuzzPermissionRequestBody(f *testing.F) {
	f.Add("14085551234", "hello", "", "", "")
	f.Add("US.1349", "<b>&", "cpr", "en", "ON-1")
	f.Add("+", "", "t", "", "")
	f.Fuzz(func(t *testing.T, to, body, name, lang, param string) {
		r := PermissionRequest{Body: body}
		if name != "" || lang != "" {
			r.Template = &Template{Name: name, Language: lang, BodyParams: []string{param}}
		}
		b, err := permissionRequestBody(to, r)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err %v", err)
			}
			return
		}
		var got struct {
			To, Recipient, Type string
			Interactive         *struct{ Body *struct{ Text string } }
			Template            *struct {
				Name       string
				Components []struct{ Parameters []struct{ Text string } }
			}
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
		// encoding/json replaces invalid UTF-8; compare with what it makes of the input.
		enc := func(s string) string {
			var out string
			j, _ := json.Marshal(s)
			_ = json.Unmarshal(j, &out)
			return out
		}
		if (got.To == "") == (got.Recipient == "") || enc(strings.TrimSpace(to)) != got.To+got.Recipient {
			t.Fatalf("to %q recipient %q for %q", got.To, got.Recipient, to)
		}
		switch {
		case r.Template != nil:
			if got.Type != "template" || got.Template == nil || got.Template.Name != enc(name) ||
				len(got.Template.Components) != 1 || got.Template.Components[0].Parameters[0].Text != enc(param) {
				t.Fatalf("template body %s", b)
			}
		case got.Type != "interactive" || got.Interactive == nil:
			t.Fatalf("interactive body %s", b)
		case body != "" && (got.Interactive.Body == nil || got.Interactive.Body.Text != enc(body)):
			t.Fatalf("body text lost: %s", b)
		}
	})
}

// TestParseWebhookUserMessages: user messages open the customer-service window (EventMessage);
// WhatsApp's own notices and our messages' statuses do not (ref §7, §2.8).
func TestParseWebhookUserMessages(t *testing.T) {
	const contact = `"contacts":[{"profile":{"name":"Ana"},"wa_id":"5511987654321","user_id":"BR.7"}],`
	tests := []struct {
		name  string
		value string
		want  CallEvent // Raw is not compared
	}{
		{"text", `{"metadata":{"phone_number_id":"pnid"},` + contact + `"messages":[{"from":"5511987654321","id":"wamid.t","timestamp":"1745343479","type":"text","text":{"body":"hi"}}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "text", PhoneNumberID: "pnid", WABAID: "waba",
				From: "5511987654321", FromUserID: "BR.7", WaID: "5511987654321", ContactName: "Ana",
				Timestamp: unix(1745343479), MessageID: "wamid.t"}},
		{"image", `{"messages":[{"from":"1555","id":"wamid.i","timestamp":1,"type":"image","image":{"id":"m"}}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "image", WABAID: "waba", From: "1555",
				Timestamp: unix(1), MessageID: "wamid.i"}},
		{"interactive button reply", `{"messages":[{"from":"1555","id":"wamid.b","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"x","title":"Yes"}}}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "button_reply", WABAID: "waba", From: "1555", MessageID: "wamid.b"}},
		{"template quick reply", `{"messages":[{"from":"1555","id":"wamid.q","type":"button","button":{"text":"Call me"}}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "button", WABAID: "waba", From: "1555", MessageID: "wamid.q"}},
		{"BSUID-only sender", `{"contacts":[{"wa_id":"","user_id":"US.9","profile":{"username":"@u"}}],"messages":[{"from":"","from_user_id":"US.9","id":"wamid.u","type":"text"}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "text", WABAID: "waba", FromUserID: "US.9", Username: "@u", MessageID: "wamid.u"}},
		{"sender only in contacts", `{"contacts":[{"wa_id":"1555","user_id":"US.2"}],"messages":[{"id":"wamid.c","type":"text"}]}`,
			CallEvent{Kind: EventMessage, Field: "messages", Event: "text", WABAID: "waba", FromUserID: "US.2", WaID: "1555", MessageID: "wamid.c"}},
		{"system notice is not from the user", `{"messages":[{"from":"1555","id":"wamid.s","type":"system","system":{"body":"changed number"}}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "system", WABAID: "waba", From: "1555", MessageID: "wamid.s"}},
		{"no wamid", `{"messages":[{"from":"1555","type":"text"}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "text", WABAID: "waba", From: "1555"}},
		{"no sender", `{"messages":[{"id":"wamid.n","type":"text"}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "text", WABAID: "waba", MessageID: "wamid.n"}},
		{"permission reply without reply object", `{"messages":[{"from":"1555","id":"wamid.p","type":"interactive","interactive":{"type":"call_permission_reply"}}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "call_permission_reply", WABAID: "waba", From: "1555", MessageID: "wamid.p"}},
		{"read status of our request", `{"statuses":[{"id":"wamid.r","status":"read","timestamp":"1","recipient_id":"1555"}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "status", WABAID: "waba", To: "1555", Status: "READ", Timestamp: unix(1), CallID: "wamid.r"}},
		{"failed status with 131026", `{"statuses":[{"id":"wamid.f","status":"failed","recipient_id":"1555","errors":[{"code":131026,"title":"Message undeliverable"}]}]}`,
			CallEvent{Kind: EventUnknown, Field: "messages", Event: "status", WABAID: "waba", To: "1555", Status: "FAILED", CallID: "wamid.f",
				Errors: []CallError{{Code: 131026, Message: "Message undeliverable"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOne(t, valueBody("messages", tc.value))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if s := EventMessage.String(); s != "message" {
		t.Errorf("String() = %q", s)
	}
}

func TestWebhookDeliversUserMessages(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{}, rec.sink)
	msg := func(wamid string) string {
		return valueBody("messages", `{"messages":[{"from":"5511","id":"`+wamid+`","timestamp":"1","type":"text","text":{"body":"x"}}]}`)
	}
	h.mustPost(msg("wamid.1"))
	h.mustPost(msg("wamid.1")) // redelivery
	h.mustPost(valueBody("messages", `{"statuses":[{"id":"wamid.0","status":"delivered","recipient_id":"5511"}]}`))
	h.mustPost(msg("wamid.2"))
	evs := rec.waitFor(t, 2)
	h.w.Close()
	if got := summary(rec.events()); len(got) != 2 || evs[0].MessageID != "wamid.1" || evs[1].MessageID != "wamid.2" ||
		evs[0].Kind != EventMessage || queueKey(&evs[0]) != "user:5511" {
		t.Errorf("delivered %v", got)
	}
	if st := h.w.Stats(); st.Rejected["duplicate"] != 1 || st.Unknown != 1 {
		t.Errorf("stats %+v", st)
	}
}
