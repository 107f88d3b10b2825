package sip_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// wcall is an answered call between ponte and a raw wire PBX, for scripting
// in-dialog exchanges byte by byte.
type wcall struct {
	t      *testing.T
	u      *sip.UA
	w      *wire
	d      *sip.Dialog
	inv    *sipgo.Request // ponte's INVITE
	src    *net.UDPAddr   // ponte's SIP address
	media  *sip.RTPSession
	cseq   int
	states *stateLog
}

type stateLog struct {
	mu sync.Mutex
	s  []sip.MediaState
}

func (l *stateLog) add(s sip.MediaState) { l.mu.Lock(); l.s = append(l.s, s); l.mu.Unlock() }

func (l *stateLog) get() []sip.MediaState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sip.MediaState(nil), l.s...)
}

// sdpBody is a PBX SDP (LF line ends; wire.send makes them CRLF).
func sdpBody(ip string, port int, version int, dir string, pts ...int) string {
	var m, maps strings.Builder
	for _, pt := range pts {
		fmt.Fprintf(&m, " %d", pt)
		switch pt {
		case 0:
			maps.WriteString("a=rtpmap:0 PCMU/8000\n")
		case 8:
			maps.WriteString("a=rtpmap:8 PCMA/8000\n")
		case 9:
			maps.WriteString("a=rtpmap:9 G722/8000\n")
		case 101:
			maps.WriteString("a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n")
		}
	}
	s := fmt.Sprintf("v=0\no=pbx 7 %d IN IP4 127.0.0.1\ns=-\nc=IN IP4 %s\nt=0 0\nm=audio %d RTP/AVP%s\n%s", version, ip, port, m.String(), maps.String())
	if dir != "" {
		s += "a=" + dir + "\n"
	}
	return s
}

func wireLen(body string) int { return len(strings.ReplaceAll(body, "\n", "\r\n")) }

// answer200 is the PBX's 200 to req with an SDP (PCMU + telephone-event)
// and extra header lines.
func answer200(req *sipgo.Request, tag string, contactPort, mediaPort int, extra string) string {
	sdp := sdpBody("127.0.0.1", mediaPort, 1, "", 0, 101)
	return fmt.Sprintf("SIP/2.0 200 OK\n%s\n%s\n%s;tag=%s\n%s\n%s\nContact: <sip:uas@127.0.0.1:%d>\n%sContent-Type: application/sdp\nContent-Length: %d\n\n%s",
		req.Via().String(), req.From().String(), req.To().String(), tag, req.CallID().String(), req.CSeq().String(),
		contactPort, extra, wireLen(sdp), sdp)
}

