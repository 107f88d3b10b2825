package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

func postAPI(t *testing.T, env *scenario.Env, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, env.Server.AdminURL()+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out
}

// TestClickToCall: POST /api/calls checks the permission first (403 and no
// agent rung without it), then rings the agent, plays the agent ringback
// (Brazil's 425 Hz cadence) while WhatsApp rings the user, and bridges both
// with audio both ways once the user answers; the user's hang-up reaches the
// agent as a BYE and the call is recorded as outbound.
func TestClickToCall(t *testing.T) {
	w := startStallWatch(t)
	ring := audio.NewAnalyzer(8000, 425, transcode.DBm0ToDBFS(transcode.RingbackLevelDBm0))
	env := startEnv(t, scenario.Options{
		PBX: pbx.Config{ExpectToneHz: 700, OnAudio: func(_ *pbx.Call, pcm []int16, at time.Time) { ring.Add(pcm, at) }},
		Configure: func(c *config.Config) {
			c.API.Token = apiToken
		},
	})
	const user, stranger = "5511955550001", "5511955550002"
	outboundUser(env, user, wasim.UserOptions{ToneHz: 700, ExpectHz: 1000, AnswerAfter: 3 * time.Second})
	env.Meta.SetUser(wasim.UserOptions{WaID: stranger}) // no permission
	agent := "sip:agent@" + env.PBX.Addr().String()

	code, body := postAPI(t, env, "/api/calls", map[string]string{"agent": agent, "trunk": "pbx", "user": "+" + stranger})
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(body["error"]), "permission") {
		t.Errorf("click-to-call without permission: %d %v, want 403 naming the permission", code, body)
	}
	nctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	if pc, err := env.PBX.NextCall(nctx); err == nil {
		t.Errorf("an agent was rung (%s) for a call that cannot be made", pc.Invite().Recipient.String())
	}
	cancel()

	code, body = postAPI(t, env, "/api/calls", map[string]string{"agent": agent, "trunk": "pbx", "user": "+" + user})
	if code != http.StatusAccepted || !strings.HasPrefix(fmt.Sprint(body["id"]), "pc-") {
		t.Fatalf("click-to-call: %d %v, want 202 with the call id", code, body)
	}
	ctx := ctxT(t, 20*time.Second)
	pc, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatalf("the agent was not rung: %v", err)
	}
	callee, err := env.Meta.WaitCallee(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := callee.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	ans := pc.AnsweredAt()
	rbFrom, rbTo := ans.Add(200*time.Millisecond), ans.Add(900*time.Millisecond)
	if rb := ring.Report(rbFrom, rbTo); rb.ToneRatio < 0.8 {
		excuse(t, w.worst(rbFrom.Add(-100*time.Millisecond), rbTo), "the agent heard ringback in %.0f%% of windows of the first second, want >= 80%%", rb.ToneRatio*100)
	}
	time.Sleep(1500 * time.Millisecond)
	both := bothWays(callee, pc, atLeast(0.95), atLeast(0.95))
	listen(t, w, time.Now().Add(-time.Second), time.Second, func(from, to time.Time, skip []audio.Span) string {
		var msg []string
		if m := both(from, to, skip); m != "" {
			msg = append(msg, "after the answer: "+m)
		}
		if rb := ring.Report(from, to, skip...); rb.ToneRatio > 0.05 {
			msg = append(msg, fmt.Sprintf("ringback still playing after the user answered (%.0f%% of windows)", rb.ToneRatio*100))
		}
		return strings.Join(msg, "; ")
	})
	if err := callee.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pc.Ended():
	case <-ctx.Done():
		t.Fatal("the agent got no BYE after the user hung up")
	}
	r := waitRecords(t, env, 1)[0]
	if r.ID != body["id"] || r.Direction != "outbound" || r.EndedBy != "caller" || r.AnswerSignal != "accepted" {
		t.Errorf("record id %q direction %q ended_by %q signal %q", r.ID, r.Direction, r.EndedBy, r.AnswerSignal)
	}
}
