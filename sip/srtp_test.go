package sip_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sip"
)

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// sdpOf renders an SDES into a real SDP body and parses it back, so the
// tests go through the text an actual PBX would see.
func sdpOf(t *testing.T, s *sip.RTPSession, x sip.SDES) *sip.MediaDesc {
	t.Helper()
	spec := sip.OfferSpec(s.LocalAddr(), []string{"PCMU"}, 101, 1)
	x.Apply(&spec)
	md, err := sip.ParseSDP(sip.BuildSDP(spec))
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// negotiate runs an SDES offer from a (mode) and b's answer (mode) through
// SDP text, and points the sessions at each other.
func negotiate(t *testing.T, a, b *sip.RTPSession, offerMode, answerMode sip.SRTPMode) error {
	t.Helper()
	x, err := a.OfferSRTP(offerMode)
	if err != nil {
		t.Fatal(err)
	}
	offer := sdpOf(t, a, x)
	y, err := b.AnswerSRTP(offer, answerMode)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	a.SetRemote(b.LocalAddr())
	b.SetRemote(a.LocalAddr())
	return a.AcceptSRTP(sdpOf(t, b, y))
}

// TestSRTPToneBothWays: required SDES through SDP text, then a tone each
// way decodes at the right frequency, RTCP flows as SRTCP, and both ends
// report the suite.
func TestSRTPToneBothWays(t *testing.T) {
	for _, suite := range []sip.CryptoSuite{sip.SuiteAES128SHA1_80, sip.SuiteAES128SHA1_32} {
		t.Run(string(suite), func(t *testing.T) {
			u := newUA(t, func(c *sip.Config) { c.RTCPInterval = 200 * time.Millisecond })
			a, b := newRTP(t, u), newRTP(t, u)
			x, err := a.OfferSRTP(sip.SRTPRequired)
			if err != nil {
				t.Fatal(err)
			}
			offer := sdpOf(t, a, x)
			if offer.Proto != sip.ProtoSAVP || len(offer.Crypto) != 2 || offer.Crypto[0].Suite != sip.SuiteAES128SHA1_80 ||
				offer.Crypto[1].Suite != sip.SuiteAES128SHA1_32 || offer.Crypto[0].Tag != 1 || offer.Crypto[1].Tag != 2 {
				t.Fatalf("offer %s %v", offer.Proto, offer.Crypto)
			}
			// The answerer picks this subtest's suite only.
			for _, c := range offer.Crypto {
				if c.Suite == suite {
					offer.Crypto = []sip.Crypto{c}
				}
			}
			y, err := b.AnswerSRTP(offer, sip.SRTPRequired)
			if err != nil {
				t.Fatal(err)
			}
			a.SetRemote(b.LocalAddr())
			b.SetRemote(a.LocalAddr())
			if err := a.AcceptSRTP(sdpOf(t, b, y)); err != nil {
				t.Fatal(err)
			}
			for _, s := range []*sip.RTPSession{a, b} {
				if on, got := s.SRTP(); !on || got != suite {
					t.Fatalf("SRTP() = %v %s, want %s", on, got, suite)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			type got struct {
				pcm []int16
				err error
			}
			ra, rb := make(chan got, 1), make(chan got, 1)
			go func() { p, err := receiveAudio(a, 40*160, 5*time.Second); ra <- got{p, err} }()
			go func() { p, err := receiveAudio(b, 40*160, 5*time.Second); rb <- got{p, err} }()
			errs := make(chan error, 2)
			go func() { errs <- sendTone(ctx, a, 1000, 50, 0xA) }()
			go func() { errs <- sendTone(ctx, b, 697, 50, 0xB) }()
			for i := 0; i < 2; i++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			gb, ga := <-rb, <-ra
			if gb.err != nil || ga.err != nil {
				t.Fatalf("receive: %v / %v", gb.err, ga.err)
			}
			assertTone(t, gb.pcm, 1000)
			assertTone(t, ga.pcm, 697)
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				sa, sb := a.Stats(), b.Stats()
				if sa.RTCPIn > 0 && sb.RTCPIn > 0 && sa.RTT > 0 && sb.RTT > 0 {
					if sa.SRTPDropped != 0 || sb.SRTPDropped != 0 {
						t.Fatalf("SRTP drops on a clean path: %d %d", sa.SRTPDropped, sb.SRTPDropped)
					}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Fatalf("no SRTCP exchange: a=%+v b=%+v", a.Stats(), b.Stats())
		})
	}
}

// TestSRTPOnTheWire checks the bytes: the header stays clear, the payload
// is not the plaintext, the packet grows by the suite's tag (RFC 3711 §3.1,
// RFC 4568 §6.2: 10 bytes for _80, 4 for _32), and SRTCP carries its
// E-flag index and 10-byte tag.
func TestSRTPOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		suite sip.CryptoSuite
		tag   int
	}{{sip.SuiteAES128SHA1_80, 10}, {sip.SuiteAES128SHA1_32, 4}} {
		t.Run(string(tc.suite), func(t *testing.T) {
			u := newUA(t, func(c *sip.Config) { c.RTCPInterval = 100 * time.Millisecond })
			a := newRTP(t, u)
			peer, rtcpPeer := rawPair(t)
			x, _ := a.OfferSRTP(sip.SRTPRequired)
			var ours sip.Crypto
			for _, c := range x.Crypto {
				if c.Suite == tc.suite {
					ours = c
				}
			}
			theirs, _ := sip.ParseCrypto(ours.SDPValue()) // the peer uses its own key; the tag selects
			theirs.Keys[0].KeySalt = []byte("0123456789abcdef0123456789abcd")
			a.SetRemote(peer.LocalAddr().(*net.UDPAddr).AddrPort())
			if err := a.AcceptSRTP(&sip.MediaDesc{Proto: sip.ProtoSAVP, Crypto: []sip.Crypto{theirs}}); err != nil {
				t.Fatal(err)
			}
			payload := make([]byte, 160)
			for i := range payload {
				payload[i] = 0x55
			}
			h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 1000, Timestamp: 8000, SSRC: 0xCAFE}
			if err := a.WriteRTP(&h, payload); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := peer.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != 12+160+tc.tag {
				t.Fatalf("SRTP packet is %d bytes, want %d", n, 12+160+tc.tag)
			}
			var got rtp.Header
			if _, err := got.Unmarshal(buf[:n]); err != nil || got.SSRC != 0xCAFE || got.SequenceNumber != 1000 {
				t.Fatalf("header not clear: %+v %v", got, err)
			}
			same := 0
			for _, c := range buf[12 : 12+160] {
				if c == 0x55 {
					same++
				}
			}
			if same > 10 {
				t.Fatalf("payload looks like plaintext (%d of 160 bytes unchanged)", same)
			}
			_ = rtcpPeer.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err = rtcpPeer.Read(buf)
			if err != nil {
				t.Fatalf("no SRTCP: %v", err)
			}
			// SR (28) + SDES CNAME chunk, then E|index (4) and a 10-byte tag.
			if buf[1] != 200 || buf[n-14]&0x80 == 0 {
				t.Fatalf("SRTCP packet type %d, E flag byte %#x", buf[1], buf[n-14])
			}
		})
	}
}

// rawPair binds two raw UDP sockets on ports p and p+1 (RTP and RTCP).
func rawPair(t *testing.T) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: a.LocalAddr().(*net.UDPAddr).Port + 1})
		if err != nil {
			a.Close()
			continue
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	t.Fatal("no free UDP port pair")
	return nil, nil
}

