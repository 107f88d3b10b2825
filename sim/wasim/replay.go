package wasim

import (
	"time"

	"github.com/pion/rtp"
)

// Replay is a load generator's user voice and ears (CallOptions.Replay): a pre-encoded loop
// sent instead of encoding the tone live, so the generator's own CPU stays small, and hooks
// stamped at the socket.
type Replay struct {
	// Frames are Opus payloads of consecutive 20 ms frames (RFC 7587), sent round and round
	// with the usual RTP clock (960 per frame). Empty: the voice is encoded live as usual.
	Frames [][]byte
	// OnSent runs after the n-th frame of the loop (counting from 0 over the whole call;
	// n % len(Frames) is its index in Frames) was written to the peer, with the instant
	// just before the write.
	OnSent func(n int, at time.Time)
	// OnRTP sees the header of every RTP packet from the business with its arrival time at
	// the caller's socket (also the time Heard, HeardMarkers and OnAudio get).
	OnRTP func(h *rtp.Header, at time.Time)
	// Mute sends no RTP and no RTCP at all (signalling-only load): the peer still does ICE
	// and DTLS and receives.
	Mute bool
	// NoDecode leaves the business's audio undecoded (Heard and OnAudio get nothing).
	NoDecode bool
}

// arrivalSlots covers 5 s of 20 ms packets: far more than pion's read path ever lags.
const arrivalSlots = 256

type arrival struct {
	seq uint16
	at  time.Time
}

// arrival returns the socket arrival time of the RTP packet with sequence number seq.
func (w *wireCounter) arrival(seq uint16) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.arrivals[seq%arrivalSlots]
	return a.at, a.seq == seq && !a.at.IsZero()
}
