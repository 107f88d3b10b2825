package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// rtpLeg is all the bridge needs of a media leg: the WebRTC leg toward Meta and
// the plain RTP session toward the PBX both satisfy it, and tests can use
// in-memory legs.
type rtpLeg interface {
	ReadRTP(buf []byte, p *rtp.Packet) error
	WriteRTP(h *rtp.Header, payload []byte) error
}

const (
	frameDur  = 20 * time.Millisecond // Meta requires ptime 20 (reference §5.3)
	pcmRate   = 8000                  // PCM between the codecs: G.711's rate; libopus decodes/encodes it natively
	pcmFrame  = pcmRate / 50          // samples per 20 ms
	metaPT    = 111                   // Opus in Meta's offer
	metaDTMF  = 126                   // telephone-event/8000 in Meta's offer
	opusClock = 960                   // RFC 7587: Opus RTP clock is 48 kHz whatever the content
	maxCatch  = 25                    // frames one tick may emit to catch up after a late wake-up (500 ms)
	relayEnd  = 250 * time.Millisecond

	maxDepthFrames = 3                // adaptive playout depth cap: 60 ms
	holdSlots      = 3                // how long playout waits for a late packet: 60 ms
	depthDecay     = 10 * time.Second // calm time before the depth steps back down

	// spareFirstWords: after a stream opens, only silent frames are dropped to
	// win back a backlog, so the callee's "Hello, sales..." held during the
	// accept wait reaches the caller whole.
	spareFirstWords = time.Second
)

// mediaParams is what the bridge needs to know about the two sides.
type mediaParams struct {
	Complexity   int
	Bitrate      int
	JitterFrames int // playout depth target
	AcceptFrames int // PBX frames held while accept is in flight
}

// pbxMedia is what the PBX answered.
type pbxMedia struct {
	Codec  string // PCMU, PCMA, opus: what ponte sends (the first negotiated codec)
	PT     uint8
	DTMFPT int // -1 when the PBX has no telephone-event
	// Alt are the answer's further codecs ponte can decode: the PBX may send
	// any codec of its answer and switch mid-call (RFC 3264 §5.1, §6.1).
	Alt []pbxCodec
	// Ptime is the answer's a=ptime in ms (RFC 4566 §6); 0 means 20. Packets
	// toward the PBX carry that much audio when transcoding.
	Ptime int
	// DTMFMode is how digits travel on the PBX leg: rfc4733 (telephone-event
	// packets), info (SIP INFO, sent through the bridge's info sink) or
	// inband (tones in the audio, generated and detected by ponte).
	DTMFMode string
}

// dtmfMode picks how digits travel on the PBX leg: the trunk's choice, and
// when it wants RFC 4733 from a PBX that answered without telephone-event,
// in-band tones (issue 3: "else in-band tones").
func dtmfMode(trunkMode string, pbxDTMFPT int) string {
	switch {
	case trunkMode == "info", trunkMode == "inband":
		return trunkMode
	case pbxDTMFPT < 0:
		return "inband"
	}
	return "rfc4733"
}

// pbxCodec is one negotiated codec and its payload type.
type pbxCodec struct {
	Codec string
	PT    uint8
}

// maxAltCodecs bounds the decoders made for one answer.
const maxAltCodecs = 4

// pbxPtime returns the packet duration toward the PBX: its a=ptime when it is
// a whole number of 10 ms in [10, 60] (what G.711 endpoints use), else 20 ms.
func pbxPtime(ms int) time.Duration {
	if ms < 10 || ms > 60 || ms%10 != 0 {
		return frameDur
	}
	return time.Duration(ms) * time.Millisecond
}

