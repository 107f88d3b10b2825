package bare

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"
)

// Tones of the two sides, as in ponte load: the caller speaks 440 Hz, the PBX 1000 Hz, both at
// -12 dBFS. 50 frames of 20 ms hold a whole number of periods of each, so the pre-encoded
// second loops without a seam.
const (
	callerHz   = 440
	pbxHz      = 1000
	toneDBFS   = -12
	loopFrames = 50
	frameDur   = 20 * time.Millisecond
	maxBurst   = 10 // frames a late sender catches up at once (200 ms)
)

// media is the pre-encoded audio both sides replay (encoded once per run, so the load
// generator's own cost stays small).
type media struct {
	waOpus   [][]byte // the caller's 440 Hz, Opus from 48 kHz PCM like a phone's
	pbx      [][]byte // the PBX's 1000 Hz in its codec
	pbxCodec string
	pbxPT    uint8
	pbxStep  uint32 // RTP timestamp step of one PBX frame
}

// encodeLoop encodes loopFrames frames of a tone, after one loop of warm-up so the encoder
// state at the start of the kept loop matches the state at its end.
func encodeLoop(codec string, rate int, hz float64) ([][]byte, error) {
	enc, err := transcode.NewEncoder(codec, rate, transcode.EncoderOptions{})
	if err != nil {
		return nil, err
	}
	gen := transcode.NewToneGen(hz, rate, transcode.AmpForDBFS(toneDBFS))
	pcm := make([]int16, transcode.FrameSamples(rate, frameDur))
	out := make([][]byte, 0, loopFrames)
	buf := make([]byte, mtu)
	for i := range 2 * loopFrames {
		gen.Fill(pcm)
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			return nil, err
		}
		if i >= loopFrames {
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
	return out, nil
}

func newMedia(codec string) (*media, error) {
	m := &media{pbxCodec: codec}
	var err error
	if m.waOpus, err = encodeLoop("opus", 48000, callerHz); err != nil {
		return nil, err
	}
	switch codec {
	case "opus":
		m.pbx, err = encodeLoop("opus", 48000, pbxHz)
		m.pbxPT, m.pbxStep = plainOpusP, transcode.TimestampStep("opus", frameDur)
	default:
		m.pbx, err = encodeLoop(codec, pcmRate, pbxHz)
		m.pbxPT, m.pbxStep = g711PT(codec), transcode.TimestampStep(codec, frameDur)
	}
	return m, err
}

// call is one simulated call in the parent: the WhatsApp caller (a pion offerer shaped like
// Meta's relay: ICE-lite, Opus 111 + telephone-event 126, BUNDLE) on its own UDP socket, and
// the PBX endpoint (a plain UDP socket). Each side replays its tone every 20 ms and counts and
// analyses what arrives from the child.
type call struct {
	id  int
	m   *media
	pc  *pwebrtc.PeerConnection
	mux ice.UDPMux

	track    *pwebrtc.TrackLocalStaticRTP
	pbxConn  *net.UDPConn
	childRTP netip.AddrPort

	connected, failed  chan struct{}
	connOnce, failOnce sync.Once
	remote             chan *pwebrtc.TrackRemote
	trackOnce          sync.Once

	// Counters: sent by one side, received by the other.
	waSent, pbxRecv atomic.Int64 // caller -> child -> PBX ("to PBX")
	pbxSent, waRecv atomic.Int64 // PBX -> child -> caller ("to WA")
	waHeard         *audio.Analyzer
	pbxHeard        *audio.Analyzer
	// When the sender started and stopped (UnixNano): how many frames it should have sent.
	sendFrom, sendTo atomic.Int64

	stopSend  chan struct{}
	sendOnce  sync.Once
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// newCall creates the caller's peer and offer and the PBX socket; the readers run from here.
func newCall(id int, m *media, log *slog.Logger) (*call, string, error) {
	c := &call{
		id: id, m: m,
		connected: make(chan struct{}), failed: make(chan struct{}),
		remote:   make(chan *pwebrtc.TrackRemote, 1),
		waHeard:  audio.NewAnalyzer(pcmRate, pbxHz, toneDBFS),
		pbxHeard: audio.NewAnalyzer(pcmRate, callerHz, toneDBFS),
		stopSend: make(chan struct{}), closing: make(chan struct{}),
	}
	offer, err := c.open(log)
	if err != nil {
		c.close()
		return nil, "", err
	}
	return c, offer, nil
}

func (c *call) open(log *slog.Logger) (string, error) {
	var err error
	if c.pbxConn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		return "", fmt.Errorf("bare: pbx socket: %w", err)
	}
	// One socket per caller: the child answers every call from its one mux port, so callers
	// sharing a mux would share the remote address the mux demultiplexes on.
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", fmt.Errorf("bare: caller socket: %w", err)
	}
	lf := webrtc.NewPionLoggerFactory(log)
	c.mux = pwebrtc.NewICEUDPMux(lf.NewLogger("mux"), udp)
	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, webrtc.OpusFmtp); err != nil {
		return "", err
	}
	se := pwebrtc.SettingEngine{LoggerFactory: lf}
	se.SetLite(true)
	se.SetICEUDPMux(c.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se),
		pwebrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	if c.pc, err = api.NewPeerConnection(pwebrtc.Configuration{BundlePolicy: pwebrtc.BundlePolicyMaxBundle}); err != nil {
		return "", fmt.Errorf("bare: caller peer: %w", err)
	}
	c.pc.OnConnectionStateChange(func(s pwebrtc.PeerConnectionState) {
		switch s {
		case pwebrtc.PeerConnectionStateConnected:
			c.connOnce.Do(func() { close(c.connected) })
		case pwebrtc.PeerConnectionStateFailed, pwebrtc.PeerConnectionStateClosed:
			c.failOnce.Do(func() { close(c.failed) })
		}
	})
	c.pc.OnTrack(func(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
		c.trackOnce.Do(func() { c.remote <- tr })
	})
	if c.track, err = pwebrtc.NewTrackLocalStaticRTP(pwebrtc.RTPCodecCapability{
		MimeType: pwebrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
	}, "audio", "wa"); err != nil {
		return "", err
	}
	if _, err := c.pc.AddTransceiverFromTrack(c.track, pwebrtc.RTPTransceiverInit{
		Direction: pwebrtc.RTPTransceiverDirectionSendrecv,
	}); err != nil {
		return "", fmt.Errorf("bare: caller track: %w", err)
	}
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("bare: caller offer: %w", err)
	}
	gathered := pwebrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return "", fmt.Errorf("bare: caller local description: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(2 * time.Second):
		return "", errors.New("bare: caller gathering timed out")
	}
	c.wg.Add(2)
	go c.readWA()
	go c.readPBX()
	return c.pc.LocalDescription().SDP, nil
}

