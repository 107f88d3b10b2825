package webrtc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	pwebrtc "github.com/pion/webrtc/v4"
)

// Errors of a leg. They are wrapped with %w; test with errors.Is.
var (
	// ErrSendGated: WriteRTP before EnableSend. Nothing was sent (§3.2).
	ErrSendGated = errors.New("webrtc: send gate closed (before accept)")
	// ErrConnectTimeout: ICE+DTLS did not complete within Config.ConnectTimeout.
	ErrConnectTimeout = errors.New("webrtc: ICE/DTLS connect timeout")
	// ErrFailed: the peer connection failed or was closed before/while connected.
	ErrFailed = errors.New("webrtc: peer connection failed")
	// ErrBadAnswer: Meta's answer to our Offer cannot be applied.
	ErrBadAnswer = errors.New("webrtc: answer not acceptable")
	// ErrState: a call out of order (Answer twice, WriteRTP before Answer, ...).
	ErrState = errors.New("webrtc: wrong leg state")
	// ErrPayloadType: WriteRTP with a PT that was not negotiated.
	ErrPayloadType = errors.New("webrtc: payload type not negotiated")
)

// Leg is one WhatsApp call's media leg. Methods are safe for concurrent use, except that
// ReadRTP must be called from one goroutine at a time (it is the single reader).
type Leg struct {
	e      *Engine
	callID string
	log    *slog.Logger
	track  *RawTrack

	mu          sync.Mutex
	pc          *pwebrtc.PeerConnection // created by Answer or Offer
	offered     bool                    // Offer done, waiting for SetAnswer
	negotiated  bool                    // Answer or SetAnswer done
	negotiateAt time.Time               // ConnectTimeout runs from here
	closeOnce   sync.Once
	closeErr    error

	remote                        atomic.Pointer[pwebrtc.TrackRemote]
	trackReady                    chan struct{}
	connected                     chan struct{}
	done                          chan struct{} // failed or closed
	closing                       chan struct{} // Close called
	trackOnce, connOnce, doneOnce sync.Once

	sendOn   atomic.Bool
	sendOnce sync.Once

	st legStats
	wg sync.WaitGroup
}

func newLeg(e *Engine, callID string) (*Leg, error) {
	l := &Leg{
		e:          e,
		callID:     callID,
		log:        e.log.With("wacid", callID),
		track:      NewRawTrack("audio", "ponte"),
		trackReady: make(chan struct{}),
		connected:  make(chan struct{}),
		done:       make(chan struct{}),
		closing:    make(chan struct{}),
	}
	l.st.init()
	return l, nil
}

// newPC creates the peer connection from api; l.mu is held.
func (l *Leg) newPC(api *pwebrtc.API) error {
	if l.pc != nil {
		return fmt.Errorf("%w: already negotiating", ErrState)
	}
	select {
	case <-l.closing:
		return ErrClosed
	default:
	}
	pc, err := api.NewPeerConnection(pwebrtc.Configuration{
		BundlePolicy:  pwebrtc.BundlePolicyMaxBundle,
		RTCPMuxPolicy: pwebrtc.RTCPMuxPolicyRequire,
	})
	if err != nil {
		return fmt.Errorf("webrtc: new peer connection: %w", err)
	}
	// pion runs these callbacks on its own goroutines; they only flip channels.
	pc.OnConnectionStateChange(func(s pwebrtc.PeerConnectionState) {
		l.log.Debug("webrtc state", "state", s.String())
		switch s {
		case pwebrtc.PeerConnectionStateConnected:
			l.connOnce.Do(func() { close(l.connected) })
		case pwebrtc.PeerConnectionStateFailed, pwebrtc.PeerConnectionStateClosed:
			l.doneOnce.Do(func() { close(l.done) })
		}
	})
	pc.OnTrack(func(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
		if tr.Kind() != pwebrtc.RTPCodecTypeAudio {
			return
		}
		l.trackOnce.Do(func() {
			l.remote.Store(tr)
			close(l.trackReady)
		})
	})
	l.pc = pc
	return nil
}

