package sip_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// answered sets up a wire PBX call that ponte answered and the PBX ACKed.
func answered(t *testing.T, extra string, opt sip.AnswerOptions) (*pbxLeg, *sip.Dialog, string) {
	t.Helper()
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite(sdpBody("127.0.0.1", 40100, 1, "", 0, 8, 101), extra, false)
	c := nextIncoming(t, calls)
	if opt.Media == nil {
		opt.Media = newRTP(t, u)
	}
	d, err := c.Answer(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	res := p.status(200)
	p.ack(toTag(res), "", true)
	waitFor(t, func() bool { return !d.AckedAt().IsZero() }, "ACK")
	t.Cleanup(func() {
		select {
		case <-d.Done():
		default:
			seq := p.request("BYE", toTag(res), "", "", "")
			p.final(seq, "BYE")
		}
	})
	return p, d, toTag(res)
}

// TestUASWireAnswer checks the 180 and 200 on the wire: one To tag, the
// Record-Route echoed, a Contact, the SDP answer (PCMA with the PBX's
// telephone-event PT), and ponte's BYE built for a UAS dialog: Request-URI
// the PBX's Contact, Route from Record-Route in order, From the INVITE's To
// with ponte's tag, To the INVITE's From (RFC 3261 §12.1.1, §12.2.1.1).
func TestUASWireAnswer(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	rr := fmt.Sprintf("<sip:127.0.0.1:%d;lr>", p.w.port())
	p.invite(sdpBody("127.0.0.1", 40100, 1, "", 8, 0, 101), "Record-Route: "+rr+"\n", false)
	c := nextIncoming(t, calls)
	if err := c.Ring(180, "Ringing"); err != nil {
		t.Fatal(err)
	}
	r180 := p.status(180)
	if toTag(r180) == "" || r180.Body() != nil && len(r180.Body()) > 0 {
		t.Fatalf("180 %s", r180.String())
	}
	media := newRTP(t, u)
	d, err := c.Answer(context.Background(), sip.AnswerOptions{Media: media, Codecs: []string{"PCMA", "PCMU"},
		Headers: []sip.Header{{Name: "X-Ponte-Call-Id", Value: "c1\r\nX-Evil: 1"}, {Name: "Via", Value: "forged"}}})
	if err != nil {
		t.Fatal(err)
	}
	r200 := p.status(200)
	if toTag(r200) != toTag(r180) {
		t.Fatalf("200 tag %q, 180 tag %q", toTag(r200), toTag(r180))
	}
	if h := r200.GetHeader("Record-Route"); h == nil || h.Value() != rr {
		t.Fatalf("Record-Route %v, want %s", h, rr)
	}
	if ct := r200.Contact(); ct == nil || ct.Address.Port != int(u.ListenAddr("udp").Port()) || ct.Address.User != "+5511999990000" {
		t.Fatalf("Contact %v", ct)
	}
	if h := r200.GetHeader("X-Ponte-Call-Id"); h == nil || strings.ContainsAny(h.Value(), "\r\n") || r200.GetHeader("X-Evil") != nil {
		t.Fatalf("extra header %v", h)
	}
	if n := len(r200.GetHeaders("Via")); n != 1 {
		t.Fatalf("%d Via headers", n)
	}
	ans := parseAnswer(t, r200)
	if codecList(ans) != "PCMA/8" || ans.DTMFPT != 101 || ans.Direction != "sendrecv" || ans.Addr != media.LocalAddr() {
		t.Fatalf("answer %s dtmf %d %s at %v", codecList(ans), ans.DTMFPT, ans.Direction, ans.Addr)
	}
	if pm := d.Answer(); codecList(pm) != "PCMA/8" || pm.Addr != netip.MustParseAddrPort("127.0.0.1:40100") {
		t.Fatalf("PBX media %s at %v", codecList(pm), pm.Addr)
	}
	if media.Remote() != netip.MustParseAddrPort("127.0.0.1:40100") {
		t.Fatalf("RTP goes to %v", media.Remote())
	}
	p.ack(toTag(r200), "", true)
	waitFor(t, func() bool { return !d.AckedAt().IsZero() }, "ACK")

	byeErr := make(chan error, 1)
	go func() { byeErr <- d.Bye(context.Background(), sip.Reason{Protocol: "Q.850", Cause: 16}) }()
	m, src := p.w.recv(3*time.Second, isReq("BYE"))
	bye := m.(*sipgo.Request)
	if bye.Recipient.User != "1001" || bye.Recipient.Port != p.w.port() {
		t.Fatalf("BYE Request-URI %s, want the PBX's Contact", bye.Recipient.String())
	}
	if h := bye.GetHeader("Route"); h == nil || h.Value() != rr {
		t.Fatalf("BYE Route %v, want %s", h, rr)
	}
	if tag, _ := bye.From().Params.Get("tag"); tag != toTag(r200) || bye.From().Address.User != "+5511999990000" {
		t.Fatalf("BYE From %s", bye.From().Value())
	}
	if tag, _ := bye.To().Params.Get("tag"); tag != p.fromTag || bye.To().Address.User != "1001" || bye.To().DisplayName != "Agent 1001" {
		t.Fatalf("BYE To %s", bye.To().Value())
	}
	if bye.CallID().Value() != p.callID || bye.GetHeader("Reason") == nil {
		t.Fatalf("BYE %s", bye.String())
	}
	p.w.send(response(bye, 200, "OK"), src)
	if err := <-byeErr; err != nil {
		t.Fatal(err)
	}
	waitClosed(t, d.Done(), "dialog end")
}

// TestUASOfferless: an INVITE without SDP gets ponte's offer in the 200;
// Answer returns once the ACK brought the answer (RFC 3264 §5, RFC 3261
// §13.2.1); an ACK without one ends the call with a BYE.
func TestUASOfferless(t *testing.T) {
	for _, ackSDP := range []bool{true, false} {
		t.Run(fmt.Sprintf("answer in ACK %v", ackSDP), func(t *testing.T) {
			u, calls := lanServer(t)
			p := newPBXLeg(t, u)
			p.invite("", "", false)
			c := nextIncoming(t, calls)
			media := newRTP(t, u)
			if c.Offer() != nil {
				t.Fatal("offer without a body")
			}
			if _, err := c.EarlyMedia(context.Background(), sip.AnswerOptions{Media: media}); !errors.Is(err, sip.ErrNoOffer) {
				t.Fatalf("EarlyMedia: %v", err)
			}
			type result struct {
				d   *sip.Dialog
				err error
			}
			done := make(chan result, 1)
			go func() {
				d, err := c.Answer(context.Background(), sip.AnswerOptions{Media: media, Codecs: []string{"PCMU", "PCMA"}, DTMFPT: 96})
				done <- result{d, err}
			}()
			r200 := p.status(200)
			offer := parseAnswer(t, r200)
			if codecList(offer) != "PCMU/0,PCMA/8" || offer.DTMFPT != 96 || offer.Addr != media.LocalAddr() {
				t.Fatalf("offer %s dtmf %d at %v", codecList(offer), offer.DTMFPT, offer.Addr)
			}
			select {
			case r := <-done:
				t.Fatalf("Answer returned before the ACK: %v", r.err)
			case <-time.After(200 * time.Millisecond):
			}
			if !ackSDP {
				p.ack(toTag(r200), "", true)
				m, src := p.w.recv(3*time.Second, isReq("BYE"))
				p.w.send(response(m.(*sipgo.Request), 200, "OK"), src)
				r := <-done
				if !errors.Is(r.err, sip.ErrNoAnswerSDP) || r.d != nil {
					t.Fatalf("Answer: %v", r.err)
				}
				return
			}
			p.ack(toTag(r200), sdpBody("127.0.0.1", 40200, 1, "", 8, 96)+"a=rtpmap:96 telephone-event/8000\n", true)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if pm := r.d.Answer(); codecList(pm) != "PCMA/8" || pm.DTMFPT != 96 {
				t.Fatalf("PBX answer %s dtmf %d", codecList(pm), pm.DTMFPT)
			}
			if st := r.d.Media(); st.Codec.Name != "PCMA" || media.Remote() != netip.MustParseAddrPort("127.0.0.1:40200") {
				t.Fatalf("state %+v remote %v", st, media.Remote())
			}
			seq := p.request("BYE", toTag(r200), "", "", "Reason: Q.850;cause=16\n")
			if res := p.final(seq, "BYE"); res.StatusCode != 200 {
				t.Fatalf("BYE: %d", res.StatusCode)
			}
			waitClosed(t, r.d.Done(), "dialog end")
			if !r.d.RemoteBye() || r.d.RemoteReason() != "Q.850;cause=16" {
				t.Fatalf("remote bye %v %q", r.d.RemoteBye(), r.d.RemoteReason())
			}
		})
	}
}

// TestUASCancel: a CANCEL before the answer gets 200, the INVITE 487 with
// the To tag of the 180 (RFC 3261 §9.2, §8.2.6.2), Canceled closes with the
// CANCEL's Reason, and the call can no longer be answered.
func TestUASCancel(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite(sdpBody("127.0.0.1", 40100, 1, "", 0), "", false)
	c := nextIncoming(t, calls)
	if err := c.Ring(180, "Ringing"); err != nil {
		t.Fatal(err)
	}
	r180 := p.status(180)
	p.cancel("Reason: Q.850;cause=16;text=\"agent hung up\"\n")
	if res := p.final(p.cseq, "CANCEL"); res.StatusCode != 200 {
		t.Fatalf("CANCEL: %d", res.StatusCode)
	}
	r487 := p.status(487)
	if toTag(r487) != toTag(r180) {
		t.Fatalf("487 tag %q, 180 tag %q", toTag(r487), toTag(r180))
	}
	p.ack(toTag(r487), "", false)
	waitClosed(t, c.Canceled(), "Canceled")
	if c.CancelReason() != `Q.850;cause=16;text="agent hung up"` {
		t.Fatalf("CancelReason %q", c.CancelReason())
	}
	if _, err := c.Answer(context.Background(), sip.AnswerOptions{Media: newRTP(t, u)}); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("Answer: %v", err)
	}
	if err := c.Ring(180, "Ringing"); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("Ring: %v", err)
	}
	if err := c.Reject(486, "Busy Here"); !errors.Is(err, sip.ErrCanceled) {
		t.Fatalf("Reject: %v", err)
	}
}

