package bare

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/transcode"
)

// RTP constants of the bare relay.
const (
	pcmRate    = 8000 // ponte's PSTN-side PCM rate (gateway pcmRate)
	opusClock  = 48000 / pcmRate
	rtpHdrLen  = 12 // fixed header, no CSRC, no extension (RFC 3550 §5.1)
	mtu        = 1500
	maxPCM     = 960 // 120 ms at 8 kHz: the longest Opus packet (RFC 6716 §3.2.1)
	plainOpusP = 111 // Opus PT on the plain RTP side (a dynamic PT, RFC 3551 §6)
)

// relay is one call of the bare child: a pion peer connection answering the caller's offer and
// a plain UDP socket toward the PBX side, with one goroutine per direction. No jitter buffer,
// no DTMF, no RTCP, no metrics: only what any relay between the two must do.
type relay struct {
	c         *child
	pc        *pwebrtc.PeerConnection
	track     *pwebrtc.TrackLocalStaticRTP
	conn      *net.UDPConn
	pbx       netip.AddrPort
	codec     string
	transcode bool

	// Transcoding codecs, through package transcode so the codec cost is ponte's own code.
	fromWA transcode.Decoder // Opus -> 8 kHz PCM
	toPBX  transcode.Encoder // PCM -> G.711
	fromPB transcode.Decoder // G.711 -> PCM
	toWA   transcode.Encoder // PCM -> Opus (ponte's settings)

	remote             chan *pwebrtc.TrackRemote
	connected, failed  chan struct{}
	connOnce, failOnce sync.Once
	trackOnce          sync.Once
	closing            chan struct{}
	closeOnce          sync.Once
	wg                 sync.WaitGroup
}

// newRelay answers r.Offer and starts both directions. The answer SDP is returned as soon as
// host candidates are gathered (immediate with the mux).
func newRelay(c *child, r request) (*relay, string, error) {
	rl := &relay{
		c: c, codec: r.Codec, transcode: r.Codec != "opus",
		remote:    make(chan *pwebrtc.TrackRemote, 1),
		connected: make(chan struct{}), failed: make(chan struct{}), closing: make(chan struct{}),
	}
	rl.pbx = netip.MustParseAddrPort(r.PBX) // checked by parseRequest
	var err error
	if rl.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.rtp, 0))); err != nil {
		return nil, "", fmt.Errorf("bare: rtp socket: %w", err)
	}
	answer, err := rl.start(r.Offer)
	if err != nil {
		rl.close()
		return nil, "", err
	}
	return rl, answer, nil
}

func (rl *relay) start(offer string) (string, error) {
	if err := rl.newCodecs(rl.c.o.Complexity, rl.c.o.Bitrate); err != nil {
		return "", err
	}
	var err error
	rl.pc, err = rl.c.api.NewPeerConnection(pwebrtc.Configuration{
		BundlePolicy: pwebrtc.BundlePolicyMaxBundle, RTCPMuxPolicy: pwebrtc.RTCPMuxPolicyRequire,
	})
	if err != nil {
		return "", fmt.Errorf("bare: peer connection: %w", err)
	}
	rl.pc.OnConnectionStateChange(func(s pwebrtc.PeerConnectionState) {
		switch s {
		case pwebrtc.PeerConnectionStateConnected:
			rl.connOnce.Do(func() { close(rl.connected) })
		case pwebrtc.PeerConnectionStateFailed, pwebrtc.PeerConnectionStateClosed:
			rl.failOnce.Do(func() { close(rl.failed) })
		}
	})
	rl.pc.OnTrack(func(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
		rl.trackOnce.Do(func() { rl.remote <- tr })
	})
	if err := rl.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("bare: offer: %w", err)
	}
	rl.track, err = pwebrtc.NewTrackLocalStaticRTP(pwebrtc.RTPCodecCapability{
		MimeType: pwebrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
	}, "audio", "bare")
	if err != nil {
		return "", fmt.Errorf("bare: track: %w", err)
	}
	if _, err := rl.pc.AddTrack(rl.track); err != nil {
		return "", fmt.Errorf("bare: add track: %w", err)
	}
	ans, err := rl.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("bare: answer: %w", err)
	}
	gathered := pwebrtc.GatheringCompletePromise(rl.pc)
	if err := rl.pc.SetLocalDescription(ans); err != nil {
		return "", fmt.Errorf("bare: local description: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(2 * time.Second):
		return "", errors.New("bare: ICE gathering did not complete")
	}
	rl.wg.Add(2)
	go rl.runToPBX()
	go rl.runToWA()
	return rl.pc.LocalDescription().SDP, nil
}

// pbxOut is the to-PBX direction's reusable state: header, clock and buffers.
type pbxOut struct {
	h   rtp.Header
	ts  uint32
	pcm []int16
	out []byte
}

func (rl *relay) newPBXOut() *pbxOut {
	s := &pbxOut{
		h:   rtp.Header{Version: 2, PayloadType: plainOpusP, SSRC: rand.Uint32(), SequenceNumber: uint16(rand.Uint32())},
		ts:  rand.Uint32(),
		pcm: make([]int16, maxPCM), out: make([]byte, mtu),
	}
	if rl.transcode {
		s.h.PayloadType = g711PT(rl.codec)
	}
	return s
}

