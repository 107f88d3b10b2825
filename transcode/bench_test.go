package transcode

import (
	"testing"
	"time"
)

func benchPCM(rate int) []int16 {
	pcm := make([]int16, rate/50)
	NewToneGen(440, rate, AmpForDBFS(-12)).Fill(pcm)
	return pcm
}

func BenchmarkULawEncode160(b *testing.B) {
	pcm, dst := benchPCM(8000), make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		ULawEncode(dst, pcm)
	}
}

func BenchmarkULawDecode160(b *testing.B) {
	src, dst := make([]byte, 160), make([]int16, 160)
	ULawEncode(src, benchPCM(8000))
	b.ReportAllocs()
	for b.Loop() {
		ULawDecode(dst, src)
	}
}

func BenchmarkALawEncode160(b *testing.B) {
	pcm, dst := benchPCM(8000), make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		ALawEncode(dst, pcm)
	}
}

func BenchmarkALawDecode160(b *testing.B) {
	src, dst := make([]byte, 160), make([]int16, 160)
	ALawEncode(src, benchPCM(8000))
	b.ReportAllocs()
	for b.Loop() {
		ALawDecode(dst, src)
	}
}

// A voice-like signal (two tones sweeping) keeps the encoder from settling into silence.
func voiceish(rate, frames int) [][]int16 {
	a, c := NewToneGen(300, rate, 6000), NewToneGen(1100, rate, 4000)
	out := make([][]int16, frames)
	tmp := make([]int16, rate/50)
	for i := range out {
		out[i] = make([]int16, rate/50)
		a.SetFreq(300 + float64(i%20)*20)
		a.Fill(out[i])
		c.Fill(tmp)
		for k := range tmp {
			out[i][k] += tmp[k]
		}
	}
	return out
}

func BenchmarkOpusEncode8kC5(b *testing.B) {
	enc, err := NewEncoder("opus", 8000, EncoderOptions{Complexity: 5})
	if err != nil {
		b.Fatal(err)
	}
	frames := voiceish(8000, 50)
	dst := make([]byte, 1500)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := enc.Encode(frames[i%len(frames)], dst); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// The WhatsApp -> PBX direction: a browser-style 48 kHz stream decoded straight to 8 kHz.
func BenchmarkOpusDecode48kStreamTo8k(b *testing.B) {
	enc, err := NewEncoder("opus", 48000, EncoderOptions{Bitrate: 32000})
	if err != nil {
		b.Fatal(err)
	}
	frames := voiceish(48000, 50)
	pkts := make([][]byte, len(frames))
	for i, f := range frames {
		buf := make([]byte, 1500)
		n, err := enc.Encode(f, buf)
		if err != nil {
			b.Fatal(err)
		}
		pkts[i] = buf[:n]
	}
	dec, err := NewDecoder("opus", 8000)
	if err != nil {
		b.Fatal(err)
	}
	pcm := make([]int16, 160)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if n, err := dec.Decode(pkts[i%len(pkts)], pcm); err != nil || n != 160 {
			b.Fatal(n, err)
		}
		i++
	}
}