// TestSRTPRequiredRefusesClear: a required offer answered without crypto is
// ErrSRTPRequired, nothing is sent, and clear RTP that arrives is dropped.
func TestSRTPRequiredRefusesClear(t *testing.T) {
	u := newUA(t)
	a := newRTP(t, u)
	peer := rawPeer(t, "127.0.0.1")
	if _, err := a.OfferSRTP(sip.SRTPRequired); err != nil {
		t.Fatal(err)
	}
	for _, ans := range []*sip.MediaDesc{
		{Proto: sip.ProtoAVP},
		{Proto: sip.ProtoSAVP},
		{Proto: sip.ProtoSAVP, Crypto: []sip.Crypto{mustCrypto(t, "3 AES_CM_128_HMAC_SHA1_80 inline:"+rfcKey)}}, // tag not offered
		{Proto: sip.ProtoSAVP, Crypto: []sip.Crypto{mustCrypto(t, "1 AES_CM_128_HMAC_SHA1_32 inline:"+rfcKey)}}, // tag 1 is _80
		{Proto: sip.ProtoSAVP, Crypto: []sip.Crypto{mustCrypto(t, "1 AES_CM_128_HMAC_SHA1_80 inline:"+rfcKey+" UNENCRYPTED_SRTP")}},
	} {
		if err := a.AcceptSRTP(ans); !errors.Is(err, sip.ErrSRTPRequired) {
			t.Fatalf("answer %s %v: err %v, want ErrSRTPRequired", ans.Proto, ans.Crypto, err)
		}
	}
	a.SetRemote(peer.LocalAddr().(*net.UDPAddr).AddrPort())
	h := rtp.Header{Version: 2, SSRC: 1}
	for i := 0; i < 5; i++ {
		h.SequenceNumber++
		if err := a.WriteRTP(&h, make([]byte, 160)); err != nil {
			t.Fatal(err)
		}
	}
	_ = peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := peer.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("a required session without keys sent %d bytes", n)
	}
	for i := 0; i < 5; i++ {
		if _, err := peer.WriteToUDPAddrPort(rtpBytes(t, uint16(i), 0, 77), a.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	readGone(t, a, 5)
	if st := a.Stats(); st.PacketsIn != 0 || st.SRTPDropped != 5 {
		t.Fatalf("clear RTP on a required session: in %d, SRTP-dropped %d", st.PacketsIn, st.SRTPDropped)
	}
}

// readGone reads until the session has counted want SRTP drops, then closes
// it (ReadRTP has no deadline; Close unblocks it) and fails if a packet
// came through.
func readGone(t *testing.T, s *sip.RTPSession, want uint64) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		var p rtp.Packet
		done <- s.ReadRTP(make([]byte, 1500), &p)
	}()
	waitUntil(t, 2*time.Second, func() bool { return s.Stats().SRTPDropped >= want })
	s.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadRTP returned %v: a packet got through", err)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustCrypto(t *testing.T, s string) sip.Crypto {
	t.Helper()
	c, err := sip.ParseCrypto(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSRTPOptional: an optional offer is RTP/AVP with crypto; a plain
// answer leaves clear RTP (RFC 3264 answerer ignoring the attribute), a
// crypto answer turns SRTP on, an RTP/SAVP answer without keys is an error.
func TestSRTPOptional(t *testing.T) {
	u := newUA(t)
	a, b := newRTP(t, u), newRTP(t, u)
	x, err := a.OfferSRTP(sip.SRTPOptional)
	if err != nil {
		t.Fatal(err)
	}
	if x.Proto != sip.ProtoAVP || len(x.Crypto) != 2 {
		t.Fatalf("optional offer %s with %d lines", x.Proto, len(x.Crypto))
	}
	if err := a.AcceptSRTP(&sip.MediaDesc{Proto: sip.ProtoSAVP}); !errors.Is(err, sip.ErrSRTPRequired) {
		t.Fatalf("RTP/SAVP answer without keys: %v", err)
	}
	if err := a.AcceptSRTP(&sip.MediaDesc{Proto: sip.ProtoAVP}); err != nil {
		t.Fatal(err)
	}
	if on, _ := a.SRTP(); on {
		t.Fatal("plain answer turned SRTP on")
	}
	a.SetRemote(b.LocalAddr())
	b.SetRemote(a.LocalAddr())
	exchange(t, a, b, 1) // clear both ways
	c, d := newRTP(t, u), newRTP(t, u)
	if err := negotiate(t, c, d, sip.SRTPOptional, sip.SRTPOptional); err != nil {
		t.Fatal(err)
	}
	if on, _ := c.SRTP(); !on {
		t.Fatal("crypto answer did not turn SRTP on")
	}
	exchange(t, c, d, 1)
}

// exchange sends n packets each way and checks they arrive with their payload.
func exchange(t *testing.T, a, b *sip.RTPSession, n int) {
	t.Helper()
	buf := make([]byte, 1500)
	var p rtp.Packet
	for i := 0; i < n; i++ {
		for _, pair := range [][2]*sip.RTPSession{{a, b}, {b, a}} {
			h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i), SSRC: 5}
			if err := pair[0].WriteRTP(&h, []byte("hello srtp")); err != nil {
				t.Fatal(err)
			}
			if err := pair[1].ReadRTP(buf, &p); err != nil {
				t.Fatal(err)
			}
			if string(p.Payload) != "hello srtp" || p.SequenceNumber != uint16(100+i) {
				t.Fatalf("got seq %d payload %q", p.SequenceNumber, p.Payload)
			}
		}
	}
}

