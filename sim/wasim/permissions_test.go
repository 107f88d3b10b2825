package wasim_test

import (
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/whatsapp"
)

// TestCallPermissionsGET: the §3.5 answer from the user's state, read with ponte's client.
func TestCallPermissionsGET(t *testing.T) {
	g := newBIC(t, nil)
	exp := t0.Add(48 * time.Hour)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", BSUID: "US.1", Permission: wasim.PermissionTemporary, PermissionExpires: exp})
	g.meta.SetUser(wasim.UserOptions{WaID: "15550002", Permission: wasim.PermissionPermanent, ConnectedLimit: 7})
	ctx := ctxT(t, 5*time.Second)
	requestLimits := []whatsapp.ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 1}, {TimePeriod: "P7D", MaxAllowed: 2}}
	tests := []struct {
		name, waID, recipient string
		want                  *whatsapp.CallPermission
	}{
		{"unknown user is uncallable", "15559999", "", &whatsapp.CallPermission{Status: "no_permission", Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", CanPerform: true, Limits: requestLimits},
			{Name: "start_call", Limits: []whatsapp.ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 100}}}}}},
		{"temporary", "+15550001", "", &whatsapp.CallPermission{Status: "temporary", Expiration: exp, Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", CanPerform: true, Limits: requestLimits},
			{Name: "start_call", CanPerform: true, Limits: []whatsapp.ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 100}}}}}},
		{"by BSUID", "", "US.1", &whatsapp.CallPermission{Status: "temporary", Expiration: exp, Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", CanPerform: true, Limits: requestLimits},
			{Name: "start_call", CanPerform: true, Limits: []whatsapp.ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 100}}}}}},
		{"permanent: no request allowed (138017)", "15550002", "", &whatsapp.CallPermission{Status: "permanent", Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", Limits: requestLimits},
			{Name: "start_call", CanPerform: true, Limits: []whatsapp.ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 7}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := g.client.CallPermissions(ctx, pnid, tc.waID, tc.recipient)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Errorf("got  %+v\nwant %+v", p, tc.want)
			}
		})
	}
	// Expiry on the simulator's clock: no webhook, just no permission (§2.8).
	g.clock.Advance(48 * time.Hour)
	if p, err := g.client.CallPermissions(ctx, pnid, "15550001", ""); err != nil || p.Status != "no_permission" || p.CanStartCall() {
		t.Errorf("after expiry: %+v %v", p, err)
	}
	if status, resp := g.graph(http.MethodGet, "/"+pnid+"/call_permissions", nil); status != 400 || errCode(resp) != 100 {
		t.Errorf("no user: %d %v", status, resp)
	}
	if n := g.meta.PermissionChecks(); n != len(tests)+2 {
		t.Errorf("PermissionChecks %d, want %d", n, len(tests)+2)
	}
	for _, r := range g.meta.Requests() {
		if r.Action != "call_permissions" || (r.To == "" && r.Recipient == "" && r.Status == 200) {
			t.Errorf("request %+v", r)
		}
	}
}

