package wasim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

// wireCounter wraps the caller's UDP socket and classifies each datagram from the business by
// its first bytes before any processing (RFC 7983 §7: 128..191 is RTP/RTCP; RFC 5761 §4: RTCP
// has PT 192..223). SRTP and SRTCP keep these header bytes in clear, so media that arrives
// before accept is seen even if pion would drop it.
type wireCounter struct {
	net.PacketConn
	mu                  sync.Mutex
	rtp, rtcp           int
	firstRTP, firstRTCP time.Time
	lastRTP, lastRTCP   time.Time
	// arrivals keeps the socket arrival time of the last RTP packets by sequence number (the
	// SRTP header is in clear, RFC 3711 §3.1), so a Replay's hooks see when a packet reached
	// the socket rather than when pion's read path handed it over.
	arrivals [arrivalSlots]arrival
}

func (w *wireCounter) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := w.PacketConn.ReadFrom(b)
	if err == nil && n >= 2 && b[0] >= 128 && b[0] <= 191 {
		now := time.Now()
		w.mu.Lock()
		if b[1] >= 192 && b[1] <= 223 {
			if w.rtcp == 0 {
				w.firstRTCP = now
			}
			w.rtcp++
			w.lastRTCP = now
		} else {
			if w.rtp == 0 {
				w.firstRTP = now
			}
			w.rtp++
			w.lastRTP = now
			if n >= 4 {
				seq := uint16(b[2])<<8 | uint16(b[3])
				w.arrivals[seq%arrivalSlots] = arrival{seq: seq, at: now}
			}
		}
		w.mu.Unlock()
	}
	return n, addr, err
}

// businessMedia returns the first business RTP arrival and the last RTP or RTCP arrival.
func (w *wireCounter) businessMedia() (firstRTP, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	last = w.lastRTP
	if w.lastRTCP.After(last) {
		last = w.lastRTCP
	}
	return w.firstRTP, last
}

// recorder is the caller's interceptor: it sees every RTP packet and RTCP batch the peer reads
// from the business, after SRTP decryption, and keeps the first arrival of each (the reader
// goroutines read continuously, so read time is arrival time).
type recorder struct {
	interceptor.NoOp
	mu        sync.Mutex
	firstRTP  time.Time
	firstRTCP time.Time
}

// NewInterceptor implements interceptor.Factory: one recorder per caller.
func (r *recorder) NewInterceptor(string) (interceptor.Interceptor, error) { return r, nil }

// BindRTCPReader implements interceptor.Interceptor.
func (r *recorder) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := reader.Read(b, a)
		if err == nil {
			now := time.Now()
			r.mu.Lock()
			if r.firstRTCP.IsZero() {
				r.firstRTCP = now
			}
			r.mu.Unlock()
		}
		return n, a, err
	})
}

// BindRemoteStream implements interceptor.Interceptor.
func (r *recorder) BindRemoteStream(_ *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := reader.Read(b, a)
		if err == nil {
			now := time.Now()
			r.mu.Lock()
			if r.firstRTP.IsZero() {
				r.firstRTP = now
			}
			r.mu.Unlock()
		}
		return n, a, err
	})
}

// StreamStats describe what the caller received from the business.
type StreamStats struct {
	Packets, AudioPackets, EventPackets int
	SSRCs                               []uint32 // distinct SSRCs seen (Meta wants exactly one, §5.3)
	// MaxSeqStep is the largest sequence step between consecutive packets: 1 means no gap.
	MaxSeqStep int
	// SeqBackwards counts packets whose sequence number went backwards (reorder, restart).
	SeqBackwards int
	// MaxDriftMs is the largest |arrival time - RTP timestamp time| of audio packets relative
	// to the first, with the 48 kHz Opus clock: a sender clocked wrong drifts.
	MaxDriftMs float64
	// ClockDriftMs is how far the timestamps moved against arrival time over
	// the call: the spread of the per-second medians of (arrival - timestamp
	// time). A sender whose timestamps run fast or slow, jump or stop moves
	// the medians; a burst delivered late by a scheduling stall does not,
	// since it is less than half of its second. MaxDriftMs counts both.
	ClockDriftMs float64
	// OffsetMediansMs are those per-second medians (ms, relative to the first packet).
	OffsetMediansMs []float64
	// FirstRTP and FirstRTCP are when the interceptor first read RTP/RTCP (decrypted).
	FirstRTP, FirstRTCP time.Time
	LastRTP             time.Time
	// Wire counters: SRTP/SRTCP datagrams on the socket, before decryption.
	WireRTP, WireRTCP           int
	FirstWireRTP, FirstWireRTCP time.Time
	// PPS is packets per one-second window since the first packet; MinPPS is the minimum over
	// complete windows (-1 when there is none).
	PPS    []int
	MinPPS int
	// PPSStart is when PPS's first window began (the first packet's arrival).
	PPSStart time.Time
}

