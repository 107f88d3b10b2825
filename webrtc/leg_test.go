package webrtc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/webrtc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newEngine(t testing.TB, mod func(*webrtc.Config)) *webrtc.Engine {
	t.Helper()
	cfg := webrtc.Config{ListenUDP: "127.0.0.1:0", IncludeLoopback: true, ConnectTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	e, err := webrtc.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func newLeg(t testing.TB, e *webrtc.Engine) *webrtc.Leg {
	t.Helper()
	l, err := e.NewLeg("wacid.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func mediaAttrs(t *testing.T, answer string) (*sdp.SessionDescription, *sdp.MediaDescription) {
	t.Helper()
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(answer); err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, answer)
	}
	if len(sd.MediaDescriptions) != 1 {
		t.Fatalf("answer has %d m-lines, want 1:\n%s", len(sd.MediaDescriptions), answer)
	}
	return sd, sd.MediaDescriptions[0]
}

func values(md *sdp.MediaDescription, key string) []string {
	var out []string
	for _, a := range md.Attributes {
		if a.Key == key {
			out = append(out, a.Value)
		}
	}
	return out
}

// TestAnswerMetaProfile answers Meta's verbatim offer (§5.1) and its SIP-delivered variant and
// checks every item of Meta's mandatory list (§5.3).
func TestAnswerMetaProfile(t *testing.T) {
	sipFmtp := "maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1"
	tests := []struct {
		name     string
		offer    string
		wantFmtp string
		wantMid  string
	}{
		{"graph api offer", metaOffer(), "minptime=10;useinbandfec=1", "audio"},
		{"sip-style fmtp", strings.Replace(metaOffer(), "minptime=10;useinbandfec=1", sipFmtp, 1), sipFmtp, "audio"},
		{"no bundle group", strings.Replace(metaOffer(), "a=group:BUNDLE audio\r\n", "", 1), "minptime=10;useinbandfec=1", "audio"},
	}
	e := newEngine(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLeg(t, e)
			start := time.Now()
			answer, err := l.Answer(tc.offer)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("Answer took %s", time.Since(start))
			sd, md := mediaAttrs(t, answer)
			if md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0 {
				t.Fatalf("m-line %v", md.MediaName)
			}
			if _, lite := sd.Attribute("ice-lite"); lite {
				t.Error("answer is ice-lite; must be ICE-full")
			}
			if got := values(md, "setup"); len(got) != 1 || got[0] != "active" {
				t.Errorf("setup = %v, want [active]", got)
			}
			if got, _ := md.Attribute("mid"); got != tc.wantMid {
				t.Errorf("mid = %q, want %q", got, tc.wantMid)
			}
			if g, _ := sd.Attribute("group"); g != "BUNDLE "+tc.wantMid {
				t.Errorf("group = %q", g)
			}
			wantFormats := []string{"111", "126"}
			if fmt.Sprint(md.MediaName.Formats) != fmt.Sprint(wantFormats) {
				t.Errorf("formats = %v, want %v", md.MediaName.Formats, wantFormats)
			}
			rtpmaps := values(md, "rtpmap")
			if fmt.Sprint(rtpmaps) != fmt.Sprint([]string{"111 opus/48000/2", "126 telephone-event/8000"}) {
				t.Errorf("rtpmap = %q", rtpmaps)
			}
			if f := values(md, "fmtp"); len(f) == 0 || f[0] != "111 "+tc.wantFmtp {
				t.Errorf("fmtp = %q, want Meta's echoed", f)
			}
			if p := values(md, "ptime"); fmt.Sprint(p) != "[20]" {
				t.Errorf("ptime = %v", p)
			}
			for _, k := range []string{"sendrecv", "rtcp-mux"} {
				if _, ok := md.Attribute(k); !ok {
					t.Errorf("missing a=%s", k)
				}
			}
			if len(values(md, "extmap")) != 0 {
				t.Errorf("extmaps echoed: %v", values(md, "extmap"))
			}
			ssrcs := map[string]bool{}
			for _, v := range values(md, "ssrc") {
				s, _, _ := strings.Cut(v, " ")
				ssrcs[s] = true
			}
			if len(ssrcs) != 1 || !ssrcs[fmt.Sprint(l.SSRC())] {
				t.Errorf("ssrcs %v, leg SSRC %d", ssrcs, l.SSRC())
			}
			fp := values(md, "fingerprint")
			if sfp, ok := sd.Attribute("fingerprint"); ok {
				fp = append(fp, sfp)
			}
			if len(fp) != 1 || !strings.HasPrefix(fp[0], "sha-256 ") {
				t.Errorf("fingerprint = %v", fp)
			}
			checkCandidates(t, values(md, "candidate"), fmt.Sprintf("127.0.0.1 %d typ host", e.LocalAddr().Port()))
			if o, te, ok := l.PayloadTypes(); o != 111 || te != 126 || !ok {
				t.Errorf("PayloadTypes = %d %d %v", o, te, ok)
			}
		})
	}
}

