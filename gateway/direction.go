package gateway

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// direction is one way through the bridge: a jitter buffer fed by the source
// leg's reader and an outgoing stream written by the playout clock.
//
// The outgoing stream has one SSRC, a sequence number that grows by one per
// packet (audio and telephone-event share it, RFC 4733 §2.1) and timestamps
// derived from wall-clock time since the stream opened, so silence, a PBX SSRC
// change or a late wake-up never make them drift from real time.
type direction struct {
	name string
	mu   sync.Mutex

	// source side (reader goroutine, under mu)
	accepting  bool      // false: discard what arrives (before the PBX's 200)
	acceptFrom time.Time // packets read before this are discarded too
	inPT       uint8
	inDTMFPT   int
	alt        []ptDecoder // further negotiated PTs, each with its own decoder (RFC 3264 §5.1)
	tag        []byte      // scratch: the payload prefixed with its PT for the jitter buffer
	srcSSRC    uint32
	haveSrc    bool
	lastRx     time.Time // last packet taken from the source
	jb         *transcode.JitterBuffer
	relay      eventRelay
	detect     *transcode.InbandDetector // in-band DTMF: digits found in the source's PCM

	// sink side (playout goroutine, under mu)
	out        rtpLeg
	open       bool
	start      time.Time
	slots      uint32 // 20 ms slots since start: timestamp = base + slots*clock
	tsBase     uint32
	seq        uint16
	ssrc       uint32
	clock      uint32        // timestamp units per slot (960 for Opus, 160 for G.711 at 20 ms)
	slotDur    time.Duration // outgoing packet duration: 20 ms, or the PBX's a=ptime
	outN       int           // PCM samples per outgoing packet when transcoding
	outPT      uint8
	outDTMFPT  uint8
	hasDTMF    bool                                // the sink takes RFC 4733 events
	dtmfMode   string                              // rfc4733 | info | inband: how events reach the sink
	gen        *transcode.InbandGenerator          // inband: tones mixed into the PCM toward the sink
	infoOut    func(digit rune, dur time.Duration) // info: a digit to send as SIP INFO (must not block)
	endSeen    bool                                // lastEndTS is the outgoing timestamp of the last
	lastEndTS  uint32                              // event whose End was acted on (End is sent 3 times)
	dec        transcode.Decoder                   // nil: passthrough
	probe      transcode.Decoder                   // passthrough only: tells silence while winning back a backlog
	enc        transcode.Encoder
	silence    []byte
	paused     bool              // the sink must receive nothing now (PBX hold)
	local      func(pcm []int16) // local audio (ringback, queue music) played instead of the source
	localEnc   transcode.Encoder
	localCodec string // codec of localEnc toward the PBX (PlayToPBX)
	winBack    bool
	target     int       // current playout depth in frames (adaptive)
	minTarget  int       // configured depth
	calmSince  time.Time // last underrun: the depth decays after a calm period
	lateSeen   uint64    // the jitter buffer's Late count at the last adapt (depth.go)
	stretch    bool      // play one concealed slot without consuming a packet (depth.go)
	hadAudio   bool
	underrun   int
	compressN  uint32
	holding    bool      // playout is waiting for a late packet
	now        time.Time // of the current tick

	pcm []int16
	buf []byte

	// The decoded PCM waits in a FIFO so any packet size in (10, 20, 30 ms,
	// several codecs) can feed any packet size out; last* describe the last
	// decoded packet, for concealing a lost one of the same size and codec.
	fifo    []int16
	fifoN   int
	lastDec transcode.Decoder
	lastN   int
	cn      bool // the source sent comfort noise and nothing since (RFC 3389)
	hdr     rtp.Header

	st DirStats
}

// DirStats counts what one direction did.
type DirStats struct {
	In, Out, Events, Concealed, Silence, WonBack, Discarded uint64
	EventsIn                                                uint64 // telephone-event packets received
	Digits                                                  uint64
	SSRCChanges                                             uint64
	DigitsDropped                                           uint64 // digits the sink could not be given
	ComfortNoise                                            uint64 // CN packets played as silence
	Jitter                                                  transcode.JitterStats
}

const (
	cnPT    = 13                    // RFC 3551 static PT for CN (RFC 3389)
	fifoCap = pcmFrame*2 + 1500 + 8 // a part-played slot plus the largest payload G.711 can carry
)