// streamRec accumulates StreamStats in the reader goroutine.
type streamRec struct {
	mu        sync.Mutex
	s         StreamStats
	haveSeq   bool
	lastSeq   uint16
	t0        time.Time
	ts0       uint32
	lastTS    uint32
	extTS     int64
	haveAudio bool
	win       []float64 // offsets (ms) of the audio packets of the current one-second window
	winIdx    int
	lastSR    uint32 // middle 32 bits of the business's last SR
	lastSRAt  time.Time
}

// onRTCP notes the business's sender reports for the caller's own reception reports.
func (r *streamRec) onRTCP(pkts []rtcp.Packet, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pkts {
		if sr, ok := p.(*rtcp.SenderReport); ok && slices.Contains(r.s.SSRCs, sr.SSRC) {
			r.lastSR, r.lastSRAt = uint32(sr.NTPTime>>16), at
		}
	}
}

func (r *streamRec) add(p *rtp.Packet, audioPT bool, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.s
	if s.Packets == 0 {
		s.FirstRTP, s.PPSStart = at, at
	}
	s.Packets++
	s.LastRTP = at
	if !slices.Contains(s.SSRCs, p.SSRC) {
		s.SSRCs = append(s.SSRCs, p.SSRC)
	}
	if r.haveSeq {
		step := int(int16(p.SequenceNumber - r.lastSeq))
		if step <= 0 {
			s.SeqBackwards++
		} else if step > s.MaxSeqStep {
			s.MaxSeqStep = step
		}
	}
	if !r.haveSeq || int16(p.SequenceNumber-r.lastSeq) > 0 {
		r.lastSeq, r.haveSeq = p.SequenceNumber, true
	}
	w := int(at.Sub(s.FirstRTP) / time.Second)
	for len(s.PPS) <= w {
		s.PPS = append(s.PPS, 0)
	}
	s.PPS[w]++
	if !audioPT {
		s.EventPackets++
		return
	}
	s.AudioPackets++
	if !r.haveAudio {
		r.haveAudio, r.t0, r.ts0, r.lastTS = true, at, p.Timestamp, p.Timestamp
		return
	}
	r.extTS += int64(int32(p.Timestamp - r.lastTS))
	r.lastTS = p.Timestamp
	drift := float64(at.Sub(r.t0))/float64(time.Millisecond) - float64(r.extTS)/48
	s.MaxDriftMs = math.Max(s.MaxDriftMs, math.Abs(drift))
	if w := int(at.Sub(r.t0) / time.Second); w != r.winIdx {
		r.closeWindow()
		r.winIdx = w
	}
	r.win = append(r.win, drift)
}

// closeWindow folds the current second's offsets into their median.
func (r *streamRec) closeWindow() {
	if len(r.win) >= 10 { // a second with at least 200 ms of audio
		slices.Sort(r.win)
		m := r.win[len(r.win)/2]
		s := &r.s
		s.OffsetMediansMs = append(s.OffsetMediansMs, m)
		lo, hi := slices.Min(s.OffsetMediansMs), slices.Max(s.OffsetMediansMs)
		s.ClockDriftMs = max(hi-lo, math.Abs(lo), math.Abs(hi))
	}
	r.win = r.win[:0]
}