func BenchmarkRFC4733Parse(b *testing.B) {
	p := []byte{0x05, 0x8a, 0x03, 0x20}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDetectorPush(b *testing.B) {
	d := NewDetector(200 * time.Millisecond)
	now := time.Unix(0, 0)
	b.ReportAllocs()
	var ts uint32
	for i := 0; b.Loop(); i++ {
		if i%8 == 0 {
			ts += 8000
		}
		d.Push(ts, Event{Code: 5, End: i%8 >= 5, Duration: uint16(i%8) * 160}, now)
	}
}

func BenchmarkJitterPushPop(b *testing.B) {
	j := NewJitterBuffer(JitterConfig{Capacity: 64, MaxPayload: 1500, TargetDepth: 3})
	payload := make([]byte, 160)
	seq := uint16(0)
	for range 2 {
		j.Push(seq, 0, payload)
		seq++
	}
	b.ReportAllocs()
	for b.Loop() {
		j.Push(seq, uint32(seq)*160, payload)
		seq++
		if _, _, st := j.Pop(); st != PopOK {
			b.Fatal(st)
		}
	}
}

func BenchmarkGoertzel160(b *testing.B) {
	pcm := benchPCM(8000)
	b.ReportAllocs()
	for b.Loop() {
		Goertzel(pcm, 8000, 440)
	}
}

// The transcoding hot path of one direction per 20 ms: opus 48k stream -> 8k -> PCMU.
func BenchmarkTranscodeOpusToPCMU(b *testing.B) {
	enc48, _ := NewEncoder("opus", 48000, EncoderOptions{Bitrate: 32000})
	frames := voiceish(48000, 50)
	pkts := make([][]byte, len(frames))
	for i, f := range frames {
		buf := make([]byte, 1500)
		n, _ := enc48.Encode(f, buf)
		pkts[i] = buf[:n]
	}
	dec, _ := NewDecoder("opus", 8000)
	enc, _ := NewEncoder("PCMU", 8000, EncoderOptions{})
	pcm, out := make([]int16, 160), make([]byte, 160)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n, err := dec.Decode(pkts[i%len(pkts)], pcm)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := enc.Encode(pcm[:n], out); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// G.711 encode + decode of one 20 ms frame (160 samples), per law.
func BenchmarkG711RoundTrip160(b *testing.B) {
	for _, codec := range []string{CodecPCMU, CodecPCMA} {
		b.Run(codec, func(b *testing.B) {
			enc, _ := NewEncoder(codec, 8000, EncoderOptions{})
			dec, _ := NewDecoder(codec, 8000)
			pcm, wire, out := benchPCM(8000), make([]byte, 160), make([]int16, 160)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(pcm, wire); err != nil {
					b.Fatal(err)
				}
				if n, err := dec.Decode(wire, out); err != nil || n != 160 {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// The encoder as the bridge configures it toward Meta (config defaults: complexity 5,
// 24 kbps; in-band FEC for 5 % loss): fed 8 kHz PCM, so libopus codes narrowband SILK.
// The input matters: "tone1k" is what `ponte load`'s PBX simulator sends.
func BenchmarkOpusEncode8kPonte(b *testing.B) {
	tone := make([][]int16, 50)
	g := NewToneGen(1000, 8000, AmpForDBFS(-12))
	for i := range tone {
		tone[i] = make([]int16, 160)
		g.Fill(tone[i])
	}
	for _, in := range []struct {
		name   string
		frames [][]int16
	}{{"voiceish", voiceish(8000, 50)}, {"tone1k", tone}} {
		b.Run(in.name, func(b *testing.B) {
			enc, err := NewEncoder("opus", 8000, EncoderOptions{Complexity: 5, Bitrate: 24000, FEC: true, PacketLossPerc: 5})
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 1500)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := enc.Encode(in.frames[i%len(in.frames)], dst); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// The PBX -> WhatsApp direction per 20 ms: PCMU -> 8k PCM -> Opus at ponte's settings.
func BenchmarkTranscodePCMUToOpus(b *testing.B) {
	frames := voiceish(8000, 50)
	wire := make([][]byte, len(frames))
	for i, f := range frames {
		wire[i] = make([]byte, 160)
		ULawEncode(wire[i], f)
	}
	dec, _ := NewDecoder("PCMU", 8000)
	enc, err := NewEncoder("opus", 8000, EncoderOptions{Complexity: 5, Bitrate: 24000, FEC: true, PacketLossPerc: 5})
	if err != nil {
		b.Fatal(err)
	}
	pcm, out := make([]int16, 160), make([]byte, 1500)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n, err := dec.Decode(wire[i%len(wire)], pcm)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := enc.Encode(pcm[:n], out); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