// Bridge moves audio and DTMF between Meta's leg and the PBX's leg.
//
// Two reader goroutines push what arrives into per-direction jitter buffers;
// one playout goroutine ticks every 20 ms and writes both directions. The
// hand-off is a mutex-protected buffer, not a channel per packet, and every
// buffer is allocated when the call starts, so the steady state does not
// allocate.
type Bridge struct {
	log    *slog.Logger
	params mediaParams
	wa     rtpLeg
	pbx    rtpLeg

	toPBX  *direction // source Meta, sink PBX
	toMeta *direction // source PBX, sink Meta

	ctx     context.Context           // the bridge's lifetime (Start)
	work    time.Duration             // time the playout clock spent in both directions (codecs, mostly); read after Wait
	fail    func(error)               // ends the call when a goroutine dies
	infoOut func(rune, time.Duration) // sends a digit to the PBX as SIP INFO
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

func newBridge(log *slog.Logger, p mediaParams, wa, pbx rtpLeg, fail func(error)) *Bridge {
	if p.JitterFrames < 1 {
		p.JitterFrames = 1
	}
	if p.AcceptFrames < p.JitterFrames {
		p.AcceptFrames = 50
	}
	b := &Bridge{log: log, params: p, wa: wa, pbx: pbx, fail: fail}
	b.toPBX = newDirection("to_pbx", pbx, p.JitterFrames, 50)
	b.toPBX.inPT, b.toPBX.inDTMFPT = metaPT, metaDTMF
	b.toMeta = newDirection("to_meta", wa, p.JitterFrames, p.AcceptFrames)
	b.toMeta.outPT, b.toMeta.outDTMFPT, b.toMeta.hasDTMF = metaPT, metaDTMF, true
	b.toMeta.clock = opusClock
	// After the accept wait, PBX audio that piled up is played out and the
	// delay won back (design: media rules); the same control drains a backlog
	// left by a sender's burst or clock drift in either direction.
	b.toMeta.winBack = true
	b.toPBX.winBack = true
	return b
}

// Start runs the readers and the playout clock. Until SetPBX, what the PBX
// sends is read and discarded: early media never reaches Meta unless the trunk
// asks for it.
func (b *Bridge) Start(ctx context.Context) {
	ctx, b.cancel = context.WithCancel(ctx)
	b.ctx = ctx
	b.goSafe("read_meta", func() { b.readLoop(ctx, b.wa, b.toPBX) })
	b.goSafe("read_pbx", func() { b.readLoop(ctx, b.pbx, b.toMeta) })
	b.goSafe("playout", func() { b.playout(ctx) })
}

// goSafe runs f in a goroutine owned by the bridge; a panic ends this call
// only, never the process.
func (b *Bridge) goSafe(name string, f func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				mediaPanics.Add(1)
				b.log.Error("media goroutine panicked; ending the call", "goroutine", name, "panic", r, "stack", string(debug.Stack()))
				b.fail(fmt.Errorf("%w: %s: %v", ErrMediaPanic, name, r))
			}
		}()
		f()
	}()
}

// SetPBX configures the PBX side from its SDP answer and opens the PBX
// direction: from now on PBX audio is buffered for Meta and Meta's audio is
// played toward the PBX.
func (b *Bridge) SetPBX(m pbxMedia) error {
	pass := m.Codec == "opus"
	silence, err := silenceFrame("opus", b.params, pcmFrame)
	if err != nil {
		return err
	}
	toMeta := b.toMeta
	toMeta.mu.Lock()
	toMeta.resetCodecs()
	toMeta.local = nil // the PBX's audio replaces ringback or the queue announcement
	toMeta.inPT, toMeta.inDTMFPT = m.PT, m.DTMFPT
	toMeta.silence = silence
	if !pass {
		if toMeta.dec, err = transcode.NewDecoder(m.Codec, pcmRate); err == nil {
			toMeta.lastDec = toMeta.dec
			toMeta.enc, err = transcode.NewEncoder("opus", pcmRate, transcode.EncoderOptions{
				Complexity: b.params.Complexity, Bitrate: b.params.Bitrate, FEC: true, PacketLossPerc: 5,
			})
		}
		for _, c := range m.Alt {
			if err != nil || len(toMeta.alt) == maxAltCodecs {
				break
			}
			if c.PT == m.PT || c.PT == cnPT || int(c.PT) == m.DTMFPT {
				continue
			}
			var dec transcode.Decoder
			if dec, err = transcode.NewDecoder(c.Codec, pcmRate); err == nil {
				toMeta.alt = append(toMeta.alt, ptDecoder{pt: c.PT, dec: dec})
			}
		}
	}
	if pass && err == nil {
		toMeta.probe, err = transcode.NewDecoder("opus", pcmRate)
	}
	toMeta.accepting = err == nil
	toMeta.acceptFrom = time.Now()
	toMeta.mu.Unlock()
	if err != nil {
		return err
	}

	// Opus passes through at Meta's 20 ms (RFC 7587 receivers take any
	// frame size); transcoded audio is repacketised to the PBX's ptime.
	slot := frameDur
	if !pass {
		slot = pbxPtime(m.Ptime)
	}
	outN := int(slot / (time.Second / pcmRate))
	pbxSilence, err := silenceFrame(m.Codec, b.params, outN)
	if err != nil {
		return err
	}
	toPBX := b.toPBX
	toPBX.mu.Lock()
	defer toPBX.mu.Unlock()
	toPBX.resetCodecs()
	if toPBX.localCodec != m.Codec {
		toPBX.localEnc, toPBX.localCodec = nil, m.Codec // PlayToPBX encodes in the PBX's codec
	}
	toPBX.outPT = m.PT
	mode := m.DTMFMode
	if mode == "" {
		mode = dtmfMode("rfc4733", m.DTMFPT)
	}
	toPBX.dtmfMode = mode
	toPBX.outDTMFPT, toPBX.hasDTMF = uint8(max(m.DTMFPT, 0)), mode == "rfc4733" && m.DTMFPT >= 0
	toPBX.infoOut = nil
	if mode == "info" {
		toPBX.infoOut = b.infoOut
	}
	toPBX.slotDur, toPBX.outN = slot, outN
	toPBX.clock = transcode.TimestampStep(m.Codec, slot)
	toPBX.silence = pbxSilence
	if !pass {
		if toPBX.dec, err = transcode.NewDecoder("opus", pcmRate); err == nil {
			toPBX.lastDec = toPBX.dec
			toPBX.enc, err = transcode.NewEncoder(m.Codec, pcmRate, transcode.EncoderOptions{})
		}
		if err != nil {
			return err
		}
	}
	if pass {
		if toPBX.probe, err = transcode.NewDecoder("opus", pcmRate); err != nil {
			return err
		}
	}
	if mode == "inband" && !pass {
		// Tones toward the PBX; digits found in its audio go to Meta as
		// RFC 4733 events. An Opus PBX is not decoded, so in-band needs
		// G.711 (an Opus PBX without telephone-event gets no digits).
		toPBX.gen = transcode.NewInbandGenerator(pcmRate)
		b.toMeta.mu.Lock()
		b.toMeta.detect = transcode.NewInbandDetector()
		b.toMeta.mu.Unlock()
	}
	toPBX.accepting = true
	toPBX.openAt(time.Now())
	return nil
}