// Stream returns the statistics of what the caller received so far.
func (e *endpoint) Stream() StreamStats {
	e.rec.mu.Lock()
	firstRTP, firstRTCP := e.rec.firstRTP, e.rec.firstRTCP
	e.rec.mu.Unlock()
	e.stream.mu.Lock()
	s := e.stream.s
	s.SSRCs = slices.Clone(s.SSRCs)
	s.PPS = slices.Clone(s.PPS)
	s.OffsetMediansMs = slices.Clone(s.OffsetMediansMs)
	if w := e.stream.win; len(w) >= 10 { // the second in progress counts too
		w = slices.Clone(w)
		slices.Sort(w)
		s.OffsetMediansMs = append(s.OffsetMediansMs, w[len(w)/2])
		lo, hi := slices.Min(s.OffsetMediansMs), slices.Max(s.OffsetMediansMs)
		s.ClockDriftMs = max(hi-lo, math.Abs(lo), math.Abs(hi))
	}
	e.stream.mu.Unlock()
	s.FirstRTP, s.FirstRTCP = firstRTP, firstRTCP
	e.wire.mu.Lock()
	s.WireRTP, s.WireRTCP, s.FirstWireRTP, s.FirstWireRTCP = e.wire.rtp, e.wire.rtcp, e.wire.firstRTP, e.wire.firstRTCP
	e.wire.mu.Unlock()
	s.MinPPS = -1
	if len(s.PPS) > 1 {
		s.MinPPS = slices.Min(s.PPS[:len(s.PPS)-1]) // the last window is still filling
	}
	return s
}

// ReceivedDigit is an RFC 4733 event the caller received.
type ReceivedDigit struct {
	Rune     rune
	Duration time.Duration
	PT       uint8
	At       time.Time
}

// Digits returns the DTMF digits received from the business so far.
func (e *endpoint) Digits() []ReceivedDigit {
	e.heardMu.Lock()
	defer e.heardMu.Unlock()
	return slices.Clone(e.digits)
}

// Heard is the analyzer fed with the decoded (Opus -> 8 kHz) audio from the business, stamped
// with arrival times; it expects CallOptions.ExpectHz at ExpectDBFS.
func (e *endpoint) Heard() *audio.Analyzer { return e.heard }

// HeardMarkers detects the marker sequence (MarkerF1Hz/MarkerF2Hz) in the business audio.
func (e *endpoint) HeardMarkers() *audio.MarkerReceiver { return e.markers }

// MarkerSender is the caller's marker generator when CallOptions.Marker is set (else nil); a
// receiver on the PBX side can Attach to it to measure the WhatsApp->PBX delay.
func (e *endpoint) MarkerSender() *audio.MarkerSender { return e.markerTx }

// onTrack starts the reader of the business's audio (pion calls it after the first packet).
func (e *endpoint) onTrack(tr *pwebrtc.TrackRemote, _ *pwebrtc.RTPReceiver) {
	e.emu.Lock()
	if e.closed {
		e.emu.Unlock()
		return
	}
	e.wg.Add(1)
	e.emu.Unlock()
	go e.readMedia(tr)
}

func (e *endpoint) readMedia(tr *pwebrtc.TrackRemote) {
	defer e.wg.Done()
	dec, err := transcode.NewDecoder(transcode.CodecOpus, 8000)
	if err != nil {
		e.m.log.Error("opus decoder", "err", err)
		return
	}
	det := transcode.NewDetector(300 * time.Millisecond)
	buf := make([]byte, 1500)
	pcm := make([]int16, 960) // 120 ms at 8 kHz, Opus's longest frame
	var p rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		rp := e.mo.Replay
		if rp != nil {
			if t, ok := e.wire.arrival(p.SequenceNumber); ok {
				at = t
			}
			if rp.OnRTP != nil {
				rp.OnRTP(&p.Header, at)
			}
		}
		opusPT, tePT, _ := e.track.PayloadTypes()
		e.stream.add(&p, p.PayloadType == opusPT, at)
		switch p.PayloadType {
		case opusPT:
			if rp != nil && rp.NoDecode {
				break
			}
			if k, err := dec.Decode(p.Payload, pcm); err == nil {
				e.heard.Add(pcm[:k], at)
				e.markers.Add(pcm[:k], at)
				if e.mo.OnAudio != nil {
					e.mo.OnAudio(pcm[:k], at)
				}
			}
		case tePT:
			ev, err := transcode.ParseEvent(p.Payload)
			if err != nil {
				continue
			}
			if d, ok := det.Push(p.Timestamp, ev, at); ok {
				e.addDigit(d, p.PayloadType, at)
			}
		}
		if d, ok := det.Expire(at); ok {
			e.addDigit(d, tePT, at)
		}
	}
}