// TestUASCancelAfterAnswer: a CANCEL for an answered INVITE gets 200 and
// changes nothing (RFC 3261 §9.2), over UDP (sipgo's transaction still
// lives) and over TCP (it ended with the 2xx; the UA's CANCEL hook answers).
func TestUASCancelAfterAnswer(t *testing.T) {
	t.Run("udp", func(t *testing.T) {
		p, d, _ := answered(t, "", sip.AnswerOptions{})
		p.cancel("")
		if res := p.final(p.cseq, "CANCEL"); res.StatusCode != 200 {
			t.Fatalf("CANCEL: %d", res.StatusCode)
		}
		select {
		case <-d.Done():
			t.Fatal("CANCEL ended an answered call")
		case <-time.After(200 * time.Millisecond):
		}
	})
	t.Run("tcp", func(t *testing.T) {
		u, calls := lanServer(t)
		tw := dialTCPWire(t, u)
		branch := "z9hG4bK-tcp-inv"
		body := sdpBody("127.0.0.1", 40100, 1, "", 0)
		tw.send(tw.msg("INVITE", branch, 1, "INVITE", "", "Content-Type: application/sdp\n", body))
		c := nextIncoming(t, calls)
		d, err := c.Answer(context.Background(), sip.AnswerOptions{Media: newRTP(t, u)})
		if err != nil {
			t.Fatal(err)
		}
		res := tw.recvStatus(t, "INVITE", 200)
		tag := toTag(res)
		tw.send(tw.msg("ACK", "z9hG4bK-tcp-ack", 1, "ACK", tag, "", ""))
		waitFor(t, func() bool { return !d.AckedAt().IsZero() }, "ACK over TCP")
		tw.send(tw.msg("CANCEL", branch, 1, "CANCEL", "", "", ""))
		if res := tw.recvStatus(t, "CANCEL", 0); res.StatusCode != 200 {
			t.Fatalf("CANCEL after the 2xx over TCP: %d", res.StatusCode)
		}
		tw.send(tw.msg("CANCEL", "z9hG4bK-other", 1, "CANCEL", "", "", ""))
		if res := tw.recvStatus(t, "CANCEL", 0); res.StatusCode != 481 {
			t.Fatalf("CANCEL matching nothing: %d, want 481", res.StatusCode)
		}
		select {
		case <-d.Done():
			t.Fatal("CANCEL ended an answered call")
		case <-time.After(100 * time.Millisecond):
		}
		tw.send(tw.msg("BYE", "z9hG4bK-tcp-bye", 2, "BYE", tag, "", ""))
		tw.recvStatus(t, "BYE", 200)
		waitClosed(t, d.Done(), "dialog end")
	})
}

