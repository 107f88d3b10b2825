package sip_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sip"
)

// reply builds a response to req as a PBX would, with extra header lines
// (Contact, Record-Route...) and an optional SDP body.
func reply(req *sipgo.Request, code int, reason string, extra []string, sdp string) string {
	to := req.To().String()
	if code > 100 && !strings.Contains(to, "tag=") {
		to += ";tag=nat-uas"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\n", code, reason)
	for _, v := range req.GetHeaders("Via") {
		b.WriteString("Via: " + v.Value() + "\n")
	}
	for _, h := range []string{req.From().String(), to, req.CallID().String(), req.CSeq().String()} {
		b.WriteString(h + "\n")
	}
	for _, h := range extra {
		b.WriteString(h + "\n")
	}
	if sdp != "" {
		sdp = strings.ReplaceAll(sdp, "\n", "\r\n")
		fmt.Fprintf(&b, "Content-Type: application/sdp\nContent-Length: %d\n\n", len(sdp))
		return b.String() + sdp
	}
	b.WriteString("Content-Length: 0\n\n")
	return b.String()
}

func pbxSDP(addr string, port int) string {
	return fmt.Sprintf("v=0\no=- 1 1 IN IP4 %[1]s\ns=-\nc=IN IP4 %[1]s\nt=0 0\nm=audio %[2]d RTP/AVP 0\na=rtpmap:0 PCMU/8000\n", addr, port)
}

func firstLine(m sipgo.Message) string { l, _, _ := strings.Cut(m.String(), "\r\n"); return l }

// viaRport reports whether the top Via has a bare rport parameter (RFC 3581 §3).
func viaRport(t *testing.T, m sipgo.Message) {
	t.Helper()
	v := m.Via()
	if v == nil {
		t.Fatalf("no Via in %s", firstLine(m))
	}
	if val, ok := v.Params.Get("rport"); !ok || val != "" {
		t.Errorf("%s: Via %q lacks a bare ;rport (RFC 3581 §3)", firstLine(m), v.Value())
	}
}

// TestTrunkAdvertise: Via sent-by, Contact and SDP c= carry the trunk's
// advertised addresses (split horizon), else the UA's.
func TestTrunkAdvertise(t *testing.T) {
	u := newUA(t)
	listen := int(u.ListenAddr("udp").Port())
	cases := []struct {
		name     string
		nat      sip.NAT
		sentBy   string // host:port of Via and Contact
		mediaIP  string
		mediaFam string
	}{
		{"UA default", sip.NAT{}, fmt.Sprintf("127.0.0.1:%d", listen), "127.0.0.1", "IP4"},
		{"public IP", sip.NAT{AdvertiseHost: "203.0.113.10", MediaIP: netip.MustParseAddr("203.0.113.10")},
			fmt.Sprintf("203.0.113.10:%d", listen), "203.0.113.10", "IP4"},
		{"host and forwarded port", sip.NAT{AdvertiseHost: "gw.example.com:5080"}, "gw.example.com:5080", "127.0.0.1", "IP4"},
		{"IPv6", sip.NAT{AdvertiseHost: "[2001:db8::5]:5090", MediaIP: netip.MustParseAddr("2001:db8::5")},
			"[2001:db8::5]:5090", "2001:db8::5", "IP6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWire(t, nil)
			media := newRTP(t, u)
			trunk := &sip.Trunk{Name: "t", Address: fmt.Sprintf("127.0.0.1:%d", w.port()), NAT: tc.nat}
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: media})
			if err != nil {
				t.Fatal(err)
			}
			m, src := w.recv(3*time.Second, isReq("INVITE"))
			inv := m.(*sipgo.Request)
			via := inv.Via()
			if got := net.JoinHostPort(strings.Trim(via.Host, "[]"), fmt.Sprint(via.Port)); got != tc.sentBy {
				t.Errorf("Via sent-by %s, want %s", got, tc.sentBy)
			}
			viaRport(t, inv)
			ct := inv.Contact()
			if ct == nil {
				t.Fatal("INVITE without Contact")
			}
			if got := net.JoinHostPort(strings.Trim(ct.Address.Host, "[]"), fmt.Sprint(ct.Address.Port)); got != tc.sentBy {
				t.Errorf("Contact %s, want host:port %s", ct.Address.String(), tc.sentBy)
			}
			wantC := "c=IN " + tc.mediaFam + " " + tc.mediaIP + "\r\n"
			if !strings.Contains(string(inv.Body()), wantC) {
				t.Errorf("offer lacks %q:\n%s", wantC, inv.Body())
			}
			md, err := sip.ParseSDP(inv.Body())
			if err != nil {
				t.Fatal(err)
			}
			if md.Addr.Port() != media.LocalAddr().Port() {
				t.Errorf("offer port %d, want the bound RTP port %d", md.Addr.Port(), media.LocalAddr().Port())
			}
			w.send(reply(inv, 486, "Busy Here", nil, ""), src)
			var se *sip.StatusError
			if _, err := d.WaitAnswer(context.Background()); !errors.As(err, &se) || se.Code != 486 {
				t.Fatalf("WaitAnswer: %v", err)
			}
			ack, _ := w.recv(3*time.Second, isReq("ACK")) // the transaction's ACK for a non-2xx (§17.1.1.3)
			viaRport(t, ack)
		})
	}
}

