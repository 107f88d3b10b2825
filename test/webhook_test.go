package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// metaCallsWebhook builds a `calls` webhook exactly in Meta's shape
// (reference §2.2/§2.5).
func metaCallsWebhook(call map[string]any) []byte {
	body := map[string]any{
		"object": "whatsapp_business_account",
		"entry": []any{map[string]any{"id": "102290129340398", "changes": []any{map[string]any{
			"field": "calls",
			"value": map[string]any{
				"messaging_product": "whatsapp",
				"metadata":          map[string]any{"display_phone_number": scenario.DisplayNumber, "phone_number_id": scenario.PhoneNumberID},
				"contacts":          []any{map[string]any{"profile": map[string]any{"name": "Raw Caller"}, "wa_id": "5511900000000"}},
				"calls":             []any{call},
			},
		}}}},
	}
	b, _ := json.Marshal(body)
	return b
}

func connectBody(wacid, sdp string, ts time.Time) []byte {
	return metaCallsWebhook(map[string]any{
		"id": wacid, "to": scenario.DisplayNumber, "from": "5511900000000", "event": "connect",
		"timestamp": fmt.Sprint(ts.Unix()), "direction": "USER_INITIATED",
		"session": map[string]any{"sdp_type": "offer", "sdp": sdp},
	})
}

func terminateBody(wacid string, ts time.Time) []byte {
	return metaCallsWebhook(map[string]any{
		"id": wacid, "to": scenario.DisplayNumber, "from": "5511900000000", "event": "terminate",
		"timestamp": fmt.Sprint(ts.Unix()), "direction": "USER_INITIATED", "status": []string{"Completed"},
	})
}

// noInvite asserts that the PBX is not rung within d.
func noInvite(t *testing.T, env *scenario.Env, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if c, err := env.PBX.NextCall(ctx); err == nil {
		t.Fatalf("the PBX was rung (From %s)", c.Invite().From().Value())
	}
}

func TestWebhookBadSignatureHasNoSideEffect(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	ctx := ctxT(t, 10*time.Second)
	// A real offer, so only the signature is wrong.
	ref, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	hangupAndWait(t, env, ref, pc)
	body := connectBody("wacid.unsigned-1", ref.Offer(), time.Now())
	st, err := env.Meta.SendWebhook(ctx, body, false)
	if err != nil && st == 0 {
		t.Fatal(err)
	}
	if st != 401 {
		t.Fatalf("unsigned webhook got %d, want 401", st)
	}
	noInvite(t, env, 2*time.Second)
	if rs := requests(env, "wacid.unsigned-1"); len(rs) != 0 {
		t.Errorf("Graph requests for an unsigned webhook: %q", actions(rs))
	}
}

func TestWebhookDuplicateConnectOneInvite(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	var connect []byte
	for _, w := range env.Meta.Webhooks() {
		if w.CallID == caller.ID() && w.Event == "connect" {
			connect = w.Body
		}
	}
	if connect == nil {
		t.Fatal("no connect webhook recorded")
	}
	// Meta redelivers after its ~20 s timeout: same body, signed.
	if st, err := env.Meta.SendWebhook(ctxT(t, 5*time.Second), connect, true); st != 200 {
		t.Fatalf("redelivery got %d (%v)", st, err)
	}
	noInvite(t, env, 2*time.Second)
	if n := strings.Count(actions(requests(env, caller.ID())), "pre_accept"); n != 1 {
		t.Errorf("%d pre_accepts for one call", n)
	}
	hangupAndWait(t, env, caller, pc)
}

func TestWebhookTerminateBeforeConnect(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	ctx := ctxT(t, 10*time.Second)
	now := time.Now()
	if st, _ := env.Meta.SendWebhook(ctx, terminateBody("wacid.early-term", now), true); st != 200 {
		t.Fatalf("terminate got %d", st)
	}
	if st, _ := env.Meta.SendWebhook(ctx, connectBody("wacid.early-term", "v=0\r\n", now.Add(-time.Second)), true); st != 200 {
		t.Fatalf("connect got %d", st)
	}
	noInvite(t, env, 2*time.Second)
	if rs := requests(env, "wacid.early-term"); len(rs) != 0 {
		t.Errorf("Graph requests for a call already terminated: %q", actions(rs))
	}
}

