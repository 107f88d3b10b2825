package gateway

import (
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// pbxSrc describes what a simulated PBX sends: a tone in packets of ptime ms,
// switching codec every switchEvery packets, with comfort noise instead of
// audio for packets [cnFrom, cnTo).
type pbxSrc struct {
	codecs      []pbxCodec
	ptime       int
	switchEvery int
	cnFrom      int
	cnTo        int
	silentTo    int // after the CN packets, send nothing until this packet (RFC 3389 §4: CN only on change)
	freq        float64
}

// pbxGen produces a pbxSrc's packets one by one.
type pbxGen struct {
	s    pbxSrc
	encs []transcode.Encoder
	gen  *transcode.ToneGen
	pcm  []int16
	buf  []byte
	seq  uint16
	ts   uint32
}

func (s pbxSrc) generator(t tester) *pbxGen {
	t.Helper()
	g := &pbxGen{s: s, gen: transcode.NewToneGen(s.freq, 8000, transcode.AmpForDBFS(-12)),
		pcm: make([]int16, s.ptime*8), buf: make([]byte, 1500), seq: 700, ts: 90000}
	for _, c := range s.codecs {
		enc, err := transcode.NewEncoder(c.Codec, 8000, transcode.EncoderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g.encs = append(g.encs, enc)
	}
	return g
}

// next returns packet i (one per ptime); false when the source sends
// nothing then.
func (g *pbxGen) next(i int) (rtp.Packet, bool) {
	s, n := g.s, uint32(g.s.ptime*8)
	g.gen.Fill(g.pcm)
	k := 0
	if s.switchEvery > 0 {
		k = i / s.switchEvery % len(s.codecs)
	}
	pt := s.codecs[k].PT
	if i >= s.cnTo && i < s.silentTo {
		g.ts += n // nothing sent: the timestamp runs on, the sequence number does not
		return rtp.Packet{}, false
	}
	var payload []byte
	switch {
	case i >= s.cnFrom && i < s.cnTo:
		pt, payload = cnPT, []byte{60} // RFC 3389 §3: noise level -60 dBov
	default:
		m, _ := g.encs[k].Encode(g.pcm, g.buf)
		payload = append([]byte(nil), g.buf[:m]...)
	}
	pk := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: g.seq, Timestamp: g.ts, SSRC: 4242}, Payload: payload}
	g.seq++
	g.ts += n
	return pk, true
}

// pcmRatio decodes every packet of pt a leg received into one PCM stream and
// returns the share of 20 ms windows (from window skip on) that carry freq
// within ±3 dB of -12 dBFS.
func pcmRatio(t tester, pkts []sentPkt, skip int, codec string, pt uint8, freq float64) float64 {
	t.Helper()
	dec, err := transcode.NewDecoder(codec, 8000)
	if err != nil {
		t.Fatal(err)
	}
	var all []int16
	pcm := make([]int16, 960)
	for _, p := range pkts {
		if p.h.PayloadType != pt {
			continue
		}
		n, err := dec.Decode(p.payload, pcm)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pcm[:n]...)
	}
	good, total := 0, 0
	for w := skip; (w+1)*160 <= len(all); w++ {
		total++
		if lvl := transcode.ToneLevelDBFS(all[w*160:(w+1)*160], 8000, freq); math.Abs(lvl-(-12)) <= 3 {
			good++
		} else if testing.Verbose() {
			t.Logf("window %d of %d: %.1f dBFS", w, len(all)/160, lvl)
		}
	}
	if total == 0 {
		return 0
	}
	return float64(good) / float64(total)
}

type codecCase struct {
	name  string
	media pbxMedia
	src   pbxSrc
}

