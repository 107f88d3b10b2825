package sip_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// TestRefer: a REFER inside the dialog reaches the handler with its target;
// accepted it gets 202 and NotifyRefer sends NOTIFYs with message/sipfrag
// (the final one ends the subscription); refused it gets the handler's code;
// two Refer-To headers get 400 (RFC 3515 §2.4.1).
func TestRefer(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port()), Codecs: []string{"PCMU"}}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	w.send(answerOK(inv, w.port(), 40010), src)
	w.recv(3*time.Second, isReq("ACK"))
	if _, err := d.WaitAnswer(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan sip.Refer, 4)
	d.OnRefer(func(r sip.Refer) (int, string) {
		got <- r
		if strings.Contains(r.ReferTo, "9999") {
			return 403, "Forbidden (transfer target not allowed)"
		}
		return 0, ""
	}, nil)
	cseq := 30
	refer := func(referTo ...string) *sipgo.Response {
		t.Helper()
		cseq++
		var rt string
		for _, v := range referTo {
			rt += "Refer-To: " + v + "\n"
		}
		msg := fmt.Sprintf("REFER sip:caller@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-ref%d\nFrom: %s;tag=uas1\nTo: %s\nCall-ID: %s\nCSeq: %d REFER\nContact: <sip:uas@127.0.0.1:%d>\n%sReferred-By: <sip:1000@pbx>\nContent-Length: 0\n\n",
			w.port(), cseq, strings.TrimPrefix(inv.To().String(), "To: "), strings.TrimPrefix(inv.From().String(), "From: "), d.CallID(), cseq, w.port(), rt)
		w.send(msg, udpAddr(u))
		m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool {
			r, ok := m.(*sipgo.Response)
			return ok && r.StatusCode >= 200 && r.CSeq().MethodName == "REFER"
		})
		return m.(*sipgo.Response)
	}

	if res := refer("<sip:2000@pbx.example.com?Foo=bar>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d, want 202", res.StatusCode)
	}
	if r := <-got; r.ReferTo != "sip:2000@pbx.example.com" || r.ReferredBy != "<sip:1000@pbx>" {
		t.Errorf("handler got %+v", r)
	}
	for _, tc := range []struct {
		code  int
		state string
	}{{100, "active"}, {200, "terminated"}} {
		errc := make(chan error, 1)
		go func() {
			errc <- d.NotifyRefer(context.Background(), tc.code, map[int]string{100: "Trying", 200: "OK"}[tc.code])
		}()
		m, src := w.recv(3*time.Second, isReq("NOTIFY"))
		n := m.(*sipgo.Request)
		if ev := n.GetHeader("Event"); ev == nil || ev.Value() != "refer" {
			t.Errorf("NOTIFY Event %v", ev)
		}
		if ss := n.GetHeader("Subscription-State"); ss == nil || !strings.HasPrefix(ss.Value(), tc.state) {
			t.Errorf("NOTIFY Subscription-State %v, want %s", ss, tc.state)
		}
		if want := fmt.Sprintf("SIP/2.0 %d ", tc.code); !strings.HasPrefix(string(n.Body()), want) || n.ContentType().Value() != "message/sipfrag;version=2.0" {
			t.Errorf("NOTIFY body %q (%v)", n.Body(), n.ContentType())
		}
		w.send(response(n, 200, "OK"), src)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if res := refer("<sip:9999@pbx.example.com>"); res.StatusCode != 403 {
		t.Errorf("a refused REFER answered %d, want 403", res.StatusCode)
	}
	<-got
	if res := refer("<sip:1@a>", "<sip:2@b>"); res.StatusCode != 400 {
		t.Errorf("two Refer-To answered %d, want 400", res.StatusCode)
	}
	if res := refer("<sip:3@a?Replaces=abc%3Bto-tag%3Dx>"); res.StatusCode != 501 {
		t.Errorf("attended transfer (Replaces) answered %d, want 501", res.StatusCode)
	}
}