// TestRportOnEveryRequest: every request ponte sends carries ;rport in its
// Via (RFC 3581 §3), so a PBX answers to the port ponte sent from, whatever
// NAT sits between: INVITE, ACK (for a 2xx), BYE, CANCEL, the ACK of the
// 487, and OPTIONS.
func TestRportOnEveryRequest(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	trunk := &sip.Trunk{Name: "t", Address: fmt.Sprintf("127.0.0.1:%d", w.port())}

	// An answered call, BYEd by ponte.
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	viaRport(t, inv)
	w.send(reply(inv, 200, "OK", []string{fmt.Sprintf("Contact: <sip:pbx@127.0.0.1:%d>", w.port())}, pbxSDP("127.0.0.1", 40100)), src)
	m, _ = w.recv(3*time.Second, isReq("ACK"))
	viaRport(t, m)
	if _, err := d.WaitAnswer(context.Background()); err != nil {
		t.Fatal(err)
	}
	byeDone := make(chan error, 1)
	go func() { byeDone <- d.Bye(context.Background(), sip.Reason{}) }()
	m, src = w.recv(3*time.Second, isReq("BYE"))
	viaRport(t, m)
	w.send(reply(m.(*sipgo.Request), 200, "OK", nil, ""), src)
	if err := <-byeDone; err != nil {
		t.Fatalf("Bye: %v", err)
	}

	// A cancelled call.
	d2, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1001", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	m, src = w.recv(3*time.Second, isReq("INVITE"))
	inv2 := m.(*sipgo.Request)
	w.send(reply(inv2, 180, "Ringing", nil, ""), src)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d2.WaitAnswer(ctx); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("WaitAnswer: %v", err)
	}
	m, src = w.recv(3*time.Second, isReq("CANCEL"))
	viaRport(t, m)
	w.send(reply(m.(*sipgo.Request), 200, "OK", nil, ""), src)
	w.send(reply(inv2, 487, "Request Terminated", nil, ""), src)
	m, _ = w.recv(3*time.Second, isReq("ACK"))
	viaRport(t, m)

	// OPTIONS.
	pinged := make(chan int, 1)
	go func() {
		code, _ := u.Ping(context.Background(), trunk)
		pinged <- code
	}()
	m, src = w.recv(3*time.Second, isReq("OPTIONS"))
	viaRport(t, m)
	w.send(reply(m.(*sipgo.Request), 200, "OK", nil, ""), src)
	if code := <-pinged; code != 200 {
		t.Fatalf("Ping: %d", code)
	}
}

