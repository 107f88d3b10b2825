package wasim

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/internal/impair"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"
)

// endpoint is the WhatsApp user's media side, shared by a Caller (user-initiated call) and a
// Callee (business-initiated call): a pion peer shaped like Meta's relay on its own UDP socket,
// the user's voice (tone or markers, RFC 4733 digits, RTCP sender reports), and the analysis of
// everything the business sends (media.go).
type endpoint struct {
	m  *Meta
	id string // wacid
	mo mediaOptions

	pc    *pwebrtc.PeerConnection
	mux   ice.UDPMux
	wire  *wireCounter
	hole  *blackhole // between the mux and wire: Caller.StopMedia (faults.go)
	track *webrtc.RawTrack
	tr    *pwebrtc.RTPTransceiver
	rec   *recorder

	emu      sync.Mutex // guards closed, sending, dtmf, dtmfBusy
	closed   bool
	sending  bool
	dtmf     []dtmfReq
	dtmfBusy bool

	stream   streamRec
	heard    *audio.Analyzer
	markers  *audio.MarkerReceiver
	markerTx *audio.MarkerSender
	heardMu  sync.Mutex
	digits   []ReceivedDigit

	ended chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup // media and RTCP readers, the media sender, timers
}

// mediaOptions is what the user's voice and ears need from CallOptions / UserOptions.
type mediaOptions struct {
	ToneHz, ToneDBFS     float64 // what the user speaks
	ExpectHz, ExpectDBFS float64 // what the user expects to hear (Heard)
	Marker               bool    // speak the marker sequence instead of the tone
	DTMFDropEnd          bool
	OnAudio              func(pcm []int16, at time.Time)
	Replay               *Replay       // pre-encoded voice and socket-level hooks (media.go)
	Impair               *impair.Model // CallOptions.Impair (impair.go)
}

func (o *mediaOptions) setDefaults() {
	if o.ToneHz == 0 {
		o.ToneHz = 440
	}
	if o.ToneDBFS == 0 {
		o.ToneDBFS = -12
	}
	if o.ExpectHz == 0 {
		o.ExpectHz = 440
	}
	if o.ExpectDBFS == 0 {
		o.ExpectDBFS = -12
	}
}

func (e *endpoint) init(m *Meta, id string, mo mediaOptions) {
	mo.setDefaults()
	e.m, e.id, e.mo = m, id, mo
	e.ended, e.stop = make(chan struct{}), make(chan struct{})
	e.rec = &recorder{}
	e.heard = audio.NewAnalyzer(8000, mo.ExpectHz, mo.ExpectDBFS)
	e.markers = audio.NewMarkerReceiver(8000, MarkerF1Hz, MarkerF2Hz)
	if mo.Marker {
		e.markerTx = audio.NewMarkerSender(8000, MarkerF1Hz, MarkerF2Hz, transcode.AmpForDBFS(mo.ToneDBFS), MarkerPeriod)
	}
}

// newPeer opens the endpoint's UDP socket and creates its peer connection with Meta's codec
// profile (Opus 111, telephone-event/8000 126, the three extmaps of Meta's offer, §5.1) and
// Meta's ICE-lite agent: a=ice-lite is in Meta's UIC offer and in its BIC answer (§5.1, §5.2).
// answering makes the peer the DTLS client in answers (a=setup:active): Meta's BIC answer
// (§5.2).
func (e *endpoint) newPeer(answering bool) error {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("wasim: listen: %w", err)
	}
	e.wire = &wireCounter{PacketConn: e.impairConn(udp)}
	lf := webrtc.NewPionLoggerFactory(e.m.log)
	e.hole = &blackhole{PacketConn: e.wire}
	e.mux = pwebrtc.NewICEUDPMux(lf.NewLogger("mux"), e.hole)

	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, webrtc.OpusFmtp); err != nil {
		_ = e.mux.Close()
		return err
	}
	for _, uri := range []string{sdp.AudioLevelURI, sdp.ABSSendTimeURI, sdp.TransportCCURI} {
		if err := me.RegisterHeaderExtension(pwebrtc.RTPHeaderExtensionCapability{URI: uri}, pwebrtc.RTPCodecTypeAudio); err != nil {
			_ = e.mux.Close()
			return fmt.Errorf("wasim: extmap: %w", err)
		}
	}
	ir := &interceptor.Registry{}
	ir.Add(e.rec) // the recorder sees every RTP and RTCP packet as it is read
	se := pwebrtc.SettingEngine{LoggerFactory: lf}
	se.SetLite(true)
	se.SetICEUDPMux(e.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if answering {
		if err := se.SetAnsweringDTLSRole(pwebrtc.DTLSRoleClient); err != nil {
			_ = e.mux.Close()
			return fmt.Errorf("wasim: dtls role: %w", err)
		}
	}
	api := pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se), pwebrtc.WithInterceptorRegistry(ir))
	e.pc, err = api.NewPeerConnection(pwebrtc.Configuration{BundlePolicy: pwebrtc.BundlePolicyMaxBundle})
	if err != nil {
		_ = e.mux.Close()
		return fmt.Errorf("wasim: peer: %w", err)
	}
	e.track = webrtc.NewRawTrack("audio", "wa")
	e.pc.OnTrack(e.onTrack)
	return nil
}

