package sip_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// proxy is a stateless, double record-routing SIP proxy over UDP (RFC 3261
// §16): it records every request it forwards, removes its own Route
// entries (loose routing), adds its Via, and forwards to the next Route or
// the Request-URI; responses go back along the Vias.
type proxy struct {
	conn *net.UDPConn
	host string
	mu   sync.Mutex
	seen []proxied
	done chan struct{}
}

type proxied struct {
	from   int // source port
	method string
	ruri   string
	routes []string
	toTag  string
}

func startProxy(t *testing.T) *proxy {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{conn: c, host: c.LocalAddr().String(), done: make(chan struct{})}
	go p.loop()
	t.Cleanup(func() { c.Close(); <-p.done })
	return p
}

// rr are the two Record-Route entries, in the order the proxy inserts them.
func (p *proxy) rr() []string {
	return []string{"<sip:" + p.host + ";lr;leg=a>", "<sip:" + p.host + ";lr;leg=b>"}
}

func (p *proxy) loop() {
	defer close(p.done)
	buf := make([]byte, 65535)
	for {
		n, src, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := sipgo.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *sipgo.Request:
			p.request(m, src)
		case *sipgo.Response:
			m.RemoveHeader("Via") // ours
			if v := m.Via(); v != nil {
				p.send(m.String(), fmt.Sprintf("%s:%d", v.Host, v.Port))
			}
		}
	}
}

func (p *proxy) request(r *sipgo.Request, src *net.UDPAddr) {
	var routes []string
	for _, h := range r.GetHeaders("Route") {
		routes = append(routes, h.Value())
	}
	tag, _ := r.To().Params.Get("tag")
	p.mu.Lock()
	p.seen = append(p.seen, proxied{from: src.Port, method: string(r.Method), ruri: r.Recipient.String(), routes: routes, toTag: tag})
	p.mu.Unlock()
	for _, v := range routes { // our own entries are on top (RFC 3261 §16.4)
		if !strings.Contains(v, p.host) {
			break
		}
		r.RemoveHeader("Route")
	}
	next := r.Recipient
	if h := r.GetHeader("Route"); h != nil {
		var u sipgo.Uri
		if _, err := sipgo.ParseAddressValue(h.Value(), &u, nil); err == nil {
			next = u
		}
	}
	if r.IsInvite() && tag == "" {
		rr := p.rr()
		r.PrependHeader(sipgo.NewHeader("Record-Route", rr[0]), sipgo.NewHeader("Record-Route", rr[1]))
	}
	branch, _ := r.Via().Params.Get("branch")
	via := &sipgo.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1",
		Port: p.conn.LocalAddr().(*net.UDPAddr).Port, Params: sipgo.NewParams()}
	via.Params.Add("branch", "z9hG4bK-px-"+strings.TrimPrefix(branch, "z9hG4bK"))
	r.PrependHeader(via)
	p.send(r.String(), fmt.Sprintf("%s:%d", next.Host, next.Port))
}

func (p *proxy) send(msg, to string) {
	a, err := net.ResolveUDPAddr("udp", to)
	if err == nil {
		_, _ = p.conn.WriteToUDP([]byte(msg), a)
	}
}

func (p *proxy) requests() []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.seen...)
}

