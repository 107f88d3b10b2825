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

// wire is a raw SIP peer over UDP (or TCP) for exact protocol checks.
type wire struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newWire(t *testing.T, to net.Addr) *wire {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wire{t: t, conn: c}
	if to != nil {
		w.to = to.(*net.UDPAddr)
	}
	return w
}

func (w *wire) port() int { return w.conn.LocalAddr().(*net.UDPAddr).Port }

func (w *wire) send(msg string, to *net.UDPAddr) {
	w.t.Helper()
	if to == nil {
		to = w.to
	}
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	if _, err := w.conn.WriteToUDP([]byte(msg), to); err != nil {
		w.t.Fatal(err)
	}
}

// recv returns the next message (skipping ones filter rejects) and its source.
func (w *wire) recv(timeout time.Duration, filter func(sipgo.Message) bool) (sipgo.Message, *net.UDPAddr) {
	w.t.Helper()
	buf := make([]byte, 65535)
	deadline := time.Now().Add(timeout)
	for {
		w.conn.SetReadDeadline(deadline)
		n, from, err := w.conn.ReadFromUDP(buf)
		if err != nil {
			w.t.Fatalf("recv: %v", err)
		}
		m, err := sipgo.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			w.t.Fatalf("parse %q: %v", buf[:n], err)
		}
		if filter == nil || filter(m) {
			return m, from
		}
	}
}

func isReq(method string) func(sipgo.Message) bool {
	return func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Request)
		return ok && string(r.Method) == method
	}
}

func isRes(m sipgo.Message) bool { _, ok := m.(*sipgo.Response); return ok }

func udpAddr(u *sip.UA) *net.UDPAddr { return net.UDPAddrFromAddrPort(u.ListenAddr("udp")) }

func outOfDialog(method string, w *wire, extra string) string {
	return fmt.Sprintf(`%[1]s sip:ponte@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:%[2]d;branch=z9hG4bK-%[1]s-%[3]d
From: <sip:pbx@127.0.0.1>;tag=pbx1
To: <sip:ponte@127.0.0.1>%[4]s
Call-ID: raw-%[1]s-%[3]d@test
CSeq: 1 %[1]s
Max-Forwards: 70
Content-Length: 0

`, method, w.port(), time.Now().UnixNano(), extra)
}

func TestOutOfDialogRequests(t *testing.T) {
	u := newUA(t)
	tests := []struct {
		method, toTag string
		code          int
		headers       map[string]string
	}{
		{"OPTIONS", "", 200, map[string]string{"Allow": "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER", "Accept": "application/sdp"}},
		{"BYE", ";tag=nosuch", 481, nil},
		{"INFO", ";tag=nosuch", 481, nil},
		{"INVITE", "", 501, nil},
		{"INVITE", ";tag=nosuch", 481, nil},
		{"CANCEL", "", 481, nil},
		{"SUBSCRIBE", "", 405, nil},
	}
	for _, tc := range tests {
		t.Run(tc.method+tc.toTag, func(t *testing.T) {
			w := newWire(t, udpAddr(u))
			w.send(outOfDialog(tc.method, w, tc.toTag), nil)
			m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool {
				r, ok := m.(*sipgo.Response)
				return ok && r.StatusCode >= 200
			})
			res := m.(*sipgo.Response)
			if res.StatusCode != tc.code {
				t.Fatalf("%s: got %d %s, want %d", tc.method, res.StatusCode, res.Reason, tc.code)
			}
			for k, v := range tc.headers {
				if h := res.GetHeader(k); h == nil || h.Value() != v {
					t.Fatalf("header %s = %v, want %q", k, h, v)
				}
			}
			if tc.method == "OPTIONS" && res.GetHeader("Supported") == nil {
				t.Fatal("OPTIONS 200 without Supported")
			}
		})
	}
}