func (e *endpoint) addDigit(d transcode.Digit, pt uint8, at time.Time) {
	e.heardMu.Lock()
	e.digits = append(e.digits, ReceivedDigit{
		Rune: transcode.DigitRune(d.Code), Duration: time.Duration(d.Duration) * time.Second / 8000, PT: pt, At: at,
	})
	e.heardMu.Unlock()
}

type dtmfReq struct {
	code      uint8
	each, gap time.Duration
}

// SendDTMF queues digits to send as RFC 4733 events on PT 126 (§5.4): each lasts `each`, with
// `gap` of audio between digits; durations in 8 kHz units, the timestamp constant over an event,
// three End packets. It returns at once; WaitDTMF waits until they are sent. Digits queued before
// accept go out once media starts. Invalid characters are skipped.
func (e *endpoint) SendDTMF(digits string, each, gap time.Duration) {
	e.emu.Lock()
	defer e.emu.Unlock()
	for _, r := range digits {
		if code, ok := transcode.DigitCode(r); ok {
			e.dtmf = append(e.dtmf, dtmfReq{code: code, each: each, gap: gap})
		}
	}
}

// WaitDTMF waits until every queued digit has been sent.
func (e *endpoint) WaitDTMF(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		e.emu.Lock()
		idle := len(e.dtmf) == 0 && !e.dtmfBusy
		e.emu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.ended:
			return fmt.Errorf("wasim: call ended with DTMF pending")
		case <-t.C:
		}
	}
}

func (e *endpoint) nextDTMF() (dtmfReq, bool) {
	e.emu.Lock()
	defer e.emu.Unlock()
	if len(e.dtmf) == 0 {
		e.dtmfBusy = false
		return dtmfReq{}, false
	}
	d := e.dtmf[0]
	e.dtmf = e.dtmf[1:]
	e.dtmfBusy = true
	return d, true
}

// sendMedia is the caller's voice: one packet per 20 ms frame, Opus at 8 kHz content (RTP clock
// 48 kHz, 960 per packet, RFC 7587 §4.1), or an RFC 4733 event while a digit is being sent.
// Frames are paced by the wall clock, not by ticks: a loaded machine delays ticks, and the
// sender catches up (in a burst of at most maxBurst frames) so that the packet rate and the
// RTP timestamps follow real time, as a phone's audio clock would.
func (e *endpoint) sendMedia() {
	defer e.wg.Done()
	rp := e.mo.Replay
	if rp != nil && rp.Mute {
		return
	}
	var enc transcode.Encoder
	if rp == nil || len(rp.Frames) == 0 {
		var err error
		if enc, err = transcode.NewEncoder(transcode.CodecOpus, 8000, transcode.EncoderOptions{Complexity: 5}); err != nil {
			e.m.log.Error("opus encoder", "err", err)
			return
		}
	}
	f := &frameSender{
		e:    e,
		enc:  enc,
		tone: transcode.NewToneGen(e.mo.ToneHz, 8000, transcode.AmpForDBFS(e.mo.ToneDBFS)),
		pcm:  make([]int16, 160), out: make([]byte, 1000), ev: make([]byte, transcode.EventSize),
		seq: uint16(rand.Uint32()), ts: rand.Uint32(), first: true,
	}
	const frame, maxBurst = 20 * time.Millisecond, 10
	start := time.Now()
	sent := 0
	t := time.NewTicker(frame)
	defer t.Stop()
	rt := time.NewTicker(callerRTCPInterval)
	defer rt.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-rt.C:
			if err := e.pc.WriteRTCP(e.report(f, now)); err != nil {
				e.m.log.Debug("caller rtcp", "err", err)
			}
		case now := <-t.C:
			due := int(now.Sub(start)/frame) + 1
			if behind := due - sent; behind > maxBurst {
				// A stall longer than the burst: those frames are gone, but the media clock
				// still advanced (a gap in time, not a loss: no sequence numbers skipped).
				f.ts += uint32(960 * (behind - maxBurst))
				sent += behind - maxBurst
			}
			for ; sent < due; sent++ {
				if err := f.send(now); err != nil {
					e.m.log.Error("caller media", "err", err)
					return
				}
			}
		}
	}
}