// TestCallPermissionsRateLimit: above Config.PermissionsRate per second, HTTP 429 code 613 (§3.5).
func TestCallPermissionsRateLimit(t *testing.T) {
	g := newBIC(t, func(c *wasim.Config) { c.PermissionsRate = 2 })
	path := "/" + pnid + "/call_permissions?user_wa_id=15550001"
	var got []int
	for range 3 {
		status, resp := g.graph(http.MethodGet, path, nil)
		if status == 429 && errCode(resp) != 613 {
			t.Errorf("429 with code %v", errCode(resp))
		}
		got = append(got, status)
	}
	g.clock.Advance(time.Second)
	status, _ := g.graph(http.MethodGet, path, nil)
	got = append(got, status)
	if want := []int{200, 200, 429, 200}; !reflect.DeepEqual(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if n := g.meta.PermissionChecks(); n != 4 {
		t.Errorf("PermissionChecks %d", n)
	}
}

// TestPermissionRequests: POST /messages with ponte's client (§4.2) under Meta's limits (§4.3).
func TestPermissionRequests(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", BSUID: "US.1", AnswerAfter: -1, RingingAfter: -1})
	g.meta.SetUser(wasim.UserOptions{WaID: "15550002", Permission: wasim.PermissionPermanent})
	ctx := ctxT(t, 10*time.Second)
	tmpl := whatsapp.PermissionRequest{Template: &whatsapp.Template{Name: "cpr", Language: "en", BodyParams: []string{"ON-1"}}}
	send := func(to string, r whatsapp.PermissionRequest) (whatsapp.MessageResult, error) {
		t.Helper()
		return g.client.SendPermissionRequest(ctx, pnid, to, r)
	}

	// A template outside the window goes out and counts; sent and delivered follow.
	res, err := send("+15550001", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.MessageID, "wamid.") || res.Input != "+15550001" || res.WaID != "15550001" || res.UserID != "US.1" {
		t.Errorf("result %+v", res)
	}
	hs := g.expect(t, "msgstatus:sent", "msgstatus:delivered")
	if hs[0].elem["id"] != res.MessageID || hs[0].elem["recipient_id"] != "15550001" || hs[0].field != "messages" {
		t.Errorf("status %s", hs[0].raw)
	}
	if evs, _ := whatsapp.ParseWebhook(hs[1].raw); len(evs) != 1 || evs[0].Kind != whatsapp.EventUnknown {
		t.Errorf("a delivery status must not be a user message: %+v", evs)
	}
	msgs := g.meta.Messages()
	if len(msgs) != 1 || msgs[0].MessageID != res.MessageID || msgs[0].To != "+15550001" ||
		!strings.Contains(string(msgs[0].Body), `"template":{"name":"cpr","language":{"code":"en"}`) {
		t.Errorf("messages %+v", msgs)
	}

	// 1 per 24 h: 138009 with the next allowed time; the GET agrees.
	_, err = send("15550001", tmpl)
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != wasim.CodeRequestLimit || ae.HTTPStatus != 400 || !strings.Contains(ae.Details, t0.Add(24*time.Hour).Format(time.RFC3339)) {
		t.Fatalf("second in 24 h: %v", err)
	}
	p, _ := g.client.CallPermissions(ctx, pnid, "15550001", "")
	if a, _ := p.Action("send_call_permission_request"); a.CanPerform || a.Limits[0].CurrentUsage != 1 || !a.Limits[0].Expiration.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("GET after a request: %+v", a)
	}
	// 2 per 7 days.
	g.clock.Advance(24 * time.Hour)
	if _, err := send("US.1", tmpl); err != nil {
		t.Fatalf("second in 7 d, by BSUID: %v", err)
	}
	g.expect(t, "msgstatus:sent", "msgstatus:delivered")
	g.clock.Advance(24 * time.Hour)
	if _, err := send("15550001", tmpl); !errors.As(err, &ae) || ae.Code != wasim.CodeRequestLimit || !strings.Contains(ae.Details, t0.Add(7*24*time.Hour).Format(time.RFC3339)) {
		t.Fatalf("third in 7 d: %v", err)
	}

	// A free-form request outside the customer-service window is answered 200 and fails by
	// webhook (131047), uncounted; after the user writes, it goes out.
	g.clock.Advance(7 * 24 * time.Hour)
	if _, err := send("15550001", whatsapp.PermissionRequest{Body: "May we call?"}); err != nil {
		t.Fatal(err)
	}
	h := g.expect(t, "msgstatus:failed")[0]
	if errs, _ := h.elem["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["code"] != float64(wasim.CodeReengagement) {
		t.Errorf("failed status %s", h.raw)
	}
	if st, _ := g.meta.User("15550001"); st.Requests24h != 0 || st.WindowOpen {
		t.Errorf("state %+v", st)
	}
	if err := g.meta.SendUserMessage(ctx, "15550001", "hi"); err != nil {
		t.Fatal(err)
	}
	g.expect(t, "message:text")
	res, err = send("15550001", whatsapp.PermissionRequest{Body: "May we call?"})
	if err != nil {
		t.Fatal(err)
	}
	g.expect(t, "msgstatus:sent", "msgstatus:delivered")
	if st, _ := g.meta.User("15550001"); st.Requests24h != 1 || st.LastRequestID != res.MessageID {
		t.Errorf("state %+v", st)
	}

	// The user accepts and a business-initiated call connects: the limits reset (§4.3).
	if err := g.meta.SendPermissionReply(ctx, "15550001", wasim.PermissionReplyOptions{}); err != nil {
		t.Fatal(err)
	}
	g.expect(t, "permission_reply")
	_, _, offer := g.offer(t)
	wacid, err := g.client.Connect(ctx, pnid, "15550001", "", offer, "")
	if err != nil {
		t.Fatal(err)
	}
	g.expect(t, "connect", "status:RINGING", "status:ACCEPTED")
	if st, _ := g.meta.User("15550001"); st.Requests24h != 0 || st.Connected24h != 1 {
		t.Errorf("after a connected call: %+v", st)
	}
	if err := g.client.Terminate(ctx, pnid, wacid); err != nil {
		t.Fatal(err)
	}
	g.expect(t, "terminate")

	// A permanent permission: 138017. An unknown user: 200, then failed 131026.
	if _, err := send("15550002", tmpl); apiCode(err) != wasim.CodePermanentExists {
		t.Errorf("permanent: %v", err)
	}
	if res, err := send("15559999", tmpl); err != nil || res.WaID != "15559999" {
		t.Errorf("unknown user: %+v %v", res, err)
	}
	h = g.expect(t, "msgstatus:failed")[0]
	if errs, _ := h.elem["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["code"] != float64(wasim.CodeMessageUndeliverable) {
		t.Errorf("failed status %s", h.raw)
	}
}

