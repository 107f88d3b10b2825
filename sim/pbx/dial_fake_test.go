package pbx_test

// Dial against a bare sipgo UAS written here, standing in for ponte where
// the simulator as callee cannot: an offer in the 200 (NoSDP), a Record-
// Route, chosen failure responses with their headers.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/transcode"
)

type fakeUAS struct {
	addr    netip.AddrPort
	invites chan *gosip.Request
	acks    chan *gosip.Request
	byes    chan *gosip.Request
}

// startFake serves SIP on a UDP port; answer responds to each INVITE.
func startFake(t *testing.T, answer func(f *fakeUAS, req *gosip.Request, tx gosip.ServerTransaction)) *fakeUAS {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUAS{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		invites: make(chan *gosip.Request, 4), acks: make(chan *gosip.Request, 4), byes: make(chan *gosip.Request, 4)}
	ua, err := sipgo.NewUA(sipgo.WithUserAgentTransactionLayerOptions(gosip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(gosip.WithTransportLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	srv.OnInvite(func(req *gosip.Request, tx gosip.ServerTransaction) { f.invites <- req; answer(f, req, tx) })
	srv.OnAck(func(req *gosip.Request, _ gosip.ServerTransaction) { f.acks <- req })
	srv.OnBye(func(req *gosip.Request, tx gosip.ServerTransaction) {
		f.byes <- req
		_ = tx.Respond(gosip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() {
		ua.Close()
		conn.Close()
		<-served
	})
	return f
}

func (f *fakeUAS) target(user string) string { return "sip:" + user + "@" + f.addr.String() }

// reply answers req with code, a To tag, a Contact (the fake) and, on a
// 2xx, a Record-Route set whose near end is the fake; extra headers and an
// SDP body if any.
func (f *fakeUAS) reply(req *gosip.Request, tx gosip.ServerTransaction, code int, reason string, body []byte, hdrs ...gosip.Header) {
	res := gosip.NewResponseFromRequest(req, code, reason, body)
	res.To().Params.Add("tag", "fk1")
	if code < 300 {
		// Two proxies on the path: the far one (never reached: port 9) first,
		// ours last; the caller reverses them (RFC 3261 §12.1.2).
		res.AppendHeader(gosip.NewHeader("Record-Route", "<sip:127.0.0.1:9;lr>"))
		res.AppendHeader(gosip.NewHeader("Record-Route", "<sip:"+f.addr.String()+";lr>"))
		res.AppendHeader(&gosip.ContactHeader{Address: gosip.Uri{Scheme: "sip", User: "ponte", Host: "127.0.0.1", Port: int(f.addr.Port())}})
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if body != nil {
		ct := gosip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	_ = tx.Respond(res)
}

func recv(t *testing.T, what string, ch chan *gosip.Request) *gosip.Request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
		return nil
	}
}

// TestDialNoSDP: an INVITE without an offer; the 200 carries the offer
// (PCMU, PCMA, telephone-event 101), the ACK the answer (the caller's
// first codec in it, PCMA). Audio flows both ways on it, and the BYE
// follows the dialog: Request-URI the Contact, Route the Record-Route, our
// From tag and the 200's To tag.
func TestDialNoSDP(t *testing.T) {
	media, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer media.Close()
	maddr := media.LocalAddr().(*net.UDPAddr).AddrPort()
	offer := sip.BuildSDP(sip.SDPSpec{Addr: maddr, DTMFPT: 101, SessID: 7, Version: 7,
		Codecs: []sip.CodecDesc{{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}, {PT: 8, Name: "PCMA", Rate: 8000, Channels: 1}}})
	f := startFake(t, func(f *fakeUAS, req *gosip.Request, tx gosip.ServerTransaction) {
		f.reply(req, tx, 180, "Ringing", nil)
		f.reply(req, tx, 200, "OK", offer)
	})
	a := startPBX(t, pbx.Config{Codecs: []string{"PCMA", "PCMU"}, ToneHz: 700, ExpectToneHz: 1200})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := a.Dial(ctx, pbx.DialOptions{Target: f.target("+5511987654321"), NoSDP: true})
	if err != nil {
		t.Fatal(err)
	}
	inv := recv(t, "INVITE", f.invites)
	if len(inv.Body()) != 0 || inv.ContentType() != nil {
		t.Fatalf("INVITE has a body: %q", inv.Body())
	}
	ack := recv(t, "ACK", f.acks)
	if ack.CSeq().SeqNo != inv.CSeq().SeqNo || ack.CSeq().MethodName != gosip.ACK || ack.Recipient.User != "ponte" {
		t.Fatalf("ACK %s CSeq %v", ack.Recipient.String(), ack.CSeq())
	}
	routes := func(r *gosip.Request) string {
		var vs []string
		for _, h := range r.GetHeaders("Route") {
			vs = append(vs, h.Value())
		}
		return strings.Join(vs, ", ")
	}
	wantRoutes := "<sip:" + f.addr.String() + ";lr>, <sip:127.0.0.1:9;lr>"
	if got := routes(ack); got != wantRoutes {
		t.Fatalf("ACK Route %q, want %q", got, wantRoutes)
	}
	ans, err := sip.ParseSDP(ack.Body())
	if err != nil {
		t.Fatalf("ACK answer %q: %v", ack.Body(), err)
	}
	if len(ans.Codecs) != 1 || ans.Codecs[0].PT != 8 || ans.DTMFPT != 101 || ans.Direction != "sendrecv" {
		t.Fatalf("answer %+v", ans)
	}
	if ca.Codec().Name != "PCMA" || ca.Offer().Addr != maddr || ca.Remote().Addr != maddr {
		t.Fatalf("caller codec %s offer %v", ca.Codec().Name, ca.Offer().Addr)
	}

	// 1 s of 1200 Hz PCMA from the offerer; what the caller sends is read back.
	var wg sync.WaitGroup
	var got []int16
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		frame := make([]int16, 160)
		var p rtp.Packet
		for {
			_ = media.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			n, err := media.Read(buf)
			if err != nil {
				return
			}
			if p.Unmarshal(buf[:n]) == nil && p.PayloadType == 8 && len(p.Payload) == 160 {
				transcode.ALawDecode(frame, p.Payload)
				got = append(got, frame...)
			}
		}
	}()
	gen := transcode.NewToneGen(1200, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	h := rtp.Header{Version: 2, PayloadType: 8, SSRC: 5, SequenceNumber: 1, Timestamp: 160}
	start := time.Now()
	for i := 0; i < 50; i++ {
		gen.Fill(pcm)
		transcode.ALawEncode(payload, pcm)
		pkt, _ := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
		if _, err := media.WriteToUDPAddrPort(pkt, ans.Addr); err != nil {
			t.Fatal(err)
		}
		h.SequenceNumber++
		h.Timestamp += 160
		time.Sleep(20 * time.Millisecond)
	}
	heardTone(t, "caller hears the offerer", ca.Received(), start.Add(200*time.Millisecond))
	if err := ca.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(got) < 8000 {
		t.Fatalf("offerer got %d samples", len(got))
	}
	if on, off := transcode.Goertzel(got, 8000, 700), transcode.Goertzel(got, 8000, 1200); on < 100*off {
		t.Fatalf("offerer: 700 Hz %g vs 1200 Hz %g", on, off)
	}
	bye := recv(t, "BYE", f.byes)
	ft, _ := bye.From().Params.Get("tag")
	tt, _ := bye.To().Params.Get("tag")
	wantFrom, _ := inv.From().Params.Get("tag")
	if bye.Recipient.User != "ponte" || ft != wantFrom || tt != "fk1" || bye.CallID().Value() != inv.CallID().Value() ||
		bye.CSeq().SeqNo <= inv.CSeq().SeqNo || routes(bye) != wantRoutes {
		t.Fatalf("BYE:\n%s", bye.String())
	}
}

// TestDialFinalResponses: the INVITE as sent (From, Contact, extra
// headers, the offer in codec order) and what comes back: failures with
// their Warning and Retry-After, and a 200 without an answer (ACKed, then
// BYEd with 488).
func TestDialFinalResponses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		reason string
		hdr    gosip.Header
	}{
		{"403 with Warning", 403, "Forbidden", gosip.NewHeader("Warning", `399 ponte "no call permission"`)},
		{"480 with Retry-After", 480, "Temporarily Unavailable", gosip.NewHeader("Retry-After", "120")},
		{"200 without answer", 200, "OK", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(f *fakeUAS, req *gosip.Request, tx gosip.ServerTransaction) {
				if tc.hdr == nil {
					f.reply(req, tx, tc.code, tc.reason, nil)
					return
				}
				f.reply(req, tx, tc.code, tc.reason, nil, tc.hdr)
			})
			a := startPBX(t, pbx.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := a.Dial(ctx, pbx.DialOptions{Target: f.target("+5511987654321"), From: "1007", Codecs: []string{"opus", "PCMU"},
				Headers: []gosip.Header{gosip.NewHeader("X-Agent", "alice")}})
			inv := recv(t, "INVITE", f.invites)
			md, perr := sip.ParseSDP(inv.Body())
			if perr != nil || len(md.Codecs) != 2 || md.Codecs[0].Name != "opus" || md.Codecs[1].Name != "PCMU" || md.DTMFPT != 101 {
				t.Fatalf("offer %+v %v", md, perr)
			}
			if inv.From().Address.User != "1007" || inv.Contact() == nil || inv.Contact().Address.User != "1007" ||
				inv.GetHeader("X-Agent") == nil || inv.GetHeader("X-Agent").Value() != "alice" || inv.Recipient.User != "+5511987654321" {
				t.Fatalf("INVITE:\n%s", inv.String())
			}
			if tc.code == 200 {
				if !errors.Is(err, pbx.ErrNoMedia) {
					t.Fatalf("want ErrNoMedia, got %v", err)
				}
				recv(t, "ACK", f.acks)
				if bye := recv(t, "BYE", f.byes); !strings.Contains(bye.GetHeader("Reason").Value(), "cause=488") {
					t.Fatalf("BYE Reason %v", bye.GetHeader("Reason"))
				}
				return
			}
			var de *pbx.DialError
			if !errors.As(err, &de) || de.Code != tc.code || de.Reason != tc.reason {
				t.Fatalf("want DialError %d, got %v", tc.code, err)
			}
			if h := de.Response.GetHeader(tc.hdr.Name()); h == nil || h.Value() != tc.hdr.Value() {
				t.Fatalf("%s: %v", tc.hdr.Name(), h)
			}
		})
	}
}
