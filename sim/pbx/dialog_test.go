package pbx_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// TestInDialogOffers: the simulator's re-INVITE and UPDATE offers (hold by
// sendonly, c=0.0.0.0, resume, offerless re-INVITE answered in the ACK)
// reach the UA, which answers them and reports the media state.
func TestInDialogOffers(t *testing.T) {
	l := dial(t, pbx.Config{})
	var mu sync.Mutex
	var states []sip.MediaState
	l.d.OnMediaChange(func(s sip.MediaState) { mu.Lock(); states = append(states, s); mu.Unlock() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []struct {
		name     string
		send     func() (*sipgo.Response, error)
		wantDir  string // in the UA's answer ("" for an offer in the 200)
		wantHeld bool
	}{
		{"re-INVITE sendonly", func() (*sipgo.Response, error) {
			return l.call.Reinvite(ctx, l.call.OfferSDP(pbx.SDPOptions{Direction: "sendonly"}))
		}, "recvonly", true},
		{"UPDATE resume", func() (*sipgo.Response, error) {
			return l.call.Update(ctx, l.call.OfferSDP(pbx.SDPOptions{}))
		}, "sendrecv", false},
		{"re-INVITE c=0.0.0.0", func() (*sipgo.Response, error) {
			return l.call.Reinvite(ctx, l.call.OfferSDP(pbx.SDPOptions{NullAddr: true}))
		}, "recvonly", true},
		{"offerless re-INVITE", func() (*sipgo.Response, error) { return l.call.Reinvite(ctx, nil) }, "", false},
	}
	for i, s := range steps {
		res, err := s.send()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", s.name, res, err)
		}
		md, err := sip.ParseSDP(res.Body())
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.wantDir != "" && md.Direction != s.wantDir {
			t.Fatalf("%s: answered %s, want %s", s.name, md.Direction, s.wantDir)
		}
		if s.wantDir == "" && md.Direction != "sendrecv" {
			t.Fatalf("%s: the UA offered %s", s.name, md.Direction)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			mu.Lock()
			n := len(states)
			mu.Unlock()
			if n == i+1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st := l.d.Media(); st.Held != s.wantHeld {
			t.Fatalf("%s: Media %+v, want held=%v", s.name, st, s.wantHeld)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) != len(steps) {
		t.Fatalf("%d media changes, want %d", len(states), len(steps))
	}
}

// TestSessionRefreshRecorded: with SessionExpires the simulator's 200 makes
// the UA refresh (refresher=uac): by re-INVITE, or by UPDATE when the 200
// allows it; the simulator records the refreshes and echoes Session-Expires.
func TestSessionRefreshRecorded(t *testing.T) {
	for _, tc := range []struct {
		allowUpdate bool
		method      string
	}{{false, "INVITE"}, {true, "UPDATE"}} {
		t.Run(tc.method, func(t *testing.T) {
			l := dial(t, pbx.Config{SessionExpires: 2, AllowUpdate: tc.allowUpdate})
			deadline := time.Now().Add(4 * time.Second)
			for len(l.call.InDialog()) < 2 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			rs := l.call.InDialog()
			if len(rs) < 2 {
				t.Fatalf("%d refreshes in 4 s with a 2 s interval", len(rs))
			}
			for _, r := range rs[:2] {
				if r.Method != tc.method || r.SessionExpires != "2;refresher=uac" {
					t.Fatalf("refresh %+v", r)
				}
			}
			if iv, us := l.d.SessionInterval(); iv != 2*time.Second || !us {
				t.Fatalf("SessionInterval %v %v", iv, us)
			}
			select {
			case <-l.d.Done():
				t.Fatalf("dialog ended: %v", l.d.Err())
			default:
			}
		})
	}
}

// TestInfoDigitsBothWays: Config.DTMFInfo makes SendDTMF use INFO; INFOs
// from the UA land in InfoDigits; NoTelephoneEvent drops it from the SDP.
func TestInfoDigitsBothWays(t *testing.T) {
	l := dial(t, pbx.Config{DTMFInfo: true, NoTelephoneEvent: true})
	if l.answer.DTMFPT != -1 {
		t.Fatalf("answer has telephone-event %d", l.answer.DTMFPT)
	}
	var mu sync.Mutex
	var got []string
	l.d.OnDTMF(func(d rune, dur time.Duration) { mu.Lock(); got = append(got, string(d)+dur.String()); mu.Unlock() })
	l.call.SendDTMF("5#", 100*time.Millisecond, 20*time.Millisecond)
	var g string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		g = strings.Join(got, " ") // OnDTMF runs right after the UA's 200
		mu.Unlock()
		if g == "5100ms #100ms" {
			break
		}
	}
	if g != "5100ms #100ms" {
		t.Fatalf("UA got %q", g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.d.SendDTMFInfo(ctx, '7', 80*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := l.call.InfoDigits(); len(d) != 1 || d[0].Rune != '7' || d[0].Duration != 80*time.Millisecond {
		t.Fatalf("InfoDigits %+v", d)
	}
	if r := l.call.InDialog(); len(r) != 1 || r[0].Method != "INFO" {
		t.Fatalf("InDialog %+v", r)
	}
}
