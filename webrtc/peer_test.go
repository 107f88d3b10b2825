package webrtc_test

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/webrtc"
)

// metaOffer is Meta's UIC offer from whatsapp-calling-api.md §5.1, verbatim except that the
// relay addresses are replaced by 127.0.0.1:{port} and the IPv6 candidate is dropped, so that
// tests never send a packet off the loopback interface.
const metaOfferTemplate = "v=0\r\n" +
	"o=- 7602563789789945080 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE audio\r\n" +
	"a=msid-semantic: WMS 6932bc1c-db1a-4abe-b437-0c4168be8a13\r\n" +
	"a=ice-lite\r\n" +
	"m=audio {port} UDP/TLS/RTP/SAVPF 111 126\r\n" +
	"c=IN IP4 127.0.0.1\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=candidate:1972637320 1 udp 2113937151 127.0.0.1 {port} typ host generation 0 network-cost 50 ufrag 6k2qP1R6kBfI/2\r\n" +
	"a=ice-ufrag:6k2qP1R6kBfI/2\r\n" +
	"a=ice-pwd:UApvJw3NcwFRDvIMKdM0vWCdlXah25E9\r\n" +
	"a=fingerprint:sha-256 1B:B6:6B:40:A5:0B:8C:75:0D:8C:CB:90:2F:99:74:1E:26:45:AE:AF:45:C1:51:60:8F:73:C9:2D:10:6D:8A:88\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:audio\r\n" +
	"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" +
	"a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n" +
	"a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n" +
	"a=sendrecv\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=rtcp-fb:111 transport-cc\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"a=rtpmap:126 telephone-event/8000\r\n" +
	"a=ssrc:4208138518 cname:gAXq2V9TKltrnapv\r\n" +
	"a=ssrc:4208138518 msid:6932bc1c-db1a-4abe-b437-0c4168be8a13 audio#R5wfXFcdmT6\r\n" +
	"a=ssrc:4208138518 mslabel:6932bc1c-db1a-4abe-b437-0c4168be8a13\r\n" +
	"a=ssrc:4208138518 label:audio#R5wfXFcdmT6\r\n"

// metaOffer returns Meta's offer pointing at a loopback port where nothing answers (the
// discard port), for tests that only look at the answer.
func metaOffer() string { return strings.ReplaceAll(metaOfferTemplate, "{port}", "9") }

// rawCounter wraps the peer's UDP socket and classifies every datagram it receives by its
// first byte (RFC 7983 §7): 128..191 is RTP or RTCP, and RTCP has PT 192..223 in the second
// byte (RFC 5761 §4). It sees SRTP/SRTCP before any decryption, so it catches media that a
// higher layer might drop.
type rawCounter struct {
	net.PacketConn
	mu                  sync.Mutex
	rtp, rtcp           int
	firstRTP, firstRTCP time.Time
}

func (c *rawCounter) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if err == nil && n >= 2 && b[0] >= 128 && b[0] <= 191 {
		now := time.Now()
		c.mu.Lock()
		if b[1] >= 192 && b[1] <= 223 {
			if c.rtcp == 0 {
				c.firstRTCP = now
			}
			c.rtcp++
		} else {
			if c.rtp == 0 {
				c.firstRTP = now
			}
			c.rtp++
		}
		c.mu.Unlock()
	}
	return n, addr, err
}

func (c *rawCounter) counts() (rtpN, rtcpN int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtp, c.rtcp
}

// litePeer is a minimal WhatsApp-relay-shaped offerer: ICE-lite, actpass, Opus 111 and
// telephone-event/8000 126, one track. (sim/wasim has the full simulator; this keeps the
// webrtc tests free of codec dependencies.)
type litePeer struct {
	t       testing.TB
	pc      *pwebrtc.PeerConnection
	mux     ice.UDPMux
	raw     *rawCounter
	track   *pwebrtc.TrackLocalStaticRTP
	packets chan *rtp.Packet
	conn    chan struct{}
	wg      sync.WaitGroup
	// noRead leaves inbound media unread (pion drops it once its buffer is full), so that
	// allocation measurements see only the leg's side.
	noRead atomic.Bool
}

func newLitePeer(t testing.TB) *litePeer {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &litePeer{t: t, raw: &rawCounter{PacketConn: udp}, packets: make(chan *rtp.Packet, 1024), conn: make(chan struct{})}
	p.mux = pwebrtc.NewICEUDPMux(nil, p.raw)
	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, webrtc.OpusFmtp); err != nil {
		t.Fatal(err)
	}
	se := pwebrtc.SettingEngine{}
	se.SetLite(true)
	// Meta answers business offers with a=setup:active (§5.2).
	if err := se.SetAnsweringDTLSRole(pwebrtc.DTLSRoleClient); err != nil {
		t.Fatal(err)
	}
	se.SetICEUDPMux(p.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se))
	p.pc, err = api.NewPeerConnection(pwebrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	p.track, err = pwebrtc.NewTrackLocalStaticRTP(pwebrtc.RTPCodecCapability{MimeType: pwebrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "wa")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.pc.AddTrack(p.track); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	p.pc.OnConnectionStateChange(func(s pwebrtc.PeerConnectionState) {
		if s == pwebrtc.PeerConnectionStateConnected {
			once.Do(func() { close(p.conn) })
		}
	})
	p.pc.OnTrack(func(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
		if p.noRead.Load() {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				select {
				case p.packets <- pkt:
				default:
				}
			}
		}()
	})
	t.Cleanup(p.close)
	return p
}

func (p *litePeer) offer() string {
	p.t.Helper()
	o, err := p.pc.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	g := pwebrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(o); err != nil {
		p.t.Fatal(err)
	}
	<-g
	return p.pc.LocalDescription().SDP
}

// answer answers a business offer like Meta's relay does for business-initiated calls.
func (p *litePeer) answer(offer string) string {
	p.t.Helper()
	if err := p.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeOffer, SDP: offer}); err != nil {
		p.t.Fatal(err)
	}
	a, err := p.pc.CreateAnswer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	g := pwebrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(a); err != nil {
		p.t.Fatal(err)
	}
	<-g
	return p.pc.LocalDescription().SDP
}

func (p *litePeer) setAnswer(sdp string) {
	p.t.Helper()
	if err := p.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *litePeer) waitConnected(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.conn:
	case <-time.After(d):
		p.t.Fatal("lite peer did not connect")
	}
}

func (p *litePeer) close() {
	_ = p.pc.Close()
	p.wg.Wait()
	_ = p.mux.Close()
}
