package transcode

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestClockRateAndNames(t *testing.T) {
	cases := []struct {
		codec string
		clock int
	}{{"PCMU", 8000}, {"pcmu", 8000}, {"PCMA", 8000}, {"Pcma", 8000}, {"opus", 48000}, {"OPUS", 48000}, {"G729", 0}, {"", 0}}
	for _, c := range cases {
		if got := ClockRate(c.codec); got != c.clock {
			t.Errorf("ClockRate(%q) = %d, want %d", c.codec, got, c.clock)
		}
	}
	if s := TimestampStep("opus", 20*time.Millisecond); s != 960 {
		t.Errorf("opus 20 ms step = %d", s)
	}
	if s := TimestampStep("PCMA", 20*time.Millisecond); s != 160 {
		t.Errorf("PCMA 20 ms step = %d", s)
	}
	if _, err := NewDecoder("G729", 8000); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("NewDecoder(G729) err = %v", err)
	}
	if _, err := NewEncoder("speex", 8000, EncoderOptions{}); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("NewEncoder(speex) err = %v", err)
	}
	if _, err := NewDecoder("PCMU", 16000); !errors.Is(err, ErrBadRate) {
		t.Errorf("NewDecoder(PCMU,16000) err = %v", err)
	}
	if _, err := NewDecoder("opus", 44100); !errors.Is(err, ErrBadRate) {
		t.Errorf("NewDecoder(opus,44100) err = %v", err)
	}
}

// runOpus encodes frames of a tone at encRate and decodes them at decRate, returning the
// decoded PCM (after dropping the first 100 ms of codec start-up).
func runOpus(t *testing.T, encRate, decRate int, freq, dbfs float64, frames int, o EncoderOptions) []int16 {
	t.Helper()
	enc, err := NewEncoder("opus", encRate, o)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder("OPUS", decRate)
	if err != nil {
		t.Fatal(err)
	}
	g := NewToneGen(freq, encRate, AmpForDBFS(dbfs))
	in := make([]int16, encRate/50)
	pay := make([]byte, 1500)
	out := make([]int16, 0, frames*decRate/50)
	frame := make([]int16, decRate/50)
	for range frames {
		g.Fill(in)
		n, err := enc.Encode(in, pay)
		if err != nil {
			t.Fatal(err)
		}
		m, err := dec.Decode(pay[:n], frame)
		if err != nil {
			t.Fatal(err)
		}
		if m != decRate/50 {
			t.Fatalf("decoded %d samples per 20 ms frame at %d Hz, want %d", m, decRate, decRate/50)
		}
		out = append(out, frame[:m]...)
	}
	return out[decRate/10:]
}

func TestOpus8kTone(t *testing.T) {
	for _, c := range []struct {
		name       string
		freq, dbfs float64
		o          EncoderOptions
	}{
		{"440 c5", 440, -12, EncoderOptions{}},
		{"440 c10 fec", 440, -12, EncoderOptions{Complexity: 10, FEC: true, PacketLossPerc: 10}},
		{"1000 c5 24k", 1000, -20, EncoderOptions{Bitrate: 24000}},
		{"2000 c2", 2000, -15, EncoderOptions{Complexity: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := runOpus(t, 8000, 8000, c.freq, c.dbfs, 50, c.o)
			checkTone(t, out, 8000, c.freq, c.dbfs, 1)
		})
	}
}

// A browser sends 48 kHz Opus; decoding straight at 8 kHz must give the same tone at 160
// samples per frame.
func TestOpus48kStreamDecodedAt8k(t *testing.T) {
	for _, f := range []float64{440, 1000, 3000} {
		out := runOpus(t, 48000, 8000, f, -12, 50, EncoderOptions{Bitrate: 32000})
		checkTone(t, out, 8000, f, -12, 1)
	}
	// And content above the 8 kHz Nyquist must not alias into the band.
	out := runOpus(t, 48000, 8000, 6000, -12, 50, EncoderOptions{Bitrate: 32000})
	if l := LevelDBFS(out); l > -45 {
		t.Errorf("6 kHz tone decoded at 8 kHz left %.1f dBFS (aliasing)", l)
	}
}