// TestRewriteContact: the PBX's 200 carries a Contact ponte cannot reach
// (a private address behind NAT). Without RewriteContact the ACK and BYE
// go to that Contact; with it, to the trunk address, where the PBX's
// responses came from. The Request-URI stays the Contact either way, and a
// route set still wins (RFC 3261 §12.2.1.1).
func TestRewriteContact(t *testing.T) {
	cases := []struct {
		name        string
		rewrite     bool
		recordRoute bool
		want        string // "trunk", "contact" or "route": where ACK and BYE arrive
	}{
		{"Contact as is", false, false, "contact"},
		{"rewritten to the trunk", true, false, "trunk"},
		{"a route set wins", true, true, "route"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUA(t)
			wires := map[string]*wire{"trunk": newWire(t, nil), "contact": newWire(t, nil), "route": newWire(t, nil)}
			trunk := &sip.Trunk{Name: "t", Address: fmt.Sprintf("127.0.0.1:%d", wires["trunk"].port()), NAT: sip.NAT{RewriteContact: tc.rewrite}}
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			m, src := wires["trunk"].recv(3*time.Second, isReq("INVITE"))
			inv := m.(*sipgo.Request)
			contact := fmt.Sprintf("sip:pbx@127.0.0.1:%d", wires["contact"].port())
			extra := []string{"Contact: <" + contact + ">"}
			if tc.recordRoute {
				extra = append(extra, fmt.Sprintf("Record-Route: <sip:127.0.0.1:%d;lr>", wires["route"].port()))
			}
			wires["trunk"].send(reply(inv, 200, "OK", extra, pbxSDP("127.0.0.1", 40200)), src)
			at := wires[tc.want]
			m, _ = at.recv(3*time.Second, isReq("ACK"))
			if got := m.(*sipgo.Request).Recipient.String(); got != contact {
				t.Errorf("ACK Request-URI %s, want the Contact %s", got, contact)
			}
			if _, err := d.WaitAnswer(context.Background()); err != nil {
				t.Fatal(err)
			}
			byeDone := make(chan error, 1)
			go func() { byeDone <- d.Bye(context.Background(), sip.Reason{}) }()
			m, bsrc := at.recv(3*time.Second, isReq("BYE"))
			bye := m.(*sipgo.Request)
			if got := bye.Recipient.String(); got != contact {
				t.Errorf("BYE Request-URI %s, want the Contact %s", got, contact)
			}
			if tc.recordRoute && bye.GetHeader("Route") == nil {
				t.Error("BYE without the Route header of the route set")
			}
			at.send(reply(bye, 200, "OK", nil, ""), bsrc)
			if err := <-byeDone; err != nil {
				t.Fatalf("Bye: %v", err)
			}
			for name, w := range wires {
				if name == tc.want {
					continue
				}
				if m, ok := tryRecv(w, 100*time.Millisecond, func(m sipgo.Message) bool { r, ok := m.(*sipgo.Request); return ok && !r.IsInvite() }); ok {
					t.Errorf("%s also got %s", name, firstLine(m))
				}
			}
		})
	}
}

// tryRecv is wire.recv without failing on a timeout.
func tryRecv(w *wire, timeout time.Duration, filter func(sipgo.Message) bool) (sipgo.Message, bool) {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(timeout)
	for {
		w.conn.SetReadDeadline(deadline)
		n, _, err := w.conn.ReadFromUDP(buf)
		if err != nil {
			return nil, false
		}
		m, err := sipgo.ParseMessage(append([]byte(nil), buf[:n]...))
		if err == nil && (filter == nil || filter(m)) {
			return m, true
		}
	}
}

