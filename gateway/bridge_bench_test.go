package gateway

import (
	"log/slog"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// Per-direction, per-packet costs of ponte's own media code (issue 7 item 3):
// one packet arrives on a direction (receive: jitter buffer, DTMF relay) and
// the playout clock ticks once (decode, encode, packetise, write), with
// in-memory legs so pion, SRTP and the kernel are left out (webrtc and sip
// benchmark those).

// countLeg counts what is written, per payload type, without keeping it.
type countLeg struct {
	pkts  [128]int
	bytes int
}

func (l *countLeg) ReadRTP([]byte, *rtp.Packet) error { return nil }
func (l *countLeg) WriteRTP(h *rtp.Header, payload []byte) error {
	l.pkts[h.PayloadType&0x7f]++
	l.bytes += len(payload)
	return nil
}

// dirStep drives one direction of a bridge by hand, 20 ms per step.
type dirStep struct {
	d     *direction
	in    [][]byte
	p     rtp.Packet
	clock int
	now   time.Time
	i     int
	out   *countLeg
	pre   func(s *dirStep) // optional: reshapes the packet about to arrive
}

func (s *dirStep) step() {
	s.p.SequenceNumber, s.p.Timestamp, s.p.Payload = uint16(s.i), uint32(s.i*s.clock), s.in[s.i%len(s.in)]
	if s.pre != nil {
		s.pre(s)
	}
	s.d.mu.Lock()
	s.d.receive(&s.p, s.now)
	s.d.mu.Unlock()
	s.d.tick(s.now)
	s.i++
	s.now = s.now.Add(frameDur)
}

// newDirStep builds a bridge with the PBX on pbxCodec and returns a driver
// for one of its directions (toPBX: Meta's packets in; else the PBX's).
func newDirStep(tb testing.TB, pbxCodec string, toPBX bool) *dirStep {
	return newDirStepMode(tb, pbxCodec, toPBX, "", 100)
}

// newDirStepMode is newDirStep with the PBX leg's DTMF mode and the number of
// warm-up steps.
func newDirStepMode(tb testing.TB, pbxCodec string, toPBX bool, dtmfMode string, warm int) *dirStep {
	wa, pbx := &countLeg{}, &countLeg{}
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(error) {})
	pt := map[string]uint8{"PCMU": 0, "PCMA": 8, "opus": 111}[pbxCodec]
	if err := b.SetPBX(pbxMedia{Codec: pbxCodec, PT: pt, DTMFPT: 101, DTMFMode: dtmfMode}); err != nil {
		tb.Fatal(err)
	}
	b.OpenMeta()
	s := &dirStep{now: time.Now()}
	b.toMeta.start, b.toPBX.start = s.now, s.now
	if toPBX {
		// A WhatsApp client's stream: 48 kHz speech at a browser-like bitrate.
		s.d, s.out, s.clock = b.toPBX, pbx, opusClock
		s.in = metaPackets(tb, formantSpeech(metaRate, time.Second))
		s.p.Header = rtp.Header{Version: 2, PayloadType: metaPT, SSRC: 2}
	} else {
		s.d, s.out, s.clock = b.toMeta, wa, int(transcode.TimestampStep(pbxCodec, frameDur))
		s.in = pbxPackets(tb, pbxCodec)
		s.p.Header = rtp.Header{Version: 2, PayloadType: pt, SSRC: 1}
	}
	for range warm { // warm up: buffers, codec state
		s.step()
	}
	return s
}

// pbxPackets is one second of speech in the PBX's codec, 20 ms per packet.
func pbxPackets(tb testing.TB, codec string) [][]byte {
	enc, err := transcode.NewEncoder(codec, pcmRate, transcode.EncoderOptions{Complexity: 5, Bitrate: 24000})
	if err != nil {
		tb.Fatal(err)
	}
	pcm := formantSpeech(pcmRate, time.Second)
	var out [][]byte
	for i := 0; i+pcmFrame <= len(pcm); i += pcmFrame {
		buf := make([]byte, 400)
		n, err := enc.Encode(pcm[i:i+pcmFrame], buf)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf[:n])
	}
	return out
}

var bridgeFrameCases = []struct {
	name  string
	codec string
	toPBX bool
	outPT uint8
}{
	{"opus-to-pcmu", "PCMU", true, 0},
	{"pcmu-to-opus", "PCMU", false, metaPT},
	{"opus-to-pcma", "PCMA", true, 8},
	{"pcma-to-opus", "PCMA", false, metaPT},
	{"passthrough-to-pbx", "opus", true, 111},
	{"passthrough-to-meta", "opus", false, metaPT},
}

// BenchmarkBridgeFrame: one 20 ms packet in and one out through one direction.
func BenchmarkBridgeFrame(b *testing.B) {
	for _, c := range bridgeFrameCases {
		b.Run(c.name, func(b *testing.B) {
			s := newDirStep(b, c.codec, c.toPBX)
			before := s.out.pkts[c.outPT]
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s.step()
			}
			if s.out.pkts[c.outPT]-before < b.N {
				b.Fatalf("%d packets of PT %d out for %d in", s.out.pkts[c.outPT]-before, c.outPT, b.N)
			}
		})
	}
}

// TestBridgeFrameNoAllocs: each direction, transcoding or passthrough, takes
// and sends a packet without a heap allocation, and sends one per packet in.
func TestBridgeFrameNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, c := range bridgeFrameCases {
		s := newDirStep(t, c.codec, c.toPBX)
		before := s.out.pkts[c.outPT]
		if a := testing.AllocsPerRun(500, s.step); a != 0 {
			t.Errorf("%s: %.2f allocations per packet", c.name, a)
		}
		if got := s.out.pkts[c.outPT] - before; got != 501 { // AllocsPerRun runs once more to warm up
			t.Errorf("%s: %d packets of PT %d out for 501 in", c.name, got, c.outPT)
		}
	}
}

