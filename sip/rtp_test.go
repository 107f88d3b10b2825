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

// TestRTPToneBothWays sends a G.711 tone each way between two sessions and
// checks the decoded frequency and level on each side.
func TestRTPToneBothWays(t *testing.T) {
	u := newUA(t, func(c *sip.Config) { c.RTCPInterval = 200 * time.Millisecond })
	a, b := newRTP(t, u), newRTP(t, u)
	if a.LocalAddr().Port()%2 != 0 || b.LocalAddr().Port()%2 != 0 {
		t.Fatalf("RTP ports must be even: %v %v", a.LocalAddr(), b.LocalAddr())
	}
	a.SetRemote(b.LocalAddr())
	b.SetRemote(a.LocalAddr())
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
	assertTone(t, gb.pcm, 1000) // a -> b
	assertTone(t, ga.pcm, 697)  // b -> a

	st := a.Stats()
	if st.PacketsOut != 50 || st.BytesOut != 50*160 || st.PacketsIn < 40 || st.Lost != 0 {
		t.Fatalf("stats a: %+v", st)
	}
	// RTCP: with a 200 ms interval both sides exchange SR + report blocks.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		sa, sb := a.Stats(), b.Stats()
		if sa.RTCPIn > 0 && sb.RTCPIn > 0 && sa.RTT > 0 && sb.RTT > 0 {
			if sa.RTT > time.Second || sa.RemoteFractionLost != 0 {
				t.Fatalf("implausible RTCP stats %+v", sa)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no RTCP exchange: a=%+v b=%+v", a.Stats(), b.Stats())
}

// rawPeer is a bare UDP socket speaking RTP at a session.
func rawPeer(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rtpBytes(t *testing.T, seq uint16, ts uint32, ssrc uint32) []byte {
	t.Helper()
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: make([]byte, 160)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRTPLatchAndFilter: packets from another host are dropped; packets from
// the signalled host on another port move our destination there (symmetric RTP).
func TestRTPLatchAndFilter(t *testing.T) {
	u := newUA(t)
	s := newRTP(t, u)
	peer := rawPeer(t, "127.0.0.1")
	stranger := rawPeer(t, "127.0.0.2")
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	signalled := netip.AddrPortFrom(peerAddr.Addr(), peerAddr.Port()+100) // SDP lies about the port
	s.SetRemote(signalled)
	dst := net.UDPAddrFromAddrPort(s.LocalAddr())

	if _, err := stranger.WriteToUDP(rtpBytes(t, 1, 160, 7), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.WriteToUDP(rtpBytes(t, 9, 1440, 42), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	var p rtp.Packet
	if err := s.ReadRTP(buf, &p); err != nil {
		t.Fatal(err)
	}
	if p.SSRC != 42 || p.SequenceNumber != 9 {
		t.Fatalf("got packet from wrong source: ssrc %d seq %d", p.SSRC, p.SequenceNumber)
	}
	if st := s.Stats(); st.Dropped != 1 || st.PacketsIn != 1 {
		t.Fatalf("stats %+v", st)
	}
	if s.Remote() != peerAddr {
		t.Fatalf("not latched: remote %v want %v", s.Remote(), peerAddr)
	}
	h := rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: 77, SSRC: 5}
	if err := s.WriteRTP(&h, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := peer.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Unmarshal(buf[:n]); err != nil || p.SequenceNumber != 77 || p.PayloadType != 8 || string(p.Payload) != "\x01\x02\x03" {
		t.Fatalf("latched write: %v %+v", err, p)
	}
}

// TestRTPLossAndSSRCChange: gaps count as lost (RFC 3550 A.3); a new SSRC
// resets the receiver state.
func TestRTPLossAndSSRCChange(t *testing.T) {
	u := newUA(t)
	s := newRTP(t, u)
	peer := rawPeer(t, "127.0.0.1")
	s.SetRemote(peer.LocalAddr().(*net.UDPAddr).AddrPort())
	dst := net.UDPAddrFromAddrPort(s.LocalAddr())
	buf := make([]byte, 1500)
	var p rtp.Packet
	send := func(seq uint16, ssrc uint32) {
		if _, err := peer.WriteToUDP(rtpBytes(t, seq, uint32(seq)*160, ssrc), dst); err != nil {
			t.Fatal(err)
		}
		if err := s.ReadRTP(buf, &p); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range []uint16{65530, 65531, 65534, 65535, 2, 3} { // lost: 65532, 65533, 0, 1
		send(seq, 1)
	}
	if st := s.Stats(); st.Lost != 4 || st.PacketsIn != 6 {
		t.Fatalf("after wrap with gaps: %+v", st)
	}
	send(100, 2)
	send(101, 2)
	if st := s.Stats(); st.Lost != 0 || st.SSRCChanges != 1 {
		t.Fatalf("after SSRC change: %+v", st)
	}
}

func TestRTPNoRemoteDropsAndClose(t *testing.T) {
	u := newUA(t)
	s, err := u.NewRTPSession()
	if err != nil {
		t.Fatal(err)
	}
	h := rtp.Header{Version: 2}
	if err := s.WriteRTP(&h, []byte{1}); err != nil {
		t.Fatalf("write without remote should drop silently: %v", err)
	}
	if s.Stats().PacketsOut != 0 {
		t.Fatal("counted a dropped packet")
	}
	errc := make(chan error, 1)
	go func() {
		var p rtp.Packet
		errc <- s.ReadRTP(make([]byte, 1500), &p)
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadRTP after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadRTP did not return after Close")
	}
	if err := s.WriteRTP(&h, []byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteRTP after Close: %v", err)
	}
}

func TestRTPPortRange(t *testing.T) {
	u := newUA(t, func(c *sip.Config) { c.RTPPortMin, c.RTPPortMax = 42000, 42003 })
	a := newRTP(t, u)
	b := newRTP(t, u)
	ports := map[uint16]bool{a.LocalAddr().Port(): true, b.LocalAddr().Port(): true}
	if !ports[42000] || !ports[42002] {
		t.Fatalf("ports %v, want 42000 and 42002", ports)
	}
	if _, err := u.NewRTPSession(); !errors.Is(err, sip.ErrNoRTPPort) {
		t.Fatalf("third session in a 2-pair range: %v", err)
	}
}

// TestRTPZeroAllocs proves the steady-state media path allocates nothing.
func TestRTPZeroAllocs(t *testing.T) {
	u := newUA(t)
	a, b := newRTP(t, u), newRTP(t, u)
	a.SetRemote(b.LocalAddr())
	b.SetRemote(a.LocalAddr())
	h := rtp.Header{Version: 2, PayloadType: 0, SSRC: 9}
	payload := make([]byte, 160)
	buf := make([]byte, 1500)
	var p rtp.Packet
	allocs := testing.AllocsPerRun(200, func() {
		h.SequenceNumber++
		h.Timestamp += 160
		if err := a.WriteRTP(&h, payload); err != nil {
			t.Fatal(err)
		}
		if err := b.ReadRTP(buf, &p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per packet, want 0", allocs)
	}
}

func BenchmarkRTPWriteRead(b *testing.B) {
	u, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	x, _ := u.NewRTPSession()
	y, _ := u.NewRTPSession()
	defer x.Close()
	defer y.Close()
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
