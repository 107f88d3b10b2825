package sip_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// resp is a response to req with extra header lines and an optional SDP
// body; a To without tag gets tag=uas1.
func resp(req *sipgo.Request, contactPort, code int, reason, extra, sdp string) string {
	to := req.To().String()
	if code > 100 && !strings.Contains(to, "tag=") {
		to += ";tag=uas1"
	}
	ct := ""
	if sdp != "" {
		ct = "Content-Type: application/sdp\n"
	}
	return fmt.Sprintf("SIP/2.0 %d %s\n%s\n%s\n%s\n%s\n%s\nContact: <sip:uas@127.0.0.1:%d>\n%s%sContent-Length: %d\n\n%s",
		code, reason, req.Via().String(), req.From().String(), to, req.CallID().String(), req.CSeq().String(),
		contactPort, extra, ct, wireLen(sdp), sdp)
}

func hdr(m interface{ GetHeader(string) sipgo.Header }, name string) string {
	if h := m.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// TestSessionTimerPonteRefreshes: the 200 makes ponte the refresher
// (refresher=uac): it refreshes at half the interval (RFC 4028 §7.2, §10),
// with UPDATE when the PBX allows it, else a re-INVITE offering the same
// SDP with the same o= version (RFC 3264 §8), which it ACKs.
func TestSessionTimerPonteRefreshes(t *testing.T) {
	for _, tc := range []struct {
		name, allow, method string
	}{
		{"re-INVITE", "Allow: INVITE, ACK, BYE, CANCEL\n", "INVITE"},
		{"UPDATE", "Allow: INVITE, ACK, BYE, CANCEL, UPDATE\n", "UPDATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 2;refresher=uac\nRequire: timer\n"+tc.allow)
			answered := time.Now()
			if se, us := c.d.SessionInterval(); se != 2*time.Second || !us {
				t.Fatalf("SessionInterval %v %v, want 2s and ponte refreshing", se, us)
			}
			prev := answered
			for i := 0; i < 2; i++ {
				m, _ := c.w.recv(3*time.Second, isReq(tc.method))
				got := time.Now()
				r := m.(*sipgo.Request)
				if d := got.Sub(prev); d < 800*time.Millisecond {
					t.Fatalf("refresh %d after %v, want about half the 2 s interval", i, d)
				}
				prev = got
				if v := hdr(r, "Session-Expires"); v != "2;refresher=uac" {
					t.Fatalf("refresh Session-Expires %q", v)
				}
				if !strings.Contains(hdr(r, "Supported"), "timer") || r.CSeq().SeqNo <= c.inv.CSeq().SeqNo {
					t.Fatalf("refresh headers:\n%s", r.String())
				}
				if tag, _ := r.To().Params.Get("tag"); tag != "uas1" || r.Recipient.User != "uas" {
					t.Fatalf("refresh not in the dialog: %s", r.StartLine())
				}
				sdp := ""
				if tc.method == "INVITE" {
					if string(r.Body()) != string(c.inv.Body()) {
						t.Fatalf("refresh offer differs from the last SDP:\n%s\nvs\n%s", r.Body(), c.inv.Body())
					}
					sdp = sdpBody("127.0.0.1", 40010, 1, "", 0, 101)
				} else if len(r.Body()) != 0 {
					t.Fatalf("UPDATE refresh with a body: %q", r.Body())
				}
				c.w.send(resp(r, c.w.port(), 200, "OK", "Session-Expires: 2;refresher=uac\nRequire: timer\n", sdp), c.src)
				if tc.method == "INVITE" {
					m, _ := c.w.recv(3*time.Second, isReq("ACK"))
					if m.(*sipgo.Request).CSeq().SeqNo != r.CSeq().SeqNo {
						t.Fatalf("ACK CSeq %d for INVITE %d", m.(*sipgo.Request).CSeq().SeqNo, r.CSeq().SeqNo)
					}
				}
			}
			select {
			case <-c.d.Done():
				t.Fatalf("dialog ended: %v", c.d.Err())
			default:
			}
			if n := len(c.states.get()); n != 0 {
				t.Fatalf("a refresh with the same SDP reported %d media changes", n)
			}
		})
	}
}