// tcpWire is a raw SIP peer over one TCP connection.
type tcpWire struct {
	conn   net.Conn
	r      *bufio.Reader
	port   int
	callID string
}

func dialTCPWire(t *testing.T, u *sip.UA) *tcpWire {
	c, err := net.Dial("tcp", u.ListenAddr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpWire{conn: c, r: bufio.NewReader(c), port: c.LocalAddr().(*net.TCPAddr).Port,
		callID: fmt.Sprintf("tcp-%d@pbx", time.Now().UnixNano())}
}

func (w *tcpWire) msg(method, branch string, cseq int, cseqMethod, toTag, extra, body string) string {
	to := "<sip:+5511999990000@127.0.0.1>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	return fmt.Sprintf("%s sip:+5511999990000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:%d;branch=%s\nMax-Forwards: 70\nFrom: <sip:1001@127.0.0.1>;tag=tcpfrom\nTo: %s\nCall-ID: %s\nCSeq: %d %s\nContact: <sip:1001@127.0.0.1:%d;transport=tcp>\n%sContent-Length: %d\n\n%s",
		method, w.port, branch, to, w.callID, cseq, cseqMethod, w.port, extra, wireLen(body), body)
}

func (w *tcpWire) send(msg string) {
	_, _ = w.conn.Write([]byte(strings.ReplaceAll(msg, "\n", "\r\n")))
}

