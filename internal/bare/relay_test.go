package bare

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

// TestRelayFrames runs a second of each side's pre-encoded tone through the relay's per-packet
// steps, checks the headers and decodes the result: the tone must come out the other side.
func TestRelayFrames(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA", "opus"} {
		t.Run(codec, func(t *testing.T) {
			m, err := newMedia(codec)
			if err != nil {
				t.Fatal(err)
			}
			rl := &relay{codec: codec, transcode: codec != "opus"}
			if err := rl.newCodecs(opusComplexity, opusBitrate); err != nil {
				t.Fatal(err)
			}
			at := time.Unix(1e9, 0)

			// Caller -> PBX.
			dec, err := transcode.NewDecoder(codec, pcmRate)
			if err != nil {
				t.Fatal(err)
			}
			heard := audio.NewAnalyzer(pcmRate, callerHz, toneDBFS)
			pcm := make([]int16, maxPCM)
			s := rl.newPBXOut()
			var prev rtp.Header
			for i := range 2 * loopFrames {
				in := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, Timestamp: uint32(960 * i)}, Payload: m.waOpus[i%loopFrames]}
				d, err := rl.toPBXFrame(&in, s)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				var out rtp.Packet
				if err := out.Unmarshal(d); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				wantPT, wantStep := uint8(plainOpusP), uint32(960)
				if rl.transcode {
					wantPT, wantStep = g711PT(codec), 160
					if len(out.Payload) != 160 {
						t.Fatalf("frame %d: %d G.711 bytes, want 160", i, len(out.Payload))
					}
				} else if !bytes.Equal(out.Payload, in.Payload) || out.Timestamp != in.Timestamp {
					t.Fatalf("frame %d: passthrough changed the payload or timestamp", i)
				}
				if out.PayloadType != wantPT || out.SSRC != s.h.SSRC {
					t.Fatalf("frame %d: PT %d SSRC %x, want %d %x", i, out.PayloadType, out.SSRC, wantPT, s.h.SSRC)
				}
				if i > 0 && (out.SequenceNumber != prev.SequenceNumber+1 || out.Timestamp != prev.Timestamp+wantStep) {
					t.Fatalf("frame %d: seq %d ts %d after %d %d", i, out.SequenceNumber, out.Timestamp, prev.SequenceNumber, prev.Timestamp)
				}
				prev = out.Header
				k, err := dec.Decode(out.Payload, pcm)
				if err != nil {
					t.Fatal(err)
				}
				heard.Add(pcm[:k], at.Add(time.Duration(i)*frameDur))
			}
			checkTone(t, "PBX", heard, at)

			// PBX -> caller.
			opusDec, err := transcode.NewDecoder("opus", pcmRate)
			if err != nil {
				t.Fatal(err)
			}
			heard = audio.NewAnalyzer(pcmRate, pbxHz, toneDBFS)
			w := newWAOut()
			for i := range 2 * loopFrames {
				in := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: m.pbxPT, Timestamp: m.pbxStep * uint32(i)}, Payload: m.pbx[i%loopFrames]}
				ts := w.ts
				if err := rl.toWAFrame(&in, w); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if rl.transcode && w.pkt.Timestamp != ts {
					t.Fatalf("frame %d: ts %d, want %d", i, w.pkt.Timestamp, ts)
				}
				if rl.transcode && w.ts-ts != 960 {
					t.Fatalf("frame %d: Opus clock step %d, want 960", i, w.ts-ts)
				}
				if !rl.transcode && (!bytes.Equal(w.pkt.Payload, in.Payload) || w.pkt.Timestamp != in.Timestamp) {
					t.Fatalf("frame %d: passthrough changed the payload or timestamp", i)
				}
				k, err := opusDec.Decode(w.pkt.Payload, pcm)
				if err != nil {
					t.Fatal(err)
				}
				heard.Add(pcm[:k], at.Add(time.Duration(i)*frameDur))
			}
			checkTone(t, "caller", heard, at)
		})
	}
}

// checkTone: after the first 100 ms (codec start-up), >= 98 % of the windows carry the tone.
func checkTone(t *testing.T, who string, a *audio.Analyzer, at time.Time) {
	t.Helper()
	r := a.Report(at.Add(100*time.Millisecond), at.Add(2*time.Second))
	if r.Windows < 90 || r.ToneRatio < minToneRatio {
		t.Errorf("%s heard the tone in %d of %d windows (ratio %.3f, mean %.1f dBFS)", who, r.ToneWindows, r.Windows, r.ToneRatio, r.MeanDBFS)
	}
}

// TestRelayFramesNoAllocs: the relay's own per-packet work allocates nothing, either way,
// transcoding or not (pion's reads and writes around it are measured by the child's
// allocation counter instead).
func TestRelayFramesNoAllocs(t *testing.T) {
	for _, codec := range []string{"PCMU", "opus"} {
		m, err := newMedia(codec)
		if err != nil {
			t.Fatal(err)
		}
		rl := &relay{codec: codec, transcode: codec != "opus"}
		if err := rl.newCodecs(opusComplexity, opusBitrate); err != nil {
			t.Fatal(err)
		}
		s, w := rl.newPBXOut(), newWAOut()
		i := 0
		toPBX := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111}}
		toWA := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: m.pbxPT}}
		allocs := testing.AllocsPerRun(200, func() {
			toPBX.Payload, toWA.Payload = m.waOpus[i%loopFrames], m.pbx[i%loopFrames]
			i++
			if _, err := rl.toPBXFrame(&toPBX, s); err != nil {
				t.Fatal(err)
			}
			if err := rl.toWAFrame(&toWA, w); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per packet pair, want 0", codec, allocs)
		}
	}
}

// BenchmarkRelayFrames is one packet each way through the relay's per-packet steps (codec
// work included when transcoding), without sockets or pion.
func BenchmarkRelayFrames(b *testing.B) {
	for _, codec := range []string{"PCMU", "opus"} {
		b.Run(codec, func(b *testing.B) {
			m, err := newMedia(codec)
			if err != nil {
				b.Fatal(err)
			}
			rl := &relay{codec: codec, transcode: codec != "opus"}
			if err := rl.newCodecs(opusComplexity, opusBitrate); err != nil {
				b.Fatal(err)
			}
			s, w := rl.newPBXOut(), newWAOut()
			toPBX := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111}}
			toWA := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: m.pbxPT}}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				toPBX.Payload, toWA.Payload = m.waOpus[i%loopFrames], m.pbx[i%loopFrames]
				if _, err := rl.toPBXFrame(&toPBX, s); err != nil {
					b.Fatal(err)
				}
				if err := rl.toWAFrame(&toWA, w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