// TestRouteSetThroughProxy: RFC 3261 §12: through a record-routing proxy,
// every in-dialog request of ponte (ACK, refresh, INFO, BYE) and of the PBX
// (re-INVITE, its ACK, INFO, BYE) goes through the proxy with the route set
// in the right order and the remote target (Contact) as Request-URI.
func TestRouteSetThroughProxy(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allowUpdate bool
		pbxHangs    bool
		refresh     string
	}{
		{"ponte hangs up, refresh by re-INVITE", false, false, "INVITE"},
		{"PBX hangs up, refresh by UPDATE", true, true, "UPDATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPBX(t, pbx.Config{SessionExpires: 2, AllowUpdate: tc.allowUpdate})
			px := startProxy(t)
			u := newUA(t)
			trunk := &sip.Trunk{Name: "px", Address: px.host, Transport: "udp", Codecs: []string{"PCMU"}}
			d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "sip:1000@" + p.Addr().String(), Media: newRTP(t, u)})
			if err != nil {
				t.Fatal(err)
			}
			call := nextCall(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := d.WaitAnswer(ctx); err != nil {
				t.Fatal(err)
			}
			var digits digitLog
			d.OnDTMF(digits.add)
			waitFor(t, func() bool { return len(call.InDialog()) > 0 }, "ponte's session refresh")
			if m := call.InDialog()[0].Method; m != tc.refresh {
				t.Fatalf("refresh by %s, want %s", m, tc.refresh)
			}
			if tc.refresh == "INVITE" {
				// The PBX seeing the re-INVITE does not mean ponte has had
				// its 200 and sent the ACK yet: wait for that ACK, or the
				// INFO below may overtake it.
				ponte := int(u.ListenAddr("udp").Port())
				waitFor(t, func() bool {
					acks := 0
					for _, r := range px.requests() {
						if r.from == ponte && r.method == "ACK" {
							acks++
						}
					}
					return acks >= 2
				}, "ponte's ACK of its refresh")
			}
			if err := d.SendDTMFInfo(ctx, '3', 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			res, err := call.Reinvite(ctx, call.OfferSDP(pbx.SDPOptions{Direction: "sendonly"}))
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("PBX re-INVITE: %v %v", res, err)
			}
			if md, err := sip.ParseSDP(res.Body()); err != nil || md.Direction != "recvonly" || !d.Media().Held {
				t.Fatalf("hold answer %+v %v, Media %+v", md, err, d.Media())
			}
			if err := call.SendDTMFInfo(ctx, "9", 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if tc.pbxHangs {
				if err := call.Hangup(ctx); err != nil {
					t.Fatal(err)
				}
				waitClosed(t, d.Done(), "dialog end")
				if !d.RemoteBye() {
					t.Fatal("not ended by the PBX's BYE")
				}
			} else if err := d.Bye(ctx, sip.Reason{}); err != nil {
				t.Fatal(err)
			}
			if digits.get() != "9:100ms" || len(call.InfoDigits()) != 1 {
				t.Fatalf("INFO digits: ponte got %q, PBX got %v", digits.get(), call.InfoDigits())
			}

			ponte, pbxPort := int(u.ListenAddr("udp").Port()), int(p.Addr().Port())
			rr := px.rr()
			pbxTarget := "sip:pbx@" + p.Addr().String()
			var fromPonte, fromPBX []string
			for _, r := range px.requests() {
				switch {
				case r.from == ponte && r.toTag == "":
					if r.method != "INVITE" || len(r.routes) != 0 {
						t.Errorf("initial %s with routes %v", r.method, r.routes)
					}
				case r.from == ponte:
					fromPonte = append(fromPonte, r.method)
					if r.ruri != pbxTarget || strings.Join(r.routes, ",") != rr[1]+","+rr[0] {
						t.Errorf("ponte's %s: R-URI %s Route %v, want %s and %v reversed", r.method, r.ruri, r.routes, pbxTarget, rr)
					}
				case r.from == pbxPort:
					fromPBX = append(fromPBX, r.method)
					if !strings.HasPrefix(r.ruri, "sip:") || !strings.Contains(r.ruri, u.ListenAddr("udp").String()) || strings.Join(r.routes, ",") != strings.Join(rr, ",") {
						t.Errorf("PBX's %s: R-URI %s Route %v", r.method, r.ruri, r.routes)
					}
				}
			}
			wantPonte := []string{"ACK", tc.refresh, "INFO"}
			wantPBX := []string{"INVITE", "ACK", "INFO"}
			if tc.pbxHangs {
				wantPBX = append(wantPBX, "BYE")
			} else {
				wantPonte = append(wantPonte, "BYE")
			}
			if tc.refresh == "INVITE" {
				wantPonte = append(wantPonte[:2], append([]string{"ACK"}, wantPonte[2:]...)...)
			}
			if got := strings.Join(fromPonte, " "); !strings.HasPrefix(got, strings.Join(wantPonte[:2], " ")) || !containsSeq(fromPonte, wantPonte) {
				t.Errorf("ponte's in-dialog requests through the proxy: %s, want %s (refreshes may repeat)", got, strings.Join(wantPonte, " "))
			}
			if got := strings.Join(fromPBX, " "); got != strings.Join(wantPBX, " ") {
				t.Errorf("PBX's in-dialog requests through the proxy: %s, want %s", got, strings.Join(wantPBX, " "))
			}
		})
	}
}

