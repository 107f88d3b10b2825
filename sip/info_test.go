package sip_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

func TestParseDTMFInfo(t *testing.T) {
	tests := []struct {
		ct, body string
		digit    rune
		dur      time.Duration
		err      error
	}{
		{"application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", '5', 160 * time.Millisecond, nil},
		{"Application/DTMF-Relay; charset=x", "signal = #\nduration= 250", '#', 250 * time.Millisecond, nil},
		{"application/dtmf-relay", "Signal=*\r\n", '*', sip.DefaultInfoDTMFDuration, nil},
		{"application/dtmf-relay", "Signal=10\r\nDuration=100\r\n", '*', 100 * time.Millisecond, nil},
		{"application/dtmf-relay", "Signal=11\r\nDuration=100\r\n", '#', 100 * time.Millisecond, nil},
		{"application/dtmf-relay", "Signal=d\r\nDuration=0\r\n", 'D', sip.DefaultInfoDTMFDuration, nil},
		{"application/dtmf-relay", "Signal=1\r\nDuration=99999999\r\n", '1', sip.DefaultInfoDTMFDuration, nil},
		{"application/dtmf-relay", "Signal=16\r\nDuration=100\r\n", 0, 0, sip.ErrBadDigit}, // hook flash
		{"application/dtmf-relay", "Signal=x\r\n", 0, 0, sip.ErrBadDigit},
		{"application/dtmf-relay", "Duration=100\r\n", 0, 0, sip.ErrBadDigit},
		{"application/dtmf-relay", "", 0, 0, sip.ErrBadDigit},
		{"application/dtmf", "7", '7', sip.DefaultInfoDTMFDuration, nil},
		{"application/dtmf", " 9\r\n", '9', sip.DefaultInfoDTMFDuration, nil},
		{"application/dtmf", "Signal=3\r\nDuration=120\r\n", '3', 120 * time.Millisecond, nil},
		{"application/dtmf", "77", 0, 0, sip.ErrBadDigit},
		{"application/sdp", "Signal=5", 0, 0, sip.ErrNotDTMF},
		{"", "Signal=5", 0, 0, sip.ErrNotDTMF},
		{"application/dtmf-relay", "Signal=5\n" + strings.Repeat("x", 600), 0, 0, sip.ErrBadDigit},
	}
	for _, tc := range tests {
		d, dur, err := sip.ParseDTMFInfo(tc.ct, []byte(tc.body))
		if d != tc.digit || dur != tc.dur || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%q %q: %q %v %v, want %q %v %v", tc.ct, tc.body, d, dur, err, tc.digit, tc.dur, tc.err)
		}
	}
}

func TestDTMFRelayBody(t *testing.T) {
	tests := []struct {
		d    rune
		dur  time.Duration
		want string
		err  error
	}{
		{'5', 160 * time.Millisecond, "Signal=5\r\nDuration=160\r\n", nil},
		{'#', 0, "Signal=#\r\nDuration=250\r\n", nil},
		{'a', time.Minute, "Signal=A\r\nDuration=10000\r\n", nil},
		{'x', time.Second, "", sip.ErrBadDigit},
	}
	for _, tc := range tests {
		b, err := sip.DTMFRelayBody(tc.d, tc.dur)
		if string(b) != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%q %v: %q %v, want %q %v", tc.d, tc.dur, b, err, tc.want, tc.err)
		}
	}
}

func FuzzParseDTMFInfo(f *testing.F) {
	f.Add("application/dtmf-relay", []byte("Signal=5\r\nDuration=160\r\n"))
	f.Add("application/dtmf", []byte("#"))
	f.Add("application/dtmf-relay", []byte("Signal=\nDuration=-1\n=\n"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		d, dur, err := sip.ParseDTMFInfo(ct, body)
		if err != nil {
			return
		}
		if !strings.ContainsRune("0123456789*#ABCD", d) || dur <= 0 || dur > 10*time.Second {
			t.Fatalf("%q %q: digit %q duration %v", ct, body, d, dur)
		}
		// What we parse we can send back unchanged.
		b, err := sip.DTMFRelayBody(d, dur)
		if err != nil {
			t.Fatal(err)
		}
		if d2, dur2, err := sip.ParseDTMFInfo("application/dtmf-relay", b); err != nil || d2 != d || dur2 != dur.Truncate(time.Millisecond) {
			t.Fatalf("round trip of %q %v: %q %v %v", d, dur, d2, dur2, err)
		}
	})
}

