package rtpeng

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"
)

// Errors of one call.
var (
	ErrNotStarted = errors.New("rtpeng: call not started")
	ErrNotConn    = errors.New("rtpeng: WebRTC side never connected (ICE + DTLS)")
	ErrPeerFailed = errors.New("rtpeng: WebRTC side failed or closed during the hold")
)

const (
	connectTimeout = 15 * time.Second
	drainTime      = 300 * time.Millisecond // after the senders stop, for packets in flight
	maxBurst       = 10                     // frames a late sender catches up at once
)

// Direction counts one direction's packets (audio payload type only; RTCP is not counted).
type Direction struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	LossPct  float64 `json:"loss_percent"` // 100 * (sent - received) / sent, floored at 0
	// SeqLost is the receiver's view (RFC 3550 A.3): packets missing between the first and
	// the highest sequence number it got. It excludes packets never forwarded at the start
	// or the end of a stream, such as the last frame a transcoder still holds at hang-up.
	SeqExpected int `json:"seq_expected"`
	SeqLost     int `json:"seq_lost"`

	seq seqTracker
}

func (d *Direction) finish() {
	if d.Sent > 0 {
		d.LossPct = max(0, 100*float64(d.Sent-d.Received)/float64(d.Sent))
	}
	if d.seq.started {
		d.SeqExpected = int(d.seq.highest - d.seq.first + 1)
		d.SeqLost = max(0, d.SeqExpected-d.Received)
	}
}

// seqTracker extends 16-bit sequence numbers across wrap-around (RFC 3550 A.1).
type seqTracker struct {
	started        bool
	first, highest int64
	last           uint16
}

func (s *seqTracker) add(seq uint16) {
	if !s.started {
		s.started, s.first, s.highest, s.last = true, int64(seq), int64(seq), seq
		return
	}
	ext := s.highest + int64(int16(seq-s.last))
	if ext > s.highest {
		s.highest, s.last = ext, seq
	}
}

// CallResult is one call. The WebRTC side plays WhatsApp's caller, the plain side the PBX, so
// CallerHeard/PBXHeard mean what they mean in `ponte load`.
type CallResult struct {
	Index        int        `json:"index"`
	CallID       string     `json:"call_id"`
	OK           bool       `json:"ok"`
	Err          string     `json:"error,omitempty"`
	SetupMs      float64    `json:"setup_ms"` // ng offer sent -> WebRTC side connected (ICE + DTLS); -1 if never
	MediaSeconds float64    `json:"media_seconds"`
	CallerHeard  AudioCheck `json:"caller_heard"` // WebRTC side, the plain side's 1000 Hz
	PBXHeard     AudioCheck `json:"pbx_heard"`    // plain side, the WebRTC side's 440 Hz
	ToCaller     Direction  `json:"to_caller"`    // plain -> rtpengine -> WebRTC
	ToPBX        Direction  `json:"to_pbx"`       // WebRTC -> rtpengine -> plain
}

// callEnv is what every call of a run shares.
type callEnv struct {
	o         *Options
	ng        *Client
	runID     string
	opusLoop  *loop // the WebRTC side's 440 Hz
	plainLoop *loop // the plain side's 1000 Hz, in Options.Codec
	log       logging.LoggerFactory
}

// call is one call's two endpoints.
type call struct {
	env     *callEnv
	id, tag string

	plain  *net.UDPConn
	remote *net.UDPAddr
	rtpPT  uint8 // the plain side's payload type, both ways

	sock  net.PacketConn
	mux   ice.UDPMux
	pc    *pwebrtc.PeerConnection
	track *webrtc.RawTrack

	connected chan struct{}
	failed    chan struct{}
	stateOnce [2]sync.Once

	mu     sync.Mutex // guards closed and the wg.Add of readers started by pion's callbacks
	closed bool
	wg     sync.WaitGroup

	callerHeard, pbxHeard *audio.Analyzer
	toCaller, toPBX       Direction // Received written by the readers, read after wg.Wait
}

