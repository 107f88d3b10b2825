package whatsapp

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func unix(s int64) time.Time { return time.Unix(s, 0).UTC() }

// parseOne parses body and requires exactly one event; Raw is checked for presence and cleared
// so the rest can be compared with DeepEqual.
func parseOne(t *testing.T, body string) CallEvent {
	t.Helper()
	evs, err := ParseWebhook([]byte(body))
	if err != nil {
		t.Fatalf("ParseWebhook: %v", err)
	}
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	if (ev.Kind == EventUnknown) != (ev.Raw != nil) {
		t.Errorf("Raw present=%v for kind %v; want Raw only on unknown events", ev.Raw != nil, ev.Kind)
	}
	ev.Raw = nil
	return ev
}

func TestParseWebhookSamples(t *testing.T) {
	tests := []struct {
		name string
		body string
		want CallEvent
	}{
		{
			name: "UIC connect (ref 2.2)",
			body: sampleUICConnect,
			want: CallEvent{
				Kind: EventConnect, Field: "calls", Event: "connect",
				CallID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", PhoneNumberID: "<PHONE_NUMBER_ID>",
				DisplayPhoneNumber: "16315553601", WABAID: "<WHATSAPP_BUSINESS_ACCOUNT_ID>",
				From: "16315553602", To: "16315553601", WaID: "16315553602", ContactName: "<CALLEE_NAME>",
				Direction: DirUserInitiated, SDPType: "offer", SDP: "<<RFC 8866 SDP>>",
				Timestamp: unix(1671644824), CTAPayload: "cta_payload", DeeplinkPayload: "deeplink_payload",
			},
		},
		{
			name: "BIC connect (ref 2.3)",
			body: sampleBICConnect,
			want: CallEvent{
				Kind: EventConnect, Field: "calls", Event: "connect",
				CallID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", PhoneNumberID: "<PHONE_NUMBER_ID>",
				DisplayPhoneNumber: "16315553601", WABAID: "<WABA_ID>",
				From: "16315553602", To: "16315553601", WaID: "16315553602",
				Direction: DirBusinessInitiated, SDPType: "answer", SDP: "<<RFC 8866 SDP>>",
				Timestamp: unix(1671644824),
			},
		},
		{
			name: "call status (ref 2.4)",
			body: sampleStatus,
			want: CallEvent{
				Kind: EventStatus, Field: "calls", Event: "status", CallID: "wacid.ABGGFjFVU2AfAgo6V",
				PhoneNumberID: "<PHONE_NUMBER_ID>", DisplayPhoneNumber: "16315553601", WABAID: "<WABA_ID>",
				To: "163155536021", ToUserID: "<BSUID>", Direction: DirBusinessInitiated,
				Timestamp: unix(1671644824), Status: "RINGING", BizOpaque: "random_string",
			},
		},
		{
			name: "terminate with array status and errors (ref 2.5)",
			body: sampleTerminate,
			want: CallEvent{
				Kind: EventTerminate, Field: "calls", Event: "terminate",
				CallID: "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh", PhoneNumberID: "<PHONE_NUMBER_ID>",
				DisplayPhoneNumber: "16315553601", WABAID: "<WABA_ID>",
				From: "16315553602", To: "16315553601", Direction: DirBusinessInitiated,
				BizOpaque: "random_string", Timestamp: unix(1671644824), Status: "FAILED",
				StartTime: unix(1671644824), EndTime: unix(1671644944), Duration: 120,
				Errors: []CallError{{Code: 138021, Message: "ERROR_TITLE", Details: "ERROR_DETAILS"}},
			},
		},
		{
			name: "permission reply on messages field (ref 2.8)",
			body: samplePermissionReply,
			want: CallEvent{
				Kind: EventPermissionReply, Field: "messages", Event: "call_permission_reply",
				PhoneNumberID: "<PHONE_NUMBER_ID>", DisplayPhoneNumber: "16315553601", WABAID: "<WABA_ID>",
				From: "16315553602", FromUserID: "US.1349", WaID: "16315553602", ContactName: "Ana",
				Timestamp: unix(1745343479), MessageID: "wamid.sH0kFlaCGg0xcvZbgmg90lHrg2dL",
				Permission: &PermissionReply{Response: "accept", IsPermanent: false,
					Expiration: unix(1745948279), Source: "user_action", ContextID: "wamid.gBGGFlaCmZ9plHrf2Mh-o"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOne(t, tc.body)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("event mismatch\n got: %+v\nwant: %+v", got, tc.want)
			}
		})
	}
}