func TestOnInviteHook(t *testing.T) {
	u := newUA(t)
	u.OnInvite(func(req *sipgo.Request, tx sipgo.ServerTransaction) {
		tx.Respond(sipgo.NewResponseFromRequest(req, 480, "Temporarily Unavailable", nil))
	})
	w := newWire(t, udpAddr(u))
	w.send(outOfDialog("INVITE", w, ""), nil)
	m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200
	})
	if c := m.(*sipgo.Response).StatusCode; c != 480 {
		t.Fatalf("hook not used: %d", c)
	}
}

// answerOK builds a 200 OK to req with an SDP answer pointing at port.
func answerOK(req *sipgo.Request, contactPort, mediaPort int) string {
	sdp := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", mediaPort)
	return fmt.Sprintf("SIP/2.0 200 OK\n%s\n%s\n%s;tag=uas1\n%s\n%s\nContact: <sip:uas@127.0.0.1:%d>\nContent-Type: application/sdp\nContent-Length: %d\n\n",
		req.Via().String(), req.From().String(), req.To().String(), req.CallID().String(), req.CSeq().String(), contactPort, len(sdp)) + sdp
}

func response(req *sipgo.Request, code int, reason string) string {
	to := req.To().String()
	if code > 100 && !strings.Contains(to, "tag=") {
		to += ";tag=uas1"
	}
	return fmt.Sprintf("SIP/2.0 %d %s\n%s\n%s\n%s\n%s\n%s\nContent-Length: 0\n\n",
		code, reason, req.Via().String(), req.From().String(), to, req.CallID().String(), req.CSeq().String())
}

// TestCancelCrossed200 scripts RFC 3261 §9.1's race on the wire: the 200
// to the INVITE crosses our CANCEL, so we must ACK it and then BYE.
func TestCancelCrossed200(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port())}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	if inv.Recipient.User != "1000" || inv.Recipient.Port != w.port() {
		t.Fatalf("Request-URI %s", inv.Recipient.String())
	}
	w.send(response(inv, 180, "Ringing"), src)

	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(sip.CancelCause{Reason: sip.Reason{Protocol: "Q.850", Cause: 16, Text: "caller hung up"}})
	if _, err := d.WaitAnswer(ctx); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("WaitAnswer: %v", err)
	}
	m, _ = w.recv(3*time.Second, isReq("CANCEL"))
	cr := m.(*sipgo.Request)
	if cr.Via().Params.GetOr("branch", "") != inv.Via().Params.GetOr("branch", "x") || cr.CSeq().SeqNo != inv.CSeq().SeqNo {
		t.Fatalf("CANCEL does not match INVITE: %s", cr.String())
	}
	if h := cr.GetHeader("Reason"); h == nil || h.Value() != `Q.850;cause=16;text="caller hung up"` {
		t.Fatalf("CANCEL Reason %v", h)
	}
	// The 200 to the INVITE "crosses" the CANCEL; then the CANCEL's 200.
	w.send(answerOK(inv, w.port(), 40000), src)
	w.send(response(cr, 200, "OK"), src)

	m, _ = w.recv(3*time.Second, isReq("ACK"))
	ack := m.(*sipgo.Request)
	if tag, _ := ack.To().Params.Get("tag"); tag != "uas1" || ack.CSeq().SeqNo != inv.CSeq().SeqNo {
		t.Fatalf("bad ACK %s", ack.String())
	}
	m, _ = w.recv(3*time.Second, isReq("BYE"))
	bye := m.(*sipgo.Request)
	if bye.Recipient.User != "uas" || bye.CSeq().SeqNo <= inv.CSeq().SeqNo {
		t.Fatalf("bad BYE %s", bye.String())
	}
	w.send(response(bye, 200, "OK"), src)
	select {
	case <-d.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("dialog not done")
	}
}