func TestAnswerTwice(t *testing.T) {
	l := newLeg(t, newEngine(t, nil))
	if _, err := l.Answer(metaOffer()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Answer(metaOffer()); !errors.Is(err, webrtc.ErrState) {
		t.Fatalf("second Answer: %v, want ErrState", err)
	}
}

func TestPublicIPs(t *testing.T) {
	e := newEngine(t, func(c *webrtc.Config) { c.PublicIPs = []string{"203.0.113.10"} })
	l := newLeg(t, e)
	answer, err := l.Answer(metaOffer())
	if err != nil {
		t.Fatal(err)
	}
	_, md := mediaAttrs(t, answer)
	checkCandidates(t, values(md, "candidate"), fmt.Sprintf("203.0.113.10 %d typ host", e.LocalAddr().Port()))
}

// checkCandidates wants host candidates on exactly one address (pion lists it for component 1
// and, redundantly with rtcp-mux, component 2).
func checkCandidates(t *testing.T, cands []string, want string) {
	t.Helper()
	if len(cands) == 0 {
		t.Fatal("no candidates")
	}
	for _, c := range cands {
		if !strings.Contains(c, want) {
			t.Errorf("candidate %q, want only %q", c, want)
		}
	}
}

func TestAnswerRejectsBadOffers(t *testing.T) {
	video := "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\na=sendrecv\r\n"
	for _, tc := range badOffers(video) {
		t.Run(tc.name, func(t *testing.T) {
			if err := webrtc.ValidateOffer(tc.offer); !errors.Is(err, webrtc.ErrBadOffer) {
				t.Fatalf("ValidateOffer: %v, want ErrBadOffer", err)
			}
			l := newLeg(t, newEngine(t, nil))
			if _, err := l.Answer(tc.offer); !errors.Is(err, webrtc.ErrBadOffer) {
				t.Fatalf("Answer: %v, want ErrBadOffer", err)
			}
		})
	}
	if err := webrtc.ValidateOffer(metaOffer()); err != nil {
		t.Fatalf("Meta's own offer rejected: %v", err)
	}
}

type namedOffer struct{ name, offer string }

func badOffers(video string) []namedOffer {
	m := metaOffer()
	mline := "m=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\n"
	audioIdx := strings.Index(m, mline)
	head, audio := m[:audioIdx], m[audioIdx:]
	return []namedOffer{
		{"video only", head + video},
		{"audio plus video", m + video},
		{"two audio lines", m + strings.Replace(audio, "a=mid:audio", "a=mid:audio2", 1)},
		{"no opus", strings.NewReplacer("111 126\r\n", "0 126\r\n", "a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000").Replace(m)},
		{"opus at 16k", strings.Replace(m, "opus/48000/2", "opus/16000", 1)},
		{"no fingerprint", strings.Replace(m, "a=fingerprint:sha-256 ", "a=x-fp:", 1)},
		{"setup active", strings.Replace(m, "a=setup:actpass", "a=setup:active", 1)},
		{"rejected m-line", strings.Replace(m, "m=audio 9 ", "m=audio 0 ", 1)},
		{"plain RTP/AVP", strings.Replace(m, "UDP/TLS/RTP/SAVPF", "RTP/AVP", 1)},
		{"no ice credentials", strings.Replace(m, "a=ice-pwd:", "a=x-pwd:", 1)},
		{"not sdp", "hello"},
		{"empty", ""},
	}
}

// connectedPair answers a lite peer's offer and waits until both sides are connected.
func connectedPair(t testing.TB, mod func(*webrtc.Config), peerOpts ...func(*litePeer)) (*webrtc.Leg, *litePeer) {
	t.Helper()
	e := newEngine(t, mod)
	l := newLeg(t, e)
	p := newLitePeer(t)
	for _, o := range peerOpts {
		o(p)
	}
	answer, err := l.Answer(p.offer())
	if err != nil {
		t.Fatal(err)
	}
	p.setAnswer(answer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitConnected(5 * time.Second)
	return l, p
}

// TestSendGate: nothing reaches the peer before EnableSend, not even RTCP; after it the packets
// arrive with the caller's PT, sequence, timestamp, marker and payload, and the leg's SSRC.
func TestSendGate(t *testing.T) {
	l, p := connectedPair(t, func(c *webrtc.Config) { c.RTCPInterval = 100 * time.Millisecond })
	h := &rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 100, Timestamp: 960}
	if err := l.WriteRTP(h, []byte{1, 2, 3}); !errors.Is(err, webrtc.ErrSendGated) {
		t.Fatalf("WriteRTP before EnableSend: %v, want ErrSendGated", err)
	}
	// The WhatsApp side talks for 1.2 s (more than pion's default 1 s RTCP report interval and
	// 12 of our own intervals) while the gate is closed: the leg must stay silent, no RR either.
	for i := range 60 {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(960 * i)}, Payload: []byte{0xfc, 0xff, 0xfe}}
		if err := p.track.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, c := p.raw.counts(); r != 0 || c != 0 {
		t.Fatalf("peer received %d RTP and %d RTCP before EnableSend", r, c)
	}
	if s := l.Stats(); s.PacketsOut != 0 || s.RTCPOut != 0 {
		t.Fatalf("stats before EnableSend: %+v", s)
	}

	l.EnableSend()
	type sent struct {
		pt     uint8
		seq    uint16
		ts     uint32
		marker bool
		data   []byte
	}
	var want []sent
	for i := range 10 {
		want = append(want, sent{111, uint16(65530 + i), uint32(1000 + 960*i), i == 0, []byte{0xf8, byte(i), 0xaa}})
	}
	// An RFC 4733 packet for digit 5, End, duration 800, volume 10 on the same sequence space.
	want = append(want, sent{126, 4, 1000 + 960*10, true, []byte{5, 0x8a, 0x03, 0x20}})
	for _, s := range want {
		h := &rtp.Header{Version: 2, PayloadType: s.pt, SequenceNumber: s.seq, Timestamp: s.ts, Marker: s.marker, SSRC: 42}
		if err := l.WriteRTP(h, s.data); err != nil {
			t.Fatal(err)
		}
		if h.SSRC != 42 {
			t.Fatal("WriteRTP modified the caller's header")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, s := range want {
		select {
		case got := <-p.packets:
			if got.PayloadType != s.pt || got.SequenceNumber != s.seq || got.Timestamp != s.ts ||
				got.Marker != s.marker || got.SSRC != l.SSRC() || !bytes.Equal(got.Payload, s.data) {
				t.Fatalf("packet %d: got pt=%d seq=%d ts=%d m=%v ssrc=%d %x, want %+v ssrc=%d",
					i, got.PayloadType, got.SequenceNumber, got.Timestamp, got.Marker, got.SSRC, got.Payload, s, l.SSRC())
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("packet %d not received", i)
		}
	}
	if err := l.WriteRTP(&rtp.Header{Version: 2, PayloadType: 0}, []byte{1}); !errors.Is(err, webrtc.ErrPayloadType) {
		t.Fatalf("PT 0: %v, want ErrPayloadType", err)
	}
	// After the gate opened, RTCP reports flow (SR, since RTP was sent).
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, c := p.raw.counts(); c > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no RTCP after EnableSend")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := l.Stats(); s.PacketsOut != uint64(len(want)) || s.BytesOut != 34 || s.RTCPOut == 0 {
		t.Fatalf("stats %+v", s)
	}
	// The raw counter saw the first RTCP after the first RTP: nothing leaked before the gate.
	p.raw.mu.Lock()
	firstRTP, firstRTCP := p.raw.firstRTP, p.raw.firstRTCP
	p.raw.mu.Unlock()
	if firstRTCP.Before(firstRTP) {
		t.Fatalf("first RTCP %v before first RTP %v", firstRTCP, firstRTP)
	}
}

// TestReadRTP: the peer's packets come out of ReadRTP unchanged, and the stats count them.
func TestReadRTP(t *testing.T) {
	l, p := connectedPair(t, nil)
	const n = 20
	for i := range n {
		err := p.track.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: uint16(500 + i), Timestamp: uint32(960 * i)},
			Payload: []byte{0xfc, byte(i), byte(i * 3)},
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for i := range n {
		if err := l.ReadRTP(buf, &pkt); err != nil {
			t.Fatal(err)
		}
		if pkt.PayloadType != 111 || pkt.SequenceNumber != uint16(500+i) || !bytes.Equal(pkt.Payload, []byte{0xfc, byte(i), byte(i * 3)}) {
			t.Fatalf("packet %d: pt=%d seq=%d %x", i, pkt.PayloadType, pkt.SequenceNumber, pkt.Payload)
		}
	}
	s := l.Stats()
	if s.PacketsIn != n || s.BytesIn != 3*n || s.Lost != 0 || s.RemoteSSRC != pkt.SSRC {
		t.Fatalf("stats %+v", s)
	}
}

func TestConnectTimeout(t *testing.T) {
	e := newEngine(t, func(c *webrtc.Config) { c.ConnectTimeout = 300 * time.Millisecond })
	l := newLeg(t, e)
	if _, err := l.Answer(metaOffer()); err != nil { // points at 127.0.0.1:9, where nobody answers
		t.Fatal(err)
	}
	if err := l.WaitConnected(context.Background()); !errors.Is(err, webrtc.ErrConnectTimeout) {
		t.Fatalf("WaitConnected: %v, want ErrConnectTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := newLeg(t, e).WaitConnected(ctx); !errors.Is(err, webrtc.ErrState) {
		t.Fatalf("WaitConnected before Answer: %v, want ErrState", err)
	}
}

func TestCloseUnblocks(t *testing.T) {
	e := newEngine(t, nil)
	l := newLeg(t, e)
	if _, err := l.Answer(metaOffer()); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		var p rtp.Packet
		readErr <- l.ReadRTP(make([]byte, 1500), &p)
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- l.WaitConnected(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, webrtc.ErrClosed) {
		t.Fatalf("ReadRTP after Close: %v", err)
	}
	if err := <-waitErr; !errors.Is(err, webrtc.ErrFailed) {
		t.Fatalf("WaitConnected after Close: %v", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if _, err := e.NewLeg("x"); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.NewLeg("y"); !errors.Is(err, webrtc.ErrClosed) {
		t.Fatalf("NewLeg after engine Close: %v", err)
	}
}

// TestPeerHangupClosesDone: when the WhatsApp side goes away, Done fires (ICE failed).
func TestPeerHangupClosesDone(t *testing.T) {
	l, p := connectedPair(t, func(c *webrtc.Config) {
		c.DisconnectedTimeout = 300 * time.Millisecond
		c.FailedTimeout = 600 * time.Millisecond
	})
	p.close()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the peer went away")
	}
}

// TestBusinessInitiated: Offer has Meta's profile with a=setup:actpass; a Meta-shaped answer
// (ice-lite, setup:active) connects, the leg is the DTLS server, and RFC 4733 keeps PT 126.
func TestBusinessInitiated(t *testing.T) {
	e := newEngine(t, nil)
	l := newLeg(t, e)
	if err := l.SetAnswer("v=0\r\n"); !errors.Is(err, webrtc.ErrState) {
		t.Fatalf("SetAnswer before Offer: %v", err)
	}
	offer, err := l.Offer()
	if err != nil {
		t.Fatal(err)
	}
	sd, md := mediaAttrs(t, offer)
	if _, lite := sd.Attribute("ice-lite"); lite {
		t.Error("offer is ice-lite")
	}
	for key, want := range map[string]string{
		"setup": "actpass", "ptime": "20", "fmtp": "[111 minptime=10;useinbandfec=1 126 0-15]",
	} {
		if got := values(md, key); fmt.Sprint(got) != want && fmt.Sprint(got) != "["+want+"]" {
			t.Errorf("a=%s %v, want %s", key, got, want)
		}
	}
	if got := values(md, "rtpmap"); fmt.Sprint(got) != "[111 opus/48000/2 126 telephone-event/8000]" {
		t.Errorf("rtpmap %v", got)
	}
	p := newLitePeer(t)
	answer := p.answer(offer)
	if !strings.Contains(answer, "a=setup:active") || !strings.Contains(answer, "a=ice-lite") {
		t.Fatalf("peer answer is not Meta-shaped:\n%s", answer)
	}
	if err := l.SetAnswer(strings.Replace(answer, "m=audio", "m=video", 1)); !errors.Is(err, webrtc.ErrBadAnswer) {
		t.Fatalf("video answer: %v, want ErrBadAnswer", err)
	}
	if err := l.SetAnswer(answer); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	l.EnableSend()
	ev := []byte{11, 0x8a, 0x06, 0x40} // '#', End, volume 10, 1600
	if err := l.WriteRTP(&rtp.Header{Version: 2, PayloadType: 126, SequenceNumber: 7, Timestamp: 99}, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p.packets:
		if got.PayloadType != 126 || got.SSRC != l.SSRC() || !bytes.Equal(got.Payload, ev) {
			t.Fatalf("got pt=%d ssrc=%d %x", got.PayloadType, got.SSRC, got.Payload)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("event not received")
	}
}

// TestUnspecifiedListen: "0.0.0.0:port" uses one socket per interface address (pion's
// MultiUDPMux) and still connects over loopback.
func TestUnspecifiedListen(t *testing.T) {
	l, p := connectedPair(t, func(c *webrtc.Config) { c.ListenUDP = "0.0.0.0:0" })
	if l.SSRC() == 0 {
		t.Fatal("no SSRC")
	}
	l.EnableSend()
	if err := l.WriteRTP(&rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 1}, []byte{0xf8}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p.packets:
		if got.PayloadType != 111 || !bytes.Equal(got.Payload, []byte{0xf8}) {
			t.Fatalf("got %v", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("packet not received")
	}
}