// setLocal applies desc and waits for the host candidates (immediate with the mux); it returns
// the local SDP.
func (e *endpoint) setLocal(desc pwebrtc.SessionDescription) (string, error) {
	gathered := pwebrtc.GatheringCompletePromise(e.pc)
	if err := e.pc.SetLocalDescription(desc); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(2 * time.Second):
		return "", errors.New("wasim: gathering timed out")
	}
	return e.pc.LocalDescription().SDP, nil
}

func (e *endpoint) closePeer() {
	if e.pc != nil {
		_ = e.pc.Close()
	}
	if e.mux != nil {
		_ = e.mux.Close()
	}
}

// startReaders drains both RTCP read streams so that the recorder sees every RTCP packet from
// the business (pion delivers an RTCP packet to the stream of each SSRC it concerns).
func (e *endpoint) startReaders() {
	e.wg.Add(2)
	go e.drainRTCP(func() ([]rtcp.Packet, error) { p, _, err := e.tr.Sender().ReadRTCP(); return p, err })
	go e.drainRTCP(func() ([]rtcp.Packet, error) { p, _, err := e.tr.Receiver().ReadRTCP(); return p, err })
}

func (e *endpoint) drainRTCP(read func() ([]rtcp.Packet, error)) {
	defer e.wg.Done()
	for {
		pkts, err := read()
		if err != nil {
			return
		}
		e.stream.onRTCP(pkts, time.Now())
	}
}

// goOwned runs f as one of the endpoint's goroutines unless it is closed; Close waits for it.
func (e *endpoint) goOwned(f func()) bool {
	e.emu.Lock()
	defer e.emu.Unlock()
	if e.closed {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// startMedia starts the user's voice toward the business (once). It reports false when the
// endpoint is closed.
func (e *endpoint) startMedia() bool {
	e.emu.Lock()
	defer e.emu.Unlock()
	if e.closed {
		return false
	}
	if !e.sending {
		e.sending = true
		e.wg.Add(1)
		go e.sendMedia()
	}
	return true
}

// shutdown stops media, closes the peer (the business leg then sees DTLS close and ICE
// failure, as when Meta's relay leaves) and closes Ended. It reports false if it already ran.
func (e *endpoint) shutdown() bool {
	e.emu.Lock()
	if e.closed {
		e.emu.Unlock()
		return false
	}
	e.closed = true
	e.emu.Unlock()
	close(e.ended)
	close(e.stop)
	e.closePeer()
	return true
}

// mediaTimeout applies Meta's liveness rules to the business's media once the call is
// answered at `since` (§5.5): no business RTP within NoMediaStart, or no business RTP/RTCP for
// NoMediaMid, ends the call with 138021 (138022 when the user's side itself lost the
// connection and cannot send).
func (e *endpoint) mediaTimeout(now, since time.Time) (reason string, code int) {
	cfg := e.m.cfg
	firstRTP, lastMedia := e.wire.businessMedia()
	switch {
	case firstRTP.IsZero() && now.Sub(since) > cfg.NoMediaStart:
		return "no_media_138021", CodeMediaReceiveTimeout
	case !firstRTP.IsZero() && now.Sub(lastMedia) > cfg.NoMediaMid:
		if e.pc.ConnectionState() != pwebrtc.PeerConnectionStateConnected {
			return "no_media_138022", CodeMediaTransmitTimeout
		}
		return "no_media_138021", CodeMediaReceiveTimeout
	}
	return "", 0
}

// sleep waits d unless the endpoint stops first (then false).
func (e *endpoint) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-e.stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.stop:
		return false
	}
}

// ID is the call's WACID.
func (e *endpoint) ID() string { return e.id }

// Ended is closed when the call is over.
func (e *endpoint) Ended() <-chan struct{} { return e.ended }
