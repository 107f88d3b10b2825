package wasim

import (
	"context"
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

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"
)

// CallOptions describe the WhatsApp user who calls.
type CallOptions struct {
	From            string // wa_id / from (default "16315553602"); "" is sent as "" when BSUID is set
	Name            string // contacts[].profile.name (default "WhatsApp User")
	BSUID           string // from_user_id / contacts[].user_id (2026 fields), optional
	CTAPayload      string
	DeeplinkPayload string
	ToneHz          float64   // tone the caller speaks (default 440)
	ToneDBFS        float64   // its level (default -12)
	Timestamp       time.Time // connect webhook timestamp (default now)
	Marker          bool      // send the sim/audio marker sequence instead of a plain tone
	// What the caller expects to hear from the business (for Heard): default 440 Hz at -12 dBFS.
	ExpectHz, ExpectDBFS float64
	// DTMFDropEnd drops every End packet of the caller's DTMF events (loss impairment).
	DTMFDropEnd bool
	// DeadMedia: the caller's relay never answers ICE (the answer is accepted by
	// the Graph API but never applied), so the gateway's ICE/DTLS cannot complete.
	DeadMedia bool
	// OnAudio sees every decoded 8 kHz frame the caller hears, with its arrival time.
	OnAudio func(pcm []int16, at time.Time)
}

// Marker sequence used by CallOptions.Marker and by HeardMarkers; a PBX simulator measuring
// delay uses the same frequencies.
const (
	MarkerF1Hz   = 700.0
	MarkerF2Hz   = 1300.0
	MarkerPeriod = 500 * time.Millisecond
)

func (o *CallOptions) setDefaults() {
	if o.From == "" && o.BSUID == "" {
		o.From = "16315553602"
	}
	if o.Name == "" {
		o.Name = "WhatsApp User"
	}
	if o.ToneHz == 0 {
		o.ToneHz = 440
	}
	if o.ToneDBFS == 0 {
		o.ToneDBFS = -12
	}
	if o.Timestamp.IsZero() {
		o.Timestamp = time.Now()
	}
	if o.ExpectHz == 0 {
		o.ExpectHz = 440
	}
	if o.ExpectDBFS == 0 {
		o.ExpectDBFS = -12
	}
}

type callState int

const (
	stateRinging callState = iota
	statePreAccepted
	stateAccepted
	stateEnded
)