// TestSRTPForgedAndReplayed: a tampered packet and a replayed one are
// dropped (RFC 3711 §3.3: authentication and replay protection), the
// genuine one arrives.
func TestSRTPForgedAndReplayed(t *testing.T) {
	u := newUA(t)
	a, b := newRTP(t, u), newRTP(t, u)
	peer := rawPeer(t, "127.0.0.1")
	if err := negotiate(t, a, b, sip.SRTPRequired, sip.SRTPRequired); err != nil {
		t.Fatal(err)
	}
	a.SetRemote(peer.LocalAddr().(*net.UDPAddr).AddrPort()) // capture a's packets
	h := rtp.Header{Version: 2, SequenceNumber: 7, SSRC: 3}
	if err := a.WriteRTP(&h, []byte("genuine payload")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	pkt := append([]byte(nil), buf[:n]...)
	forged := append([]byte(nil), pkt...)
	forged[14] ^= 1
	b.SetRemote(peer.LocalAddr().(*net.UDPAddr).AddrPort())
	for _, p := range [][]byte{forged, pkt, pkt} { // forged, genuine, replay
		if _, err := peer.WriteToUDPAddrPort(p, b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	var p rtp.Packet
	if err := b.ReadRTP(buf, &p); err != nil || string(p.Payload) != "genuine payload" {
		t.Fatalf("genuine packet: %v %q", err, p.Payload)
	}
	readGone(t, b, 2)
	if st := b.Stats(); st.PacketsIn != 1 || st.SRTPDropped != 2 {
		t.Fatalf("in %d, SRTP-dropped %d; want 1 and 2", st.PacketsIn, st.SRTPDropped)
	}
}

// TestSRTPReoffer: a re-offer with a new PBX key re-keys decryption and
// keeps ours (RFC 4568 §7.1.4); a plain re-offer on a required call is
// refused, on an optional one turns SRTP off.
func TestSRTPReoffer(t *testing.T) {
	u := newUA(t)
	a, b := newRTP(t, u), newRTP(t, u)
	if err := negotiate(t, a, b, sip.SRTPRequired, sip.SRTPRequired); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 2)
	before := a.SDES()
	// b re-offers with a fresh key (as a PBX does after a transfer).
	y, err := b.OfferSRTP(sip.SRTPRequired)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := a.AnswerSRTP(sdpOf(t, b, y), sip.SRTPRequired)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Crypto) != 1 || string(ans.Crypto[0].Keys[0].KeySalt) != string(before.Crypto[0].Keys[0].KeySalt) {
		t.Fatal("a changed its key on a re-offer of the same suite")
	}
	if err := b.AcceptSRTP(sdpOf(t, a, ans)); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 2)
	if _, err := a.AnswerSRTP(&sip.MediaDesc{Proto: sip.ProtoAVP}, sip.SRTPRequired); !errors.Is(err, sip.ErrSRTPRequired) {
		t.Fatalf("plain re-offer on a required call: %v", err)
	}
	c, d := newRTP(t, u), newRTP(t, u)
	if err := negotiate(t, c, d, sip.SRTPOptional, sip.SRTPOptional); err != nil {
		t.Fatal(err)
	}
	x, err := c.AnswerSRTP(&sip.MediaDesc{Proto: sip.ProtoAVP}, sip.SRTPOptional)
	if err != nil || x.Proto != sip.ProtoAVP || len(x.Crypto) != 0 {
		t.Fatalf("plain re-offer on an optional call: %+v %v", x, err)
	}
	if on, _ := c.SRTP(); on {
		t.Fatal("SRTP still on after a plain re-offer")
	}
}