// TestParseWebhookTolerance covers ref §8 item 6 one field at a time.
func TestParseWebhookTolerance(t *testing.T) {
	tests := []struct {
		name  string
		call  string // one calls[] element
		check func(t *testing.T, ev CallEvent)
	}{
		{"status string", `{"id":"w","event":"terminate","status":"COMPLETED"}`, wantStatus("COMPLETED")},
		{"status lower case string", `{"id":"w","event":"terminate","status":"completed"}`, wantStatus("COMPLETED")},
		{"status array mixed case", `{"id":"w","event":"terminate","status":["Completed","Failed"]}`, wantStatus("COMPLETED")},
		{"status array lower case", `{"id":"w","event":"terminate","status":["failed"]}`, wantStatus("FAILED")},
		{"status array skips empty", `{"id":"w","event":"terminate","status":["", 7, "failed"]}`, wantStatus("7")},
		{"status empty array", `{"id":"w","event":"terminate","status":[]}`, wantStatus("")},
		{"status object ignored", `{"id":"w","event":"terminate","status":{"a":1}}`, wantStatus("")},
		{"duration int", `{"id":"w","event":"terminate","duration":120}`, wantDuration(120)},
		{"duration string", `{"id":"w","event":"terminate","duration":"21"}`, wantDuration(21)},
		{"duration float", `{"id":"w","event":"terminate","duration":21.9}`, wantDuration(21)},
		{"duration garbage", `{"id":"w","event":"terminate","duration":"soon"}`, wantDuration(0)},
		{"duration NaN string", `{"id":"w","event":"terminate","duration":"NaN"}`, wantDuration(0)},
		{"timestamp string", `{"id":"w","event":"connect","timestamp":"1671644824"}`, wantTimestamp(unix(1671644824))},
		{"timestamp number", `{"id":"w","event":"connect","timestamp":1671644824}`, wantTimestamp(unix(1671644824))},
		{"timestamp float", `{"id":"w","event":"connect","timestamp":1671644824.5}`, wantTimestamp(time.Unix(1671644824, 5e8).UTC())},
		{"timestamp rfc3339", `{"id":"w","event":"connect","timestamp":"2022-12-21T17:47:04Z"}`, wantTimestamp(unix(1671644824))},
		{"timestamp placeholder", `{"id":"w","event":"connect","timestamp":"{timestamp}"}`, wantTimestamp(time.Time{})},
		{"timestamp absurd", `{"id":"w","event":"connect","timestamp":99999999999999}`, wantTimestamp(time.Time{})},
		{"timestamp negative", `{"id":"w","event":"connect","timestamp":-5}`, wantTimestamp(time.Time{})},
		{"start/end numbers", `{"id":"w","event":"terminate","start_time":1671644824,"end_time":"1671644944"}`,
			func(t *testing.T, ev CallEvent) {
				if !ev.StartTime.Equal(unix(1671644824)) || !ev.EndTime.Equal(unix(1671644944)) {
					t.Errorf("start/end = %v/%v", ev.StartTime, ev.EndTime)
				}
			}},
		{"direction inferred from offer", `{"id":"w","event":"connect","session":{"sdp_type":"offer","sdp":"v=0"}}`, wantDirection(DirUserInitiated)},
		{"direction inferred from answer", `{"id":"w","event":"connect","session":{"sdp_type":"answer","sdp":"v=0"}}`, wantDirection(DirBusinessInitiated)},
		{"direction inferred from upper-case OFFER", `{"id":"w","event":"connect","session":{"sdp_type":"OFFER","sdp":"v=0"}}`,
			func(t *testing.T, ev CallEvent) {
				wantDirection(DirUserInitiated)(t, ev)
				if ev.SDPType != "offer" {
					t.Errorf("SDPType = %q, want lower-cased offer", ev.SDPType)
				}
			}},
		{"direction lower case wins over sdp_type", `{"id":"w","event":"connect","direction":"business_initiated","session":{"sdp_type":"offer"}}`, wantDirection(DirBusinessInitiated)},
		{"direction absent without session", `{"id":"w","event":"terminate"}`, wantDirection(DirUnknown)},
		{"legacy connection sdp ignored", `{"id":"w","event":"connect","session":{"sdp_type":"answer","sdp":"NEW"},"connection":{"webrtc":{"sdp":"LEGACY"}}}`, wantSDP("NEW")},
		{"legacy connection sdp only", `{"id":"w","event":"connect","connection":{"webrtc":{"sdp":"LEGACY"}}}`, wantSDP("")},
		{"session of wrong type", `{"id":"w","event":"connect","session":"v=0","from":"1"}`,
			func(t *testing.T, ev CallEvent) {
				if ev.Kind != EventConnect || ev.SDP != "" || ev.From != "1" {
					t.Errorf("got kind %v sdp %q from %q", ev.Kind, ev.SDP, ev.From)
				}
			}},
		{"numeric ids kept as written", `{"id":12345,"event":"connect","from":16315553602}`,
			func(t *testing.T, ev CallEvent) {
				if ev.CallID != "12345" || ev.From != "16315553602" {
					t.Errorf("CallID %q From %q", ev.CallID, ev.From)
				}
			}},
		{"event upper case", `{"id":"w","event":"TERMINATE"}`,
			func(t *testing.T, ev CallEvent) {
				if ev.Kind != EventTerminate || ev.Event != "terminate" {
					t.Errorf("kind %v event %q", ev.Kind, ev.Event)
				}
			}},
		{"unknown event returned as unknown", `{"id":"w","event":"call_recording_available","call_recording":{"audio":{"id":"1"}}}`,
			func(t *testing.T, ev CallEvent) {
				if ev.Kind != EventUnknown || ev.Event != "call_recording_available" || ev.CallID != "w" {
					t.Errorf("kind %v event %q id %q", ev.Kind, ev.Event, ev.CallID)
				}
			}},
		{"call_created is unknown", `{"id":"w","event":"call_created"}`, wantKind(EventUnknown)},
		{"call errors appended", `{"id":"w","event":"terminate","errors":[{"code":"138019","title":"setup failed","error_data":"raw details"}]}`,
			func(t *testing.T, ev CallEvent) {
				want := []CallError{{Code: 138019, Message: "setup failed", Details: "raw details"}}
				if !reflect.DeepEqual(ev.Errors, want) {
					t.Errorf("Errors = %+v, want %+v", ev.Errors, want)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := ParseWebhook([]byte(callsBody(tc.call)))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 {
				t.Fatalf("got %d events", len(evs))
			}
			if evs[0].PhoneNumberID != "pnid" || evs[0].Field != "calls" {
				t.Errorf("envelope lost: %+v", evs[0])
			}
			tc.check(t, evs[0])
		})
	}
}

func wantStatus(s string) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if ev.Status != s {
			t.Errorf("Status = %q, want %q", ev.Status, s)
		}
	}
}