func newDirection(name string, out rtpLeg, target, maxDepth int) *direction {
	return &direction{
		name:     name,
		out:      out,
		inDTMFPT: -1,
		jb: transcode.NewJitterBuffer(transcode.JitterConfig{
			Capacity: 64, MaxPayload: 1500, TargetDepth: target, MaxDepth: maxDepth,
		}),
		relay:     eventRelay{endTimeout: relayEnd},
		target:    target,
		minTarget: target,
		clock:     160,
		slotDur:   frameDur,
		outN:      pcmFrame,
		lastN:     pcmFrame,
		pcm:       make([]int16, pcmFrame*6), // room for up to 120 ms in one packet
		fifo:      make([]int16, fifoCap),
		tag:       make([]byte, 1500),
		buf:       make([]byte, 1500),
		ssrc:      newSSRC(),
		seq:       uint16(rand.Uint32()),
		tsBase:    rand.Uint32(),
	}
}

// receive handles one packet from the source leg. Caller holds mu.
func (d *direction) receive(p *rtp.Packet, now time.Time) {
	// A packet read before the direction opened is early media even if its
	// reader only got the lock afterwards (the playout clock holds it while
	// encoding), so the read time decides, not the lock order.
	if !d.accepting || now.Before(d.acceptFrom) {
		d.st.Discarded++
		return
	}
	if d.haveSrc && p.SSRC != d.srcSSRC {
		// The source restarted (PBX SSRC change, re-INVITE, new target): its
		// sequence numbers start anew. The outgoing stream is unaffected.
		d.jb.Reset()
		d.relay.Reset()
		d.st.SSRCChanges++
	}
	d.srcSSRC, d.haveSrc = p.SSRC, true
	d.lastRx = now
	d.st.In++
	switch {
	case d.inDTMFPT >= 0 && int(p.PayloadType) == d.inDTMFPT:
		// Events share the audio's sequence numbers (RFC 4733 §2.1): the
		// jitter buffer sees them as gaps, so they are counted here and taken
		// off its loss figure.
		d.st.EventsIn++
		if ev, err := transcode.ParseEvent(p.Payload); err == nil {
			d.relay.Push(p.Timestamp, ev, now)
		}
	case p.PayloadType == d.inPT || p.PayloadType == cnPT || d.decoderFor(p.PayloadType) != nil:
		// Audio and CN share the sequence space, so both go through the
		// jitter buffer, each tagged with its PT: the PBX may switch between
		// the codecs of its answer from one packet to the next (RFC 3264 §5.1).
		d.tag[0] = p.PayloadType
		n := copy(d.tag[1:], p.Payload)
		d.jb.Push(p.SequenceNumber, p.Timestamp, d.tag[:1+n])
	default:
		d.st.Discarded++ // a codec we did not negotiate
	}
}

// decoderFor returns the decoder of a negotiated PT, nil for any other.
func (d *direction) decoderFor(pt uint8) transcode.Decoder {
	if pt == d.inPT {
		return d.dec
	}
	for i := range d.alt {
		if d.alt[i].pt == pt {
			return d.alt[i].dec
		}
	}
	return nil
}

// pop takes the next packet from the jitter buffer and splits off its PT tag.
func (d *direction) pop() (uint8, []byte, transcode.PopStatus) {
	payload, _, st := d.jb.Pop()
	if st != transcode.PopOK {
		return 0, nil, st
	}
	if len(payload) == 0 {
		return 0, nil, transcode.PopLost
	}
	return payload[0], payload[1:], st
}

// peekNext is PeekNext without the tag; only a packet of pt qualifies (FEC
// data belongs to the codec that sent it).
func (d *direction) peekNext(pt uint8) ([]byte, bool) {
	payload, ok := d.jb.PeekNext()
	if !ok || len(payload) < 2 || payload[0] != pt {
		return nil, false
	}
	return payload[1:], true
}