// Caller is one WhatsApp user's call: a pion peer shaped like Meta's relay plus the call state
// Meta keeps for the Graph API.
type Caller struct {
	m     *Meta
	id    string
	opts  CallOptions
	offer string

	pc    *pwebrtc.PeerConnection
	mux   ice.UDPMux
	wire  *wireCounter
	track *webrtc.RawTrack
	tr    *pwebrtc.RTPTransceiver
	rec   *recorder

	mu                sync.Mutex
	state             callState
	connectAt         time.Time
	acceptedAt        time.Time
	acceptRespondedAt time.Time
	preSDP            string
	answerSDP         string
	opaque            string
	endReason         string
	closed            bool
	dtmf              []dtmfReq
	dtmfBusy          bool

	stream   streamRec
	heard    *audio.Analyzer
	markers  *audio.MarkerReceiver
	markerTx *audio.MarkerSender
	heardMu  sync.Mutex
	digits   []ReceivedDigit

	accepted chan struct{}
	ended    chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Call places a user-initiated call: it builds the caller peer (ICE-lite, actpass, Opus 111
// "minptime=10;useinbandfec=1", telephone-event/8000 126, BUNDLE, one SSRC, §5.1), waits for
// gathering, then POSTs the signed connect webhook. It returns once the gateway has answered
// the webhook (2xx), or an error wrapping ErrWebhookRejected.
func (m *Meta) Call(ctx context.Context, o CallOptions) (*Caller, error) {
	o.setDefaults()
	c := &Caller{
		m: m, id: newID("wacid.", 21), opts: o,
		accepted: make(chan struct{}), ended: make(chan struct{}), stop: make(chan struct{}),
	}
	c.rec = &recorder{}
	c.heard = audio.NewAnalyzer(8000, o.ExpectHz, o.ExpectDBFS)
	c.markers = audio.NewMarkerReceiver(8000, MarkerF1Hz, MarkerF2Hz)
	if o.Marker {
		c.markerTx = audio.NewMarkerSender(8000, MarkerF1Hz, MarkerF2Hz, transcode.AmpForDBFS(o.ToneDBFS), MarkerPeriod)
	}
	if err := c.buildPeer(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.closePeer()
		return nil, ErrClosed
	}
	m.calls[c.id] = c
	c.connectAt = time.Now()
	c.wg.Add(3)
	m.mu.Unlock()
	go c.supervise()
	// Drain both RTCP read streams so that the recorder sees every RTCP packet from the business
	// (pion delivers an RTCP packet to the stream of each SSRC it concerns).
	go c.drainRTCP(func() ([]rtcp.Packet, error) { p, _, err := c.tr.Sender().ReadRTCP(); return p, err })
	go c.drainRTCP(func() ([]rtcp.Packet, error) { p, _, err := c.tr.Receiver().ReadRTCP(); return p, err })

	body, err := m.connectBody(c)
	if err == nil {
		_, err = m.post(ctx, "connect", c.id, body, true)
	}
	if err != nil {
		c.end("webhook_failed", endOpts{silent: true})
		return nil, fmt.Errorf("wasim: connect webhook: %w", err)
	}
	return c, nil
}

func (c *Caller) buildPeer() error {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("wasim: listen: %w", err)
	}
	c.wire = &wireCounter{PacketConn: udp}
	lf := webrtc.NewPionLoggerFactory(c.m.log)
	c.mux = pwebrtc.NewICEUDPMux(lf.NewLogger("mux"), c.wire)

	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, webrtc.OpusFmtp); err != nil {
		_ = c.mux.Close()
		return err
	}
	// Meta's offer lists these three extmaps (§5.1); offering them keeps the shape honest.
	for _, uri := range []string{sdp.AudioLevelURI, sdp.ABSSendTimeURI, sdp.TransportCCURI} {
		if err := me.RegisterHeaderExtension(pwebrtc.RTPHeaderExtensionCapability{URI: uri}, pwebrtc.RTPCodecTypeAudio); err != nil {
			_ = c.mux.Close()
			return fmt.Errorf("wasim: extmap: %w", err)
		}
	}
	ir := &interceptor.Registry{}
	ir.Add(c.rec) // the recorder sees every RTP and RTCP packet as it is read
	se := pwebrtc.SettingEngine{LoggerFactory: lf}
	se.SetLite(true) // Meta's relay is ICE-lite (a=ice-lite)
	se.SetICEUDPMux(c.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se), pwebrtc.WithInterceptorRegistry(ir))

	c.pc, err = api.NewPeerConnection(pwebrtc.Configuration{BundlePolicy: pwebrtc.BundlePolicyMaxBundle})
	if err != nil {
		_ = c.mux.Close()
		return fmt.Errorf("wasim: peer: %w", err)
	}
	c.track = webrtc.NewRawTrack("audio", "wa")
	c.tr, err = c.pc.AddTransceiverFromTrack(c.track, pwebrtc.RTPTransceiverInit{Direction: pwebrtc.RTPTransceiverDirectionSendrecv})
	if err == nil {
		err = c.tr.SetMid("audio") // Meta's mid (§5.1)
	}
	c.pc.OnTrack(c.onTrack)
	var offer pwebrtc.SessionDescription
	if err == nil {
		offer, err = c.pc.CreateOffer(nil)
	}
	gathered := pwebrtc.GatheringCompletePromise(c.pc)
	if err == nil {
		err = c.pc.SetLocalDescription(offer)
	}
	if err != nil {
		c.closePeer()
		return fmt.Errorf("wasim: offer: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(2 * time.Second):
		c.closePeer()
		return errors.New("wasim: gathering timed out")
	}
	c.offer = c.pc.LocalDescription().SDP
	return nil
}