// startWireCall dials the wire PBX and answers with answer200(extra).
func startWireCall(t *testing.T, codecs []string, extra string, uaMod ...func(*sip.Config)) *wcall {
	t.Helper()
	u := newUA(t, uaMod...)
	w := newWire(t, nil)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Address: fmt.Sprintf("127.0.0.1:%d", w.port()), Codecs: codecs}
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "caller", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	m, src := w.recv(3*time.Second, isReq("INVITE"))
	inv := m.(*sipgo.Request)
	w.send(answer200(inv, "uas1", w.port(), 40010, extra), src)
	w.recv(3*time.Second, isReq("ACK"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	c := &wcall{t: t, u: u, w: w, d: d, inv: inv, src: udpAddr(u), media: media, cseq: 100, states: &stateLog{}}
	d.OnMediaChange(c.states.add)
	t.Cleanup(func() {
		select {
		case <-d.Done():
		default:
			go func() { // answer our BYE so Bye returns at once
				m, _ := w.recvQuiet(2*time.Second, isReq("BYE"))
				if m != nil {
					w.send(response(m.(*sipgo.Request), 200, "OK"), src)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			d.Bye(ctx, sip.Reason{})
		}
	})
	return c
}

// req builds an in-dialog request from the PBX (next CSeq).
func (c *wcall) req(method, body, extra string) (string, int) {
	c.cseq++
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\n"
		if method == "INFO" {
			ct = ""
		}
	}
	from := strings.TrimPrefix(c.inv.To().String(), "To: ") + ";tag=uas1"
	to := strings.TrimPrefix(c.inv.From().String(), "From: ")
	return fmt.Sprintf("%s sip:caller@127.0.0.1:%d SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s-%d-%d\nFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d %s\nContact: <sip:uas@127.0.0.1:%d>\nMax-Forwards: 70\n%s%sContent-Length: %d\n\n%s",
		method, c.src.Port, c.w.port(), method, c.cseq, time.Now().UnixNano(), from, to, c.d.CallID(), c.cseq, method,
		c.w.port(), extra, ct, wireLen(body), body), c.cseq
}

// finalTo waits for ponte's final response to the request with CSeq seq.
func (c *wcall) finalTo(seq int) *sipgo.Response {
	c.t.Helper()
	m, _ := c.w.recv(3*time.Second, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200 && int(r.CSeq().SeqNo) == seq
	})
	return m.(*sipgo.Response)
}

// do sends an in-dialog request and returns ponte's final response.
func (c *wcall) do(method, body, extra string) *sipgo.Response {
	c.t.Helper()
	msg, seq := c.req(method, body, extra)
	c.w.send(msg, c.src)
	return c.finalTo(seq)
}

// ack ACKs ponte's 2xx to a PBX re-INVITE (CSeq seq), with an optional answer.
func (c *wcall) ack(seq int, body string) {
	from := strings.TrimPrefix(c.inv.To().String(), "To: ") + ";tag=uas1"
	to := strings.TrimPrefix(c.inv.From().String(), "From: ")
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\n"
	}
	c.w.send(fmt.Sprintf("ACK sip:caller@127.0.0.1:%d SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-ack-%d\nFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d ACK\nMax-Forwards: 70\n%sContent-Length: %d\n\n%s",
		c.src.Port, c.w.port(), time.Now().UnixNano(), from, to, c.d.CallID(), seq, ct, wireLen(body), body), c.src)
}

// recvQuiet is recv that returns nil instead of failing on timeout.
func (w *wire) recvQuiet(timeout time.Duration, filter func(sipgo.Message) bool) (sipgo.Message, *net.UDPAddr) {
	buf := make([]byte, 65535)
	deadline := time.Now().Add(timeout)
	for {
		w.conn.SetReadDeadline(deadline)
		n, from, err := w.conn.ReadFromUDP(buf)
		if err != nil {
			return nil, nil
		}
		m, err := sipgo.ParseMessage(append([]byte(nil), buf[:n]...))
		if err == nil && (filter == nil || filter(m)) {
			return m, from
		}
	}
}

func parseAnswer(t *testing.T, res *sipgo.Response) *sip.MediaDesc {
	t.Helper()
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200", res.StatusCode, res.Reason)
	}
	md, err := sip.ParseSDP(res.Body())
	if err != nil {
		t.Fatalf("answer SDP: %v\n%s", err, res.Body())
	}
	return md
}