// driveCodecCase runs a bridge for dur on a clock driven by hand in 10 ms
// steps: the PBX sends c.src, Meta a 440 Hz tone in 20 ms Opus frames, and
// both playout directions tick every step. The result does not depend on
// the scheduler (the end-to-end tests cover real time).
func driveCodecCase(t *testing.T, c codecCase, dur time.Duration) (toMeta, toPBX []sentPkt, sm DirStats) {
	t.Helper()
	wa, pbx := newMemLeg(), newMemLeg()
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(error) {})
	if err := b.SetPBX(c.media); err != nil {
		t.Fatal(err)
	}
	b.OpenMeta()
	now := time.Now()
	b.toMeta.start, b.toPBX.start = now, now
	fromMeta := frames(t, "opus", 50)
	g := c.src.generator(t)
	var pWA rtp.Packet
	pWA.Header = rtp.Header{Version: 2, PayloadType: metaPT, SSRC: 2}
	nPBX, nWA := 0, 0
	for ms := 0; ms < int(dur/time.Millisecond); ms += 10 {
		if ms%c.src.ptime == 0 {
			if p, ok := g.next(nPBX); ok {
				b.toMeta.mu.Lock()
				b.toMeta.receive(&p, now)
				b.toMeta.mu.Unlock()
			}
			nPBX++
		}
		if ms%20 == 0 {
			pWA.SequenceNumber, pWA.Timestamp, pWA.Payload = uint16(nWA), uint32(nWA*960), fromMeta[nWA%50]
			nWA++
			b.toPBX.mu.Lock()
			b.toPBX.receive(&pWA, now)
			b.toPBX.mu.Unlock()
		}
		b.toMeta.tick(now)
		b.toPBX.tick(now)
		now = now.Add(10 * time.Millisecond)
	}
	sp, sm := b.Stats()
	t.Logf("to PBX %+v", sp)
	t.Logf("to Meta %+v", sm)
	return wa.packets(), pbx.packets(), sm
}

// TestBridgePBXCodecs: several codecs in the PBX's answer (decoded by each
// packet's PT, PCMU<->PCMA switching mid-call) and PBX ptimes other than 20:
// the caller hears the PBX's tone, the PBX hears the caller's tone in packets
// of its ptime, and ponte sends the first negotiated codec. The clock is
// driven by hand in 10 ms steps, so the result does not depend on the
// scheduler (the end-to-end tests cover real time).
func TestBridgePBXCodecs(t *testing.T) {
	pcmu, pcma := pbxCodec{"PCMU", 0}, pbxCodec{"PCMA", 8}
	for _, c := range []codecCase{
		{"pcmu+pcma switching", pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101, Alt: []pbxCodec{pcma}},
			pbxSrc{codecs: []pbxCodec{pcmu, pcma}, ptime: 20, switchEvery: 25, freq: 1000}},
		{"pcma+pcmu switching", pbxMedia{Codec: "PCMA", PT: 8, DTMFPT: 101, Alt: []pbxCodec{pcmu}},
			pbxSrc{codecs: []pbxCodec{pcma, pcmu}, ptime: 20, switchEvery: 7, freq: 1000}},
		{"ptime 10", pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101, Ptime: 10},
			pbxSrc{codecs: []pbxCodec{pcmu}, ptime: 10, freq: 1000}},
		{"ptime 30", pbxMedia{Codec: "PCMA", PT: 8, DTMFPT: 101, Ptime: 30},
			pbxSrc{codecs: []pbxCodec{pcma}, ptime: 30, freq: 1000}},
	} {
		t.Run(c.name, func(t *testing.T) {
			toMeta, toPBX, sm := driveCodecCase(t, c, 3*time.Second)
			ptime := c.media.Ptime
			if ptime == 0 {
				ptime = 20
			}
			if len(toMeta) < 145 || len(toPBX) < 3000/ptime-5 {
				t.Fatalf("too few packets: %d toward Meta, %d toward the PBX", len(toMeta), len(toPBX))
			}
			for i, p := range toPBX {
				if p.h.PayloadType != c.media.PT || len(p.payload) != ptime*8 {
					t.Fatalf("packet %d toward the PBX: PT %d, %d bytes; want PT %d, %d bytes", i, p.h.PayloadType, len(p.payload), c.media.PT, ptime*8)
				}
				if i > 0 && p.h.Timestamp-toPBX[i-1].h.Timestamp != uint32(ptime*8) {
					t.Fatalf("packet %d toward the PBX: timestamp step %d, want %d", i, p.h.Timestamp-toPBX[i-1].h.Timestamp, ptime*8)
				}
			}
			for i, p := range toMeta {
				if p.h.PayloadType != metaPT {
					t.Fatalf("packet %d toward Meta: PT %d", i, p.h.PayloadType)
				}
				if i > 0 && p.h.Timestamp-toMeta[i-1].h.Timestamp != opusClock {
					t.Fatalf("packet %d toward Meta: timestamp step %d", i, p.h.Timestamp-toMeta[i-1].h.Timestamp)
				}
			}
			if r := pcmRatio(t, toMeta, 25, "opus", metaPT, 1000); r < 0.97 {
				t.Errorf("Meta heard the PBX tone in %.1f%% of frames", r*100)
			}
			if r := pcmRatio(t, toPBX, 25, c.media.Codec, c.media.PT, 440); r < 0.97 {
				t.Errorf("the PBX heard the caller tone in %.1f%% of 20 ms windows", r*100)
			}
			if sm.Discarded != 0 {
				t.Errorf("%d PBX packets discarded", sm.Discarded)
			}
		})
	}
}