func (c *Caller) closePeer() {
	if c.pc != nil {
		_ = c.pc.Close()
	}
	_ = c.mux.Close()
}

// ID is the call's WACID.
func (c *Caller) ID() string { return c.id }

// Offer is the SDP offer sent in the connect webhook.
func (c *Caller) Offer() string { return c.offer }

// Answer is the SDP answer the caller applied (from pre_accept, or accept without pre_accept).
func (c *Caller) Answer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answerSDP
}

// WaitAccepted waits until the gateway's accept request has been answered with 200.
func (c *Caller) WaitAccepted(ctx context.Context) error {
	select {
	case <-c.accepted:
		return nil
	case <-c.ended:
		return fmt.Errorf("wasim: call ended before accept: %s", c.EndReason())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AcceptRespondedAt is when the simulator finished answering the accept request (zero before).
// The caller starts media only after this instant, as WhatsApp clients do (§3.2).
func (c *Caller) AcceptRespondedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acceptRespondedAt
}

// Ended is closed when the call is over.
func (c *Caller) Ended() <-chan struct{} { return c.ended }

// EndReason says why the call ended: "gateway_terminate", "gateway_reject", "user_hangup",
// "accept_timeout", "no_media_138021", "no_media_138022" (or "" while it lasts).
func (c *Caller) EndReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endReason
}

func (c *Caller) bizOpaque() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opaque
}

// Hangup is the user hanging up: a terminate webhook with status COMPLETED and the duration
// (FAILED without times if the call was never accepted), delivered before Hangup returns.
func (c *Caller) Hangup(ctx context.Context) error {
	body, ok := c.end("user_hangup", endOpts{})
	if !ok {
		return fmt.Errorf("wasim: call already ended (%s)", c.EndReason())
	}
	_, err := c.m.post(ctx, "terminate", c.id, body, true)
	return err
}

func (c *Caller) preAccept(gb *graphBody) *graphError {
	if e := validateAnswerSDP(gb); e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateRinging:
	case stateEnded:
		return badParam("call " + c.id + " has already ended")
	default:
		return badParam("call " + c.id + " is already pre-accepted or in progress")
	}
	if err := c.applyAnswer(gb.Session.SDP); err != nil {
		return badParam("Invalid connection info: " + err.Error())
	}
	c.state, c.preSDP = statePreAccepted, gb.Session.SDP
	return nil
}

// accept: Meta rejects an accept after the window, after the end, or whose SDP differs from the
// pre_accept SDP (§3.1, §3.2). Media starts after the 200 is on the wire.
func (c *Caller) accept(gb *graphBody) (func(), *graphError) {
	if e := validateAnswerSDP(gb); e != nil {
		return nil, e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state == stateEnded:
		return nil, badParam("call " + c.id + " has already ended")
	case c.state == stateAccepted:
		return nil, badParam("call " + c.id + " is already in progress")
	case time.Since(c.connectAt) > c.m.cfg.AcceptWindow:
		return nil, badParam("accept window expired")
	case c.state == statePreAccepted && gb.Session.SDP != c.preSDP:
		return nil, badParam("SDP does not match the SDP sent with pre_accept")
	case c.state == stateRinging:
		if err := c.applyAnswer(gb.Session.SDP); err != nil {
			return nil, badParam("Invalid connection info: " + err.Error())
		}
	}
	c.state, c.acceptedAt, c.opaque = stateAccepted, time.Now(), gb.BizOpaque
	return c.onAcceptResponded, nil
}

func (c *Caller) onAcceptResponded() {
	c.mu.Lock()
	if c.state != stateAccepted || c.closed {
		c.mu.Unlock()
		return
	}
	c.acceptRespondedAt = time.Now()
	c.wg.Add(1)
	c.mu.Unlock()
	close(c.accepted)
	go c.sendMedia()
}

func (c *Caller) reject() (func(), *graphError) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	switch st {
	case stateEnded:
		return nil, badParam("call " + c.id + " has already ended")
	case stateAccepted:
		return nil, badParam("call " + c.id + " is already in progress; use terminate")
	}
	return c.endAfterResponse("gateway_reject"), nil
}