// answer applies the child's answer and plain RTP address.
func (c *call) answer(sdp, rtpAddr string) error {
	ap, err := netip.ParseAddrPort(rtpAddr)
	if err != nil {
		return fmt.Errorf("%w: rtp address %q", ErrProtocol, rtpAddr)
	}
	c.childRTP = ap
	if err := c.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("bare: child answer: %w", err)
	}
	return nil
}

// startSending starts the 20 ms sender of both sides (one goroutine per call).
func (c *call) startSending() {
	c.wg.Add(1)
	go c.send()
}

// send paces both sides by the clock, not by ticks: a Go ticker drops ticks when its reader
// is late, and a starved load generator would then offer fewer than 50 packets per second
// per side, understating the child's cost per call-second. Late frames go out in a burst
// (at most maxBurst); beyond that the oldest are skipped (a sequence gap, not counted as sent).
func (c *call) send() {
	defer c.wg.Done()
	wa := rtp.Packet{Header: rtp.Header{Version: 2}}
	ph := rtp.Header{Version: 2, PayloadType: c.m.pbxPT, SSRC: rand.Uint32()}
	waSeq, waTS, pSeq, pTS := uint16(rand.Uint32()), rand.Uint32(), uint16(rand.Uint32()), rand.Uint32()
	buf := make([]byte, mtu)
	waStep := transcode.TimestampStep("opus", frameDur)
	t := time.NewTicker(frameDur)
	defer t.Stop()
	start := time.Now()
	c.sendFrom.Store(start.UnixNano())
	defer func() { c.sendTo.Store(time.Now().UnixNano()) }()
	for i := 0; ; {
		due := int(time.Since(start)/frameDur) + 1
		i = max(i, due-maxBurst)
		for ; i < due; i++ {
			wa.SequenceNumber, wa.Timestamp = waSeq+uint16(i), waTS+uint32(i)*waStep
			wa.Payload = c.m.waOpus[i%loopFrames]
			if c.track.WriteRTP(&wa) == nil {
				c.waSent.Add(1)
			}
			ph.SequenceNumber, ph.Timestamp = pSeq+uint16(i), pTS+uint32(i)*c.m.pbxStep
			n, _ := ph.MarshalTo(buf)
			n += copy(buf[n:], c.m.pbx[i%loopFrames])
			if _, err := c.pbxConn.WriteToUDPAddrPort(buf[:n], c.childRTP); err == nil {
				c.pbxSent.Add(1)
			}
		}
		select {
		case <-c.stopSend:
			return
		case <-c.closing:
			return
		case <-t.C:
		}
	}
}