func TestMessagesValidation(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001"})
	base := func(mod func(map[string]any)) map[string]any {
		b := map[string]any{"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15550001", "type": "interactive",
			"interactive": map[string]any{"type": "call_permission_request", "action": map[string]any{"name": "call_permission_request"}}}
		mod(b)
		return b
	}
	tests := []struct {
		name string
		body map[string]any
	}{
		{"text message", base(func(b map[string]any) { b["type"] = "text"; b["text"] = map[string]any{"body": "x"} })},
		{"voice_call interactive", base(func(b map[string]any) { b["interactive"].(map[string]any)["type"] = "voice_call" })},
		{"wrong action name", base(func(b map[string]any) {
			b["interactive"].(map[string]any)["action"] = map[string]any{"name": "x"}
		})},
		{"empty body text", base(func(b map[string]any) { b["interactive"].(map[string]any)["body"] = map[string]any{"text": ""} })},
		{"template without language", base(func(b map[string]any) {
			b["type"] = "template"
			b["template"] = map[string]any{"name": "cpr"}
		})},
		{"no recipient", base(func(b map[string]any) { delete(b, "to") })},
		{"wrong product", base(func(b map[string]any) { b["messaging_product"] = "sms" })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if status, resp := g.graph(http.MethodPost, "/"+pnid+"/messages", tc.body); status != 400 || errCode(resp) != 100 {
				t.Errorf("%d %v", status, resp)
			}
		})
	}
	if st, _ := g.meta.User("15550001"); st.Requests7d != 0 {
		t.Errorf("refused requests counted: %+v", st)
	}
	g.none(t, 200*time.Millisecond)
}

// TestPermissionReplies: the six scenarios of §2.8, field by field, as ponte parses them, and
// their effect on the user's permission.
func TestPermissionReplies(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", BSUID: "US.1", Name: "Ana"})
	ctx := ctxT(t, 10*time.Second)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", BSUID: "US.1", Name: "Ana", Permission: wasim.PermissionNone})
	res, err := g.client.SendPermissionRequest(ctx, pnid, "15550001",
		whatsapp.PermissionRequest{Template: &whatsapp.Template{Name: "cpr", Language: "en"}})
	if err != nil {
		t.Fatal(err)
	}
	g.expect(t, "msgstatus:sent", "msgstatus:delivered")
	exp := t0.Add(3 * 24 * time.Hour)
	tests := []struct {
		name           string
		opts           wasim.PermissionReplyOptions
		want           whatsapp.PermissionReply
		permission     string
		hasPermanent   bool
		hasExpiration  bool
		wantContextKey bool
	}{
		{"temporary accept from a request", wasim.PermissionReplyOptions{Expiration: exp},
			whatsapp.PermissionReply{Response: "accept", Expiration: exp, Source: "user_action", ContextID: res.MessageID},
			wasim.PermissionTemporary, true, true, true},
		{"permanent accept from a request", wasim.PermissionReplyOptions{Permanent: true},
			whatsapp.PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action", ContextID: res.MessageID},
			wasim.PermissionPermanent, true, false, true},
		{"permanent accept from the profile", wasim.PermissionReplyOptions{Permanent: true, NoContext: true},
			whatsapp.PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action"},
			wasim.PermissionPermanent, true, false, false},
		{"reject", wasim.PermissionReplyOptions{Response: "reject"},
			whatsapp.PermissionReply{Response: "reject", Source: "user_action", ContextID: res.MessageID},
			wasim.PermissionNone, false, false, true},
		{"automatic callback permission", wasim.PermissionReplyOptions{Source: "automatic", Context: "wacid.CALL"},
			whatsapp.PermissionReply{Response: "accept", Expiration: t0.Add(7 * 24 * time.Hour), Source: "automatic", ContextID: "wacid.CALL"},
			wasim.PermissionTemporary, true, true, true},
		{"auto-revoke", wasim.PermissionReplyOptions{Response: "reject", Source: "automatic"},
			whatsapp.PermissionReply{Response: "reject", Source: "automatic"},
			wasim.PermissionNone, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := g.meta.SendPermissionReply(ctx, "US.1", tc.opts); err != nil {
				t.Fatal(err)
			}
			h := g.expect(t, "permission_reply")[0]
			reply := h.elem["interactive"].(map[string]any)["call_permission_reply"].(map[string]any)
			_, hasPerm := reply["is_permanent"]
			_, hasExp := reply["expiration_timestamp"]
			_, hasCtx := h.elem["context"]
			if hasPerm != tc.hasPermanent || hasExp != tc.hasExpiration || hasCtx != tc.wantContextKey || h.elem["type"] != "interactive" {
				t.Errorf("shape %s", h.raw)
			}
			evs, err := whatsapp.ParseWebhook(h.raw)
			if err != nil || len(evs) != 1 {
				t.Fatal(err)
			}
			ev := evs[0]
			if ev.Kind != whatsapp.EventPermissionReply || ev.From != "15550001" || ev.FromUserID != "US.1" || ev.WaID != "15550001" ||
				ev.ContactName != "Ana" || !ev.Timestamp.Equal(t0) || !strings.HasPrefix(ev.MessageID, "wamid.") {
				t.Errorf("event %+v", ev)
			}
			if !reflect.DeepEqual(*ev.Permission, tc.want) {
				t.Errorf("reply %+v, want %+v", *ev.Permission, tc.want)
			}
			if st, _ := g.meta.User("15550001"); st.Permission != tc.permission {
				t.Errorf("permission %q, want %q", st.Permission, tc.permission)
			}
		})
	}
	if err := g.meta.SendPermissionReply(ctx, "15559999", wasim.PermissionReplyOptions{}); err == nil {
		t.Error("reply from an unknown user")
	}
}