// TestSRTPZeroAllocs: SRTP encrypt + decrypt through the sockets allocates
// nothing per packet in steady state.
func TestSRTPZeroAllocs(t *testing.T) {
	u := newUA(t)
	a, b := newRTP(t, u), newRTP(t, u)
	if err := negotiate(t, a, b, sip.SRTPRequired, sip.SRTPRequired); err != nil {
		t.Fatal(err)
	}
	h := rtp.Header{Version: 2, PayloadType: 0, SSRC: 9}
	payload := make([]byte, 160)
	buf := make([]byte, 1500)
	var p rtp.Packet
	step := func() {
		h.SequenceNumber++
		h.Timestamp += 160
		if err := a.WriteRTP(&h, payload); err != nil {
			t.Fatal(err)
		}
		if err := b.ReadRTP(buf, &p); err != nil {
			t.Fatal(err)
		}
	}
	step() // first packet creates the per-SSRC state
	if raceEnabled {
		t.Skip("allocation counts are checked without -race (make test-media): sync.Pool drops items under the race detector")
	}
	if allocs := testing.AllocsPerRun(500, step); allocs != 0 {
		t.Fatalf("%v allocs per SRTP packet, want 0", allocs)
	}
}

func BenchmarkSRTPWriteRead(b *testing.B) {
	u, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	x, _ := u.NewRTPSession()
	y, _ := u.NewRTPSession()
	defer x.Close()
	defer y.Close()
	o, _ := x.OfferSRTP(sip.SRTPRequired)
	spec := sip.OfferSpec(x.LocalAddr(), []string{"PCMU"}, 101, 1)
	o.Apply(&spec)
	offer, _ := sip.ParseSDP(sip.BuildSDP(spec))
	ans, err := y.AnswerSRTP(offer, sip.SRTPRequired)
	if err != nil {
		b.Fatal(err)
	}
	if err := x.AcceptSRTP(&sip.MediaDesc{Proto: ans.Proto, Crypto: ans.Crypto}); err != nil {
		b.Fatal(err)
	}
	x.SetRemote(y.LocalAddr())
	h := rtp.Header{Version: 2, SSRC: 1}
	payload := make([]byte, 160)
	buf := make([]byte, 1500)
	var p rtp.Packet
	b.ReportAllocs()
	for b.Loop() {
		h.SequenceNumber++
		_ = x.WriteRTP(&h, payload)
		_ = y.ReadRTP(buf, &p)
	}
}