// TestSessionTimerPBXRefreshes: refresher=uas makes the PBX the refresher;
// without its refresh ponte sends BYE at interval - min(32 s, interval/3)
// (RFC 4028 §10) and the dialog ends with ErrSessionExpired; a refresh
// (re-INVITE or UPDATE) restarts the interval.
func TestSessionTimerPBXRefreshes(t *testing.T) {
	t.Run("no refresh", func(t *testing.T) {
		c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 3;refresher=uas\n")
		start := time.Now()
		m, _ := c.w.recv(5*time.Second, isReq("BYE"))
		if el := time.Since(start); el < 1800*time.Millisecond {
			t.Fatalf("BYE after %v, want about 2 s (3 s - 1 s)", el)
		}
		bye := m.(*sipgo.Request)
		if hdr(bye, "Reason") != `Q.850;cause=102;text="Session timer expired"` {
			t.Fatalf("BYE Reason %q", hdr(bye, "Reason"))
		}
		c.w.send(response(bye, 200, "OK"), c.src)
		waitClosed(t, c.d.Done(), "dialog end")
		if !errors.Is(c.d.Err(), sip.ErrSessionExpired) {
			t.Fatalf("Err %v", c.d.Err())
		}
	})
	for _, method := range []string{"UPDATE", "INVITE"} {
		t.Run("refreshed by "+method, func(t *testing.T) {
			c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 3;refresher=uas\n", func(cfg *sip.Config) { cfg.MinSE = time.Second })
			for i := 0; i < 3; i++ {
				time.Sleep(time.Second)
				body := ""
				if method == "INVITE" {
					body = sdpBody("127.0.0.1", 40010, 1, "", 0, 101)
				}
				res := c.do(method, body, "Supported: timer\nSession-Expires: 3\n")
				if method == "INVITE" {
					c.ack(c.cseq, "")
				}
				if res.StatusCode != 200 || hdr(res, "Session-Expires") != "3;refresher=uac" || hdr(res, "Require") != "timer" {
					t.Fatalf("refresh answered %d, Session-Expires %q Require %q", res.StatusCode, hdr(res, "Session-Expires"), hdr(res, "Require"))
				}
			}
			// 3.x s in: without the refreshes the BYE would have come at 2 s.
			if m, _ := c.w.recvQuiet(300*time.Millisecond, isReq("BYE")); m != nil {
				t.Fatal("BYE although the PBX refreshed")
			}
			if se, us := c.d.SessionInterval(); se != 3*time.Second || us {
				t.Fatalf("SessionInterval %v %v", se, us)
			}
		})
	}
}

// TestSessionExpiresInPBXRequest: RFC 4028 §9 answers to a PBX re-INVITE's
// Session-Expires: below Min-SE 422 with Min-SE; the refresher the PBX
// names, or uac (the PBX) when it supports timers and leaves the choice.
func TestSessionExpiresInPBXRequest(t *testing.T) {
	tests := []struct {
		name, hdrs string
		minSE      time.Duration
		code       int
		se, req    string
		interval   time.Duration
		weRefresh  bool
	}{
		{"too small", "Session-Expires: 30\nSupported: timer\n", 0, 422, "", "", 0, false},
		{"choice left, timer supported", "Session-Expires: 120\nSupported: timer\n", 0, 200, "120;refresher=uac", "timer", 120 * time.Second, false},
		{"choice left, compact form", "x: 120\nk: timer\n", 0, 200, "120;refresher=uac", "timer", 120 * time.Second, false},
		{"choice left, no timer support", "Session-Expires: 120\n", 0, 200, "120;refresher=uas", "", 120 * time.Second, true},
		{"ponte asked to refresh", "Session-Expires: 100;refresher=uas\nSupported: timer\n", 0, 200, "100;refresher=uas", "", 100 * time.Second, true},
		{"lower Min-SE configured", "Session-Expires: 30;refresher=uac\n", 10 * time.Second, 200, "30;refresher=uac", "timer", 30 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startWireCall(t, []string{"PCMU"}, "", func(cfg *sip.Config) { cfg.MinSE = tc.minSE })
			res := c.do("INVITE", sdpBody("127.0.0.1", 40010, 1, "", 0, 101), tc.hdrs)
			if res.StatusCode != tc.code {
				t.Fatalf("answered %d, want %d", res.StatusCode, tc.code)
			}
			if tc.code == 422 {
				if hdr(res, "Min-SE") != "90" {
					t.Fatalf("422 Min-SE %q, want 90", hdr(res, "Min-SE"))
				}
				return
			}
			c.ack(c.cseq, "")
			if hdr(res, "Session-Expires") != tc.se || hdr(res, "Require") != tc.req {
				t.Fatalf("Session-Expires %q Require %q, want %q %q", hdr(res, "Session-Expires"), hdr(res, "Require"), tc.se, tc.req)
			}
			if iv, us := c.d.SessionInterval(); iv != tc.interval || us != tc.weRefresh {
				t.Fatalf("SessionInterval %v %v, want %v %v", iv, us, tc.interval, tc.weRefresh)
			}
		})
	}
}