// containsSeq reports whether want appears in got in order (gaps allowed).
func containsSeq(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestStrictRouter: a Record-Route without lr is a strict router (RFC 3261
// §12.2.1.1): it becomes the Request-URI and the remote target the last Route.
func TestStrictRouter(t *testing.T) {
	u := newUA(t)
	d, w, inv, src := dialWire(t, u)
	rr := fmt.Sprintf("<sip:127.0.0.1:%d;transport=udp>", w.port())
	w.send(answer200(inv, "uas1", w.port(), 40010, "Record-Route: "+rr+"\n"), src)
	m, _ := w.recv(3*time.Second, isReq("ACK"))
	ack := m.(*sipgo.Request)
	if ack.Recipient.String() != fmt.Sprintf("sip:127.0.0.1:%d;transport=udp", w.port()) {
		t.Fatalf("ACK Request-URI %s", ack.Recipient.String())
	}
	if r := ack.GetHeaders("Route"); len(r) != 1 || r[0].Value() != fmt.Sprintf("<sip:uas@127.0.0.1:%d>", w.port()) {
		t.Fatalf("ACK Route %v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		if m, _ := w.recvQuiet(2*time.Second, isReq("BYE")); m != nil {
			w.send(response(m.(*sipgo.Request), 200, "OK"), src)
		}
	}()
	if err := d.Bye(ctx, sip.Reason{}); err != nil {
		t.Fatal(err)
	}
}

// provisional is a 1xx to req with its own To tag (an early dialog).
func provisional(req *sipgo.Request, code int, reason, tag string) string {
	return fmt.Sprintf("SIP/2.0 %d %s\n%s\n%s\n%s;tag=%s\n%s\n%s\nContent-Length: 0\n\n",
		code, reason, req.Via().String(), req.From().String(), req.To().String(), tag, req.CallID().String(), req.CSeq().String())
}

// TestForkTwo200s: RFC 3261 §13.2.2.4: two early dialogs, then two 200s
// with different To tags: the first wins, the second is ACKed and BYEd (its
// own Contact as Request-URI), once, even when retransmitted; the call
// goes on in the first dialog. A fork's 200 after the INVITE transaction
// ended (Timer M, shortened here) is treated the same.
func TestForkTwo200s(t *testing.T) {
	sipgo.SetTimers(20*time.Millisecond, 80*time.Millisecond, 100*time.Millisecond)
	t.Cleanup(func() { sipgo.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second) })
	u := newUA(t)
	d, w, inv, src := dialWire(t, u)
	w.send(provisional(inv, 180, "Ringing", "f1"), src)
	w.send(provisional(inv, 183, "Session Progress", "f2"), src)
	ok2 := strings.Replace(answer200(inv, "f2", w.port(), 40010, ""), "sip:uas@", "sip:f2@", 1)
	ok1 := strings.Replace(answer200(inv, "f1", w.port(), 40012, ""), "sip:uas@", "sip:f1@", 1)
	w.send(ok2, src)
	// sipgo handles each datagram in its own goroutine: the second 200 goes
	// out once the first is ACKed, so which one is "first" is certain.
	m, _ := w.recv(3*time.Second, isReq("ACK"))
	if tag, _ := m.(*sipgo.Request).To().Params.Get("tag"); tag != "f2" {
		t.Fatalf("ACK to tag %s", tag)
	}
	w.send(ok1, src)
	tags := map[string]int{"f2": 1}
	var bye *sipgo.Request
	for len(tags) < 2 || bye == nil {
		m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool { return isReq("ACK")(m) || isReq("BYE")(m) })
		r := m.(*sipgo.Request)
		tag, _ := r.To().Params.Get("tag")
		if r.Method == sipgo.ACK {
			tags[tag]++
			if r.CSeq().SeqNo != inv.CSeq().SeqNo {
				t.Fatalf("ACK CSeq %d", r.CSeq().SeqNo)
			}
			continue
		}
		if tag != "f1" || r.Recipient.User != "f1" {
			t.Fatalf("BYE to the wrong dialog: %s To tag %s", r.Recipient.String(), tag)
		}
		bye = r
	}
	w.send(response(bye, 200, "OK"), src)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ans, err := d.WaitAnswer(ctx)
	if err != nil || ans.Addr.Port() != 40010 {
		t.Fatalf("WaitAnswer %+v %v: the first 200 (port 40010) must win", ans, err)
	}
	w.send(ok1, src) // a retransmission: ACK again, no second BYE
	m, _ = w.recv(3*time.Second, func(m sipgo.Message) bool { return isReq("ACK")(m) || isReq("BYE")(m) })
	if r := m.(*sipgo.Request); r.Method != sipgo.ACK {
		t.Fatalf("retransmitted fork 200 got %s", r.Method)
	}
	time.Sleep(1500 * time.Millisecond) // past Timer M (64*T1)
	ok3 := strings.Replace(answer200(inv, "f3", w.port(), 40014, ""), "sip:uas@", "sip:f3@", 1)
	w.send(ok3, src)
	for _, want := range []sipgo.RequestMethod{sipgo.ACK, sipgo.BYE} {
		m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool { return isReq("ACK")(m) || isReq("BYE")(m) })
		r := m.(*sipgo.Request)
		if tag, _ := r.To().Params.Get("tag"); r.Method != want || tag != "f3" {
			t.Fatalf("late fork: got %s to tag %s, want %s", r.Method, tag, want)
		}
		if r.Method == sipgo.BYE {
			w.send(response(r, 200, "OK"), src)
		}
	}
	select {
	case <-d.Done():
		t.Fatal("the winning dialog ended")
	default:
	}
	go func() {
		if m, _ := w.recvQuiet(2*time.Second, isReq("BYE")); m != nil {
			r := m.(*sipgo.Request)
			if tag, _ := r.To().Params.Get("tag"); tag == "f2" {
				w.send(response(r, 200, "OK"), src)
			}
		}
	}()
	if err := d.Bye(ctx, sip.Reason{}); err != nil {
		t.Fatal(err)
	}
}