// SwapPBX moves the PBX side to another leg (a transfer target's RTP
// session) and configures it from that leg's answer. Meta's side does not
// change: same SSRC, sequence and timestamps. The old leg's reader ends when
// the caller closes the old leg, which it should do right after.
func (b *Bridge) SwapPBX(leg rtpLeg, m pbxMedia) error {
	b.toPBX.mu.Lock()
	b.toPBX.out = leg
	b.toPBX.mu.Unlock()
	b.goSafe("read_pbx", func() { b.readLoop(b.ctx, leg, b.toMeta) })
	return b.SetPBX(m)
}

// SetPBXSend stops (false) or resumes (true) RTP toward the PBX: a PBX
// that holds with sendonly/inactive or c=0.0.0.0 must receive nothing (RFC
// 3264 §6.1, §8.4). The outgoing timestamps keep running meanwhile.
func (b *Bridge) SetPBXSend(send bool) {
	b.toPBX.mu.Lock()
	b.toPBX.paused = !send
	b.toPBX.mu.Unlock()
}

// LastPBXPacket is when the PBX's last packet was taken (zero: none yet).
func (b *Bridge) LastPBXPacket() time.Time {
	b.toMeta.mu.Lock()
	defer b.toMeta.mu.Unlock()
	return b.toMeta.lastRx
}

// SetInfoSink sets where digits go when the PBX leg carries them as SIP
// INFO; f runs on the playout goroutine and must not block. Call it before
// SetPBX.
func (b *Bridge) SetInfoSink(f func(digit rune, dur time.Duration)) { b.infoOut = f }

// PBXDigit relays a digit the PBX sent out of band (SIP INFO) to Meta as an
// RFC 4733 event of that duration.
func (b *Bridge) PBXDigit(digit rune, dur time.Duration) {
	code, ok := transcode.DigitCode(digit)
	if !ok {
		return
	}
	d := b.toMeta
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.open || !d.relay.Inject(code, uint16(min(dur/(time.Second/8000), 65535)), time.Now()) {
		d.st.DigitsDropped++
	}
}

// PlayToMeta plays locally made audio toward Meta (queue ringback, music,
// an announcement) from the next slot on, in the same outgoing stream: fill
// writes each 20 ms frame of 8 kHz PCM. SetPBX ends it (the agent's audio
// takes over); nil stops it (silence). It works before and after OpenMeta.
func (b *Bridge) PlayToMeta(fill func(pcm []int16)) error {
	d := b.toMeta
	d.mu.Lock()
	defer d.mu.Unlock()
	if fill != nil && d.localEnc == nil {
		enc, err := transcode.NewEncoder("opus", pcmRate, transcode.EncoderOptions{
			Complexity: b.params.Complexity, Bitrate: b.params.Bitrate, FEC: true, PacketLossPerc: 5,
		})
		if err != nil {
			return err
		}
		d.localEnc = enc
	}
	if d.silence == nil {
		silence, err := silenceFrame("opus", b.params, pcmFrame)
		if err != nil {
			return err
		}
		d.silence = silence
	}
	d.local = fill
	return nil
}