// dialWire dials a wire PBX and returns the first INVITE.
func dialWire(t *testing.T, u *sip.UA) (*sip.Dialog, *wire, *sipgo.Request, *net.UDPAddr) {
	t.Helper()
	w := newWire(t, nil)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port()), Codecs: []string{"PCMU"}}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	return d, w, m.(*sipgo.Request), src
}

// TestInvite422: RFC 4028 §7.4: a 422 to the INVITE is retried once with the
// Min-SE it gives (new CSeq and branch, same Call-ID and tags) and a
// Session-Expires at least that large; a second 422 fails the call.
func TestInvite422(t *testing.T) {
	for _, second := range []int{200, 422} {
		t.Run(fmt.Sprint(second), func(t *testing.T) {
			u := newUA(t)
			d, w, inv, src := dialWire(t, u)
			if hdr(inv, "Supported") != "timer" || hdr(inv, "Session-Expires") != "1800" || inv.GetHeader("Min-SE") != nil {
				t.Fatalf("INVITE: Supported %q Session-Expires %q Min-SE %v", hdr(inv, "Supported"), hdr(inv, "Session-Expires"), inv.GetHeader("Min-SE"))
			}
			w.send(resp(inv, w.port(), 422, "Session Interval Too Small", "Min-SE: 3600\n", ""), src)
			w.recv(3*time.Second, isReq("ACK")) // transaction-level ACK of the 422
			m, _ := w.recv(3*time.Second, isReq("INVITE"))
			inv2 := m.(*sipgo.Request)
			if inv2.CSeq().SeqNo != inv.CSeq().SeqNo+1 || inv2.CallID().Value() != inv.CallID().Value() ||
				inv2.From().Value() != inv.From().Value() || inv2.Via().Params.GetOr("branch", "") == inv.Via().Params.GetOr("branch", "") {
				t.Fatalf("retry is not a new transaction of the same call:\n%s", inv2.String())
			}
			if hdr(inv2, "Session-Expires") != "3600" || hdr(inv2, "Min-SE") != "3600" {
				t.Fatalf("retry Session-Expires %q Min-SE %q", hdr(inv2, "Session-Expires"), hdr(inv2, "Min-SE"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if second == 422 {
				w.send(resp(inv2, w.port(), 422, "Session Interval Too Small", "Min-SE: 7200\n", ""), src)
				_, err := d.WaitAnswer(ctx)
				var se *sip.StatusError
				if !errors.As(err, &se) || se.Code != 422 || !errors.Is(err, sip.ErrIntervalTooSmall) {
					t.Fatalf("WaitAnswer: %v", err)
				}
				return
			}
			w.send(answer200(inv2, "uas1", w.port(), 40010, "Session-Expires: 3600;refresher=uas\n"), src)
			w.recv(3*time.Second, isReq("ACK"))
			if _, err := d.WaitAnswer(ctx); err != nil {
				t.Fatal(err)
			}
			if iv, us := d.SessionInterval(); iv != time.Hour || us {
				t.Fatalf("SessionInterval %v %v", iv, us)
			}
			go func() {
				m, _ := w.recvQuiet(2*time.Second, isReq("BYE"))
				if m != nil {
					w.send(response(m.(*sipgo.Request), 200, "OK"), src)
				}
			}()
			d.Bye(ctx, sip.Reason{})
		})
	}
}

// TestInviteExtensionRequired: 420 and 421 (a PBX that requires 100rel,
// which ponte never advertises) are a *StatusError matching
// ErrExtensionRequired, with the option tags named.
func TestInviteExtensionRequired(t *testing.T) {
	for _, tc := range []struct {
		code        int
		reason, hdr string
	}{
		{420, "Bad Extension", "Unsupported: foo, bar\n"},
		{421, "Extension Required", "Require: 100rel\n"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			u := newUA(t)
			d, w, inv, src := dialWire(t, u)
			if strings.Contains(inv.String(), "100rel") || inv.GetHeader("Require") != nil {
				t.Fatalf("INVITE advertises or requires 100rel:\n%s", inv.String())
			}
			w.send(resp(inv, w.port(), tc.code, tc.reason, tc.hdr, ""), src)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err := d.WaitAnswer(ctx)
			var se *sip.StatusError
			if !errors.As(err, &se) || se.Code != tc.code || !errors.Is(err, sip.ErrExtensionRequired) {
				t.Fatalf("WaitAnswer: %v", err)
			}
			want := map[int]string{420: "foo,bar", 421: "100rel"}[tc.code]
			if strings.Join(se.Extensions, ",") != want {
				t.Fatalf("Extensions %v, want %s", se.Extensions, want)
			}
		})
	}
}

// TestRefreshAnswers: ponte's refresh answered 491 is retried after
// 2.1-4 s (RFC 3261 §14.1); answered 481 ends the call with a BYE
// (RFC 4028 §10) and ErrRefreshFailed.
func TestRefreshAnswers(t *testing.T) {
	c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 10;refresher=uac\n")
	m, _ := c.w.recv(7*time.Second, isReq("INVITE"))
	c.w.send(resp(m.(*sipgo.Request), c.w.port(), 491, "Request Pending", "", ""), c.src)
	at := time.Now()
	m, _ = c.w.recv(6*time.Second, isReq("INVITE"))
	if el := time.Since(at); el < 2*time.Second || el > 4500*time.Millisecond {
		t.Fatalf("retry after 491 came after %v, want 2.1-4 s", el)
	}
	c.w.send(resp(m.(*sipgo.Request), c.w.port(), 481, "Call/Transaction Does Not Exist", "", ""), c.src)
	m, _ = c.w.recv(3*time.Second, isReq("BYE"))
	c.w.send(response(m.(*sipgo.Request), 200, "OK"), c.src)
	waitClosed(t, c.d.Done(), "dialog end")
	if !errors.Is(c.d.Err(), sip.ErrRefreshFailed) {
		t.Fatalf("Err %v", c.d.Err())
	}
}

func TestParseSessionExpires(t *testing.T) {
	tests := []struct {
		in   string
		secs int
		ref  string
		ok   bool
	}{
		{"1800", 1800, "", true},
		{"90;refresher=uac", 90, "uac", true},
		{" 120 ; REFRESHER = UAS ;x=y", 120, "uas", true},
		{"90;refresher=other", 90, "", true},
		{"", 0, "", false},
		{"-5", 0, "", false},
		{"0", 0, "", false},
		{"abc;refresher=uac", 0, "", false},
		{"99999999999999999999", 0, "", false},
	}
	for _, tc := range tests {
		s, r, ok := sip.ParseSessionExpires(tc.in)
		if s != tc.secs || r != tc.ref || ok != tc.ok {
			t.Errorf("%q: %d %q %v, want %d %q %v", tc.in, s, r, ok, tc.secs, tc.ref, tc.ok)
		}
	}
}

func FuzzParseSessionExpires(f *testing.F) {
	for _, s := range []string{"1800", "90;refresher=uac", "x;;=", "1;refresher="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, r, ok := sip.ParseSessionExpires(s)
		if ok && (n <= 0 || (r != "" && r != "uac" && r != "uas")) {
			t.Fatalf("%q: %d %q", s, n, r)
		}
	})
}
