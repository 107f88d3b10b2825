package wasim_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"
)

const (
	secret = "app-secret-123"
	token  = "EAAG-test-token"
	pnid   = "106540352242922"
)

// hook is one webhook the test gateway received.
type hook struct {
	raw  []byte
	sig  string
	body map[string]any
}

// testGW is the smallest "gateway" that can talk to the simulator: a webhook endpoint that
// checks Meta's signature itself (HMAC-SHA256 over the raw body) and a webrtc engine.
type testGW struct {
	t     *testing.T
	srv   *httptest.Server
	hooks chan hook
	eng   *webrtc.Engine
	meta  *wasim.Meta
}

func newGW(t *testing.T, mod func(*wasim.Config)) *testGW {
	t.Helper()
	g := &testGW{t: t, hooks: make(chan hook, 16)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("X-Hub-Signature-256")
		if sig != "" {
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write(raw)
			want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
			if !hmac.Equal([]byte(sig), []byte(want)) {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.hooks <- hook{raw: raw, sig: sig, body: body}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(g.srv.Close)
	cfg := wasim.Config{
		WebhookURL: g.srv.URL + "/webhook", AppSecret: secret, AccessToken: token,
		PhoneNumberID: pnid, DisplayNumber: "16315553601",
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := wasim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	g.meta = m
	// RTCP every 1.5 s: the call test sees reports, and TestTimers' mid-call silence (from
	// 400 ms to the 900 ms timeout) stays clear of the first one.
	g.eng, err = webrtc.NewEngine(webrtc.Config{
		ListenUDP: "127.0.0.1:0", IncludeLoopback: true, ConnectTimeout: 5 * time.Second, RTCPInterval: 1500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.eng.Close() })
	return g
}

// nextHook returns the next webhook and fails unless it is `event`.
func (g *testGW) nextHook(event string) hook {
	g.t.Helper()
	return g.nextHookT(g.t, event)
}

func (g *testGW) nextHookT(t *testing.T, event string) hook {
	t.Helper()
	select {
	case h := <-g.hooks:
		if ev := call0(t, h.body)["event"]; ev != event {
			t.Fatalf("webhook event %v, want %s: %s", ev, event, h.raw)
		}
		return h
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s webhook", event)
		return hook{}
	}
}

// drainHooks discards webhooks already received (e.g. terminates of earlier subtests).
func (g *testGW) drainHooks() {
	for {
		select {
		case <-g.hooks:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

// value0 returns entry[0].changes[0].value of a webhook body.
func value0(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	entry := body["entry"].([]any)[0].(map[string]any)
	change := entry["changes"].([]any)[0].(map[string]any)
	if change["field"] != "calls" {
		t.Fatalf("field %v", change["field"])
	}
	return change["value"].(map[string]any)
}

func call0(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	return value0(t, body)["calls"].([]any)[0].(map[string]any)
}

// graph POSTs to the simulator's Graph API and returns the status and decoded body.
func (g *testGW) graph(auth string, body any) (int, map[string]any) {
	g.t.Helper()
	return g.do(auth, "/"+pnid+"/calls", body)
}

func (g *testGW) graphPath(path string, body any) (int, map[string]any) {
	g.t.Helper()
	return g.do(token, path, body)
}

func (g *testGW) do(auth, path string, body any) (int, map[string]any) {
	g.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, g.meta.GraphURL()+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func action(callID, act, sdpType, sdp string) map[string]any {
	b := map[string]any{"messaging_product": "whatsapp", "call_id": callID, "action": act}
	if sdp != "" || sdpType != "" {
		b["session"] = map[string]any{"sdp_type": sdpType, "sdp": sdp}
	}
	return b
}

func errCode(resp map[string]any) float64 {
	e, _ := resp["error"].(map[string]any)
	c, _ := e["code"].(float64)
	return c
}

func (g *testGW) expectOK(act string, status int, resp map[string]any) {
	g.t.Helper()
	if status != 200 || resp["success"] != true || resp["messaging_product"] != "whatsapp" {
		g.t.Fatalf("%s: %d %v", act, status, resp)
	}
}

// legMedia runs the business side's media on a leg: it reads and analyses everything from the
// caller (Opus decoded to 8 kHz into an analyzer, RFC 4733 digits), and after start() sends a
// tone, with digits in between when asked.
type legMedia struct {
	leg     *webrtc.Leg
	heard   *audio.Analyzer
	markers *audio.MarkerReceiver // optional, set before any media flows
	mu      sync.Mutex
	digits  []rune
	first   time.Time // arrival of the first packet read
	dtmf    chan rune
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newLegMedia(t *testing.T, leg *webrtc.Leg) *legMedia {
	lm := &legMedia{leg: leg, heard: audio.NewAnalyzer(8000, 440, -12), dtmf: make(chan rune, 8), stop: make(chan struct{})}
	lm.wg.Add(1)
	go lm.read(t)
	t.Cleanup(func() {
		close(lm.stop)
		_ = leg.Close() // unblocks ReadRTP
		lm.wg.Wait()
	})
	return lm
}

func (lm *legMedia) read(t *testing.T) {
	defer lm.wg.Done()
	dec, err := transcode.NewDecoder(transcode.CodecOpus, 8000)
	if err != nil {
		t.Error(err)
		return
	}
	det := transcode.NewDetector(300 * time.Millisecond)
	buf := make([]byte, 1500)
	pcm := make([]int16, 960)
	var p rtp.Packet
	for {
		if err := lm.leg.ReadRTP(buf, &p); err != nil {
			return
		}
		now := time.Now()
		lm.mu.Lock()
		if lm.first.IsZero() {
			lm.first = now
		}
		lm.mu.Unlock()
		switch p.PayloadType {
		case webrtc.OpusPT:
			if n, err := dec.Decode(p.Payload, pcm); err == nil {
				lm.heard.Add(pcm[:n], now)
				if lm.markers != nil {
					lm.markers.Add(pcm[:n], now)
				}
			}
		case webrtc.TelephoneEventPT:
			if ev, err := transcode.ParseEvent(p.Payload); err == nil {
				if d, ok := det.Push(p.Timestamp, ev, now); ok {
					lm.mu.Lock()
					lm.digits = append(lm.digits, transcode.DigitRune(d.Code))
					lm.mu.Unlock()
				}
			}
		}
	}
}

// start sends a 440 Hz tone at -12 dBFS as Opus every 20 ms; digits sent on lm.dtmf are
// inserted as RFC 4733 events (100 ms) sharing the sequence and timestamp space. The returned
// function stops the sender (the business goes silent).
func (lm *legMedia) start(t *testing.T) (stop func()) {
	quit := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(quit) }) }
	lm.wg.Add(1)
	go func() {
		defer lm.wg.Done()
		enc, err := transcode.NewEncoder(transcode.CodecOpus, 8000, transcode.EncoderOptions{Complexity: 5})
		if err != nil {
			t.Error(err)
			return
		}
		tone := transcode.NewToneGen(440, 8000, transcode.AmpForDBFS(-12))
		pcm, out, ev := make([]int16, 160), make([]byte, 1000), make([]byte, 4)
		h := rtp.Header{Version: 2, PayloadType: webrtc.OpusPT, SequenceNumber: 1000, Timestamp: 5000, Marker: true}
		var gen transcode.Generator
		var evTS uint32
		// Paced by the wall clock (catching up after delayed ticks), like the caller.
		start, sent := time.Now(), 0
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-lm.stop:
				return
			case <-quit:
				return
			case now := <-tick.C:
				due := int(now.Sub(start)/(20*time.Millisecond)) + 1
				for ; sent < due; sent++ {
					if !gen.Active() {
						select {
						case r := <-lm.dtmf:
							code, _ := transcode.DigitCode(r)
							gen.Start(code, 800, 10)
							evTS = h.Timestamp
						default:
						}
					}
					hh := h
					var payload []byte
					if gen.Active() {
						e, first := gen.Next(160)
						payload = ev[:e.Put(ev)]
						hh.PayloadType, hh.Timestamp, hh.Marker = webrtc.TelephoneEventPT, evTS, first
					} else {
						tone.Fill(pcm)
						n, err := enc.Encode(pcm, out)
						if err != nil {
							t.Error(err)
							return
						}
						payload = out[:n]
					}
					if err := lm.leg.WriteRTP(&hh, payload); err != nil {
						return
					}
					h.SequenceNumber++
					h.Timestamp += 960
					h.Marker = false
				}
			}
		}
	}()
	return stop
}

func (lm *legMedia) received() (first time.Time, digits []rune) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	return lm.first, append([]rune(nil), lm.digits...)
}

// acceptedCall runs a call up to "accepted, connected, business sending": connect webhook,
// Answer, pre_accept, DTLS, accept, EnableSend, business tone. It returns once media flows.
func (g *testGW) acceptedCall(t *testing.T, o wasim.CallOptions, prep func(*legMedia)) (*wasim.Caller, *webrtc.Leg, *legMedia) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := g.meta.Call(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	g.nextHookT(t, "connect")
	leg, err := g.eng.NewLeg(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	lm := newLegMedia(t, leg)
	if prep != nil {
		prep(lm)
	}
	answer, err := leg.Answer(c.Offer())
	if err != nil {
		t.Fatal(err)
	}
	st, resp := g.graph(token, action(c.ID(), "pre_accept", "answer", answer))
	g.expectOK("pre_accept", st, resp)
	if err := leg.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	st, resp = g.graph(token, action(c.ID(), "accept", "answer", answer))
	g.expectOK("accept", st, resp)
	if err := c.WaitAccepted(ctx); err != nil {
		t.Fatal(err)
	}
	leg.EnableSend()
	t.Cleanup(lm.start(t))
	return c, leg, lm
}