func checkTone(t *testing.T, pcm []int16, rate int, freq, dbfs, tol float64) {
	t.Helper()
	block := rate / 50
	for i := 0; i+block <= len(pcm); i += block {
		w := pcm[i : i+block]
		tl, all := ToneLevelDBFS(w, rate, freq), LevelDBFS(w)
		if math.Abs(tl-dbfs) > tol {
			t.Fatalf("block %d: %v Hz at %.2f dBFS, want %.2f ±%v", i/block, freq, tl, dbfs, tol)
		}
		if all-tl > 0.5 {
			t.Fatalf("block %d: total %.2f dBFS vs tone %.2f: tone not dominant", i/block, all, tl)
		}
	}
}

func TestOpusConcealAndFEC(t *testing.T) {
	enc, err := NewEncoder("opus", 8000, EncoderOptions{FEC: true, PacketLossPerc: 20, Bitrate: 24000})
	if err != nil {
		t.Fatal(err)
	}
	g := NewToneGen(500, 8000, AmpForDBFS(-12))
	in := make([]int16, 160)
	pkts := make([][]byte, 40)
	for i := range pkts {
		g.Fill(in)
		buf := make([]byte, 400)
		n, err := enc.Encode(in, buf)
		if err != nil {
			t.Fatal(err)
		}
		pkts[i] = buf[:n]
	}
	for _, mode := range []string{"plc", "fec"} {
		dec, _ := NewDecoder("opus", 8000)
		pcm := make([]int16, 320) // larger than a frame: the concealed length is len(pcm[:160])
		for i := range 30 {
			if _, err := dec.Decode(pkts[i], pcm); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if mode == "plc" {
			n, err = dec.Conceal(pcm[:160])
		} else {
			n, err = dec.DecodeFEC(pkts[31], pcm[:160])
		}
		if err != nil || n != 160 {
			t.Fatalf("%s: n=%d err=%v", mode, n, err)
		}
		// The recovered frame continues the tone (PLC extrapolates, FEC decodes LBRR).
		if l := ToneLevelDBFS(pcm[:160], 8000, 500); l < -20 {
			t.Errorf("%s: recovered frame tone level %.1f dBFS", mode, l)
		}
		// libopus smooths the SILK gain back after a loss; within 5 frames the tone is
		// back at its level.
		for i := 31; i < 36; i++ {
			if m, err := dec.Decode(pkts[i], pcm); err != nil || m != 160 {
				t.Fatalf("%s: decode after loss: %d %v", mode, m, err)
			}
		}
		if l := ToneLevelDBFS(pcm[:160], 8000, 500); math.Abs(l+12) > 3 {
			t.Errorf("%s: 5th frame after loss %.1f dBFS, want -12 ±3", mode, l)
		}
	}
}

func TestG711Conceal(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA"} {
		dec, _ := NewDecoder(codec, 8000)
		pcm := make([]int16, 160)
		// Conceal before anything was decoded: silence.
		pcm[0] = 99
		if n, err := dec.Conceal(pcm); err != nil || n != 160 || LevelDBFS(pcm) != SilenceDBFS {
			t.Fatalf("%s: conceal with no history: n=%d err=%v level %v", codec, n, err, LevelDBFS(pcm))
		}
		enc, _ := NewEncoder(codec, 8000, EncoderOptions{})
		g := NewToneGen(400, 8000, AmpForDBFS(-10))
		g.Fill(pcm)
		pay := make([]byte, 160)
		enc.Encode(pcm, pay)
		if _, err := dec.Decode(pay, pcm); err != nil {
			t.Fatal(err)
		}
		prev := LevelDBFS(pcm)
		for i := range g711FadeFrames + 1 {
			var err error
			if i%2 == 0 {
				_, err = dec.Conceal(pcm)
			} else {
				_, err = dec.DecodeFEC(pay, pcm)
			}
			if err != nil {
				t.Fatal(err)
			}
			l := LevelDBFS(pcm)
			if l >= prev {
				t.Fatalf("%s: concealed frame %d level %.1f did not fade (prev %.1f)", codec, i, l, prev)
			}
			if i == 0 && ToneLevelDBFS(pcm, 8000, 400) < -20 {
				t.Fatalf("%s: first concealed frame lost the tone", codec)
			}
			prev = l
		}
		if prev != SilenceDBFS {
			t.Fatalf("%s: after %d lost frames level %.1f, want silence", codec, g711FadeFrames+1, prev)
		}
		if _, err := dec.Decode(nil, pcm); !errors.Is(err, ErrEmptyPayload) {
			t.Fatalf("%s: empty payload err %v", codec, err)
		}
		if _, err := dec.Decode(pay, pcm[:10]); !errors.Is(err, ErrShortBuffer) {
			t.Fatalf("%s: short buffer err %v", codec, err)
		}
	}
}