// frameSender holds the caller's outgoing stream state.
type frameSender struct {
	e        *endpoint
	enc      transcode.Encoder
	tone     *transcode.ToneGen
	pcm      []int16
	out, ev  []byte
	seq      uint16
	ts, evTS uint32
	first    bool // RFC 3551 §4.1: marker on the first packet of the talkspurt
	gen      transcode.Generator
	gapLeft  time.Duration
	packets  uint32
	octets   uint32
	replayed int // Replay frames sent so far
}

// callerRTCPInterval is how often the caller sends its SR once media flows.
const callerRTCPInterval = 2 * time.Second

// report builds the caller's SR (RFC 3550 §6.4.1) with a reception report about the business
// stream whose LSR/DLSR let the gateway measure the round trip.
func (e *endpoint) report(f *frameSender, now time.Time) []rtcp.Packet {
	sr := &rtcp.SenderReport{
		SSRC: e.track.SSRC(), NTPTime: ntpTime(now), RTPTime: f.ts,
		PacketCount: f.packets, OctetCount: f.octets,
	}
	e.stream.mu.Lock()
	if n := len(e.stream.s.SSRCs); n > 0 {
		rr := rtcp.ReceptionReport{SSRC: e.stream.s.SSRCs[n-1], LastSequenceNumber: uint32(e.stream.lastSeq)}
		if !e.stream.lastSRAt.IsZero() {
			rr.LastSenderReport = e.stream.lastSR
			rr.Delay = uint32(now.Sub(e.stream.lastSRAt).Seconds() * 65536)
		}
		sr.Reports = []rtcp.ReceptionReport{rr}
	}
	e.stream.mu.Unlock()
	return []rtcp.Packet{sr}
}

// ntpTime converts t to the 64-bit NTP format (RFC 5905 §6).
func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix()) + 2208988800
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}

func (f *frameSender) send(now time.Time) error {
	e := f.e
	opusPT, tePT, _ := e.track.PayloadTypes()
	if !f.gen.Active() && f.gapLeft <= 0 {
		if d, ok := e.nextDTMF(); ok {
			f.gen.Start(d.code, uint16(d.each*8000/time.Second), 10)
			f.evTS, f.gapLeft = f.ts, d.gap
		}
	}
	h := rtp.Header{Version: 2, SequenceNumber: f.seq, Timestamp: f.ts}
	var payload []byte
	if f.gen.Active() {
		// All packets of an event, End repeats included, carry the stream timestamp of the
		// event start and share the audio's sequence space (RFC 4733 §2.5.1.2, Meta §5.4);
		// the stream clock keeps running underneath.
		ev, start := f.gen.Next(160)
		payload = f.ev[:ev.Put(f.ev)]
		h.PayloadType, h.Timestamp, h.Marker = tePT, f.evTS, start
		if ev.End && e.mo.DTMFDropEnd {
			// Impairment: every End packet is lost; the receiver must end the event by timeout.
			f.seq++
			f.ts += 960
			return nil
		}
	} else if rp := e.mo.Replay; rp != nil && len(rp.Frames) > 0 {
		payload = rp.Frames[f.replayed%len(rp.Frames)]
		h.PayloadType, h.Marker = opusPT, f.first
		f.first = false
		f.gapLeft -= 20 * time.Millisecond
		at := time.Now()
		if err := e.track.WriteRTP(&h, payload); err != nil {
			e.m.log.Debug("caller write", "err", err)
		} else {
			f.packets++
			f.octets += uint32(len(payload))
			if rp.OnSent != nil {
				rp.OnSent(f.replayed, at)
			}
		}
		f.replayed++
		f.seq++
		f.ts += 960
		return nil
	} else {
		if e.markerTx != nil {
			e.markerTx.Fill(f.pcm, now)
		} else {
			f.tone.Fill(f.pcm)
		}
		n, err := f.enc.Encode(f.pcm, f.out)
		if err != nil {
			return fmt.Errorf("opus encode: %w", err)
		}
		payload = f.out[:n]
		h.PayloadType, h.Marker = opusPT, f.first
		f.first = false
		f.gapLeft -= 20 * time.Millisecond
	}
	if err := e.track.WriteRTP(&h, payload); err != nil {
		e.m.log.Debug("caller write", "err", err)
	} else {
		f.packets++
		f.octets += uint32(len(payload))
	}
	f.seq++
	f.ts += 960
	return nil
}