func wantDuration(d int) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if ev.Duration != d {
			t.Errorf("Duration = %d, want %d", ev.Duration, d)
		}
	}
}

func wantTimestamp(ts time.Time) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if !ev.Timestamp.Equal(ts) {
			t.Errorf("Timestamp = %v, want %v", ev.Timestamp, ts)
		}
	}
}

func wantDirection(d Direction) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if ev.Direction != d {
			t.Errorf("Direction = %v, want %v", ev.Direction, d)
		}
	}
}

func wantSDP(s string) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if ev.SDP != s {
			t.Errorf("SDP = %q, want %q", ev.SDP, s)
		}
	}
}

func wantKind(k EventKind) func(*testing.T, CallEvent) {
	return func(t *testing.T, ev CallEvent) {
		t.Helper()
		if ev.Kind != k {
			t.Errorf("Kind = %v, want %v", ev.Kind, k)
		}
	}
}

// BSUID-only user (ref §2.2): empty from and wa_id, identity in from_user_id and contacts.
func TestParseWebhookBSUIDOnlyCaller(t *testing.T) {
	body := valueBody("calls", `{"metadata":{"phone_number_id":"pnid"},
		"contacts":[{"profile":{"name":"Bia","username":"@bia"},"wa_id":"","user_id":"BR.777"}],
		"calls":[{"id":"wacid.1","from":"","to":"16315553601","from_user_id":"BR.777","event":"connect",
		"timestamp":"1671644824","session":{"sdp_type":"offer","sdp":"v=0"}}]}`)
	ev := parseOne(t, body)
	if ev.From != "" || ev.WaID != "" || ev.FromUserID != "BR.777" || ev.ContactName != "Bia" || ev.Username != "@bia" {
		t.Errorf("got From=%q WaID=%q FromUserID=%q Name=%q Username=%q", ev.From, ev.WaID, ev.FromUserID, ev.ContactName, ev.Username)
	}
	if ev.Direction != DirUserInitiated {
		t.Errorf("Direction = %v", ev.Direction)
	}

	// from_user_id absent from the call: the matching contact's user_id fills it.
	body = valueBody("calls", `{"contacts":[{"wa_id":"999","user_id":"X.1"},{"wa_id":"16315553602","user_id":"US.42","profile":{"name":"Caio"}}],
		"calls":[{"id":"wacid.2","from":"16315553602","to":"16315553601","event":"connect","direction":"USER_INITIATED"}]}`)
	ev = parseOne(t, body)
	if ev.FromUserID != "US.42" || ev.ContactName != "Caio" || ev.WaID != "16315553602" {
		t.Errorf("contact match: FromUserID=%q Name=%q WaID=%q", ev.FromUserID, ev.ContactName, ev.WaID)
	}
}