// resetCodecs forgets the previous PBX's codecs and buffered audio, for a
// bridge pointed at another PBX dialog (the next target of a hunt, a
// transfer). The outgoing stream (SSRC, sequence, timestamps) goes on.
// Caller holds mu.
func (d *direction) resetCodecs() {
	d.dec, d.enc, d.probe, d.lastDec = nil, nil, nil, nil
	d.alt = d.alt[:0]
	d.fifoN, d.haveSrc, d.cn, d.hadAudio, d.underrun = 0, false, false, false, 0
	d.jb.Reset()
	d.relay.Reset()
	d.gen, d.detect, d.infoOut, d.dtmfMode = nil, nil, nil, ""
}

// openAt starts the outgoing stream. Caller holds mu.
func (d *direction) openAt(now time.Time) {
	if d.open {
		return
	}
	d.open, d.start, d.slots = true, now, 0
}

// tick emits the frames due by now. Caller does not hold mu.
func (d *direction) tick(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tickLocked(now)
}

// tickLocked is tick with mu held. The reader calls it too when a packet
// arrives while playout is holding for it, so a late packet leaves at once
// rather than on the next 20 ms tick.
func (d *direction) tickLocked(now time.Time) {
	if !d.open || now.Before(d.start) {
		// A tick stamped before the stream opened (the ticker's value waited
		// while another goroutine opened the stream): nothing is due yet. A
		// negative elapsed time would wrap the slot count to ~2^32 and
		// silence the direction for good.
		return
	}
	d.now = now
	due := uint32(now.Sub(d.start)/d.slotDur) + 1
	catch := max(1, int(maxCatch*frameDur/d.slotDur))
	for n := 0; d.slots < due && n < catch; n++ {
		if d.holding = d.holdForLate(due); d.holding {
			break
		}
		d.emit(now)
		d.slots++
	}
	d.adapt(now)
	// Asleep for longer than maxCatch frames: skip the missed slots so the
	// timestamps keep following wall-clock time. A held slot is not skipped:
	// it leaves, with its own timestamp, when its packet arrives.
	if !d.holding {
		d.slots = max(d.slots, due)
	}
}

func (d *direction) emit(now time.Time) {
	ts := d.tsBase + d.slots*d.clock
	if d.relay.Active() {
		ev, evTS, marker, _ := d.relay.Next(now, ts, uint16(d.slotDur/(time.Second/8000)))
		firstEnd := ev.End && !(d.endSeen && d.lastEndTS == evTS)
		if firstEnd {
			d.endSeen, d.lastEndTS = true, evTS
		}
		switch {
		case d.hasDTMF:
			d.popAudio() // keep the jitter buffer in step; audio is muted during an event
			n := ev.Put(d.buf)
			d.write(d.outDTMFPT, evTS, marker, d.buf[:n])
			d.st.Events++
			return
		case d.gen != nil:
			// In-band: the digit is played as its two tones in the audio
			// (ITU-T Q.23), from the event's start to its end.
			if marker {
				_ = d.gen.Start(transcode.DigitRune(ev.Code), now)
			}
			if firstEnd {
				d.gen.Stop(now)
				d.st.Events++
			}
		default:
			// SIP INFO (or no way to carry it): audio is muted during the
			// event and the digit leaves as one INFO when it ends, with its
			// duration (application/dtmf-relay).
			d.popAudio()
			if firstEnd {
				if d.infoOut != nil {
					d.infoOut(transcode.DigitRune(ev.Code), time.Duration(ev.Duration)*time.Second/8000)
					d.st.Events++
				} else {
					d.st.DigitsDropped++
				}
			}
			if d.silence != nil {
				d.write(d.outPT, ts, false, d.silence)
			}
			return
		}
	}
	var payload []byte
	if d.local != nil {
		payload = d.localAudio()
	} else {
		payload = d.nextAudio()
	}
	if payload == nil {
		return // a short underrun in passthrough: leave the slot empty, the receiver conceals it
	}
	d.write(d.outPT, ts, d.st.Out == 0, payload)
}

// popAudio consumes one slot's worth of audio without playing it (audio is
// muted while an event is relayed). When transcoding, the audio is still
// decoded: an Opus decoder that skips a packet its encoder produced falls out
// of step and distorts the next few hundred milliseconds.
func (d *direction) popAudio() {
	if d.dec != nil {
		if d.nextPCM() != nil {
			d.consume()
		}
		if d.gen != nil {
			d.gen.Mix(d.pcm[:d.outN]) // the generator's clock runs on while muted
		}
		d.st.Discarded++
		return
	}
	if _, _, st := d.pop(); st == transcode.PopOK {
		d.st.Discarded++
	}
}