// TestUserMessage: a text from the user is EventMessage for ponte and opens the 24 h window.
func TestUserMessage(t *testing.T) {
	g := newBIC(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "15550001", Dialled: []string{"155500001"}, Name: "Bia"})
	if err := g.meta.SendUserMessage(ctxT(t, 5*time.Second), "155500001", "call me"); err != nil {
		t.Fatal(err)
	}
	h := g.expect(t, "message:text")[0]
	if h.elem["text"].(map[string]any)["body"] != "call me" {
		t.Errorf("message %s", h.raw)
	}
	evs, err := whatsapp.ParseWebhook(h.raw)
	if err != nil || len(evs) != 1 {
		t.Fatal(err)
	}
	if ev := evs[0]; ev.Kind != whatsapp.EventMessage || ev.From != "15550001" || ev.WaID != "15550001" ||
		ev.ContactName != "Bia" || !ev.Timestamp.Equal(t0) || ev.MessageID == "" {
		t.Errorf("event %+v", ev)
	}
	if st, _ := g.meta.User("15550001"); !st.WindowOpen {
		t.Error("window not open")
	}
	g.clock.Advance(24 * time.Hour)
	if st, _ := g.meta.User("15550001"); st.WindowOpen {
		t.Error("window open after 24 h")
	}
	if err := g.meta.SendUserMessage(ctxT(t, time.Second), "15559999", "x"); err == nil {
		t.Error("message from an unknown user")
	}
}

// TestUserInitiatedCallCountsForUser: a user-initiated call from a known user opens the
// customer-service window at once, and connecting it resets the request limits (§4.3, §7).
func TestUserInitiatedCallCountsForUser(t *testing.T) {
	g := newGW(t, nil)
	g.meta.SetUser(wasim.UserOptions{WaID: "16315553602"})
	client := whatsapp.NewClient(whatsapp.ClientConfig{BaseURL: g.meta.GraphURL(), AccessToken: token, Logger: slog.New(slog.DiscardHandler)})
	defer client.CloseIdleConnections()
	c, err := client.SendPermissionRequest(ctxT(t, 5*time.Second), pnid, "16315553602",
		whatsapp.PermissionRequest{Template: &whatsapp.Template{Name: "cpr", Language: "en"}})
	if err != nil || c.MessageID == "" {
		t.Fatal(err)
	}
	if st, _ := g.meta.User("16315553602"); st.Requests24h != 1 || st.WindowOpen {
		t.Fatalf("before: %+v", st)
	}
	g.drainHooks() // the request's statuses
	g.acceptedCall(t, wasim.CallOptions{From: "16315553602"}, nil)
	if st, _ := g.meta.User("16315553602"); st.Requests24h != 0 || !st.WindowOpen {
		t.Errorf("after a connected user-initiated call: %+v", st)
	}
}