// TestResponsesGoToSource: ponte (sipgo) answers a request at its source
// IP (RFC 3261 §18.2.2: "received"); with ;rport also at its source port
// (RFC 3581 §4), so a PBX behind a port-rewriting NAT gets its answers, and
// the Via says so with received= and rport=. Without rport the port is the
// Via sent-by's, as §18.2.2 says: a NAT must then keep or forward that port.
// The Via claims 127.0.0.5, the packets come from 127.0.0.1.
func TestResponsesGoToSource(t *testing.T) {
	u := newUA(t)
	for _, rport := range []bool{true, false} {
		for _, method := range []string{"OPTIONS", "BYE"} {
			t.Run(fmt.Sprintf("%s rport=%v", method, rport), func(t *testing.T) {
				w := newWire(t, udpAddr(u))
				viaPort := newWire(t, nil) // the port the Via claims: behind NAT, not the source port
				params := ""
				if rport {
					params = ";rport"
				}
				toTag := ""
				if method == "BYE" {
					toTag = ";tag=nosuch"
				}
				req := fmt.Sprintf("%[1]s sip:ponte@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.5:%[2]d;branch=z9hG4bK-src-%[3]d%[4]s\nFrom: <sip:pbx@127.0.0.5>;tag=p1\nTo: <sip:ponte@127.0.0.1>%[5]s\nCall-ID: src-%[3]d@test\nCSeq: 1 %[1]s\nMax-Forwards: 70\nContent-Length: 0\n\n",
					method, viaPort.port(), time.Now().UnixNano(), params, toTag)
				w.send(req, nil)
				at, other := w, viaPort
				if !rport {
					at, other = viaPort, w
				}
				m, from := at.recv(3*time.Second, isRes)
				res := m.(*sipgo.Response)
				if from.Port != int(u.ListenAddr("udp").Port()) {
					t.Errorf("answered from port %d, not the listener", from.Port)
				}
				via := res.Via()
				rp, hasRport := via.Params.Get("rport")
				rc, _ := via.Params.Get("received")
				// Without rport sipgo leaves out the received= that RFC 3261
				// §18.2.1 asks for when sent-by differs from the source; the
				// response still goes to the source IP, which is what counts.
				if rport && (rp != fmt.Sprint(w.port()) || rc != "127.0.0.1") {
					t.Errorf("Via %q: want rport=%d;received=127.0.0.1", via.Value(), w.port())
				}
				if !rport && hasRport {
					t.Errorf("Via %q gained rport the request did not ask for", via.Value())
				}
				if m, ok := tryRecv(other, 100*time.Millisecond, nil); ok {
					t.Errorf("the other port also got %s", firstLine(m))
				}
			})
		}
	}
}

