package webrtc

import (
	"fmt"
	"strings"
	"sync"

	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"
)

// RawTrack is a pwebrtc.TrackLocal that sends RTP headers exactly as given, except for the
// SSRC. pion's TrackLocalStaticRTP rewrites every packet's payload type to the bound codec's
// (track_local_static.go writeRTP), which would turn RFC 4733 events (PT 126) into broken Opus
// (PT 111). Meta wants both on one SSRC with one sequence and timestamp space (§5.3, §5.4).
// The leg uses one internally; the simulator's caller peers use it too.
type RawTrack struct {
	id, streamID string

	mu    sync.RWMutex
	bound bool
	ssrc  uint32
	w     pwebrtc.TrackLocalWriter
	// Negotiated payload types (pion answers with the offer's PTs).
	opusPT, tePT uint8
	hasTE        bool

	wmu sync.Mutex // serialises writers and guards hdr
	hdr rtp.Header
}

// NewRawTrack returns an unbound audio track; add it to a PeerConnection with AddTrack.
func NewRawTrack(id, streamID string) *RawTrack { return &RawTrack{id: id, streamID: streamID} }

// Bind implements pwebrtc.TrackLocal: it picks Opus as the track's codec and remembers the
// telephone-event/8000 PT negotiated beside it.
func (t *RawTrack) Bind(ctx pwebrtc.TrackLocalContext) (pwebrtc.RTPCodecParameters, error) {
	var opus pwebrtc.RTPCodecParameters
	found := false
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hasTE = false
	for _, c := range ctx.CodecParameters() {
		switch {
		case strings.EqualFold(c.MimeType, pwebrtc.MimeTypeOpus) && !found:
			opus, found = c, true
		case strings.EqualFold(c.MimeType, mimeTelephoneEvent) && c.ClockRate == TelephoneEventClockRate:
			t.tePT, t.hasTE = uint8(c.PayloadType), true
		}
	}
	if !found {
		return pwebrtc.RTPCodecParameters{}, pwebrtc.ErrUnsupportedCodec
	}
	t.bound = true
	t.ssrc = uint32(ctx.SSRC())
	t.w = ctx.WriteStream()
	t.opusPT = uint8(opus.PayloadType)
	return opus, nil
}

// Unbind implements pwebrtc.TrackLocal.
func (t *RawTrack) Unbind(pwebrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.bound = false
	t.w = nil
	t.mu.Unlock()
	return nil
}

// ID implements pwebrtc.TrackLocal.
func (t *RawTrack) ID() string { return t.id }

// RID implements pwebrtc.TrackLocal (no simulcast).
func (t *RawTrack) RID() string { return "" }

// StreamID implements pwebrtc.TrackLocal.
func (t *RawTrack) StreamID() string { return t.streamID }

// Kind implements pwebrtc.TrackLocal.
func (t *RawTrack) Kind() pwebrtc.RTPCodecType { return pwebrtc.RTPCodecTypeAudio }

// SSRC is the track's one SSRC once bound (0 before).
func (t *RawTrack) SSRC() uint32 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.ssrc
}

// PayloadTypes returns the negotiated Opus and telephone-event payload types; hasTE is false
// when the other side did not take telephone-event/8000.
func (t *RawTrack) PayloadTypes() (opus, te uint8, hasTE bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.opusPT, t.tePT, t.hasTE
}

// WriteRTP sends one packet with h's payload type, sequence number, timestamp and marker and
// the track's SSRC. h is not modified. The PT must be the negotiated Opus or telephone-event
// PT (ErrPayloadType). It does not allocate.
func (t *RawTrack) WriteRTP(h *rtp.Header, payload []byte) error {
	t.mu.RLock()
	w, ssrc, opusPT, tePT, hasTE, ok := t.w, t.ssrc, t.opusPT, t.tePT, t.hasTE, t.bound
	t.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: track not bound", ErrState)
	}
	if h.PayloadType != opusPT && (!hasTE || h.PayloadType != tePT) {
		return fmt.Errorf("%w: %d", ErrPayloadType, h.PayloadType)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	// Copy into a scratch header owned by the track: passing the address of a local copy
	// through the writer interface would make it escape and allocate on every packet.
	t.hdr = *h
	t.hdr.SSRC = ssrc
	if _, err := w.WriteRTP(&t.hdr, payload); err != nil {
		return fmt.Errorf("webrtc: write rtp: %w", err)
	}
	return nil
}