func TestParseWebhookUnknownFieldAndErrorsOnly(t *testing.T) {
	ev := parseOne(t, valueBody("account_update", `{"event":"ACCOUNT_VIOLATION","violation_info":{}}`))
	if ev.Kind != EventUnknown || ev.Field != "account_update" || ev.Event != "account_violation" {
		t.Errorf("got %+v", ev)
	}
	ev = parseOne(t, valueBody("calls", `{"metadata":{"phone_number_id":"p"},"errors":[{"code":131044,"message":"no payment method"}]}`))
	if ev.Kind != EventUnknown || len(ev.Errors) != 1 || ev.Errors[0].Code != 131044 || ev.PhoneNumberID != "p" {
		t.Errorf("got %+v", ev)
	}
	// A text message is a user message (EventMessage); a delivery status of our own message on
	// the messages field is unknown to us.
	evs, err := ParseWebhook([]byte(valueBody("messages", `{"messages":[{"id":"wamid.1","from":"1","type":"text","text":{"body":"hi"}}],
		"statuses":[{"id":"wamid.0","status":"delivered","recipient_id":"1"}]}`)))
	if err != nil || len(evs) != 2 {
		t.Fatalf("evs=%d err=%v", len(evs), err)
	}
	if evs[0].Kind != EventMessage || evs[0].Event != "text" || evs[0].MessageID != "wamid.1" || evs[0].Raw != nil {
		t.Errorf("text message: %+v", evs[0])
	}
	if evs[1].Kind != EventUnknown || evs[1].Event != "status" || evs[1].Status != "DELIVERED" {
		t.Errorf("message status: %+v", evs[1])
	}
}

