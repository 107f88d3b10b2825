package sip_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// lanServer starts a UA whose SIP server trusts loopback.
func lanServer(t *testing.T, mod ...func(*sip.Config)) (*sip.UA, chan *sip.IncomingCall) {
	return serverUA(t, sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}}, mod...)
}

func codecList(md *sip.MediaDesc) string {
	var s []string
	for _, c := range md.Codecs {
		s = append(s, c.Name+"/"+strconv.Itoa(int(c.PT)))
	}
	return strings.Join(s, ",")
}

// audioBothWays plays 1000 Hz from a to b and 440 Hz from b to a and
// checks what each side decoded.
func audioBothWays(t *testing.T, ctx context.Context, a, b *sip.RTPSession) {
	t.Helper()
	gotA, gotB := make(chan []int16, 1), make(chan []int16, 1)
	go func() { pcm, _ := receiveAudio(a, 40*160, 5*time.Second); gotA <- pcm }()
	go func() { pcm, _ := receiveAudio(b, 40*160, 5*time.Second); gotB <- pcm }()
	sent := make(chan error, 1)
	go func() { sent <- sendTone(ctx, a, 1000, 60, 0x1a) }()
	if err := sendTone(ctx, b, 440, 60, 0x1b); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	assertTone(t, <-gotB, 1000)
	assertTone(t, <-gotA, 440)
}

// TestUASAnswerAudioBye: a PBX (a ponte UA dialing as UAC) calls ponte's
// server over UDP and TCP; ponte rings, answers with its first codec the
// offer has (PCMU, though the PBX preferred PCMA: RFC 3264 §6.1 lets the
// answerer choose), the dialog confirms on the ACK, tones cross both ways,
// and the BYE works from either side.
func TestUASAnswerAudioBye(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		for _, byeBy := range []string{"pbx", "ponte"} {
			t.Run(transport+"/bye-by-"+byeBy, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				srv, calls := lanServer(t)
				pbxUA := newUA(t)
				pbxMedia := newRTP(t, pbxUA)
				trunk := &sip.Trunk{Name: "ponte", Address: srv.ListenAddr(transport).String(), Transport: transport, Codecs: []string{"PCMA", "PCMU"}}
				var prov provLog
				out, err := pbxUA.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "+5511999990000", FromUser: "1001", Media: pbxMedia, OnProvisional: prov.add})
				if err != nil {
					t.Fatal(err)
				}
				c := nextIncoming(t, calls)
				if c.Offer() == nil || codecList(c.Offer()) != "PCMA/8,PCMU/0" || c.Request().Recipient.User != "+5511999990000" {
					t.Fatalf("offer %v, Request-URI %s", c.Offer(), c.Request().Recipient.String())
				}
				if got := strings.ToLower(c.Request().Transport()); got != transport || c.CallID() != out.CallID() {
					t.Fatalf("transport %s call-id %s", got, c.CallID())
				}
				if err := c.Ring(180, "Ringing"); err != nil {
					t.Fatal(err)
				}
				// sipgo hands each message to its own goroutine, so a 200 right
				// behind the 180 may overtake it at the PBX: answer once it rang.
				waitFor(t, func() bool { codes, _ := prov.get(); return containsInt(codes, 180) }, "180 at the PBX")
				media := newRTP(t, srv)
				d, err := c.Answer(ctx, sip.AnswerOptions{Media: media, Codecs: []string{"PCMU", "PCMA"}})
				if err != nil {
					t.Fatal(err)
				}
				ans, err := out.WaitAnswer(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if codecList(ans) != "PCMU/0" || ans.DTMFPT != 101 || ans.Addr != media.LocalAddr() {
					t.Fatalf("ponte's answer: %s dtmf %d at %v", codecList(ans), ans.DTMFPT, ans.Addr)
				}
				if pm := d.Answer(); codecList(pm) != "PCMU/0" || pm.Addr != pbxMedia.LocalAddr() || pm.DTMFPT != 101 {
					t.Fatalf("dialog's PBX media: %s at %v dtmf %d", codecList(pm), pm.Addr, pm.DTMFPT)
				}
				if st := d.Media(); st.Codec.Name != "PCMU" || st.Held || !st.Send || !st.Recv {
					t.Fatalf("media state %+v", st)
				}
				contact := out.AnswerHeader("Contact")
				wantPort := ":" + strconv.Itoa(int(srv.ListenAddr(transport).Port()))
				if len(contact) != 1 || !strings.Contains(contact[0], wantPort) || (transport == "tcp") != strings.Contains(contact[0], "transport=tcp") {
					t.Fatalf("Contact %v, want port %s over %s", contact, wantPort, transport)
				}
				waitFor(t, func() bool { return !d.AckedAt().IsZero() }, "the PBX's ACK")

				audioBothWays(t, ctx, pbxMedia, media)

				reason := sip.Reason{Protocol: "Q.850", Cause: 16, Text: "Normal call clearing"}
				if byeBy == "pbx" {
					if err := out.Bye(ctx, reason); err != nil {
						t.Fatal(err)
					}
					waitClosed(t, d.Done(), "ponte's dialog end")
					if !d.RemoteBye() || d.RemoteReason() != reason.String() || d.Err() != nil {
						t.Fatalf("remote bye %v reason %q err %v", d.RemoteBye(), d.RemoteReason(), d.Err())
					}
					return
				}
				if err := d.Bye(ctx, reason); err != nil {
					t.Fatal(err)
				}
				waitClosed(t, out.Done(), "the PBX's dialog end")
				if !out.RemoteBye() || out.RemoteReason() != reason.String() || d.RemoteBye() {
					t.Fatalf("PBX saw remote bye %v reason %q", out.RemoteBye(), out.RemoteReason())
				}
			})
		}
	}
}