// TestResponseWithReceivedRport: a PBX that fills received= and rport= in
// our Via (as it must for ;rport) and answers from another port still
// completes the transaction: responses are matched by branch (RFC 3261
// §17.1.3), never by the Via's address.
func TestResponseWithReceivedRport(t *testing.T) {
	u := newUA(t)
	w := newWire(t, nil)
	other := newWire(t, nil)
	trunk := &sip.Trunk{Name: "t", Address: fmt.Sprintf("127.0.0.1:%d", w.port())}
	pinged := make(chan int, 1)
	go func() {
		code, _ := u.Ping(context.Background(), trunk)
		pinged <- code
	}()
	m, src := w.recv(3*time.Second, isReq("OPTIONS"))
	req := m.(*sipgo.Request)
	req.Via().Params.Add("rport", "40404")
	req.Via().Params.Add("received", "198.51.100.7")
	other.send(reply(req, 200, "OK", nil, ""), src)
	select {
	case code := <-pinged:
		if code != 200 {
			t.Fatalf("Ping: %d", code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the 200 with received/rport was not matched")
	}
}

// TestRTPLatchBehindNAT: on real sockets, a PBX whose c= is unreachable is
// learned from its NAT's address after the probation packets; then RTP goes
// there, and neither another host nor another port on the NAT's host can
// take the stream.
func TestRTPLatchBehindNAT(t *testing.T) {
	u := newUA(t)
	s := newRTP(t, u)
	bind := func(ip string) *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Fatalf("bind %s: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	nat, natOther, stranger := bind("127.0.0.3"), bind("127.0.0.3"), bind("127.0.0.4")
	signalled := netip.MustParseAddrPort("127.0.0.9:9") // the PBX's private c=: nothing there
	s.SetRemote(signalled)
	dst := net.UDPAddrFromAddrPort(s.LocalAddr())
	send := func(c *net.UDPConn, seq uint16, ssrc uint32) {
		t.Helper()
		b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc}, Payload: make([]byte, 160)}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	var p rtp.Packet
	read := func() {
		t.Helper()
		if err := s.ReadRTP(buf, &p); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint16(10); seq < 13; seq++ {
		send(nat, seq, 77)
	}
	read()
	if p.SequenceNumber != 12 || p.SSRC != 77 {
		t.Fatalf("first packet read: seq %d ssrc %d, want the third of probation (12)", p.SequenceNumber, p.SSRC)
	}
	natAddr := nat.LocalAddr().(*net.UDPAddr).AddrPort()
	if s.Remote() != natAddr {
		t.Fatalf("RTP goes to %v, want the NAT's %v", s.Remote(), natAddr)
	}
	if st := s.Stats(); st.Dropped != 2 || st.PacketsIn != 1 {
		t.Fatalf("stats after probation: %+v", st)
	}
	h := rtp.Header{Version: 2, SequenceNumber: 500, SSRC: 5}
	if err := s.WriteRTP(&h, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	nat.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := nat.ReadFromUDP(buf)
	if err != nil || n != 15 {
		t.Fatalf("ponte's RTP did not reach the latched NAT address: %d bytes, %v", n, err)
	}
	// Hijack attempts, each in sequence and long enough to pass probation.
	for seq := uint16(1); seq <= 5; seq++ {
		send(stranger, seq, 666)
		send(natOther, seq+100, 667)
	}
	send(nat, 13, 77)
	read()
	if p.SSRC != 77 || p.SequenceNumber != 13 {
		t.Fatalf("read seq %d ssrc %d: a foreign source got through", p.SequenceNumber, p.SSRC)
	}
	if s.Remote() != natAddr {
		t.Fatalf("RTP re-pointed to %v by a foreign source", s.Remote())
	}
	if st := s.Stats(); st.Dropped != 12 || st.PacketsIn != 2 || st.SSRCChanges != 0 {
		t.Fatalf("stats after the hijack attempts: %+v", st)
	}
}

// TestRTPPortsStayInRange: every RTP socket and its RTCP pair (port+1, RFC
// 3550 §11) lie inside the configured range (media.rtp_ports), an odd
// minimum is rounded up to an even port, and the range running out is an
// error rather than a socket outside it.
func TestRTPPortsStayInRange(t *testing.T) {
	const lo, hi = 43101, 43111 // even ports 43102..43110: 5 pairs
	u := newUA(t, func(c *sip.Config) { c.RTPPortMin, c.RTPPortMax = lo, hi })
	seen := map[uint16]bool{}
	for i := 0; i < 5; i++ {
		s := newRTP(t, u)
		p := s.LocalAddr().Port()
		if p < lo || p+1 > hi || p%2 != 0 || seen[p] {
			t.Fatalf("session %d on port %d: want a new even port with its pair inside %d-%d", i, p, lo, hi)
		}
		seen[p] = true
		// the RTCP port is held by the session
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(p) + 1})
		if err == nil {
			c.Close()
			t.Fatalf("session on %d does not hold its RTCP port %d", p, p+1)
		}
	}
	if _, err := u.NewRTPSession(); !errors.Is(err, sip.ErrNoRTPPort) {
		t.Fatalf("a sixth session in a 5-pair range: %v, want ErrNoRTPPort", err)
	}
}