func TestWebhookStaleConnectIgnoredLateTerminateActedOn(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	ctx := ctxT(t, 10*time.Second)
	stale, err := env.Meta.Call(ctx, wasim.CallOptions{Timestamp: time.Now().Add(-10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	noInvite(t, env, 2*time.Second)
	if rs := requests(env, stale.ID()); len(rs) != 0 {
		t.Errorf("Graph requests for a stale connect: %q", actions(rs))
	}

	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	// A terminate delivered late (old timestamp) still ends the call.
	if st, _ := env.Meta.SendWebhook(ctx, terminateBody(caller.ID(), time.Now().Add(-10*time.Minute)), true); st != 200 {
		t.Fatalf("terminate got %d", st)
	}
	if by := pbxEnded(t, pc, 5*time.Second); by != "bye" {
		t.Errorf("PBX leg ended by %q, want a BYE", by)
	}
}

// TestWebhookHostileCallerDataNeverReachesSIPRaw: payloads and the name come
// from the caller; CR/LF never splits a SIP header, and values are capped.
func TestWebhookHostileCallerDataNeverReachesSIPRaw(t *testing.T) {
	env := startEnv(t, scenario.Options{})
	ctx := ctxT(t, 20*time.Second)
	long := strings.Repeat("A", 5000)
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{
		Name:            "Eve\r\nX-Injected: 1\r\n\"quoted\"",
		CTAPayload:      "promo\r\nX-Evil: yes",
		DeeplinkPayload: long,
		ExpectHz:        1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inv := pc.Invite()
	raw := inv.String()
	for _, bad := range []string{"X-Injected", "X-Evil"} {
		if strings.Contains(raw, "\r\n"+bad) {
			t.Errorf("header injection: %q became its own header:\n%s", bad, raw)
		}
	}
	cta := inv.GetHeader("X-WA-CTA-Payload")
	if cta == nil || strings.ContainsAny(cta.Value(), "\r\n") || !strings.Contains(cta.Value(), "promo") {
		t.Errorf("X-WA-CTA-Payload = %v", cta)
	}
	dl := inv.GetHeader("X-WA-Deeplink-Payload")
	if dl == nil || len(dl.Value()) > 256 || len(dl.Value()) < 100 {
		t.Errorf("X-WA-Deeplink-Payload length %d, want capped at 256", len(dl.Value()))
	}
	if from := inv.From().Value(); strings.ContainsAny(from, "\r\n") {
		t.Errorf("From %q", from)
	}
	for _, h := range []string{"X-WA-Call-Id", "X-WA-Phone-Number-Id", "X-Ponte-Call-Id"} {
		if inv.GetHeader(h) == nil {
			t.Errorf("INVITE lacks %s", h)
		}
	}
	if u := inv.Recipient.User; u != "agent" {
		t.Errorf("Request-URI user %q, want the configured target's user", u)
	}
	if u := inv.To().Address.User; u != scenario.DisplayNumber {
		t.Errorf("To user %q, want the dialled business number %s", u, scenario.DisplayNumber)
	}
	if err := caller.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	hangupAndWait(t, env, caller, pc)
}

// TestInviteCarriesDIDForHostOnlyTarget: a trunk-style target (no user) gets
// the dialled business number as Request-URI user, the caller's E.164 number
// with "+" as From user, and the WhatsApp name as display name.
func TestInviteCarriesDIDForHostOnlyTarget(t *testing.T) {
	env := startEnv(t, scenario.Options{TargetUser: "-"})
	caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "José da Silva", CTAPayload: "order-42", ExpectHz: 1000})
	inv := pc.Invite()
	if u := inv.Recipient.User; u != scenario.DisplayNumber {
		t.Errorf("Request-URI user %q, want %s", u, scenario.DisplayNumber)
	}
	if u := inv.From().Address.User; u != "+5511987654321" {
		t.Errorf("From user %q, want +5511987654321", u)
	}
	if d := inv.From().DisplayName; !strings.Contains(d, "Jos") {
		t.Errorf("From display name %q", d)
	}
	if h := inv.GetHeader("X-WA-CTA-Payload"); h == nil || h.Value() != "order-42" {
		t.Errorf("X-WA-CTA-Payload %v", h)
	}
	if h := inv.GetHeader("X-WA-Call-Id"); h == nil || h.Value() != caller.ID() {
		t.Errorf("X-WA-Call-Id %v, want %s", h, caller.ID())
	}
	hangupAndWait(t, env, caller, pc)
}
