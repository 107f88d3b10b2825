package sip_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

func startPBX(t *testing.T, cfg pbx.Config) *pbx.PBX {
	t.Helper()
	cfg.Logger = testLogger()
	p, err := pbx.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func trunkFor(p *pbx.PBX, transport string) *sip.Trunk {
	return &sip.Trunk{Name: "sim", Address: p.Addr().String(), Transport: transport, Codecs: []string{"PCMU", "PCMA"}}
}

func nextCall(t *testing.T, p *pbx.PBX) *pbx.Call {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timeout waiting for %s", what)
	}
}

type provLog struct {
	mu    sync.Mutex
	codes []int
	media []*sip.MediaDesc
}

func (l *provLog) add(code int, _ string, m *sip.MediaDesc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.codes = append(l.codes, code)
	l.media = append(l.media, m)
}

func (l *provLog) get() ([]int, []*sip.MediaDesc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.codes...), append([]*sip.MediaDesc(nil), l.media...)
}

// TestDialAnswerAudioBye: 100/180 then 200 over UDP and TCP, ACK before
// WaitAnswer returns, tone both ways, our BYE with a Reason header.
func TestDialAnswerAudioBye(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			p := startPBX(t, pbx.Config{AnswerDelay: 300 * time.Millisecond, ToneHz: 1000, ExpectToneHz: 440})
			u := newUA(t)
			media := newRTP(t, u)
			var prov provLog
			d, err := u.Dial(context.Background(), sip.DialRequest{
				Trunk: trunkFor(p, transport), Target: "1000", FromUser: "+5511999990000", FromDisplay: "Maria",
				Media: media, OnProvisional: prov.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			call := nextCall(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ans, err := d.WaitAnswer(ctx)
			returned := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			acked := d.AckedAt()
			if acked.IsZero() || acked.After(returned) {
				t.Fatalf("ACK at %v, WaitAnswer returned %v", acked, returned)
			}
			codes, _ := prov.get()
			if !containsInt(codes, 180) {
				t.Fatalf("provisional codes %v, want 180", codes)
			}
			if c, ok := ans.Codec("PCMU"); !ok || c.PT != 0 || ans.DTMFPT != 101 {
				t.Fatalf("answer %+v", ans)
			}
			inv := call.Invite()
			if got := inv.From().Address.User; got != "+5511999990000" || inv.From().DisplayName != "Maria" {
				t.Fatalf("From %s", inv.From().Value())
			}
			if !strings.EqualFold(inv.Transport(), transport) {
				t.Fatalf("INVITE came over %s", inv.Transport())
			}
			waitFor(t, func() bool { return !call.AckedAt().IsZero() }, "PBX to see the ACK")

			// Audio both ways: PBX tone to us, our 440 Hz to the PBX.
			recv := make(chan []int16, 1)
			go func() { pcm, _ := receiveAudio(media, 40*160, 5*time.Second); recv <- pcm }()
			sendStart := time.Now()
			if err := sendTone(ctx, media, 440, 50, 0x77); err != nil {
				t.Fatal(err)
			}
			assertTone(t, <-recv, 1000)
			rep := call.Received().Report(sendStart, time.Now().Add(time.Second))
			if rep.Windows < 40 || rep.ToneRatio < 0.9 {
				t.Fatalf("PBX heard %+v", rep)
			}

			reason := sip.Reason{Protocol: "Q.850", Cause: 16, Text: "Normal call clearing"}
			if err := d.Bye(ctx, reason); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, d.Done(), "dialog done")
			waitClosed(t, call.Ended(), "PBX call end")
			if call.EndedBy() != "bye" || call.ByeReason() != reason.String() || d.RemoteBye() {
				t.Fatalf("ended by %q reason %q remoteBye %v", call.EndedBy(), call.ByeReason(), d.RemoteBye())
			}
		})
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDialDigest(t *testing.T) {
	tests := []struct {
		name, pass string
		wantCode   int
	}{
		{"right password", "s3cret", 0},
		{"wrong password", "nope", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startPBX(t, pbx.Config{Auth: &pbx.Auth{Username: "ponte", Password: "s3cret"}})
			u := newUA(t)
			tr := trunkFor(p, "udp")
			tr.Username, tr.Password = "ponte", tc.pass
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: tr, Target: "1000", Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = d.WaitAnswer(ctx)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				call := nextCall(t, p)
				h := call.Invite().GetHeader("Authorization")
				if h == nil || !strings.Contains(h.Value(), `username="ponte"`) || !strings.Contains(h.Value(), "qop=auth") {
					t.Fatalf("Authorization %v", h)
				}
				if err := d.Bye(ctx, sip.Reason{}); err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *sip.StatusError
			if !errors.As(err, &se) || se.Code != tc.wantCode {
				t.Fatalf("err %v, want StatusError %d", err, tc.wantCode)
			}
			waitClosed(t, d.Done(), "dialog done")
		})
	}
}

func TestDialFailureCodes(t *testing.T) {
	for _, code := range []int{486, 603, 404} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			p := startPBX(t, pbx.Config{AnswerCode: code, AnswerDelay: 100 * time.Millisecond})
			u := newUA(t)
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.WaitAnswer(context.Background())
			var se *sip.StatusError
			if !errors.As(err, &se) || se.Code != code {
				t.Fatalf("err %v, want StatusError %d", err, code)
			}
			waitClosed(t, d.Done(), "dialog done")
			if !errors.As(d.Err(), &se) {
				t.Fatalf("Err() = %v", d.Err())
			}
		})
	}
}