func (c *Caller) terminate() (func(), *graphError) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st == stateEnded {
		return nil, badParam("call " + c.id + " has already ended")
	}
	return c.endAfterResponse("gateway_terminate"), nil
}

// endAfterResponse ends the call and queues its terminate webhook after the 200 (Meta sends
// the terminate for business reject/terminate too, §2.5).
func (c *Caller) endAfterResponse(reason string) func() {
	body, ok := c.end(reason, endOpts{})
	if !ok {
		return nil
	}
	return func() { c.m.goWebhook("terminate", c.id, body) }
}

// applyAnswer gives the gateway's answer to the caller's peer; c.mu is held.
func (c *Caller) applyAnswer(answer string) error {
	if c.opts.DeadMedia {
		// The relay never answers ICE: keep the call state, never start the peer.
		c.answerSDP = answer
		return nil
	}
	if err := c.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return err
	}
	c.answerSDP = answer
	return nil
}

type endOpts struct {
	silent  bool // no terminate body (simulator closing, failed connect)
	errCode int  // errors[] code
}

// end moves the call to ended, stops its media and returns the terminate webhook body. ok is
// false if the call had already ended.
func (c *Caller) end(reason string, o endOpts) (body []byte, ok bool) {
	c.mu.Lock()
	if c.state == stateEnded {
		c.mu.Unlock()
		return nil, false
	}
	acceptedAt := c.acceptedAt
	wasAccepted := c.state == stateAccepted
	c.state, c.endReason, c.closed = stateEnded, reason, true
	c.mu.Unlock()
	close(c.ended)
	close(c.stop)
	// Meta's relay leaves the call: the business leg sees DTLS close and then ICE failure.
	c.closePeer()
	c.m.log.Debug("call ended", "wacid", c.id, "reason", reason)
	if o.silent {
		return nil, true
	}
	status := "FAILED"
	if wasAccepted && o.errCode == 0 {
		status = "COMPLETED"
	}
	if !wasAccepted {
		acceptedAt = time.Time{}
	}
	body, err := c.m.terminateBody(c, status, acceptedAt, time.Now(), o.errCode)
	if err != nil {
		c.m.log.Error("terminate body", "err", err)
		return nil, true
	}
	return body, true
}

func (c *Caller) drainRTCP(read func() ([]rtcp.Packet, error)) {
	defer c.wg.Done()
	for {
		pkts, err := read()
		if err != nil {
			return
		}
		c.stream.onRTCP(pkts, time.Now())
	}
}

// supervise runs Meta's timers for the call (§3.2, §5.5): the accept window, and after accept the
// media timeouts: no business RTP within NoMediaStart, or no business RTP/RTCP for NoMediaMid.
func (c *Caller) supervise() {
	defer c.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	cfg := c.m.cfg
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.mu.Lock()
			st, connectAt, respondedAt := c.state, c.connectAt, c.acceptRespondedAt
			c.mu.Unlock()
			reason, code := "", 0
			switch {
			case (st == stateRinging || st == statePreAccepted) && now.Sub(connectAt) > cfg.AcceptWindow:
				reason = "accept_timeout"
			case st == stateAccepted && !respondedAt.IsZero():
				firstRTP, lastMedia := c.wire.businessMedia()
				switch {
				case firstRTP.IsZero() && now.Sub(respondedAt) > cfg.NoMediaStart:
					reason, code = "no_media_138021", CodeMediaReceiveTimeout
				case !firstRTP.IsZero() && now.Sub(lastMedia) > cfg.NoMediaMid:
					reason, code = "no_media_138021", CodeMediaReceiveTimeout
					if c.pc.ConnectionState() != pwebrtc.PeerConnectionStateConnected {
						reason, code = "no_media_138022", CodeMediaTransmitTimeout
					}
				}
			}
			if reason == "" {
				continue
			}
			if body, ok := c.end(reason, endOpts{errCode: code}); ok && body != nil {
				c.m.goWebhook("terminate", c.id, body)
			}
			return
		}
	}
}