// recvStatus reads messages until a final response to method (with code,
// if not 0).
func (w *tcpWire) recvStatus(t *testing.T, method string, code int) *sipgo.Response {
	t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var head bytes.Buffer
		n := 0
		for {
			line, err := w.r.ReadString('\n')
			if err != nil {
				t.Fatalf("tcp read: %v", err)
			}
			head.WriteString(line)
			if l := strings.TrimSpace(line); l == "" {
				if head.Len() <= 2 {
					head.Reset() // keep-alive CRLF
					continue
				}
				break
			} else if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(w.r, body); err != nil {
			t.Fatal(err)
		}
		m, err := sipgo.ParseMessage(append(head.Bytes(), body...))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if r, ok := m.(*sipgo.Response); ok && r.StatusCode >= 200 && string(r.CSeq().MethodName) == method && (code == 0 || r.StatusCode == code) {
			return r
		}
	}
}

// TestUASInDialog: a PBX re-INVITE putting the call on hold gets the
// mirrored direction (RFC 3264 §6.1) and reaches OnMediaChange; INFO DTMF
// reaches OnDTMF.
func TestUASInDialog(t *testing.T) {
	p, d, tag := answered(t, "", sip.AnswerOptions{Codecs: []string{"PCMU"}})
	var mu sync.Mutex
	var states []sip.MediaState
	var digits []string
	d.OnMediaChange(func(s sip.MediaState) { mu.Lock(); states = append(states, s); mu.Unlock() })
	d.OnDTMF(func(r rune, dur time.Duration) {
		mu.Lock()
		digits = append(digits, fmt.Sprintf("%c/%d", r, dur.Milliseconds()))
		mu.Unlock()
	})

	seq := p.request("INVITE", tag, "application/sdp", sdpBody("127.0.0.1", 40100, 2, "sendonly", 0, 101), "")
	res := p.final(seq, "INVITE")
	if md := parseAnswer(t, res); md.Direction != "recvonly" || codecList(md) != "PCMU/0" {
		t.Fatalf("hold answer %s %s", md.Direction, codecList(md))
	}
	p.ack(tag, "", true) // CSeq seq
	mu.Lock()
	got := append([]sip.MediaState(nil), states...)
	mu.Unlock()
	if len(got) != 1 || !got[0].Held || got[0].Send || !got[0].Recv {
		t.Fatalf("media changes %+v", got)
	}
	seq = p.request("INFO", tag, "application/dtmf-relay", "Signal=5\nDuration=160\n", "")
	if res := p.final(seq, "INFO"); res.StatusCode != 200 {
		t.Fatalf("INFO: %d", res.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(digits) != 1 || digits[0] != "5/160" {
		t.Fatalf("digits %v", digits)
	}
}