// CallID returns the id given to NewLeg.
func (l *Leg) CallID() string { return l.callID }

// Answer applies Meta's offer (user-initiated call) and returns the answer in Meta's profile
// (package doc). It returns as soon as host candidates are gathered, which is immediate with
// the UDP mux. The offer is validated first; a bad offer returns an error wrapping ErrBadOffer
// and leaves the leg unusable (Close it).
func (l *Leg) Answer(offer string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, err := parseOffer(offer)
	if err != nil {
		return "", err
	}
	offer, err = withBundle(offer, info)
	if err != nil {
		return "", err
	}
	if err := l.newPC(l.e.answerAPI); err != nil {
		return "", err
	}
	if err := l.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	// AddTrack after the offer attaches our single track to the transceiver the offer created,
	// so the answer keeps exactly one m-line with one SSRC (§5.3).
	sender, err := l.pc.AddTrack(l.track)
	if err != nil {
		return "", fmt.Errorf("webrtc: add track: %w", err)
	}
	ans, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: create answer: %v", ErrBadOffer, err)
	}
	local, err := l.setLocal(ans, "active")
	if err != nil {
		return "", err
	}
	l.negotiated, l.negotiateAt = true, time.Now()
	if err := l.startReaders(sender); err != nil {
		return "", err
	}
	l.log.Debug("answered", "ssrc", l.SSRC())
	return local, nil
}

// Offer creates an offer for a business-initiated call (Graph API `connect`, §3.3): one audio
// m-line, Opus 111 with Meta's fmtp, telephone-event/8000 126, ptime 20, one SSRC, and
// a=setup:actpass (an active offer is non-RFC and UNCONFIRMED at Meta, §5.2). Meta answers
// setup:active, which makes the leg the DTLS server; it stays ICE controlling because Meta is
// ICE-lite. Apply Meta's answer with SetAnswer.
func (l *Leg) Offer() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.newPC(l.e.offerAPI); err != nil {
		return "", err
	}
	if _, err := l.pc.AddTransceiverFromTrack(l.track, pwebrtc.RTPTransceiverInit{
		Direction: pwebrtc.RTPTransceiverDirectionSendrecv,
	}); err != nil {
		return "", fmt.Errorf("webrtc: add track: %w", err)
	}
	o, err := l.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("webrtc: create offer: %w", err)
	}
	local, err := l.setLocal(o, "actpass")
	if err != nil {
		return "", err
	}
	l.offered = true
	return local, nil
}

