package sip_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// TestUASSessionTimer: an INVITE with Session-Expires is answered with it
// (RFC 4028 §9): the PBX refreshes (refresher=uac, Require: timer) when it
// supports timers and left the choice, ponte when the PBX asked it to or
// cannot.
func TestUASSessionTimer(t *testing.T) {
	tests := []struct {
		name, extra  string
		wantSE       string
		wantRequire  bool
		weRefresh    bool
		wantInterval time.Duration
	}{
		{"PBX refreshes", "Supported: timer\nSession-Expires: 1800\n", "1800;refresher=uac", true, false, 1800 * time.Second},
		{"PBX asks ponte", "Supported: timer\nSession-Expires: 600;refresher=uas\nMin-SE: 90\n", "600;refresher=uas", false, true, 600 * time.Second},
		{"PBX without timer support", "Session-Expires: 900\n", "900;refresher=uas", false, true, 900 * time.Second},
		{"no session timer", "Supported: timer\n", "", false, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := lanServer(t)
			p := newPBXLeg(t, u)
			p.invite(sdpBody("127.0.0.1", 40100, 1, "", 0), tc.extra, false)
			c := nextIncoming(t, calls)
			d, err := c.Answer(context.Background(), sip.AnswerOptions{Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			res := p.status(200)
			p.ack(toTag(res), "", true)
			if got := hdr(res, "Session-Expires"); got != tc.wantSE {
				t.Fatalf("Session-Expires %q, want %q", got, tc.wantSE)
			}
			if got := strings.Contains(hdr(res, "Require"), "timer"); got != tc.wantRequire {
				t.Fatalf("Require %q", hdr(res, "Require"))
			}
			if iv, we := d.SessionInterval(); iv != tc.wantInterval || we != tc.weRefresh {
				t.Fatalf("interval %v ponte refreshes %v", iv, we)
			}
			seq := p.request("BYE", toTag(res), "", "", "")
			p.final(seq, "BYE")
		})
	}
}

// TestUASEarlyMedia: a 183 with the SDP answer points the RTP session at
// the PBX before the answer, and the 200 repeats the very same SDP.
func TestUASEarlyMedia(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite(sdpBody("127.0.0.1", 40400, 1, "", 8, 0, 101), "", false)
	c := nextIncoming(t, calls)
	media := newRTP(t, u)
	opt := sip.AnswerOptions{Media: media, Codecs: []string{"PCMU"}}
	md, err := c.EarlyMedia(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if codecList(md) != "PCMU/0" || md.DTMFPT != 101 || media.Remote().Port() != 40400 {
		t.Fatalf("early media %s dtmf %d, RTP to %v", codecList(md), md.DTMFPT, media.Remote())
	}
	r183 := p.status(183)
	if r183.Contact() == nil || len(r183.Body()) == 0 || toTag(r183) == "" {
		t.Fatalf("183 %s", r183.String())
	}
	early := parseAnswer183(t, r183)
	if codecList(early) != "PCMU/0" || early.Addr != media.LocalAddr() {
		t.Fatalf("183 SDP %s at %v", codecList(early), early.Addr)
	}
	d, err := c.Answer(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	r200 := p.status(200)
	p.ack(toTag(r200), "", true)
	if !bytes.Equal(r200.Body(), r183.Body()) || toTag(r200) != toTag(r183) {
		t.Fatalf("200 SDP differs from the 183's:\n%s\n%s", r183.Body(), r200.Body())
	}
	if codecList(d.Answer()) != "PCMU/0" {
		t.Fatalf("dialog media %s", codecList(d.Answer()))
	}
	seq := p.request("BYE", toTag(r200), "", "", "")
	p.final(seq, "BYE")
}

func parseAnswer183(t *testing.T, res *sipgo.Response) *sip.MediaDesc {
	t.Helper()
	md, err := sip.ParseSDP(res.Body())
	if err != nil {
		t.Fatalf("183 SDP: %v", err)
	}
	return md
}

// TestUASNoCodec: an offer without an acceptable codec is answered 488
// with Warning 305 (RFC 3261 §20.43, RFC 3264 §6).
func TestUASNoCodec(t *testing.T) {
	for _, early := range []bool{false, true} {
		u, calls := lanServer(t)
		p := newPBXLeg(t, u)
		p.invite(sdpBody("127.0.0.1", 40100, 1, "", 9, 101), "", false)
		c := nextIncoming(t, calls)
		opt := sip.AnswerOptions{Media: newRTP(t, u), Codecs: []string{"PCMU", "PCMA"}}
		var err error
		if early {
			_, err = c.EarlyMedia(context.Background(), opt)
		} else {
			_, err = c.Answer(context.Background(), opt)
		}
		if !errors.Is(err, sip.ErrNoCodec) {
			t.Fatalf("early=%v: %v, want ErrNoCodec", early, err)
		}
		res := p.final(1, "INVITE")
		p.ack(toTag(res), "", false)
		if res.StatusCode != 488 || !strings.HasPrefix(hdr(res, "Warning"), "305 ") {
			t.Fatalf("got %d Warning %q", res.StatusCode, hdr(res, "Warning"))
		}
		if err := c.Reject(500, "x"); !errors.Is(err, sip.ErrCallFinal) {
			t.Fatalf("Reject after 488: %v", err)
		}
	}
}

// TestUASReject: Reject sanitises the reason phrase and extra headers and
// refuses header names the transaction owns; bad codes are refused.
func TestUASReject(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite("", "", false)
	c := nextIncoming(t, calls)
	if err := c.Reject(200, "OK"); !errors.Is(err, sip.ErrBadStatus) {
		t.Fatalf("Reject(200): %v", err)
	}
	if err := c.Ring(100, "Trying"); !errors.Is(err, sip.ErrBadStatus) {
		t.Fatalf("Ring(100): %v", err)
	}
	err := c.Reject(480, "Temporarily\r\nUnavailable",
		sip.Header{Name: "Retry-After", Value: "30"},
		sip.Header{Name: "Warning", Value: `399 ponte "no permission"`},
		sip.Header{Name: "Reason", Value: "Q.850;cause=21"},
		sip.Header{Name: "Via", Value: "SIP/2.0/UDP 6.6.6.6"},
		sip.Header{Name: "Contact", Value: "<sip:evil@6.6.6.6>"},
		sip.Header{Name: "X-Bad Name", Value: "1"})
	if err != nil {
		t.Fatal(err)
	}
	res := p.final(1, "INVITE")
	p.ack(toTag(res), "", false)
	if res.StatusCode != 480 || strings.ContainsAny(res.Reason, "\r\n") {
		t.Fatalf("status %d %q", res.StatusCode, res.Reason)
	}
	if hdr(res, "Retry-After") != "30" || hdr(res, "Warning") != `399 ponte "no permission"` || hdr(res, "Reason") != "Q.850;cause=21" {
		t.Fatalf("headers missing:\n%s", res.String())
	}
	if len(res.GetHeaders("Via")) != 1 || res.Contact() != nil {
		t.Fatalf("reserved header passed:\n%s", res.String())
	}
	if err := c.Reject(486, "Busy Here"); !errors.Is(err, sip.ErrCallFinal) {
		t.Fatalf("second Reject: %v", err)
	}
}

// TestUASNoAck: without an ACK the 2xx is retransmitted with T1 doubling
// and, after 64*T1, the call is ended with a BYE (RFC 3261 §13.3.1.4);
// shortened timers.
func TestUASNoAck(t *testing.T) {
	sipgo.SetTimers(20*time.Millisecond, 80*time.Millisecond, 100*time.Millisecond)
	t.Cleanup(func() { sipgo.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second) })
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite(sdpBody("127.0.0.1", 40100, 1, "", 0), "", false)
	c := nextIncoming(t, calls)
	d, err := c.Answer(context.Background(), sip.AnswerOptions{Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	oks := 0
	for {
		m, src := p.w.recv(3*time.Second, func(m sipgo.Message) bool {
			if r, ok := m.(*sipgo.Response); ok {
				return r.StatusCode == 200
			}
			return isReq("BYE")(m)
		})
		if r, ok := m.(*sipgo.Request); ok {
			p.w.send(response(r, 200, "OK"), src)
			break
		}
		oks++
	}
	if oks < 4 {
		t.Fatalf("%d copies of the 200 before the BYE, want the first and retransmissions", oks)
	}
	waitClosed(t, d.Done(), "dialog end")
	if !errors.Is(d.Err(), sip.ErrNoAck) {
		t.Fatalf("Err %v, want ErrNoAck", d.Err())
	}
}
