package test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/store"
)

const apiToken = "test-api-token-0123456789"

// apiGet calls the admin API with the bearer token.
func apiGet(t *testing.T, env *scenario.Env, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, env.Server.AdminURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// TestCallRecordsThroughAPI: an answered call and a missed one leave records
// in the store that the REST API returns, with every field the NOC and the
// supervisors filter on, and the CSV export has them.
func TestCallRecordsThroughAPI(t *testing.T) {
	withAPI := func(c *config.Config) { c.API.Token = apiToken }

	env := startEnv(t, scenario.Options{Configure: withAPI})
	caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "=HYPERLINK(\"x\")"})
	time.Sleep(time.Second)
	hangupAndWait(t, env, caller, pc)

	code, body := apiGet(t, env, "/api/calls?outcome=answered")
	if code != 200 {
		t.Fatalf("GET /api/calls: %d %s", code, body)
	}
	var page struct {
		Calls []store.Call `json:"calls"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Calls) != 1 {
		t.Fatalf("answered calls: %v %s", err, body)
	}
	c := page.Calls[0]
	switch {
	case c.Protocol == "" || c.WACID != caller.ID() || c.Direction != store.Inbound || c.Caller.Number != "5511987654321":
		t.Errorf("identity fields: %+v", c)
	case c.Route != "support" || c.Mode != "ring_then_answer" || len(c.Attempts) != 1 || c.Attempts[0].Result != "200":
		t.Errorf("routing fields: route %q mode %q attempts %+v", c.Route, c.Mode, c.Attempts)
	case c.AnsweredBy != "pbx" || c.EndedBy != store.EndedByCaller || c.Outcome != store.OutcomeAnswered:
		t.Errorf("outcome fields: answered by %q ended by %q outcome %q", c.AnsweredBy, c.EndedBy, c.Outcome)
	case c.Offered.IsZero() || c.PreAccepted.IsZero() || c.Accepted.IsZero() || c.Answered.IsZero() || c.Ended.IsZero() || c.Duration < 900*time.Millisecond:
		t.Errorf("timestamps: %+v duration %v", c, c.Duration)
	case c.Media.SIP.Codec != "PCMU" || c.Media.SIP.PacketsReceived < 10 || c.Media.WhatsApp.PacketsReceived < 10 || c.Media.MOS < 4:
		// >= 10 packets each way in a 1 s call: counts that are real, with room
		// for a starved test process (the simulators run in it and send late).
		t.Errorf("media summary: %+v", c.Media)
	}
	code, one := apiGet(t, env, "/api/calls/"+c.Protocol)
	if code != 200 || !strings.Contains(string(one), c.ID) {
		t.Errorf("GET /api/calls/%s: %d %s", c.Protocol, code, one)
	}
	code, csv := apiGet(t, env, "/api/calls.csv")
	if code != 200 || !strings.Contains(string(csv), c.Protocol) || strings.Contains(string(csv), ",=HYPERLINK") {
		t.Errorf("CSV export: %d, has protocol %v, formula left live %v", code, strings.Contains(string(csv), c.Protocol), strings.Contains(string(csv), ",=HYPERLINK"))
	}
	req, _ := http.NewRequest(http.MethodGet, env.Server.AdminURL()+"/api/calls", nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 401 {
		t.Errorf("the API answered without a token: %v %v", res.StatusCode, err)
	} else {
		res.Body.Close()
	}

	busy := startEnv(t, scenario.Options{PBX: pbx.Config{AnswerCode: 486}, Configure: withAPI})
	bc, err := busy.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	callerEnded(t, bc, 10*time.Second)
	_ = busy.WaitIdle(ctxT(t, 5*time.Second))
	code, body = apiGet(t, busy, "/api/calls?outcome=missed")
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Calls) != 1 {
		t.Fatalf("missed calls: %d %v %s", code, err, body)
	}
	if m := page.Calls[0]; m.EndReason != "target_486" || m.EndedBy != store.EndedByBusiness || len(m.Attempts) != 1 || m.Attempts[0].Result != "486" || !m.Answered.IsZero() {
		t.Errorf("missed call record: %+v", m)
	}
}

// TestAbandonedAndTransferredRecords: a caller who hangs up while the agent
// rings leaves an "abandoned" record with the attempt cancelled; a call the
// agent transferred leaves an "answered" record listing the transfer and
// both legs, as the API returns them.
func TestAbandonedAndTransferredRecords(t *testing.T) {
	withAPI := func(c *config.Config) { c.API.Token = apiToken }
	var page struct {
		Calls []store.Call `json:"calls"`
	}

	ring := startEnv(t, scenario.Options{PBX: pbx.Config{AnswerDelay: 20 * time.Second}, Configure: withAPI})
	caller, err := ring.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{From: "5511977776666"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.PBX.NextCall(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := caller.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = ring.WaitIdle(ctxT(t, 10*time.Second))
	code, body := apiGet(t, ring, "/api/calls?outcome=abandoned")
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Calls) != 1 {
		t.Fatalf("abandoned calls: %d %v %s", code, err, body)
	}
	if c := page.Calls[0]; c.EndedBy != store.EndedByCaller || c.PreAccepted.IsZero() || !c.Answered.IsZero() || c.Ended.IsZero() ||
		len(c.Attempts) != 1 || c.Attempts[0].Result != "caller_hangup" || c.Caller.Number != "5511977776666" {
		t.Errorf("abandoned record: %+v", c)
	}

	env := startEnv(t, scenario.Options{Configure: withAPI})
	caller, agent := connected(t, env, wasim.CallOptions{})
	res, err := agent.Request(ctxT(t, 5*time.Second), "REFER", nil, "", sip.NewHeader("Refer-To", "<sip:2002@"+env.PBX.Addr().String()+">"))
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("REFER: %v %v", res, err)
	}
	next, err := env.PBX.NextCall(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	<-agent.Ended()
	time.Sleep(500 * time.Millisecond)
	hangupAndWait(t, env, caller, next)
	code, body = apiGet(t, env, "/api/calls?outcome=answered")
	if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Calls) != 1 {
		t.Fatalf("answered calls: %d %v %s", code, err, body)
	}
	c := page.Calls[0]
	if len(c.Transfers) != 1 || c.Transfers[0].Result != "200" || !strings.Contains(c.Transfers[0].ReferTo, "2002") {
		t.Errorf("transfers in the record: %+v", c.Transfers)
	}
	if len(c.Attempts) != 2 || c.Attempts[1].Result != "200" || !strings.Contains(c.Attempts[1].Target, "2002") || c.SIPCallID != next.Invite().CallID().Value() {
		t.Errorf("legs in the record: attempts %+v, sip_call_id %q", c.Attempts, c.SIPCallID)
	}
}
