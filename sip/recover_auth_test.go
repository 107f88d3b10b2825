package sip_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// TestByeFromStateChallenged: the PBX challenges the recovery BYE with 401.
// With the trunk's credentials the new process answers once, in a new BYE
// with the next CSeq and a valid digest over the BYE's Request-URI (RFC 3261
// §22.2, RFC 2617 qop=auth), and gets the 200; without a password the 401
// is returned as is and no second BYE is sent. The state names its trunk.
func TestByeFromStateChallenged(t *testing.T) {
	for _, withCreds := range []bool{true, false} {
		t.Run(fmt.Sprintf("credentials=%v", withCreds), func(t *testing.T) {
			u := newUA(t)
			w := newWire(t, nil)
			trunk := &sip.Trunk{Name: "pbx1", Address: fmt.Sprintf("127.0.0.1:%d", w.port()), Codecs: []string{"PCMU"}}
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			m, src := w.recv(3*time.Second, isReq("INVITE"))
			w.send(answer200(m.(*sipgo.Request), "uas1", w.port(), 40010, ""), src)
			w.recv(3*time.Second, isReq("ACK"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := d.WaitAnswer(ctx); err != nil {
				t.Fatal(err)
			}
			st, ok := d.State()
			if !ok || st.Trunk != "pbx1" {
				t.Fatalf("state %+v ok=%v: want the trunk's name", st, ok)
			}
			u.Close() // the crash

			cred := &sip.Trunk{Name: "pbx1", Username: "ponte"}
			if withCreds {
				cred.Password = "s3cret"
			}
			type result struct {
				code int
				err  error
			}
			done := make(chan result, 1)
			u2 := newUA(t)
			go func() {
				code, err := u2.ByeFromState(ctx, st, sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}, cred)
				done <- result{code, err}
			}()
			m, src = w.recv(3*time.Second, isReq("BYE"))
			bye1 := m.(*sipgo.Request)
			if bye1.GetHeader("Authorization") != nil {
				t.Fatal("the first BYE carried credentials before any challenge")
			}
			ch := response(bye1, 401, "Unauthorized")
			ch = ch[:len(ch)-len("Content-Length: 0\n\n")] + `WWW-Authenticate: Digest realm="pbx", nonce="n0nce", qop="auth"` + "\nContent-Length: 0\n\n"
			w.send(ch, src)
			if !withCreds {
				if r := <-done; r.err != nil || r.code != 401 {
					t.Fatalf("ByeFromState without a password = %d, %v; want 401", r.code, r.err)
				}
				if m, _ := w.recvQuiet(500*time.Millisecond, isReq("BYE")); m != nil {
					t.Fatal("a second BYE without credentials to answer the challenge")
				}
				return
			}
			m, src = w.recv(3*time.Second, isReq("BYE"))
			bye2 := m.(*sipgo.Request)
			if bye2.CSeq().SeqNo != bye1.CSeq().SeqNo+1 || bye2.CallID().Value() != bye1.CallID().Value() {
				t.Errorf("second BYE CSeq %d Call-ID %s, want CSeq %d and the same Call-ID", bye2.CSeq().SeqNo, bye2.CallID().Value(), bye1.CSeq().SeqNo+1)
			}
			h := bye2.GetHeader("Authorization")
			if h == nil {
				t.Fatal("the second BYE has no Authorization")
			}
			c, err := digest.ParseCredentials(h.Value())
			if err != nil {
				t.Fatal(err)
			}
			want := digestResponse("", "ponte", "pbx", "s3cret", "BYE", bye2.Recipient.String(), "n0nce", fmt.Sprintf("%08x", c.Nc), c.Cnonce, "auth")
			if c.Username != "ponte" || c.Realm != "pbx" || c.URI != bye2.Recipient.String() || c.QOP != "auth" || c.Response != want {
				t.Errorf("Authorization %q: want user ponte, realm pbx, uri %s, qop auth and response %s", h.Value(), bye2.Recipient.String(), want)
			}
			w.send(response(bye2, 200, "OK"), src)
			if r := <-done; r.err != nil || r.code != 200 {
				t.Fatalf("ByeFromState = %d, %v; want 200", r.code, r.err)
			}
		})
	}
}

// TestByeFromStateTLS: a dialog on a TLS trunk with a private CA, a client
// certificate the PBX demands and a server name is ended from its state by
// a new UA: with the trunk, the BYE goes over a connection made with the
// trunk's own TLS settings and the PBX's call ends; without it (a trunk
// removed from the config since the crash) sipgo's default dial cannot
// verify the PBX, the BYE fails with an error and the PBX's call goes on.
func TestByeFromStateTLS(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1", "pbx.test")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := tlsPBX(t, pki, pbx.SRTPAccept, true)
	u := tlsUA(t, pki)
	trunk := &sip.Trunk{
		Name: "secure", Address: p.Addr().String(), Transport: "tls", Codecs: []string{"PCMU"},
		TLS: &sip.TLSConfig{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, ServerName: "pbx.test"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "+5511999", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	call, err := p.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	st, ok := d.State()
	if !ok || st.Transport != "TLS" || st.Trunk != "secure" {
		t.Fatalf("state %+v ok=%v", st, ok)
	}
	u.Close() // the crash
	reason := sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}

	bare := tlsUA(t, pki)
	if code, err := bare.ByeFromState(ctx, st, reason, nil); err == nil {
		t.Fatalf("ByeFromState without the trunk = %d, nil: want an error (the PBX's private CA is unknown to the default dial)", code)
	}
	select {
	case <-call.Ended():
		t.Fatal("the PBX's call ended although no BYE could reach it")
	default:
	}

	code, err := tlsUA(t, pki).ByeFromState(ctx, st, reason, trunk)
	if err != nil || code != 200 {
		t.Fatalf("ByeFromState with the trunk = %d, %v", code, err)
	}
	waitClosed(t, call.Ended(), "the PBX call to end")
	if call.EndedBy() != "bye" || call.ByeReason() != reason.String() {
		t.Fatalf("PBX call ended by %q reason %q", call.EndedBy(), call.ByeReason())
	}
}

// earlyState waits for d's early state (a provisional response came).
func earlyState(t *testing.T, d *sip.Dialog) sip.DialogState {
	t.Helper()
	var st sip.DialogState
	waitFor(t, func() bool {
		var ok bool
		st, ok = d.EarlyState()
		return ok
	}, "the early state after the 180")
	return st
}

// cancelledAfterCrash plays a crash while the PBX rings: a UA dials the
// wire PBX, gets its 180 (To tag ring1) and dies; a new UA cancels the
// INVITE from the early state, and the wire answers the CANCEL 200. It
// returns the INVITE and the address the wire answers the INVITE at (the
// Via of the original INVITE: the UA's listener).
func cancelledAfterCrash(t *testing.T) (*wire, *sipgo.Request, *net.UDPAddr) {
	t.Helper()
	u := newUA(t)
	d, w, inv, src := dialWire(t, u)
	w.send(provisional(inv, 180, "Ringing", "ring1"), src)
	st := earlyState(t, d)
	u.Close() // the crash

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u2 := newUA(t)
	done := make(chan int, 1)
	go func() {
		code, _ := u2.CancelFromState(ctx, st, sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}, nil)
		done <- code
	}()
	m, from := w.recv(3*time.Second, isReq("CANCEL"))
	w.send(response(m.(*sipgo.Request), 200, "OK"), from)
	if code := <-done; code != 200 {
		t.Fatalf("CancelFromState = %d, want 200", code)
	}
	return w, inv, from
}

// TestCancelFromStateAcks487: after a crash while the PBX rang, the new UA
// cancels the INVITE from its state; the PBX answers the CANCEL 200 and the
// INVITE 487, and the new UA ACKs that 487 (and its retransmission) as the
// INVITE's client transaction would have (RFC 3261 §17.1.1.3): the INVITE's
// Request-URI, branch, From, Call-ID and CSeq number, the 487's To tag.
func TestCancelFromStateAcks487(t *testing.T) {
	w, inv, from := cancelledAfterCrash(t)
	// The 487 goes where the INVITE's Via says: the original INVITE's
	// response path (the UA's listener, with rport).
	r487 := strings.Replace(response(inv, 487, "Request Terminated"), "tag=uas1", "tag=ring1", 1)
	branch, _ := inv.Via().Params.Get("branch")
	for i := range 2 { // the 487 and one retransmission: each gets its ACK
		w.send(r487, from)
		m, _ := w.recv(3*time.Second, isReq("ACK"))
		ack := m.(*sipgo.Request)
		ab, _ := ack.Via().Params.Get("branch")
		tag, _ := ack.To().Params.Get("tag")
		if ack.Recipient.String() != inv.Recipient.String() || ab != branch || ack.CallID().Value() != inv.CallID().Value() ||
			ack.CSeq().SeqNo != inv.CSeq().SeqNo || ack.CSeq().MethodName != sipgo.ACK || tag != "ring1" ||
			ack.From().String() != inv.From().String() {
			t.Fatalf("ACK %d:\n%s\nwant it to match the INVITE:\n%s", i, ack.String(), inv.String())
		}
	}
}

// TestCancelFromState2xxCrossed: the agent answered just as ponte died, so
// the PBX's 200 crosses the new process's recovery CANCEL (RFC 3261 §9.1:
// the CANCEL then has no effect, the dialog stands). The new UA ACKs the 200
// as a 2xx (§13.2.2.4: new branch, Request-URI the Contact, Route from the
// Record-Route, the INVITE's CSeq number), ACKs its retransmission again,
// and BYEs the dialog once with the CANCEL's Reason; without this the agent
// hears silence until the PBX gives up after 64*T1 (§13.3.1.4).
func TestCancelFromState2xxCrossed(t *testing.T) {
	w, inv, from := cancelledAfterCrash(t)
	rr := fmt.Sprintf("<sip:edge@127.0.0.1:%d;lr>", w.port())
	ok := strings.Replace(answer200(inv, "ans1", w.port(), 40010, "Record-Route: "+rr+"\n"), "sip:uas@", "sip:agent@", 1)
	invBranch, _ := inv.Via().Params.Get("branch")
	w.send(ok, from)
	w.send(ok, from) // a retransmission: ACKed again, not BYEd again
	var acks int
	var bye *sipgo.Request
	for acks < 2 || bye == nil {
		m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool { return isReq("ACK")(m) || isReq("BYE")(m) })
		r := m.(*sipgo.Request)
		tag, _ := r.To().Params.Get("tag")
		br, _ := r.Via().Params.Get("branch")
		route := r.GetHeader("Route")
		if tag != "ans1" || r.Recipient.User != "agent" || r.CallID().Value() != inv.CallID().Value() || route == nil || route.Value() != rr {
			t.Fatalf("%s to the wrong dialog or path: Request-URI %s, To tag %q, Route %v:\n%s", r.Method, r.Recipient.String(), tag, route, r.String())
		}
		switch r.Method {
		case sipgo.ACK:
			if r.CSeq().SeqNo != inv.CSeq().SeqNo || br == invBranch {
				t.Fatalf("ACK CSeq %d (want %d) branch %q (must be a new transaction, not %q)", r.CSeq().SeqNo, inv.CSeq().SeqNo, br, invBranch)
			}
			acks++
		case sipgo.BYE:
			if bye != nil {
				t.Fatal("a second BYE for the same 2xx")
			}
			if r.CSeq().SeqNo <= inv.CSeq().SeqNo || !strings.Contains(hdr(r, "Reason"), "cause=500") {
				t.Fatalf("BYE CSeq %d Reason %q", r.CSeq().SeqNo, hdr(r, "Reason"))
			}
			bye = r
			w.send(response(r, 200, "OK"), from)
		}
	}
	if m, _ := w.recvQuiet(time.Second, isReq("BYE")); m != nil {
		t.Fatalf("a second BYE:\n%s", m)
	}
}