// TestForkStray200: a fork's 200 that matches no transaction (its Via
// branch changed by a broken UAS) and that arrives together with the
// winning 200 is still ACKed and BYEd, whether it overtakes the winner's
// handling or not, and the call stays in the winning dialog.
func TestForkStray200(t *testing.T) {
	for i := range 5 {
		u := newUA(t)
		d, w, inv, src := dialWire(t, u)
		branch, _ := inv.Via().Params.Get("branch")
		ok1 := strings.Replace(answer200(inv, "f1", w.port(), 40010, ""), "sip:uas@", "sip:f1@", 1)
		ok2 := strings.Replace(answer200(inv, "f2", w.port(), 40012, ""), "sip:uas@", "sip:f2@", 1)
		ok2 = strings.Replace(ok2, branch, branch+"x", 1)
		w.send(ok1, src)
		w.send(ok2, src)
		got := map[string]int{}
		for got["ACK f1"] == 0 || got["ACK f2"] == 0 || got["BYE f2"] == 0 {
			m, _ := w.recv(3*time.Second, func(m sipgo.Message) bool { return isReq("ACK")(m) || isReq("BYE")(m) })
			r := m.(*sipgo.Request)
			tag, _ := r.To().Params.Get("tag")
			got[string(r.Method)+" "+tag]++
			if r.Method == sipgo.BYE {
				if tag != "f2" || r.Recipient.User != "f2" {
					t.Fatalf("run %d: BYE to %s To tag %s, want the stray fork f2", i, r.Recipient.String(), tag)
				}
				w.send(response(r, 200, "OK"), src)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ans, err := d.WaitAnswer(ctx)
		cancel()
		if err != nil || ans.Addr.Port() != 40010 {
			t.Fatalf("run %d: WaitAnswer %+v %v: the 200 its transaction matched (port 40010) must win", i, ans, err)
		}
		select {
		case <-d.Done():
			t.Fatalf("run %d: the winning dialog ended", i)
		default:
		}
	}
}

// TestByeCrossingReinvite: the PBX's BYE while ponte's refresh re-INVITE is
// pending, the PBX's re-INVITE after ponte's BYE, and glare: no hang, the
// call ends once, 481/491 as RFC 3261 §14 and §15 say.
func TestByeCrossingReinvite(t *testing.T) {
	for _, late := range []int{481, 487, 200} {
		t.Run(fmt.Sprintf("PBX BYE during ponte's refresh, then %d", late), func(t *testing.T) {
			c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 2;refresher=uac\n")
			m, _ := c.w.recv(3*time.Second, isReq("INVITE"))
			refresh := m.(*sipgo.Request)
			res := c.do("BYE", "", "Reason: Q.850;cause=16\n")
			if res.StatusCode != 200 {
				t.Fatalf("BYE answered %d", res.StatusCode)
			}
			waitClosed(t, c.d.Done(), "dialog end")
			sdp := ""
			if late == 200 {
				sdp = sdpBody("127.0.0.1", 40010, 1, "", 0)
			}
			c.w.send(resp(refresh, c.w.port(), late, "Whatever", "", sdp), c.src)
			m, _ = c.w.recv(3*time.Second, isReq("ACK")) // every final response is ACKed
			if m.(*sipgo.Request).CSeq().SeqNo != refresh.CSeq().SeqNo {
				t.Fatalf("ACK for CSeq %d", m.(*sipgo.Request).CSeq().SeqNo)
			}
			if m, _ := c.w.recvQuiet(time.Second, isReq("BYE")); m != nil {
				t.Fatal("ponte sent a BYE although the PBX ended the call")
			}
			if !c.d.RemoteBye() || c.d.Err() != nil {
				t.Fatalf("RemoteBye %v Err %v", c.d.RemoteBye(), c.d.Err())
			}
		})
	}
	t.Run("PBX re-INVITE after ponte's BYE", func(t *testing.T) {
		c := startWireCall(t, []string{"PCMU"}, "")
		byeErr := make(chan error, 1)
		go func() { byeErr <- c.d.Bye(context.Background(), sip.Reason{Protocol: "Q.850", Cause: 16}) }()
		m, _ := c.w.recv(3*time.Second, isReq("BYE"))
		if res := c.do("INVITE", sdpBody("127.0.0.1", 40010, 2, "sendonly", 0), ""); res.StatusCode != 481 {
			t.Fatalf("re-INVITE after our BYE answered %d, want 481", res.StatusCode)
		}
		c.w.send(response(m.(*sipgo.Request), 200, "OK"), c.src)
		if err := <-byeErr; err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c.d.Done(), "dialog end")
		if len(c.states.get()) != 0 {
			t.Fatal("the crossing re-INVITE changed the media")
		}
	})
	t.Run("glare", func(t *testing.T) {
		c := startWireCall(t, []string{"PCMU"}, "Session-Expires: 2;refresher=uac\n")
		m, _ := c.w.recv(3*time.Second, isReq("INVITE"))
		if res := c.do("INVITE", sdpBody("127.0.0.1", 40010, 2, "sendonly", 0), ""); res.StatusCode != 491 {
			t.Fatalf("re-INVITE during ponte's re-INVITE answered %d, want 491", res.StatusCode)
		}
		c.w.send(resp(m.(*sipgo.Request), c.w.port(), 200, "OK", "Session-Expires: 2;refresher=uac\n", sdpBody("127.0.0.1", 40010, 1, "", 0, 101)), c.src)
		c.w.recv(3*time.Second, isReq("ACK"))
		if res := c.do("INVITE", sdpBody("127.0.0.1", 40010, 3, "sendonly", 0), ""); res.StatusCode != 200 {
			t.Fatalf("re-INVITE after the exchange answered %d", res.StatusCode)
		}
		c.ack(c.cseq, "")
		if !c.d.Media().Held {
			t.Fatal("hold not applied")
		}
		select {
		case <-c.d.Done():
			t.Fatalf("dialog ended: %v", c.d.Err())
		default:
		}
	})
}