// nextAudio returns the payload for this slot: decoded and re-encoded when
// transcoding, forwarded as is in passthrough, concealed on loss and silence
// when the source has nothing.
func (d *direction) nextAudio() []byte {
	if d.dec != nil {
		pcm := d.nextPCM()
		if pcm == nil {
			if d.gen == nil || !d.gen.Active() {
				return d.silence
			}
			pcm = d.pcm[:d.outN] // a digit over a silent source
			clear(pcm)
		}
		if d.gen != nil {
			d.gen.Mix(pcm)
		}
		n, err := d.enc.Encode(pcm, d.buf)
		d.consume()
		if err != nil || n == 0 {
			return d.silence
		}
		return d.buf[:n]
	}
	if d.stretch {
		// One frame deeper (depth.go): leave the slot empty for the
		// receiver's Opus PLC and keep the packets for the next slots.
		d.stretch = false
		d.st.Concealed++
		return nil
	}
	for skip := 0; ; skip++ {
		// passthrough: Opus on both sides
		pt, payload, st := d.pop()
		if st == transcode.PopOK && pt == cnPT {
			d.playCN()
			d.st.Silence++
			return d.silence
		}
		if st == transcode.PopOK {
			d.hadAudio, d.underrun, d.cn = true, 0, false
			// Only silence may be dropped here: skipping an Opus packet
			// the receiver's decoder expects distorts the next few
			// hundred milliseconds. The probe decoder runs only while
			// there is a backlog to win back.
			if skip < 3 && d.backlog() && d.probeSilent(payload) && d.shouldCompress(true) {
				continue
			}
			n := copy(d.buf, payload)
			return d.buf[:n]
		}
		// A lost packet or a short underrun: skip the slot (timestamps
		// still advance) and let the receiver's Opus PLC cover it; after
		// three empty slots send silence so the stream never stops.
		d.underrun++
		if d.hadAudio && !d.cn && d.underrun <= 3 {
			d.st.Concealed++
			return nil
		}
		d.st.Silence++
		return d.silence
	}
}

// localAudio encodes one frame of the local player.
func (d *direction) localAudio() []byte {
	pcm := d.pcm[:d.outN]
	d.local(pcm)
	n, err := d.localEnc.Encode(pcm, d.buf)
	if err != nil || n == 0 {
		return d.silence
	}
	return d.buf[:n]
}

// playCN handles an RFC 3389 comfort-noise packet: the source is in a silent
// stretch and sends CN instead of audio (RFC 3389 §4). It is played as
// silence until audio returns, not concealed as loss: PLC would replay the
// last word, and an underrun that grows the playout depth would add delay.
func (d *direction) playCN() {
	d.cn, d.hadAudio, d.underrun = true, true, 0
	d.st.ComfortNoise++
}

// nextPCM fills the FIFO with at least outN samples of decoded audio (or
// concealment) and returns them; nil means the source has been silent long
// enough to send the prepared silence frame.
func (d *direction) nextPCM() []int16 {
	need := d.outN
	if d.stretch {
		d.stretchPCM(need)
	}
	for skip := 0; d.fifoN < need; {
		pt, payload, st := d.pop()
		switch st {
		case transcode.PopOK:
			room := d.fifo[d.fifoN:]
			if pt == cnPT {
				d.playCN()
				n := min(d.lastN, len(room))
				clear(room[:n])
				d.fifoN += n
				continue
			}
			dec := d.decoderFor(pt)
			if dec == nil {
				d.st.Discarded++
				continue
			}
			n, err := dec.Decode(payload, room)
			if err != nil || n == 0 {
				d.st.Discarded++
				continue
			}
			d.hadAudio, d.underrun, d.cn = true, 0, false
			d.lastDec, d.lastN = dec, n
			if skip < 3 && d.shouldCompress(silent(room[:n])) {
				skip++
				continue
			}
			d.fifoN += n
		case transcode.PopLost:
			// RFC 6716 in-band FEC: the next packet carries a low-rate copy of
			// this one; otherwise the decoder's concealment. The lost packet is
			// taken to be as long as the last one.
			dst := d.fifo[d.fifoN : d.fifoN+min(d.lastN, len(d.fifo)-d.fifoN)]
			var err error
			if next, ok := d.peekNext(d.lastPT()); ok {
				_, err = d.lastDec.DecodeFEC(next, dst)
			} else {
				_, err = d.lastDec.Conceal(dst)
			}
			if err != nil {
				clear(dst)
			}
			d.fifoN += len(dst)
			d.st.Concealed++
		default: // underrun
			d.underrun++
			dst := d.fifo[d.fifoN:need]
			switch {
			case d.hadAudio && !d.cn && d.underrun <= 3:
				if _, err := d.lastDec.Conceal(dst); err != nil {
					clear(dst)
				}
				d.st.Concealed++
			case d.fifoN == 0:
				d.st.Silence++
				return nil
			default:
				clear(dst) // the rest of the slot after the last packet
			}
			d.fifoN = need
		}
	}
	if d.detect != nil {
		d.detectDigits(d.fifo[:need])
	}
	return d.fifo[:need]
}