// TestBridgePBXComfortNoise: RFC 3389 CN from the PBX during a silent stretch
// is played as silence: Meta keeps getting a packet every 20 ms, nothing of
// the stretch is concealed as loss, and the tone is back afterwards.
func TestBridgePBXComfortNoise(t *testing.T) {
	for _, cnEvery := range []bool{true, false} {
		name := map[bool]string{true: "cn every packet", false: "one cn then nothing"}[cnEvery]
		t.Run(name, func(t *testing.T) {
			src := pbxSrc{codecs: []pbxCodec{{"PCMU", 0}}, ptime: 20, cnFrom: 50, cnTo: 150, freq: 1000}
			if !cnEvery {
				src.cnTo, src.silentTo = 51, 150
			}
			c := codecCase{"cn", pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}, src}
			toMeta, _, sm := driveCodecCase(t, c, 4*time.Second)
			if sm.ComfortNoise == 0 {
				t.Fatal("no comfort noise packet was played")
			}
			// A packet toward Meta every 20 ms, CN stretch included (Meta's
			// no-media timers, reference §5.5).
			if len(toMeta) < 195 {
				t.Errorf("%d packets toward Meta in 4 s, want 200 (one per 20 ms)", len(toMeta))
			}
			// 100 CN packets (2 s) or one CN packet then 2 s of nothing:
			// nothing is concealed (an underrun after the last tone would
			// conceal 3 frames).
			if sm.Concealed >= 3 {
				t.Errorf("%d frames concealed across a comfort-noise stretch", sm.Concealed)
			}
			// Windows of 20 ms toward Meta: tone (before), silence (CN), tone (after).
			dec, err := transcode.NewDecoder("opus", 8000)
			if err != nil {
				t.Fatal(err)
			}
			pcm := make([]int16, 960)
			var tone, quiet, loud int
			for i, p := range toMeta {
				n, err := dec.Decode(p.payload, pcm)
				if err != nil {
					t.Fatal(err)
				}
				lvl := transcode.ToneLevelDBFS(pcm[:n], 8000, 1000)
				switch {
				case i >= 60 && i < 140: // well inside the CN stretch (packets 50..149 from the PBX)
					if silent(pcm[:n]) {
						quiet++
					} else {
						loud++
					}
				case i >= 175 && math.Abs(lvl+12) <= 3:
					tone++
				}
			}
			if loud > 2 {
				t.Errorf("%d of %d frames in the comfort-noise stretch were not silent", loud, quiet+loud)
			}
			if tone < (len(toMeta)-175)*9/10 {
				t.Errorf("the tone came back in %d of %d frames after the stretch", tone, len(toMeta)-175)
			}
		})
	}
}

