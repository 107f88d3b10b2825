package whatsapp

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// The §3.5 sample response.
const samplePermissions = `{ "messaging_product": "whatsapp",
  "permission": { "status": "temporary", "expiration_time": 1745343479 },
  "actions": [
    { "action_name": "send_call_permission_request", "can_perform_action": true,
      "limits": [ { "time_period": "PT24H", "max_allowed": 1, "current_usage": 0 },
                  { "time_period": "P7D",  "max_allowed": 2, "current_usage": 1 } ] },
    { "action_name": "start_call", "can_perform_action": false,
      "limits": [ { "time_period": "PT24H", "max_allowed": 5, "current_usage": 5,
                    "limit_expiration_time": 1745622600 } ] } ] }`

func TestClientCallPermissions(t *testing.T) {
	g := newGraphFake(t, reply(500, `{"error":{"code":1}}`), reply(200, samplePermissions))
	c := newTestClient(t, g, ClientConfig{})
	p, err := c.CallPermissions(context.Background(), "pnid", "14085551234", "US.1")
	if err != nil {
		t.Fatal(err)
	}
	want := &CallPermission{Status: "temporary", Expiration: unix(1745343479), Actions: []PermissionAction{
		{Name: "send_call_permission_request", CanPerform: true, Limits: []ActionLimit{
			{TimePeriod: "PT24H", MaxAllowed: 1}, {TimePeriod: "P7D", MaxAllowed: 2, CurrentUsage: 1}}},
		{Name: "start_call", Limits: []ActionLimit{{TimePeriod: "PT24H", MaxAllowed: 5, CurrentUsage: 5, Expiration: unix(1745622600)}}},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %+v\nwant %+v", p, want)
	}
	if p.CanStartCall() {
		t.Error("CanStartCall true with can_perform_action false")
	}
	reqs := g.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want a retry after 500", len(reqs))
	}
	r := reqs[1]
	if r.method != http.MethodGet || r.path != "/v23.0/pnid/call_permissions" || r.auth != "Bearer "+testAccessToken || r.body != "" {
		t.Errorf("request %+v", r)
	}

	// BSUID-only user; "expiration" spelling; permanent.
	g2 := newGraphFake(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "recipient=US.1349" {
			w.WriteHeader(400)
			return
		}
		reply(200, `{"permission":{"status":"PERMANENT","expiration":"1745343479"},"actions":[{"action_name":"start_call","can_perform_action":"true"}]}`)(w, r)
	})
	c2 := newTestClient(t, g2, ClientConfig{})
	p, err = c2.CallPermissions(context.Background(), "pnid", "", "US.1349")
	if err != nil || p.Status != "permanent" || !p.CanStartCall() || !p.Expiration.Equal(unix(1745343479)) {
		t.Errorf("p %+v err %v", p, err)
	}
}

func TestClientCallPermissionsErrors(t *testing.T) {
	g := newGraphFake(t, reply(200, `{"actions":[]}`))
	c := newTestClient(t, g, ClientConfig{})
	if _, err := c.CallPermissions(context.Background(), "pnid", "1", ""); !errors.Is(err, ErrBadResponse) {
		t.Errorf("err %v, want ErrBadResponse", err)
	}
	if _, err := c.CallPermissions(context.Background(), "pnid", "", ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("err %v, want ErrInvalidArgument", err)
	}
	g2 := newGraphFake(t, reply(400, `{"error":{"code":100,"message":"bad user"}}`))
	c2 := newTestClient(t, g2, ClientConfig{})
	var apiErr *APIError
	if _, err := c2.CallPermissions(context.Background(), "pnid", "1", ""); !errors.As(err, &apiErr) || apiErr.Code != 100 || len(g2.requests()) != 1 {
		t.Errorf("err %v after %d requests", err, len(g2.requests()))
	}
}

func FuzzParseCallPermission(f *testing.F) {
	f.Add([]byte(samplePermissions))
	f.Add([]byte(`{"permission":{"status":"no_permission"}}`))
	f.Add([]byte(`{"permission":"x","actions":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseCallPermission(data)
		if (p == nil) == (err == nil) {
			t.Fatalf("p %v err %v", p, err)
		}
		if p == nil {
			return
		}
		if p.Status == "" {
			t.Fatal("empty status accepted")
		}
		for _, a := range p.Actions {
			for _, l := range a.Limits {
				if !l.Expiration.IsZero() && l.Expiration.After(time.Unix(maxUnix, 0)) {
					t.Fatalf("expiration %v", l.Expiration)
				}
			}
		}
	})
}