func oVersion(t *testing.T, body []byte) uint64 {
	t.Helper()
	for _, l := range strings.Split(string(body), "\r\n") {
		if strings.HasPrefix(l, "o=") {
			var v uint64
			if _, err := fmt.Sscanf(strings.Fields(l)[2], "%d", &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no o= line in %q", body)
	return 0
}

// TestPBXOfferInDialog: a PBX re-INVITE or UPDATE with SDP is answered on
// the SIP leg (RFC 3264 §8): new address followed, hold mirrored per §6.1
// and §8.4, a codec change taken only if the trunk allows it, else 488.
func TestPBXOfferInDialog(t *testing.T) {
	lo := "127.0.0.1"
	tests := []struct {
		name        string
		method      string
		sdp         string
		code        int
		dir, codec  string
		remotePort  uint16 // where RTP goes afterwards
		held        bool
		send, recv  bool
		wantPort0   bool
		wantNotifed bool
	}{
		{"new port", "INVITE", sdpBody(lo, 40020, 2, "", 0, 8, 101), 200, "sendrecv", "PCMU", 40020, false, true, true, false, true},
		{"new port by UPDATE", "UPDATE", sdpBody(lo, 40022, 2, "sendrecv", 0, 101), 200, "sendrecv", "PCMU", 40022, false, true, true, false, true},
		{"hold sendonly", "INVITE", sdpBody(lo, 40010, 2, "sendonly", 0, 101), 200, "recvonly", "PCMU", 40010, true, false, true, false, true},
		{"hold sendonly by UPDATE", "UPDATE", sdpBody(lo, 40010, 2, "sendonly", 0), 200, "recvonly", "PCMU", 40010, true, false, true, false, true},
		{"hold inactive", "INVITE", sdpBody(lo, 40010, 2, "inactive", 0), 200, "inactive", "PCMU", 40010, true, false, false, false, true},
		{"recvonly", "INVITE", sdpBody(lo, 40010, 2, "recvonly", 0), 200, "sendonly", "PCMU", 40010, true, true, false, false, true},
		{"hold c=0.0.0.0", "INVITE", sdpBody("0.0.0.0", 40030, 2, "", 0, 101), 200, "recvonly", "PCMU", 40010, true, false, true, false, true},
		{"hold c=0.0.0.0 sendonly", "INVITE", sdpBody("0.0.0.0", 40030, 2, "sendonly", 0), 200, "recvonly", "PCMU", 40010, true, false, true, false, true},
		{"hold c=0.0.0.0 recvonly", "INVITE", sdpBody("0.0.0.0", 40030, 2, "recvonly", 0), 200, "inactive", "PCMU", 40010, true, false, false, false, true},
		{"stream disabled", "INVITE", sdpBody(lo, 0, 2, "", 0), 200, "inactive", "PCMU", 40010, true, false, false, true, true},
		{"codec change allowed", "INVITE", sdpBody(lo, 40010, 2, "", 8, 101), 200, "sendrecv", "PCMA", 40010, false, true, true, false, true},
		{"codec not allowed", "INVITE", sdpBody(lo, 40010, 2, "", 9), 488, "", "", 40010, false, false, false, false, false},
		{"codec not allowed by UPDATE", "UPDATE", sdpBody(lo, 40010, 2, "", 9), 488, "", "", 40010, false, false, false, false, false},
		{"same SDP: nothing changes", "INVITE", sdpBody(lo, 40010, 1, "", 0, 101), 200, "sendrecv", "PCMU", 40010, false, true, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startWireCall(t, []string{"PCMU", "PCMA"}, "")
			res := c.do(tc.method, tc.sdp, "")
			if tc.method == "INVITE" && res.StatusCode == 200 {
				c.ack(c.cseq, "")
			}
			if res.StatusCode != tc.code {
				t.Fatalf("answered %d %s, want %d", res.StatusCode, res.Reason, tc.code)
			}
			if got := c.media.Remote().Port(); got != tc.remotePort {
				t.Errorf("RTP goes to port %d, want %d", got, tc.remotePort)
			}
			states := c.states.get()
			if tc.code != 200 {
				if len(states) != 0 || res.Body() != nil && len(res.Body()) > 0 {
					t.Fatalf("a refused offer changed the media: %+v, body %q", states, res.Body())
				}
				return
			}
			ans := parseAnswer(t, res)
			if ans.Direction != tc.dir || len(ans.Codecs) != 1 || ans.Codecs[0].Name != tc.codec {
				t.Fatalf("answer direction %s codecs %+v, want %s %s", ans.Direction, ans.Codecs, tc.dir, tc.codec)
			}
			wantAddr := c.media.LocalAddr()
			if tc.wantPort0 {
				wantAddr = netip.AddrPortFrom(wantAddr.Addr(), 0)
			}
			if ans.Addr != wantAddr {
				t.Fatalf("answer c=/m= %v, want ponte's own %v", ans.Addr, wantAddr)
			}
			// The one-codec answer differs from the INVITE's offer: version+1.
			if v0, v := oVersion(t, c.inv.Body()), oVersion(t, res.Body()); v != v0+1 {
				t.Errorf("o= version %d after %d, want %d", v, v0, v0+1)
			}
			if !tc.wantNotifed {
				if len(states) != 0 {
					t.Fatalf("OnMediaChange called for an unchanged session: %+v", states)
				}
				return
			}
			if len(states) != 1 {
				t.Fatalf("OnMediaChange called %d times, want 1", len(states))
			}
			st := states[0]
			if st.Held != tc.held || st.Send != tc.send || st.Recv != tc.recv || st.Codec.Name != tc.codec || st.Remote.Port() != tc.remotePort {
				t.Fatalf("MediaState %+v, want held=%v send=%v recv=%v codec=%s port=%d", st, tc.held, tc.send, tc.recv, tc.codec, tc.remotePort)
			}
			if st != c.d.Media() {
				t.Fatalf("Media() %+v differs from the notified %+v", c.d.Media(), st)
			}
		})
	}
}

// TestSDPVersionRules: RFC 3264 §8: the o= version grows by one when
// ponte's SDP changes and stays when it does not.
func TestSDPVersionRules(t *testing.T) {
	c := startWireCall(t, []string{"PCMU"}, "") // offer: PCMU + telephone-event
	v0 := oVersion(t, c.inv.Body())
	steps := []struct {
		sdp  string
		want uint64
	}{
		{sdpBody("127.0.0.1", 40010, 2, "", 0, 101), v0}, // the answer is the INVITE's offer again
		{sdpBody("127.0.0.1", 40010, 3, "sendonly", 0, 101), v0 + 1},
		{sdpBody("127.0.0.1", 40010, 4, "sendonly", 0, 101), v0 + 1},
		{sdpBody("127.0.0.1", 40010, 5, "", 0), v0 + 2}, // no telephone-event offered
		{sdpBody("127.0.0.1", 40010, 6, "", 0, 101), v0 + 3},
	}
	for i, s := range steps {
		res := c.do("INVITE", s.sdp, "")
		c.ack(c.cseq, "")
		if v := oVersion(t, res.Body()); v != s.want {
			t.Fatalf("step %d: o= version %d, want %d", i, v, s.want)
		}
		if sessID(t, res.Body()) != sessID(t, c.inv.Body()) {
			t.Fatalf("step %d: o= session id changed", i)
		}
	}
}

// TestOfferlessReinvite: ponte's offer (codec in use, telephone-event, its
// address) goes in the 200, which is retransmitted until the ACK brings the
// PBX's answer (RFC 3261 §13.3.1.4, §14.2); the answer is applied.
func TestOfferlessReinvite(t *testing.T) {
	c := startWireCall(t, []string{"PCMU", "PCMA"}, "")
	msg, seq := c.req("INVITE", "", "")
	c.w.send(msg, c.src)
	res := c.finalTo(seq)
	offer := parseAnswer(t, res)
	if len(offer.Codecs) != 1 || offer.Codecs[0].Name != "PCMU" || offer.DTMFPT != 101 || offer.Direction != "sendrecv" || offer.Addr != c.media.LocalAddr() {
		t.Fatalf("ponte's offer %+v", offer)
	}
	again := c.finalTo(seq) // no ACK yet: the 2xx comes again after T1
	if again.StatusCode != 200 || string(again.Body()) != string(res.Body()) {
		t.Fatalf("retransmission %d differs", again.StatusCode)
	}
	c.ack(seq, sdpBody("127.0.0.1", 40050, 2, "sendonly", 0, 101))
	waitFor(t, func() bool { return len(c.states.get()) == 1 }, "the ACK's answer to be applied")
	st := c.states.get()[0]
	if !st.Held || st.Send || !st.Recv || st.Remote.Port() != 40050 || c.media.Remote().Port() != 40050 {
		t.Fatalf("state after the ACK's answer: %+v (RTP to %v)", st, c.media.Remote())
	}
	// The retransmissions stop.
	if m, _ := c.w.recvQuiet(1500*time.Millisecond, func(m sipgo.Message) bool { _, ok := m.(*sipgo.Response); return ok }); m != nil {
		t.Fatalf("2xx still retransmitted after the ACK: %v", m.(*sipgo.Response).StartLine())
	}
}

// TestReinviteNoAckByes: without an ACK for 64*T1 ponte ends the session
// with a BYE (RFC 3261 §13.3.1.4), here with shortened timers.
func TestReinviteNoAckByes(t *testing.T) {
	sipgo.SetTimers(20*time.Millisecond, 80*time.Millisecond, 100*time.Millisecond)
	t.Cleanup(func() { sipgo.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second) })
	c := startWireCall(t, []string{"PCMU"}, "")
	msg, _ := c.req("INVITE", sdpBody("127.0.0.1", 40010, 2, "", 0), "")
	c.w.send(msg, c.src)
	m, _ := c.w.recv(5*time.Second, isReq("BYE"))
	c.w.send(response(m.(*sipgo.Request), 200, "OK"), c.src)
	waitClosed(t, c.d.Done(), "dialog end")
	if c.d.Err() != sip.ErrNoAck {
		t.Fatalf("Err %v, want ErrNoAck", c.d.Err())
	}
}

// TestInDialogChecks: Require with unknown option tags gets 420 listing
// them (RFC 3261 §8.2.2.3), Require: timer is fine; a lower CSeq gets 500
// (§12.2.2); an offer during ponte's own pending offer gets 491 (§14.2).
func TestInDialogChecks(t *testing.T) {
	c := startWireCall(t, []string{"PCMU"}, "")
	body := "Signal=1\r\nDuration=100\r\n"
	for _, m := range []string{"INFO", "UPDATE", "INVITE", "BYE"} {
		res := c.do(m, "", "Require: 100rel, timer\nRequire: foo\n")
		if res.StatusCode != 420 || res.GetHeader("Unsupported") == nil || res.GetHeader("Unsupported").Value() != "100rel, foo" {
			t.Fatalf("%s with Require: %d %v", m, res.StatusCode, res.GetHeader("Unsupported"))
		}
	}
	if res := c.do("INFO", body, "Require: timer\nContent-Type: application/dtmf-relay\n"); res.StatusCode != 200 {
		t.Fatalf("INFO with Require: timer answered %d", res.StatusCode)
	}
	c.cseq -= 5
	if res := c.do("INFO", body, "Content-Type: application/dtmf-relay\n"); res.StatusCode != 500 {
		t.Fatalf("INFO with a lower CSeq answered %d, want 500", res.StatusCode)
	}
	c.cseq += 10
	// Offerless re-INVITE: our offer is outstanding until the ACK.
	msg, seq := c.req("INVITE", "", "")
	c.w.send(msg, c.src)
	c.finalTo(seq)
	for _, m := range []string{"INVITE", "UPDATE"} {
		if res := c.do(m, sdpBody("127.0.0.1", 40010, 2, "", 0), ""); res.StatusCode != 491 {
			t.Fatalf("%s offer during our pending offer answered %d, want 491", m, res.StatusCode)
		}
	}
	c.ack(seq, sdpBody("127.0.0.1", 40010, 2, "", 0))
	waitFor(t, func() bool {
		res := c.do("UPDATE", sdpBody("127.0.0.1", 40012, 3, "", 0), "")
		return res.StatusCode == 200
	}, "offers to be accepted after the ACK")
}