// dtmfStep feeds the PBX->Meta direction RFC 4733 events only: each digit is
// five packets of growing duration and three End packets (RFC 4733 §2.5.1),
// then the next digit with a new timestamp.
type dtmfStep struct {
	d   *direction
	p   rtp.Packet
	buf [4]byte
	now time.Time
	i   int
	out *countLeg
}

func newDTMFStep(tb testing.TB) *dtmfStep {
	wa := &countLeg{}
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, &countLeg{}, func(error) {})
	if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}); err != nil {
		tb.Fatal(err)
	}
	b.OpenMeta()
	s := &dtmfStep{d: b.toMeta, out: wa, now: time.Now()}
	b.toMeta.start = s.now
	s.p.Header = rtp.Header{Version: 2, PayloadType: 101, SSRC: 1}
	for range 100 {
		s.step()
	}
	return s
}

func (s *dtmfStep) step() {
	k := s.i % 8
	ev := transcode.Event{Code: uint8(s.i / 8 % 12), Volume: 10, Duration: uint16(min(k, 4)+1) * 160, End: k >= 5}
	n := ev.Put(s.buf[:])
	s.p.SequenceNumber, s.p.Timestamp, s.p.Marker, s.p.Payload = uint16(s.i), uint32(s.i/8*8*160), k == 0, s.buf[:n]
	s.d.mu.Lock()
	s.d.receive(&s.p, s.now)
	s.d.mu.Unlock()
	s.d.tick(s.now)
	s.i++
	s.now = s.now.Add(frameDur)
}

// BenchmarkDTMFRelay: one RFC 4733 event packet from the PBX through the
// relay to Meta's leg (parse, relay, re-stamp, write).
func BenchmarkDTMFRelay(b *testing.B) {
	s := newDTMFStep(b)
	b.ReportAllocs()
	for b.Loop() {
		s.step()
	}
	if s.out.pkts[metaDTMF] < b.N/2 {
		b.Fatalf("%d event packets out for %d in", s.out.pkts[metaDTMF], b.N)
	}
}

// TestDTMFRelayNoAllocs: relaying events allocates nothing per packet, and
// the digits do come out (one per 8 packets in, 3 End packets each).
func TestDTMFRelayNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	s := newDTMFStep(t)
	events, digits := s.out.pkts[metaDTMF], s.d.relay.emitted
	if a := testing.AllocsPerRun(800, s.step); a != 0 {
		t.Errorf("%.2f allocations per event packet", a)
	}
	if got := s.d.relay.emitted - digits; got < 99 || got > 101 {
		t.Errorf("%d digits relayed for 801 packets (8 per digit)", got)
	}
	if got := s.out.pkts[metaDTMF] - events; got < 700 {
		t.Errorf("%d event packets out for 801 in", got)
	}
}

// TestInbandDTMFNoAllocs: with in-band DTMF on the PBX leg, ponte plays
// Meta's RFC 4733 digits toward the PBX as tones (ITU-T Q.23) and runs the
// tone detector over the PBX's audio; neither allocates per packet.
func TestInbandDTMFNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	// Meta's stream: per 16 packets, a digit (5 packets of growing duration,
	// 3 End packets, one timestamp: RFC 4733 §2.5.1), then 8 of speech.
	var ev [4]byte
	digits := func(s *dirStep) {
		k := s.i % 16
		if k >= 8 {
			s.p.PayloadType = metaPT
			return
		}
		e := transcode.Event{Code: uint8(s.i / 16 % 10), Volume: 10, Duration: uint16(min(k, 4)+1) * 160, End: k >= 5}
		s.p.PayloadType, s.p.Timestamp, s.p.Payload = metaDTMF, uint32((s.i-k)*opusClock), ev[:e.Put(ev[:])]
	}
	toPBX := newDirStepMode(t, "PCMU", true, "inband", 0)
	toPBX.pre = digits
	for range 96 {
		toPBX.step()
	}
	toMeta := newDirStepMode(t, "PCMU", false, "inband", 100)
	if toPBX.d.gen == nil || toMeta.d.detect == nil {
		t.Fatal("in-band mode did not set up the generator and the detector")
	}
	for _, c := range []struct {
		name string
		s    *dirStep
	}{{"tones toward the PBX", toPBX}, {"detection on the PBX's audio", toMeta}} {
		out, tones := c.s.out.bytes, c.s.d.st.Events
		if a := testing.AllocsPerRun(800, c.s.step); a != 0 {
			t.Errorf("%s: %.2f allocations per packet", c.name, a)
		}
		if c.s.out.bytes-out != 801*pcmFrame && c.s == toPBX {
			t.Errorf("%s: %d bytes out for 801 packets in", c.name, c.s.out.bytes-out)
		}
		if c.s == toPBX && c.s.d.st.Events-tones < 49 {
			t.Errorf("%s: %d digits played as tones for 801 packets (one per 16)", c.name, c.s.d.st.Events-tones)
		}
	}
}

// BenchmarkNewBridge: the heap one call's bridge takes (buffers, codec state) when it is
// set up toward a PCMU PBX. B/op is the figure to watch for the per-call memory budget.
func BenchmarkNewBridge(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		br := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, &countLeg{}, &countLeg{}, func(error) {})
		if err := br.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}); err != nil {
			b.Fatal(err)
		}
		br.OpenMeta()
	}
}