// TestAckImmediateAndRetransmit2xx: the ACK goes out when the 2xx arrives
// (nobody is in WaitAnswer yet), and a retransmitted 2xx is ACKed again.
func TestAckImmediateAndRetransmit2xx(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port())}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "sip:sales@pbx.example.com", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	if inv.Recipient.Host != "pbx.example.com" || inv.Recipient.User != "sales" {
		t.Fatalf("Request-URI %s", inv.Recipient.String())
	}
	ok := answerOK(inv, w.port(), 40002)
	w.send(ok, src)
	w.recv(3*time.Second, isReq("ACK")) // before anyone called WaitAnswer
	w.send(ok, src)
	w.recv(3*time.Second, isReq("ACK"))
	ans, err := d.WaitAnswer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ans.Addr.Port() != 40002 || media.Remote().Port() != 40002 {
		t.Fatalf("answer %+v remote %v", ans, media.Remote())
	}
	// The PBX hangs up with a Reason.
	bye := fmt.Sprintf("BYE sip:caller@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-bye1\nFrom: %s;tag=uas1\nTo: %s\nCall-ID: %s\nCSeq: 10 BYE\nReason: Q.850;cause=16\nContent-Length: 0\n\n",
		w.port(), strings.TrimPrefix(inv.To().String(), "To: "), strings.TrimPrefix(inv.From().String(), "From: "), d.CallID())
	w.send(bye, udpAddr(u))
	m, _ = w.recv(3*time.Second, isRes)
	if c := m.(*sipgo.Response).StatusCode; c != 200 {
		t.Fatalf("BYE answered %d", c)
	}
	select {
	case <-d.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("dialog not done")
	}
	if !d.RemoteBye() || d.RemoteReason() != "Q.850;cause=16" {
		t.Fatalf("RemoteBye %v reason %q", d.RemoteBye(), d.RemoteReason())
	}
	// A second BYE is for an unknown dialog now.
	w.send(strings.Replace(bye, "bye1", "bye2", 1), udpAddr(u))
	m, _ = w.recv(3*time.Second, isRes)
	if c := m.(*sipgo.Response).StatusCode; c != 481 {
		t.Fatalf("second BYE answered %d, want 481", c)
	}
}

func TestDialErrors(t *testing.T) {
	u := newUA(t)
	tests := []struct {
		name string
		req  sip.DialRequest
		want error
	}{
		{"no trunk", sip.DialRequest{Target: "1"}, sip.ErrConfig},
		{"empty target", sip.DialRequest{Trunk: &sip.Trunk{Address: "127.0.0.1:5060"}}, sip.ErrBadTarget},
		{"crlf target", sip.DialRequest{Trunk: &sip.Trunk{Address: "127.0.0.1:5060"}, Target: "1\r\nX: y"}, sip.ErrBadTarget},
		{"no tls listener", sip.DialRequest{Trunk: &sip.Trunk{Address: "127.0.0.1:5060", Transport: "tls"}, Target: "1"}, sip.ErrConfig},
	}
	for _, tc := range tests {
		if _, err := u.Dial(context.Background(), tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	nu, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer nu.Close()
	if _, err := nu.Dial(context.Background(), sip.DialRequest{Trunk: &sip.Trunk{Address: "127.0.0.1:1"}, Target: "1"}); !errors.Is(err, sip.ErrNotStarted) {
		t.Fatalf("dial before Start: %v", err)
	}
}

// TestCancelBeforeProvisional: RFC 3261 §9.1 forbids a CANCEL before any
// provisional response; it goes out as soon as the first 1xx arrives.
func TestCancelBeforeProvisional(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port())}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if _, err := d.WaitAnswer(ctx); !errors.Is(err, sip.ErrCanceled) || time.Since(start) > time.Second {
		t.Fatalf("WaitAnswer: %v after %v", err, time.Since(start))
	}
	// Only INVITE retransmissions may arrive now, no CANCEL.
	w.conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	buf := make([]byte, 65535)
	for {
		n, _, err := w.conn.ReadFromUDP(buf)
		if err != nil {
			break
		}
		if strings.HasPrefix(string(buf[:n]), "CANCEL") {
			t.Fatal("CANCEL sent before any provisional response")
		}
	}
	w.send(response(inv, 100, "Trying"), src)
	m, _ = w.recv(3*time.Second, isReq("CANCEL"))
	w.send(response(m.(*sipgo.Request), 200, "OK"), src)
	w.send(response(inv, 487, "Request Terminated"), src)
	w.recv(3*time.Second, isReq("ACK")) // transaction-level ACK of the 487
	select {
	case <-d.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("dialog not done after 487")
	}
	if !errors.Is(d.Err(), sip.ErrCanceled) {
		t.Fatalf("Err %v", d.Err())
	}
}