// TestUASTLS: an INVITE over TLS is answered with a Contact asking for TLS
// on ponte's tls listener, and ponte's BYE reaches the PBX over the PBX's
// own connection.
func TestUASTLS(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv, calls := lanServer(t, func(c *sip.Config) {
		c.Listen = []string{"udp:127.0.0.1:0", "tls:127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = pki.ServerCert, pki.ServerKey
	})
	pbxUA := tlsUA(t, pki)
	pbxMedia := newRTP(t, pbxUA)
	trunk := &sip.Trunk{Name: "ponte", Address: srv.ListenAddr("tls").String(), Transport: "tls", Codecs: []string{"PCMU"},
		TLS: &sip.TLSConfig{CAFile: pki.CAFile}}
	out, err := pbxUA.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "+5511999990000", FromUser: "1001", Media: pbxMedia})
	if err != nil {
		t.Fatal(err)
	}
	c := nextIncoming(t, calls)
	if c.Request().Transport() != "TLS" {
		t.Fatalf("INVITE over %s", c.Request().Transport())
	}
	media := newRTP(t, srv)
	d, err := c.Answer(ctx, sip.AnswerOptions{Media: media, Codecs: []string{"PCMU"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	contact := out.AnswerHeader("Contact")
	wantPort := ":" + strconv.Itoa(int(srv.ListenAddr("tls").Port()))
	if len(contact) != 1 || !strings.Contains(contact[0], "transport=tls") || !strings.Contains(contact[0], wantPort) {
		t.Fatalf("Contact %v, want transport=tls on %s", contact, wantPort)
	}
	waitFor(t, func() bool { return !d.AckedAt().IsZero() }, "ACK over TLS")
	if err := d.Bye(ctx, sip.Reason{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, out.Done(), "the PBX's dialog end")
	if !out.RemoteBye() {
		t.Fatal("the PBX did not get ponte's BYE")
	}
}

// TestUASCloseAnswers503: closing the UA answers a waiting INVITE 503.
func TestUASCloseAnswers503(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	p.invite(sdpBody("127.0.0.1", 40300, 1, "", 0), "", false)
	c := nextIncoming(t, calls)
	if err := c.Ring(180, "Ringing"); err != nil {
		t.Fatal(err)
	}
	r180 := p.status(180)
	u.Close()
	res := p.status(503)
	if toTag(res) != toTag(r180) {
		t.Fatalf("503 tag %q, 180 tag %q", toTag(res), toTag(r180))
	}
	if _, err := c.Answer(context.Background(), sip.AnswerOptions{Media: nil}); !errors.Is(err, sip.ErrCallFinal) {
		t.Fatalf("Answer after close: %v", err)
	}
}

// TestUASExpires: an INVITE whose Expires runs out unanswered gets 487
// (RFC 3261 §13.3.1) and Canceled closes.
func TestUASExpires(t *testing.T) {
	u, calls := lanServer(t)
	p := newPBXLeg(t, u)
	start := time.Now()
	p.invite("", "Expires: 1\n", false)
	c := nextIncoming(t, calls)
	res := p.final(1, "INVITE")
	if res.StatusCode != 487 || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("got %d after %v, want 487 after 1 s", res.StatusCode, time.Since(start))
	}
	waitClosed(t, c.Canceled(), "Canceled")
	p.ack(toTag(res), "", false)
}