// detectDigits runs the in-band DTMF detector over PCM about to be played
// and relays each digit it finds as an RFC 4733 event once it has ended,
// with its measured duration.
func (d *direction) detectDigits(pcm []int16) {
	for _, dg := range d.detect.Push(pcm) {
		if dg.End && !d.relay.Inject(dg.Code, uint16(min(dg.Duration, math.MaxUint16)), d.now) {
			d.st.DigitsDropped++
		}
	}
}

// lastPT is the payload type of the last decoded packet's decoder.
func (d *direction) lastPT() uint8 {
	for i := range d.alt {
		if d.alt[i].dec == d.lastDec {
			return d.alt[i].pt
		}
	}
	return d.inPT
}

// consume drops the outN samples just played from the FIFO.
func (d *direction) consume() {
	n := min(d.outN, d.fifoN)
	d.fifoN = copy(d.fifo, d.fifo[n:d.fifoN])
}

// backlog reports whether more is buffered than the playout depth needs.
func (d *direction) backlog() bool { return d.winBack && d.jb.Len() > d.target }

// ptDecoder is the decoder of one further negotiated payload type.
type ptDecoder struct {
	pt  uint8
	dec transcode.Decoder
}

// probeSilent decodes a passthrough packet only to measure its level.
func (d *direction) probeSilent(payload []byte) bool {
	if d.probe == nil {
		return false
	}
	n, err := d.probe.Decode(payload, d.pcm)
	return err == nil && n > 0 && silent(d.pcm[:n])
}

// shouldCompress decides whether to drop the frame just popped, to win back
// the delay that built up while accept was in flight: silent frames go first;
// when the audio never pauses (music, a tone, a talkative callee), one frame in
// four goes, so a 200 ms backlog is gone in under a second.
func (d *direction) shouldCompress(isSilent bool) bool {
	if !d.backlog() {
		return false
	}
	if !isSilent && d.now.Sub(d.start) < spareFirstWords {
		return false // the callee's first words after the accept wait are played whole
	}
	d.compressN++
	if isSilent || d.compressN%4 == 0 {
		d.st.WonBack++
		return true
	}
	return false
}

func (d *direction) write(pt uint8, ts uint32, marker bool, payload []byte) {
	if d.paused {
		return
	}
	d.hdr = rtp.Header{
		Version:        2,
		PayloadType:    pt,
		SequenceNumber: d.seq,
		Timestamp:      ts,
		SSRC:           d.ssrc,
		Marker:         marker,
	}
	d.seq++
	if err := d.out.WriteRTP(&d.hdr, payload); err == nil {
		d.st.Out++
	}
}

func (d *direction) snapshot() DirStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.st
	s.Digits = d.relay.emitted
	s.Jitter = d.jb.Stats()
	s.Jitter.Lost -= min(s.Jitter.Lost, s.EventsIn)
	return s
}

// silent reports whether a frame is below -50 dBFS: such frames can be dropped
// to win back the delay that built up during the accept wait.
func silent(pcm []int16) bool {
	var e float64
	for _, s := range pcm {
		e += float64(s) * float64(s)
	}
	rms := math.Sqrt(e / float64(len(pcm)))
	return rms < 32768*0.00316 // -50 dBFS
}