func TestParseWebhookPermissionScenarios(t *testing.T) {
	tests := []struct {
		name  string
		reply string
		ctx   string
		want  PermissionReply
	}{
		{"permanent accept from profile", `{"response":"accept","is_permanent":true,"response_source":"user_action"}`, "",
			PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action"}},
		{"reject", `{"response":"reject","response_source":"user_action"}`, `"context":{"id":"wamid.req"},`,
			PermissionReply{Response: "reject", Source: "user_action", ContextID: "wamid.req"}},
		{"automatic callback permission", `{"response":"ACCEPT","is_permanent":"false","expiration_timestamp":1745948279,"response_source":"automatic"}`,
			`"context":{"id":"wacid.call"},`,
			PermissionReply{Response: "accept", Expiration: unix(1745948279), Source: "automatic", ContextID: "wacid.call"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := valueBody("messages", `{"messages":[{"from":"5511","id":"wamid.x",`+tc.ctx+
				`"type":"interactive","interactive":{"type":"call_permission_reply","call_permission_reply":`+tc.reply+`}}]}`)
			ev := parseOne(t, body)
			if ev.Kind != EventPermissionReply || ev.CallID != "" || ev.From != "5511" {
				t.Fatalf("got %+v", ev)
			}
			if !reflect.DeepEqual(*ev.Permission, tc.want) {
				t.Errorf("Permission = %+v, want %+v", *ev.Permission, tc.want)
			}
		})
	}
}

func TestParseWebhookOrderAndMultiple(t *testing.T) {
	body := `{"entry":[{"id":"a","changes":[
		{"field":"calls","value":{"calls":[{"id":"c1","event":"connect"},{"id":"c2","event":"connect"}],
		  "statuses":[{"id":"c3","type":"call","status":"accepted"}]}},
		{"field":"calls","value":{"calls":[{"id":"c1","event":"terminate","status":"COMPLETED"}]}}]},
		{"id":"b","changes":[{"field":"messages","value":{"messages":[{"id":"m","interactive":{"type":"call_permission_reply","call_permission_reply":{"response":"reject"}}}]}}]}]}`
	evs, err := ParseWebhook([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.WABAID+":"+ev.Kind.String()+":"+firstNonEmpty(ev.CallID, ev.MessageID)+":"+ev.Status)
	}
	want := []string{"a:connect:c1:", "a:connect:c2:", "a:status:c3:ACCEPTED", "a:terminate:c1:COMPLETED", "b:permission_reply:m:"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order:\n got %v\nwant %v", got, want)
	}
}

func TestParseWebhookMalformed(t *testing.T) {
	for _, body := range []string{"", "   ", "not json", "[]", "null", "123", `"str"`, "{", `{"entry":[}`, "{}{}"} {
		if evs, err := ParseWebhook([]byte(body)); !errors.Is(err, ErrMalformed) || evs != nil {
			t.Errorf("ParseWebhook(%q) = %v, %v; want ErrMalformed", body, evs, err)
		}
	}
	// Structurally odd but valid JSON objects are tolerated.
	for _, body := range []string{`{}`, `{"entry":"x"}`, `{"entry":[1,{"changes":"y"}]}`, `{"object":"page"}`} {
		if evs, err := ParseWebhook([]byte(body)); err != nil || len(evs) != 0 {
			t.Errorf("ParseWebhook(%q) = %v, %v; want no events, no error", body, evs, err)
		}
	}
	// Non-object call elements do not hide their neighbours.
	evs, err := ParseWebhook([]byte(callsBody(`1`, `"a"`, `null`, `{"id":"w","event":"connect"}`)))
	if err != nil || len(evs) != 4 || evs[3].Kind != EventConnect || evs[0].Kind != EventUnknown {
		t.Errorf("mixed elements: %d events, err %v", len(evs), err)
	}
	if !strings.Contains(ErrMalformed.Error(), "malformed") {
		t.Error(ErrMalformed)
	}
}

func BenchmarkParseWebhookConnect(b *testing.B) {
	body := []byte(sampleUICConnect)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseWebhook(body); err != nil {
			b.Fatal(err)
		}
	}
}