// readWA counts and analyses what the caller receives (Opus from the child), decoded at 8 kHz.
func (c *call) readWA() {
	defer c.wg.Done()
	var tr *pwebrtc.TrackRemote
	select {
	case tr = <-c.remote:
	case <-c.closing:
		return
	}
	dec, err := transcode.NewDecoder("opus", pcmRate)
	if err != nil {
		return
	}
	buf := make([]byte, mtu)
	pcm := make([]int16, maxPCM)
	var p rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		c.waRecv.Add(1)
		if k, err := dec.Decode(p.Payload, pcm); err == nil {
			c.waHeard.Add(pcm[:k], time.Now())
		}
	}
}

// readPBX counts and analyses what the PBX endpoint receives (G.711 or Opus from the child).
func (c *call) readPBX() {
	defer c.wg.Done()
	codec := c.m.pbxCodec
	dec, err := transcode.NewDecoder(codec, pcmRate)
	if err != nil {
		return
	}
	buf := make([]byte, mtu)
	pcm := make([]int16, maxPCM)
	var p rtp.Packet
	for {
		n, _, err := c.pbxConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		c.pbxRecv.Add(1)
		if k, err := dec.Decode(p.Payload, pcm); err == nil {
			c.pbxHeard.Add(pcm[:k], time.Now())
		}
	}
}

// framesDue is how many 20 ms frames the sender should have sent per side (0 while it runs).
func (c *call) framesDue() int64 {
	from, to := c.sendFrom.Load(), c.sendTo.Load()
	if from == 0 || to < from {
		return 0
	}
	return 1 + (to-from)/int64(frameDur)
}

// stop ends the sender; the readers go on until close, so packets in flight still count.
func (c *call) stop() { c.sendOnce.Do(func() { close(c.stopSend) }) }

// close ends everything of the call and waits for its goroutines.
func (c *call) close() {
	c.closeOnce.Do(func() {
		close(c.closing)
		if c.pc != nil {
			_ = c.pc.Close()
		}
		if c.mux != nil {
			_ = c.mux.Close()
		}
		if c.pbxConn != nil {
			_ = c.pbxConn.Close()
		}
		c.wg.Wait()
	})
}