// SetAnswer applies Meta's answer to Offer (the `connect` webhook's session, §2.3). A bad answer
// returns an error wrapping ErrBadAnswer.
func (l *Leg) SetAnswer(answer string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.offered || l.negotiated {
		return fmt.Errorf("%w: SetAnswer without a pending Offer", ErrState)
	}
	if err := validateAnswer(answer); err != nil {
		return err
	}
	if err := l.pc.SetRemoteDescription(pwebrtc.SessionDescription{Type: pwebrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	l.negotiated, l.negotiateAt = true, time.Now()
	var sender *pwebrtc.RTPSender
	for _, t := range l.pc.GetTransceivers() {
		if t.Sender() != nil && t.Sender().Track() == l.track {
			sender = t.Sender()
		}
	}
	return l.startReaders(sender)
}

// setLocal applies our own description, waits for the mux's host candidates and returns the
// SDP text for Meta with ptime added and Meta's profile checked. l.mu is held.
func (l *Leg) setLocal(desc pwebrtc.SessionDescription, setup string) (string, error) {
	gathered := pwebrtc.GatheringCompletePromise(l.pc)
	if err := l.pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("webrtc: set local description: %w", err)
	}
	// With the mux there is no STUN/TURN gathering: host candidates are ready at once. The
	// bound only matters if pion changes that.
	select {
	case <-gathered:
	case <-time.After(2 * time.Second):
		return "", errors.New("webrtc: ICE gathering did not complete")
	case <-l.closing:
		return "", ErrClosed
	}
	local := l.pc.LocalDescription()
	if local == nil {
		return "", errors.New("webrtc: no local description")
	}
	// pion refuses a munged local description ("new sdp does not match previous answer"), so
	// the additions Meta needs are made to the text we hand out; pion does not use them.
	shaped, err := shapeSDP(local.SDP)
	if err != nil {
		return "", err
	}
	if _, err := checkLocal(shaped, setup); err != nil {
		return "", fmt.Errorf("webrtc: own SDP breaks Meta's profile: %w", err)
	}
	return shaped, nil
}

// startReaders starts the RTCP readers once negotiation is done; l.mu is held. They only read
// (never write), so they may run before the send gate opens.
func (l *Leg) startReaders(sender *pwebrtc.RTPSender) error {
	select {
	case <-l.closing: // Close is waiting for l.mu; it must not miss goroutines started here.
		return ErrClosed
	default:
	}
	if sender == nil {
		return fmt.Errorf("%w: no sender", ErrState)
	}
	var receiver *pwebrtc.RTPReceiver
	for _, t := range l.pc.GetTransceivers() {
		if t.Sender() == sender {
			receiver = t.Receiver()
		}
	}
	l.wg.Add(1)
	go l.readRTCP(func() ([]rtcp.Packet, error) { p, _, err := sender.ReadRTCP(); return p, err }, true)
	if receiver != nil {
		l.wg.Add(1)
		go l.readRTCP(func() ([]rtcp.Packet, error) { p, _, err := receiver.ReadRTCP(); return p, err }, false)
	}
	return nil
}

// WaitConnected returns nil once DTLS is connected (PeerConnectionStateConnected). It returns
// ErrConnectTimeout when Config.ConnectTimeout has passed since Answer, ErrFailed when the
// connection failed or the leg was closed, or ctx's error.
func (l *Leg) WaitConnected(ctx context.Context) error {
	l.mu.Lock()
	negotiated, at, pc := l.negotiated, l.negotiateAt, l.pc
	l.mu.Unlock()
	if !negotiated {
		return fmt.Errorf("%w: WaitConnected before Answer/SetAnswer", ErrState)
	}
	select {
	case <-l.connected:
		return nil
	default:
	}
	t := time.NewTimer(time.Until(at.Add(l.e.cfg.ConnectTimeout)))
	defer t.Stop()
	select {
	case <-l.connected:
		return nil
	case <-l.done:
		return fmt.Errorf("%w: %s", ErrFailed, pc.ConnectionState())
	case <-l.closing:
		return fmt.Errorf("%w: leg closed", ErrFailed)
	case <-t.C:
		return fmt.Errorf("%w after %s (state %s)", ErrConnectTimeout, l.e.cfg.ConnectTimeout, pc.ConnectionState())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the peer connection has failed (ICE failed after the disconnected and
// failed timeouts) or closed. Meta cannot re-handshake the business leg (§5.5): a done leg is
// final and the call should be terminated.
func (l *Leg) Done() <-chan struct{} { return l.done }

// SSRC is the leg's one outbound SSRC (0 before Answer).
func (l *Leg) SSRC() uint32 { return l.track.SSRC() }

// PayloadTypes returns the negotiated Opus and telephone-event payload types (111 and 126 for
// Meta's offers); hasTE is false if the offer carried no telephone-event/8000.
func (l *Leg) PayloadTypes() (opus, te uint8, hasTE bool) { return l.track.PayloadTypes() }

// Close stops the peer connection and every goroutine of the leg. It is idempotent.
func (l *Leg) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		// Answer, Offer, SetAnswer and EnableSend start goroutines under l.mu after checking
		// l.closing; taking the lock orders them before wg.Wait.
		l.mu.Lock()
		pc := l.pc
		l.mu.Unlock()
		if pc != nil {
			l.closeErr = pc.Close()
		}
		l.doneOnce.Do(func() { close(l.done) })
		l.wg.Wait()
		l.e.forget(l)
	})
	return l.closeErr
}