// run places the call, holds it for Options.Hold with media both ways and tears it down.
func (e *callEnv) run(ctx context.Context, i int) (res CallResult) {
	c := &call{
		env: e, id: fmt.Sprintf("%s-%d", e.runID, i), tag: fmt.Sprintf("plain-%d", i),
		connected: make(chan struct{}), failed: make(chan struct{}),
		callerHeard: audio.NewAnalyzer(pcmRate, plainHz, callerHeardDBFS(e.o.Codec)),
		pbxHeard:    audio.NewAnalyzer(pcmRate, webrtcHz, toneDBFS),
	}
	res = CallResult{Index: i, CallID: c.id, SetupMs: -1}
	fail := func(err error) CallResult {
		res.Err = err.Error()
		return res
	}
	defer c.close()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	// Whatever happens, rtpengine forgets the call (its ports go back to the pool); a call
	// whose offer never arrived has nothing to delete, and that error only counts for a call
	// that otherwise succeeded.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := e.ng.Delete(dctx, c.id, c.tag); err != nil && res.OK {
			res.OK, res.Err = false, "delete: "+err.Error()
		}
	}()
	if err := c.setup(sctx); err != nil {
		return fail(err)
	}
	select {
	case <-c.connected:
	case <-c.failed:
		return fail(ErrNotConn)
	case <-sctx.Done():
		return fail(fmt.Errorf("%w within %v", ErrNotConn, connectTimeout))
	}
	mediaAt := time.Now()
	res.SetupMs = ms(mediaAt.Sub(start))

	stop := make(chan struct{})
	var sendWG sync.WaitGroup
	sendWG.Add(1)
	go func() { defer sendWG.Done(); c.send(stop) }()
	hold := time.NewTimer(e.o.Hold)
	defer hold.Stop()
	var holdErr error
	select {
	case <-hold.C:
	case <-c.failed:
		holdErr = ErrPeerFailed
	case <-ctx.Done():
		holdErr = ctx.Err()
	}
	stopAt := time.Now()
	close(stop)
	sendWG.Wait()
	res.MediaSeconds = stopAt.Sub(mediaAt).Seconds()
	// Packets in flight (and rtpengine's transcoding queue) arrive before the count.
	t := time.NewTimer(drainTime)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	c.close()
	res.ToCaller, res.ToPBX = c.toCaller, c.toPBX
	res.ToCaller.finish()
	res.ToPBX.finish()
	from := mediaAt.Add(e.o.Settle)
	res.CallerHeard = check(c.callerHeard, from, stopAt)
	res.PBXHeard = check(c.pbxHeard, from, stopAt)
	if holdErr != nil {
		return fail(holdErr)
	}
	res.OK = true
	return res
}

// setup: plain offer -> rtpengine (to WebRTC) -> pion answers -> rtpengine (to RTP/AVP) ->
// the plain side learns where to send.
func (c *call) setup(ctx context.Context) error {
	o := c.env.o
	var err error
	if c.plain, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		return fmt.Errorf("rtpeng: plain socket: %w", err)
	}
	port := c.plain.LocalAddr().(*net.UDPAddr).Port
	offer, err := c.env.ng.Offer(ctx, c.id, c.tag, plainOffer(port, o.Codec, rand.Uint64()>>2), offerFlags(o.Codec))
	if err != nil {
		return err
	}
	if offer, err = withBundle(offer); err != nil {
		return err
	}
	if err := c.newPeer(); err != nil {
		return err
	}
	if err := c.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fmt.Errorf("rtpeng: pion: remote offer: %w", err)
	}
	if _, err := c.pc.AddTrack(c.track); err != nil {
		return fmt.Errorf("rtpeng: pion: add track: %w", err)
	}
	ans, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("rtpeng: pion: answer: %w", err)
	}
	gathered := pwebrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(ans); err != nil {
		return fmt.Errorf("rtpeng: pion: local answer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fmt.Errorf("rtpeng: pion: gathering: %w", ctx.Err())
	}
	local := pionAnswerForRtpengine(c.pc.LocalDescription().SDP, c.sock.LocalAddr().(*net.UDPAddr).Port)
	back, err := c.env.ng.Answer(ctx, c.id, c.tag, "webrtc-"+c.tag, local, answerFlags())
	if err != nil {
		return err
	}
	rm, err := parseAnswer(back)
	if err != nil {
		return err
	}
	if c.remote, err = net.ResolveUDPAddr("udp4", rm.Addr); err != nil {
		return fmt.Errorf("rtpeng: %w", err)
	}
	c.rtpPT = rm.PT
	c.goOwned(c.readPlain)
	return nil
}

// offerFlags turn the plain offer into a WebRTC offer (the reference probe's working recipe,
// dependencies-and-test-peers.md §5): ICE, DTLS-SRTP with rtpengine passive, no SDES, rtcp-mux,
// a mid; for PCMU, transcoding to Opus with PCMU masked from the WebRTC side.
func offerFlags(codec string) Dict {
	f := Dict{
		"ICE": "force", "DTLS": "passive", "SDES": []string{"off"},
		"transport-protocol": "UDP/TLS/RTP/SAVPF", "rtcp-mux": []string{"require"},
		"flags": []string{"trust-address", "generate-mid"},
	}
	if codec != transcode.CodecOpus {
		f["codec"] = Dict{"transcode": []string{"opus/48000/2"}, "mask": []string{codec}}
	}
	return f
}

func answerFlags() Dict { return Dict{"transport-protocol": "RTP/AVP", "ICE": "remove"} }