// TestNoResponseTimeout: silence from the trunk ends in ErrTimeout (Timer B),
// here with shortened RFC 3261 timers.
func TestNoResponseTimeout(t *testing.T) {
	sipgo.SetTimers(10*time.Millisecond, 40*time.Millisecond, 50*time.Millisecond)
	t.Cleanup(func() { sipgo.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second) })
	u := newUA(t)
	w := newWire(t, nil)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port())}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.WaitAnswer(ctx); !errors.Is(err, sip.ErrTimeout) {
		t.Fatalf("WaitAnswer: %v", err)
	}
}

// TestReinviteAbsorbed: a PBX re-INVITE (hold, new media port) is answered
// locally with the codec in use, the mirrored direction and a bumped o=
// version, and RTP follows the new address.
func TestReinviteAbsorbed(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port()), Codecs: []string{"PCMA", "PCMU"}}
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
	sdp := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40020 RTP/AVP 0 8\r\na=sendonly\r\n"
	reinv := fmt.Sprintf("INVITE sip:caller@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-reinv\nFrom: %s;tag=uas1\nTo: %s\nCall-ID: %s\nCSeq: 20 INVITE\nContact: <sip:uas@127.0.0.1:%d>\nContent-Type: application/sdp\nContent-Length: %d\n\n",
		w.port(), strings.TrimPrefix(inv.To().String(), "To: "), strings.TrimPrefix(inv.From().String(), "From: "), d.CallID(), w.port(), len(sdp))
	w.send(strings.Replace(reinv, "\n\n", "\n\n"+strings.ReplaceAll(sdp, "\r\n", "\n"), 1), udpAddr(u))
	m, _ = w.recv(3*time.Second, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200
	})
	res := m.(*sipgo.Response)
	if res.StatusCode != 200 {
		t.Fatalf("re-INVITE answered %d", res.StatusCode)
	}
	ans, err := sip.ParseSDP(res.Body())
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Codecs) != 1 || ans.Codecs[0].Name != "PCMU" || ans.Direction != "recvonly" || ans.Addr != media.LocalAddr() {
		t.Fatalf("re-INVITE answer %+v", ans)
	}
	if !strings.Contains(string(res.Body()), fmt.Sprintf("o=ponte %d %d ", sessID(t, inv.Body()), sessID(t, inv.Body())+1)) {
		t.Fatalf("o= version not bumped:\n%s", res.Body())
	}
	if media.Remote().Port() != 40020 {
		t.Fatalf("remote %v, want port 40020", media.Remote())
	}
	byeErr := make(chan error, 1)
	go func() { byeErr <- d.Bye(context.Background(), sip.Reason{Protocol: "SIP", Cause: 200}) }()
	m, _ = w.recv(3*time.Second, isReq("BYE"))
	bye := m.(*sipgo.Request)
	if h := bye.GetHeader("Reason"); h == nil || h.Value() != "SIP;cause=200" || bye.CSeq().SeqNo <= inv.CSeq().SeqNo {
		t.Fatalf("BYE %s", bye.String())
	}
	w.send(response(bye, 200, "OK"), src)
	if err := <-byeErr; err != nil {
		t.Fatal(err)
	}
}

func sessID(t *testing.T, sdp []byte) uint64 {
	t.Helper()
	var id uint64
	for _, l := range strings.Split(string(sdp), "\r\n") {
		if strings.HasPrefix(l, "o=") {
			fmt.Sscanf(strings.Fields(l)[1], "%d", &id)
		}
	}
	return id
}