// TestBridgeNoAllocsPerPacketCodecs extends TestBridgeNoAllocsPerPacket to
// the codec corner cases: the PBX alternating PCMU and PCMA in 30 ms packets
// with comfort noise between, ponte sending it 30 ms packets (three 20 ms
// ticks: two PBX packets in, three Meta packets in, three out to Meta, two
// out to the PBX).
func TestBridgeNoAllocsPerPacketCodecs(t *testing.T) {
	wa, pbxLeg := &discardLeg{}, &discardLeg{}
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbxLeg, func(error) {})
	if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101, Alt: []pbxCodec{{"PCMA", 8}}, Ptime: 30}); err != nil {
		t.Fatal(err)
	}
	b.OpenMeta()
	fromMeta := frames(t, "opus", 50)
	ulaw, alaw := make([]byte, 240), make([]byte, 240)
	gen := transcode.NewToneGen(1000, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 240)
	gen.Fill(pcm)
	transcode.ULawEncode(ulaw, pcm)
	transcode.ALawEncode(alaw, pcm)
	now := time.Now()
	b.toMeta.start, b.toPBX.start = now, now
	var pPBX, pWA rtp.Packet
	pPBX.Header = rtp.Header{Version: 2, SSRC: 1}
	pWA.Header = rtp.Header{Version: 2, PayloadType: metaPT, SSRC: 2}
	i, k := 0, 0
	round := func() {
		for j := 0; j < 3; j++ {
			if j < 2 {
				pPBX.SequenceNumber, pPBX.Timestamp = uint16(k), uint32(k*240)
				switch k % 5 {
				case 4:
					pPBX.PayloadType, pPBX.Payload = cnPT, []byte{60}[:1:1]
				case 1, 3:
					pPBX.PayloadType, pPBX.Payload = 8, alaw
				default:
					pPBX.PayloadType, pPBX.Payload = 0, ulaw
				}
				k++
				b.toMeta.mu.Lock()
				b.toMeta.receive(&pPBX, now)
				b.toMeta.mu.Unlock()
			}
			pWA.SequenceNumber, pWA.Timestamp, pWA.Payload = uint16(i), uint32(i*960), fromMeta[i%50]
			b.toPBX.mu.Lock()
			b.toPBX.receive(&pWA, now)
			b.toPBX.mu.Unlock()
			b.toMeta.tick(now)
			b.toPBX.tick(now)
			i++
			now = now.Add(frameDur)
		}
	}
	for n := 0; n < 50; n++ {
		round()
	}
	wa.n, pbxLeg.n = 0, 0
	if a := testing.AllocsPerRun(300, round); a != 0 {
		t.Errorf("%.2f allocations per 60 ms round", a)
	}
	if wa.n == 0 || pbxLeg.n == 0 {
		t.Fatal("nothing written")
	}
	_, sm := b.Stats()
	if sm.ComfortNoise == 0 || sm.Discarded != 0 {
		t.Errorf("to Meta: %d CN packets played, %d discarded", sm.ComfortNoise, sm.Discarded)
	}
}

// TestSetPBXPtime: the PBX's a=ptime sets the packet size toward it when
// transcoding (10..60 ms in steps of 10), anything else falls back to 20 ms,
// and Opus passthrough keeps Meta's 20 ms.
func TestSetPBXPtime(t *testing.T) {
	for _, c := range []struct {
		codec          string
		ptime, samples int
		clock          uint32
	}{
		{"PCMU", 0, 160, 160}, {"PCMU", 10, 80, 80}, {"PCMA", 30, 240, 240}, {"PCMU", 60, 480, 480},
		{"PCMU", 25, 160, 160}, {"PCMU", 120, 160, 160}, {"opus", 10, 160, 960},
	} {
		b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000}, &discardLeg{}, &discardLeg{}, func(error) {})
		pt := map[string]uint8{"PCMU": 0, "PCMA": 8, "opus": 111}[c.codec]
		if err := b.SetPBX(pbxMedia{Codec: c.codec, PT: pt, DTMFPT: -1, Ptime: c.ptime}); err != nil {
			t.Fatalf("%s ptime %d: %v", c.codec, c.ptime, err)
		}
		d := b.toPBX
		if d.outN != c.samples || d.clock != c.clock || d.slotDur != time.Duration(c.samples)*time.Second/8000 {
			t.Errorf("%s ptime %d: %d samples, clock %d, slot %v", c.codec, c.ptime, d.outN, d.clock, d.slotDur)
		}
		if c.codec != "opus" && len(d.silence) != c.samples {
			t.Errorf("%s ptime %d: silence frame of %d bytes", c.codec, c.ptime, len(d.silence))
		}
	}
}