// PlayToPBX plays locally made audio toward the PBX in its codec (the
// ringback a click-to-call agent hears while the WhatsApp user is called);
// nil stops it and the user's audio takes over. Call it after SetPBX.
func (b *Bridge) PlayToPBX(fill func(pcm []int16)) error {
	d := b.toPBX
	d.mu.Lock()
	defer d.mu.Unlock()
	if fill != nil && d.localEnc == nil {
		if d.localCodec == "" {
			return errors.New("gateway: PlayToPBX before SetPBX")
		}
		enc, err := transcode.NewEncoder(d.localCodec, pcmRate, transcode.EncoderOptions{
			Complexity: b.params.Complexity, Bitrate: b.params.Bitrate,
		})
		if err != nil {
			return err
		}
		d.localEnc = enc
	}
	d.local = fill
	return nil
}

// OpenMeta starts playout toward Meta. Call it only after accept returned 200:
// Meta starts the caller's call timer on the first media packet (reference §3.2).
func (b *Bridge) OpenMeta() {
	b.toMeta.mu.Lock()
	b.toMeta.openAt(time.Now())
	b.toMeta.mu.Unlock()
}

// Stop ends the playout clock. The readers end when their legs are closed;
// Wait waits for all of it.
func (b *Bridge) Stop() {
	if b.cancel != nil {
		b.cancel()
	}
}

// Wait waits for every goroutine of the bridge.
func (b *Bridge) Wait() { b.wg.Wait() }

// Work is the time the playout clock spent producing both directions:
// decoding, re-encoding and packetising, nearly all of it CPU (the clock
// never waits on I/O inside a tick). Call it after Wait.
func (b *Bridge) Work() time.Duration { return b.work }

// Stats returns counters for both directions.
func (b *Bridge) Stats() (toPBX, toMeta DirStats) {
	return b.toPBX.snapshot(), b.toMeta.snapshot()
}

func (b *Bridge) readLoop(ctx context.Context, leg rtpLeg, d *direction) {
	buf := make([]byte, 1500)
	var p rtp.Packet
	for {
		err := leg.ReadRTP(buf, &p)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return
			}
			continue // a malformed packet: skip it
		}
		now := time.Now()
		d.mu.Lock()
		d.receive(&p, now)
		if d.holding {
			d.tickLocked(now)
		}
		d.mu.Unlock()
	}
}

func (b *Bridge) playout(ctx context.Context) {
	t := time.NewTicker(frameDur)
	defer t.Stop()
	fault := faultTicker() // test seam (faultinject.go)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fault()
			start := time.Now()
			b.toPBX.tick(now)
			b.toMeta.tick(now)
			b.work += time.Since(start)
		}
	}
}

// silenceFrame encodes one packet of silence, for the ticks when the
// other side sends nothing: Meta drops a call after 20 s (start) or 30 s
// (mid-call) without business media (reference §5.5).
//
// A fresh encoder fed one frame of zeros always yields the same bytes, so the
// frame is made once per (codec, settings, size) and shared by every call:
// building it cost each call a throw-away libopus encoder (tens of KiB of heap
// and its set-up time) at every SetPBX. The shared slice is only ever read.
func silenceFrame(codec string, p mediaParams, samples int) ([]byte, error) {
	key := silenceKey{codec, p.Complexity, p.Bitrate, samples}
	if f, ok := silenceFrames.Load(key); ok {
		return f.([]byte), nil
	}
	enc, err := transcode.NewEncoder(codec, pcmRate, transcode.EncoderOptions{Complexity: p.Complexity, Bitrate: p.Bitrate})
	if err != nil {
		return nil, err
	}
	out := make([]byte, max(256, samples)) // G.711: a byte per sample
	n, err := enc.Encode(make([]int16, samples), out)
	if err != nil {
		return nil, err
	}
	f, _ := silenceFrames.LoadOrStore(key, out[:n:n])
	return f.([]byte), nil
}

type silenceKey struct {
	codec                        string
	complexity, bitrate, samples int
}

var silenceFrames sync.Map // silenceKey -> []byte, bounded by the configurations in use

// newSSRC picks a random SSRC (RFC 3550 §8.1).
func newSSRC() uint32 { return rand.Uint32() }