// toPBXFrame turns one Opus packet from the caller into the datagram for the PBX side:
// decoded and re-encoded to G.711 when transcoding, the payload unchanged otherwise; only the
// header is ours (RFC 3550 §5.1: our SSRC, sequence and, when transcoding, an 8 kHz clock).
// The datagram aliases s.out. It does not allocate.
func (rl *relay) toPBXFrame(p *rtp.Packet, s *pbxOut) ([]byte, error) {
	m := 0
	if rl.transcode {
		k, err := rl.fromWA.Decode(p.Payload, s.pcm)
		if err == nil {
			m, err = rl.toPBX.Encode(s.pcm[:k], s.out[rtpHdrLen:])
		}
		if err != nil {
			return nil, err
		}
		s.h.Timestamp = s.ts
		s.ts += uint32(k)
	} else {
		m = copy(s.out[rtpHdrLen:], p.Payload)
		s.h.Timestamp = p.Timestamp
	}
	if _, err := s.h.MarshalTo(s.out[:rtpHdrLen]); err != nil {
		return nil, err
	}
	s.h.SequenceNumber++
	return s.out[:rtpHdrLen+m], nil
}

// newCodecs creates the transcoding codecs (none for passthrough) with the same settings as
// ponte's bridge (gateway SetPBX): Opus decoded straight to 8 kHz, G.711 both ways, Opus
// encoded from 8 kHz with in-band FEC and 5 % expected loss.
func (rl *relay) newCodecs(complexity, bitrate int) error {
	if !rl.transcode {
		return nil
	}
	var err error
	if rl.fromWA, err = transcode.NewDecoder("opus", pcmRate); err != nil {
		return err
	}
	if rl.toPBX, err = transcode.NewEncoder(rl.codec, pcmRate, transcode.EncoderOptions{}); err != nil {
		return err
	}
	if rl.fromPB, err = transcode.NewDecoder(rl.codec, pcmRate); err != nil {
		return err
	}
	rl.toWA, err = transcode.NewEncoder("opus", pcmRate, transcode.EncoderOptions{
		Complexity: complexity, Bitrate: bitrate, FEC: true, PacketLossPerc: 5,
	})
	return err
}

// runToPBX relays the caller's Opus to the plain socket. Buffers are allocated once: the
// steady state does not allocate in this code (pion's reads are pion's).
func (rl *relay) runToPBX() {
	defer rl.wg.Done()
	var tr *pwebrtc.TrackRemote
	select {
	case tr = <-rl.remote:
	case <-rl.closing:
		return
	}
	opusPT := uint8(tr.PayloadType())
	buf := make([]byte, mtu)
	var p rtp.Packet
	s := rl.newPBXOut()
	st := &rl.c.st
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return // the peer connection closed
		}
		if err := p.Unmarshal(buf[:n]); err != nil {
			st.errors.Add(1)
			continue
		}
		st.toPBXIn.Add(1)
		if p.PayloadType != opusPT { // telephone-event: not part of the bare relay
			continue
		}
		d, err := rl.toPBXFrame(&p, s)
		if err == nil {
			_, err = rl.conn.WriteToUDPAddrPort(d, rl.pbx)
		}
		if err != nil {
			st.errors.Add(1)
			continue
		}
		st.toPBXOut.Add(1)
	}
}

// waOut is the to-WhatsApp direction's reusable state.
type waOut struct {
	pkt rtp.Packet
	ts  uint32
	pcm []int16
	out []byte
}

func newWAOut() *waOut {
	return &waOut{
		pkt: rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32())}},
		ts:  rand.Uint32(),
		pcm: make([]int16, maxPCM), out: make([]byte, mtu),
	}
}

// toWAFrame turns one packet from the PBX side into s.pkt for the caller: G.711 decoded and
// Opus encoded when transcoding (48 kHz RTP clock, RFC 7587 §4.1), the payload unchanged
// otherwise. pion's track sets the SSRC and payload type. It does not allocate.
func (rl *relay) toWAFrame(in *rtp.Packet, s *waOut) error {
	if rl.transcode {
		k, err := rl.fromPB.Decode(in.Payload, s.pcm)
		m := 0
		if err == nil {
			m, err = rl.toWA.Encode(s.pcm[:k], s.out)
		}
		if err != nil {
			return err
		}
		s.pkt.Payload = s.out[:m]
		s.pkt.Timestamp = s.ts
		s.ts += uint32(k * opusClock)
	} else {
		s.pkt.Payload = in.Payload
		s.pkt.Timestamp = in.Timestamp
	}
	return nil
}

// runToWA relays the plain socket's RTP to the caller.
func (rl *relay) runToWA() {
	defer rl.wg.Done()
	buf := make([]byte, mtu)
	var in rtp.Packet
	s := newWAOut()
	st := &rl.c.st
	for {
		n, _, err := rl.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			st.errors.Add(1)
			continue
		}
		if err := in.Unmarshal(buf[:n]); err != nil {
			st.errors.Add(1)
			continue
		}
		st.toWAIn.Add(1)
		err = rl.toWAFrame(&in, s)
		if err == nil {
			err = rl.track.WriteRTP(&s.pkt)
		}
		if err != nil {
			st.errors.Add(1)
			continue
		}
		s.pkt.SequenceNumber++
		st.toWAOut.Add(1)
	}
}

// g711PT is the static payload type of a G.711 codec (RFC 3551 §6: PCMU 0, PCMA 8).
func g711PT(codec string) uint8 {
	if codec == "PCMA" {
		return 8
	}
	return 0
}

// close stops both directions and waits for them.
func (rl *relay) close() {
	rl.closeOnce.Do(func() {
		close(rl.closing)
		if rl.pc != nil {
			_ = rl.pc.Close()
		}
		_ = rl.conn.Close()
		rl.wg.Wait()
	})
}