// newPeer creates the WebRTC side: pion with Meta's codec profile on its own loopback socket,
// no interceptors (nothing but the media itself is sent), full ICE answering rtpengine.
func (c *call) newPeer() error {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("rtpeng: webrtc socket: %w", err)
	}
	c.sock = udp
	c.mux = pwebrtc.NewICEUDPMux(c.env.log.NewLogger("mux"), udp)
	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, webrtc.OpusFmtp); err != nil {
		return err
	}
	se := pwebrtc.SettingEngine{LoggerFactory: c.env.log}
	se.SetICEUDPMux(c.mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se),
		pwebrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	if c.pc, err = api.NewPeerConnection(pwebrtc.Configuration{BundlePolicy: pwebrtc.BundlePolicyMaxBundle}); err != nil {
		return fmt.Errorf("rtpeng: pion: %w", err)
	}
	c.track = webrtc.NewRawTrack("audio", "load")
	c.pc.OnConnectionStateChange(func(s pwebrtc.PeerConnectionState) {
		switch s {
		case pwebrtc.PeerConnectionStateConnected:
			c.stateOnce[0].Do(func() { close(c.connected) })
		case pwebrtc.PeerConnectionStateFailed, pwebrtc.PeerConnectionStateClosed:
			// Not Disconnected: ICE reports it after a few seconds without checks and may
			// recover; lost media shows in the counts and the audio check instead.
			c.stateOnce[1].Do(func() { close(c.failed) })
		}
	})
	c.pc.OnTrack(func(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
		c.goOwned(func() { c.readWebRTC(tr) })
	})
	return nil
}

// goOwned runs f as one of the call's goroutines unless the call is closed; close waits for it.
func (c *call) goOwned(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// close ends both endpoints and waits for their readers (idempotent).
func (c *call) close() {
	c.mu.Lock()
	was := c.closed
	c.closed = true
	c.mu.Unlock()
	if was {
		return
	}
	if c.pc != nil {
		_ = c.pc.Close()
	}
	if c.mux != nil {
		_ = c.mux.Close()
	}
	if c.sock != nil {
		_ = c.sock.Close()
	}
	if c.plain != nil {
		_ = c.plain.Close()
	}
	c.wg.Wait()
}

// send is both voices: one pre-encoded frame per side every 20 ms, paced by the wall clock
// with catch-up (at most maxBurst frames) like the simulators, so that packet rate and RTP
// timestamps follow real time even when the machine is busy.
func (c *call) send(stop <-chan struct{}) {
	opusPT, _, _ := c.track.PayloadTypes()
	wh := rtp.Header{Version: 2, PayloadType: opusPT, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32(), Marker: true}
	ph := rtp.Header{Version: 2, PayloadType: c.rtpPT, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32(),
		SSRC: rand.Uint32(), Marker: true}
	buf := make([]byte, 1500)
	wl, pl := c.env.opusLoop, c.env.plainLoop
	start := time.Now()
	sent := 0
	t := time.NewTicker(frameDur)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			due := int(now.Sub(start)/frameDur) + 1
			if behind := due - sent; behind > maxBurst {
				skip := behind - maxBurst
				wh.Timestamp += uint32(skip) * wl.step
				ph.Timestamp += uint32(skip) * pl.step
				sent += skip
			}
			for ; sent < due; sent++ {
				k := sent % loopLen
				if err := c.track.WriteRTP(&wh, wl.frames[k]); err == nil {
					c.toPBX.Sent++
				}
				n, err := ph.MarshalTo(buf)
				if err == nil {
					n += copy(buf[n:], pl.frames[k])
					if _, err := c.plain.WriteToUDP(buf[:n], c.remote); err == nil {
						c.toCaller.Sent++
					}
				}
				wh.Marker, ph.Marker = false, false
				wh.SequenceNumber++
				ph.SequenceNumber++
				wh.Timestamp += wl.step
				ph.Timestamp += pl.step
			}
		}
	}
}

// readPlain is the PBX's ear: RTP from rtpengine on the plain socket, decoded to 8 kHz.
func (c *call) readPlain() {
	codec := c.env.o.Codec
	dec, err := transcode.NewDecoder(codec, pcmRate)
	if err != nil {
		return
	}
	buf := make([]byte, 1500)
	pcm := make([]int16, 960)
	var p rtp.Packet
	for {
		n, err := c.plain.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := time.Now()
		// RTCP shares the socket (rtcp-mux): its packet types 192..223 (RFC 5761 §4).
		if n < 2 || (buf[1] >= 192 && buf[1] <= 223) || p.Unmarshal(buf[:n]) != nil || p.PayloadType != c.rtpPT {
			continue
		}
		c.toPBX.Received++
		c.toPBX.seq.add(p.SequenceNumber)
		if k, err := dec.Decode(p.Payload, pcm); err == nil {
			c.pbxHeard.Add(pcm[:k], at)
		}
	}
}

// readWebRTC is the caller's ear: Opus from rtpengine over DTLS-SRTP, decoded to 8 kHz.
func (c *call) readWebRTC(tr *pwebrtc.TrackRemote) {
	dec, err := transcode.NewDecoder(transcode.CodecOpus, pcmRate)
	if err != nil {
		return
	}
	pt := uint8(tr.PayloadType())
	buf := make([]byte, 1500)
	pcm := make([]int16, 960)
	var p rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		if p.Unmarshal(buf[:n]) != nil || p.PayloadType != pt {
			continue
		}
		c.toCaller.Received++
		c.toCaller.seq.add(p.SequenceNumber)
		if k, err := dec.Decode(p.Payload, pcm); err == nil {
			c.callerHeard.Add(pcm[:k], at)
		}
	}
}
