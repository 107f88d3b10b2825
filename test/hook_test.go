package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// TestRoutingHook: the CRM's hook is asked for every call, signed so it can
// verify ponte. When it names a target, that target rings (with the hook's
// extra header); when it is slow, fails or answers garbage, the static route
// rings and the record says why. pre_accept never waits for the hook.
func TestRoutingHook(t *testing.T) {
	const secret = "crm-secret"
	for _, tc := range []struct {
		name     string
		reply    func(w http.ResponseWriter, deptAddr string)
		toDept   bool   // the hook's target (the second PBX) takes the call
		recHook  string // in the record
		slowHook bool
	}{
		{"targets", func(w http.ResponseWriter, dept string) {
			fmt.Fprintf(w, `{"targets":[{"uri":"sip:maria@%s","trunk":"dept"}],"headers":{"X-Case":"4711"}}`, dept)
		}, true, "hook targets (1)", false},
		{"timeout", func(w http.ResponseWriter, _ string) { time.Sleep(2500 * time.Millisecond) }, false, "timed out", true},
		{"500", func(w http.ResponseWriter, _ string) { w.WriteHeader(500) }, false, "error status: 500", false},
		{"malformed", func(w http.ResponseWriter, _ string) { io.WriteString(w, `{"targets":`) }, false, "unusable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dept, err := pbx.Start(ctx, pbx.Config{Listen: "127.0.0.1:0", ToneHz: deptToneHz, ExpectToneHz: 440, Logger: logger().With("sim", "dept")})
			if err != nil {
				t.Fatal(err)
			}
			defer dept.Close()
			var mu sync.Mutex
			var verified bool
			var asked gateway.HookRequest
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				mu.Lock()
				verified = gateway.VerifyHookSignature([]byte(secret), r.Header.Get("X-Ponte-Signature"), r.Header.Get("X-Ponte-Timestamp"), body, time.Now(), time.Minute)
				_ = json.Unmarshal(body, &asked)
				mu.Unlock()
				tc.reply(w, dept.Addr().String())
			}))
			defer hook.Close()
			env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
				c.SIP.Trunks = append(c.SIP.Trunks, config.Trunk{Name: "dept", Address: dept.Addr().String(), Transport: "udp", Codecs: []string{"PCMU"}})
				c.Routes["support"].Hook = &config.Hook{URL: hook.URL, Secret: secret, Timeout: config.Duration(1500 * time.Millisecond)}
			}})
			caller, err := env.Meta.Call(ctxT(t, 10*time.Second), wasim.CallOptions{From: "5511987654321", CTAPayload: "promo-7"})
			if err != nil {
				t.Fatal(err)
			}
			want, other := env.PBX, dept
			if tc.toDept {
				want, other = dept, env.PBX
			}
			pc, err := want.NextCall(ctxT(t, 10*time.Second))
			if err != nil {
				t.Fatalf("the expected target never rang: %v", err)
			}
			if err := caller.WaitAccepted(ctxT(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if tc.toDept && pc.Invite().GetHeader("X-Case") == nil {
				t.Error("the hook's X-Case header is missing from the INVITE")
			}
			short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancelShort()
			if _, err := other.NextCall(short); err == nil {
				t.Error("the other PBX rang too")
			}
			hangupAndWait(t, env, caller, pc)
			mu.Lock()
			if !verified {
				t.Error("the hook could not verify ponte's signature")
			}
			if asked.CallerNumber != "5511987654321" || asked.CTAPayload != "promo-7" || asked.Route != "support" || !asked.Open {
				t.Errorf("hook asked %+v", asked)
			}
			mu.Unlock()
			recs := env.Server.Gateway.Records()
			if len(recs) != 1 || !strings.Contains(recs[0].Hook, tc.recHook) {
				t.Fatalf("record hook note %q, want it to mention %q", recs[0].Hook, tc.recHook)
			}
			// pre_accept went out without waiting for the hook.
			if d := recs[0].PreAccepted.Sub(recs[0].Offered); d > time.Second {
				t.Errorf("pre_accept %v after the offer: it waited for the hook", d)
			}
		})
	}
}