type digitLog struct {
	mu sync.Mutex
	s  []string
}

func (l *digitLog) add(d rune, dur time.Duration) {
	l.mu.Lock()
	l.s = append(l.s, string(d)+":"+dur.String())
	l.mu.Unlock()
}

func (l *digitLog) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.s, " ")
}

// TestInfoDTMFWire: the exact INFO ponte sends, its answer codes, and the
// digits it reads from the PBX's INFOs (both body types).
func TestInfoDTMFWire(t *testing.T) {
	c := startWireCall(t, []string{"PCMU"}, "")
	var got digitLog
	var infoBodies []string
	var mu sync.Mutex
	c.d.OnDTMF(got.add)
	c.d.OnInfo(func(ct string, b []byte) { mu.Lock(); infoBodies = append(infoBodies, ct); mu.Unlock() })

	errc := make(chan error, 1)
	go func() { errc <- c.d.SendDTMFInfo(context.Background(), '5', 160*time.Millisecond) }()
	m, _ := c.w.recv(3*time.Second, isReq("INFO"))
	info := m.(*sipgo.Request)
	if hdr(info, "Content-Type") != "application/dtmf-relay" || string(info.Body()) != "Signal=5\r\nDuration=160\r\n" {
		t.Fatalf("INFO %q body %q", hdr(info, "Content-Type"), info.Body())
	}
	if tag, _ := info.To().Params.Get("tag"); tag != "uas1" || info.Recipient.User != "uas" || info.CSeq().SeqNo <= c.inv.CSeq().SeqNo {
		t.Fatalf("INFO not in the dialog:\n%s", info.String())
	}
	c.w.send(response(info, 200, "OK"), c.src)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go func() { errc <- c.d.SendDTMFInfo(context.Background(), '#', 0) }()
	m, _ = c.w.recv(3*time.Second, isReq("INFO"))
	c.w.send(response(m.(*sipgo.Request), 415, "Unsupported Media Type"), c.src)
	var se *sip.StatusError
	if err := <-errc; !errors.As(err, &se) || se.Code != 415 {
		t.Fatalf("INFO answered 415: %v", err)
	}
	if err := c.d.SendDTMFInfo(context.Background(), 'x', 0); !errors.Is(err, sip.ErrBadDigit) {
		t.Fatalf("bad digit: %v", err)
	}

	for _, in := range []struct{ ct, body string }{
		{"application/dtmf-relay", "Signal=1\nDuration=300\n"},
		{"application/dtmf", "9"},
		{"text/plain", "hello"},
		{"application/dtmf-relay", "Signal=16\nDuration=100\n"},
	} {
		if res := c.do("INFO", in.body, "Content-Type: "+in.ct+"\n"); res.StatusCode != 200 {
			t.Fatalf("INFO %s answered %d", in.ct, res.StatusCode)
		}
	}
	if g := got.get(); g != "1:300ms 9:250ms" {
		t.Fatalf("OnDTMF got %q", g)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(infoBodies) != 4 {
		t.Fatalf("OnInfo saw %v", infoBodies)
	}
}

// TestInfoDTMFWithPBXSim: SIP INFO digits both ways with the PBX simulator
// in its INFO mode (no telephone-event in its SDP).
func TestInfoDTMFWithPBXSim(t *testing.T) {
	p := startPBX(t, pbx.Config{DTMFInfo: true, NoTelephoneEvent: true})
	u := newUA(t)
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	call := nextCall(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ans, err := d.WaitAnswer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ans.DTMFPT != -1 {
		t.Fatalf("answer has telephone-event %d", ans.DTMFPT)
	}
	var got digitLog
	d.OnDTMF(got.add)
	call.SendDTMF("12#", 120*time.Millisecond, 50*time.Millisecond)
	waitFor(t, func() bool { return got.get() == "1:120ms 2:120ms #:120ms" }, "INFO digits: got "+got.get())
	for _, r := range "4*7" {
		if err := d.SendDTMFInfo(ctx, r, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	var s []string
	for _, dg := range call.InfoDigits() {
		s = append(s, string(dg.Rune)+":"+dg.Duration.String())
	}
	if strings.Join(s, " ") != "4:200ms *:200ms 7:200ms" {
		t.Fatalf("PBX got INFO digits %v", s)
	}
	if err := d.Bye(ctx, sip.Reason{}); err != nil {
		t.Fatal(err)
	}
}