func TestCodecNoAllocs(t *testing.T) {
	for _, c := range []struct {
		codec string
		rate  int
	}{{"PCMU", 8000}, {"PCMA", 8000}, {"opus", 8000}} {
		enc, _ := NewEncoder(c.codec, c.rate, EncoderOptions{})
		dec, _ := NewDecoder(c.codec, c.rate)
		in := make([]int16, 160)
		NewToneGen(700, 8000, 8000).Fill(in)
		pay := make([]byte, 400)
		out := make([]int16, 160)
		a := testing.AllocsPerRun(50, func() {
			n, err := enc.Encode(in, pay)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Decode(pay[:n], out); err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Conceal(out); err != nil {
				t.Fatal(err)
			}
		})
		if a != 0 {
			t.Errorf("%s: %v allocs per encode+decode+conceal", c.codec, a)
		}
	}
}

// speechLike synthesises voiced-speech-like frames: a harmonic series on a gliding pitch
// (100–180 Hz) with a 4 Hz syllabic envelope. Unlike a steady sine, SILK's VAD classes it
// as speech, so the encoder emits LBRR (in-band FEC) data and PLC behaves as on voice.
func speechLike(rate, frames int) [][]int16 {
	out := make([][]int16, frames)
	var phase float64
	n := 0
	for i := range out {
		f := make([]int16, rate/50)
		for k := range f {
			tt := float64(n) / float64(rate)
			f0 := 140 + 40*math.Sin(2*math.Pi*0.7*tt)
			phase += 2 * math.Pi * f0 / float64(rate)
			env := 0.55 + 0.45*math.Sin(2*math.Pi*4*tt)
			var v float64
			for h := 1; float64(h)*f0 < 3400; h++ {
				v += math.Sin(float64(h)*phase) / float64(h)
			}
			f[k] = int16(6000 * env * v)
			n++
		}
		out[i] = f
	}
	return out
}

// The caller's len is the limit: a 40 ms packet does not fit 160 samples and must fail
// without touching samples beyond len, even when the backing array is larger.
func TestOpusRespectsLen(t *testing.T) {
	enc, _ := NewEncoder("opus", 8000, EncoderOptions{})
	in := make([]int16, 320) // 40 ms
	NewToneGen(440, 8000, 8000).Fill(in)
	pay := make([]byte, 400)
	n, err := enc.Encode(in, pay)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := NewDecoder("opus", 8000)
	back := make([]int16, 1000)
	for i := range back {
		back[i] = 12345
	}
	if _, err := dec.Decode(pay[:n], back[:160]); !errors.Is(err, ErrCodecInternal) {
		t.Fatalf("40 ms packet into 160 samples: err %v", err)
	}
	for i := 160; i < len(back); i++ {
		if back[i] != 12345 {
			t.Fatalf("sample %d beyond len was written", i)
		}
	}
	if m, err := dec.Decode(pay[:n], back[:320]); err != nil || m != 320 {
		t.Fatalf("40 ms packet into 320 samples: %d %v", m, err)
	}
	// Encoder: with a tiny dst (len 3, larger cap) libopus squeezes the frame into 3 bytes
	// and must not write past them.
	big := make([]byte, 400)
	for i := range big {
		big[i] = 0xaa
	}
	m, err := enc.Encode(in[:160], big[:3])
	if err != nil || m > 3 {
		t.Fatalf("encode into 3 bytes: %d %v", m, err)
	}
	for i := 3; i < len(big); i++ {
		if big[i] != 0xaa {
			t.Fatalf("byte %d beyond len was written", i)
		}
	}
}