// TestCancelWhileRinging: the PBX sees our CANCEL (with its Reason) and
// WaitAnswer returns ErrCanceled.
func TestCancelWhileRinging(t *testing.T) {
	p := startPBX(t, pbx.Config{AnswerDelay: 30 * time.Second})
	u := newUA(t)
	ringing := make(chan struct{})
	var once sync.Once
	d, err := u.Dial(context.Background(), sip.DialRequest{
		Trunk: trunkFor(p, "udp"), Target: "1000", Media: newRTP(t, u),
		OnProvisional: func(code int, _ string, _ *sip.MediaDesc) {
			if code == 180 {
				once.Do(func() { close(ringing) })
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	call := nextCall(t, p)
	waitClosed(t, ringing, "180")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel(sip.CancelCause{Reason: sip.Reason{Protocol: "Q.850", Cause: 31}})
	}()
	if _, err := d.WaitAnswer(ctx); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("WaitAnswer: %v", err)
	}
	waitClosed(t, call.Ended(), "PBX to see CANCEL")
	if call.EndedBy() != "cancel" || call.ByeReason() != "Q.850;cause=31" {
		t.Fatalf("ended by %q reason %q", call.EndedBy(), call.ByeReason())
	}
	waitClosed(t, d.Done(), "dialog done after 487")
	if !errors.Is(d.Err(), sip.ErrCanceled) {
		t.Fatalf("Err() = %v", d.Err())
	}
}

// TestPBXHangup: the PBX's BYE ends our dialog, with its Reason.
func TestPBXHangup(t *testing.T) {
	p := startPBX(t, pbx.Config{HangupAfter: 300 * time.Millisecond})
	u := newUA(t)
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitAnswer(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, d.Done(), "remote BYE")
	if !d.RemoteBye() || d.RemoteReason() != `Q.850;cause=16;text="Normal call clearing"` || d.Err() != nil {
		t.Fatalf("RemoteBye %v reason %q err %v", d.RemoteBye(), d.RemoteReason(), d.Err())
	}
	if err := d.Bye(context.Background(), sip.Reason{}); err != nil {
		t.Fatalf("Bye after remote BYE: %v", err)
	}
}

// TestEarlyMedia: the 183's SDP reaches OnProvisional and the PBX's tone
// flows before the 200.
func TestEarlyMedia(t *testing.T) {
	p := startPBX(t, pbx.Config{EarlyMedia: true, AnswerDelay: 2 * time.Second, ToneHz: 800})
	u := newUA(t)
	media := newRTP(t, u)
	var prov provLog
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", Media: media, OnProvisional: prov.add})
	if err != nil {
		t.Fatal(err)
	}
	call := nextCall(t, p)
	pcm, err := receiveAudio(media, 20*160, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !call.AnsweredAt().IsZero() {
		t.Fatal("audio checked after the answer; early media not tested")
	}
	assertTone(t, pcm, 800)
	codes, mds := prov.get()
	found := false
	for i, c := range codes {
		if c == 183 && mds[i] != nil && mds[i].Addr.Port() != 0 {
			found = true
		}
	}
	if !found || !call.EarlyMediaSent() {
		t.Fatalf("no 183 with SDP: %v", codes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Bye(ctx, sip.Reason{}); err != nil {
		t.Fatal(err)
	}
}

// TestUntrustedHeaders: values with CR/LF, quotes and oversize text reach
// the PBX as single, escaped header values.
func TestUntrustedHeaders(t *testing.T) {
	p := startPBX(t, pbx.Config{})
	u := newUA(t)
	long := strings.Repeat("x", 400)
	d, err := u.Dial(context.Background(), sip.DialRequest{
		Trunk: trunkFor(p, "udp"), Target: "1000", Media: newRTP(t, u),
		FromUser: "BR.abc@evil", FromDisplay: "Bob \"the\" \\ builder\r\nVia: evil",
		Headers: []sip.Header{
			{Name: "X-WA-Call-Id", Value: "wacid.1\r\nX-Injected: yes"},
			{Name: "X-WA-Name", Value: "José"},
			{Name: "X-Long", Value: long},
			{Name: "Via", Value: "SIP/2.0/UDP evil"},
			{Name: "Bad Name", Value: "v"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	call := nextCall(t, p)
	inv := call.Invite()
	if h := inv.GetHeader("X-WA-Call-Id"); h == nil || h.Value() != "wacid.1%0D%0AX-Injected: yes" {
		t.Fatalf("X-WA-Call-Id %v", h)
	}
	if inv.GetHeader("X-Injected") != nil || len(inv.GetHeaders("Via")) != 1 || inv.GetHeader("Bad Name") != nil {
		t.Fatalf("header injection got through:\n%s", inv.String())
	}
	if h := inv.GetHeader("X-WA-Name"); h == nil || h.Value() != "Jos%C3%A9" {
		t.Fatalf("X-WA-Name %v", h)
	}
	if h := inv.GetHeader("X-Long"); h == nil || len(h.Value()) != 256 {
		t.Fatalf("X-Long not capped: %d", len(h.Value()))
	}
	if dn := inv.From().DisplayName; dn != `Bob \"the\" \\ builderVia: evil` {
		t.Fatalf("display name %q", dn)
	}
	if inv.From().Address.User != "BR.abc%40evil" || inv.From().Address.Host == "evil" {
		t.Fatalf("From user %q host %q", inv.From().Address.User, inv.From().Address.Host)
	}
	if _, err := d.WaitAnswer(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Bye(context.Background(), sip.Reason{})
}
