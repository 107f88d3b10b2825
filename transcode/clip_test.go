package transcode

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hraban/opus"
)

func rampClip(n int) *Clip {
	c := &Clip{PCM: make([]int16, n)}
	for i := range c.PCM {
		c.PCM[i] = int16(i + 1)
	}
	return c
}

// playSource fills total samples in chunks of the given sizes (cycled) and returns them.
func playSource(p PCMSource, total int, sizes ...int) []int16 {
	out := make([]int16, total)
	for pos, k := 0, 0; pos < total; k++ {
		n := min(sizes[k%len(sizes)], total-pos)
		p.Fill(out[pos : pos+n])
		pos += n
	}
	return out
}

func TestClipPlayer(t *testing.T) {
	c := rampClip(500)
	seq := func(from, to int) []int16 { // values from..to inclusive
		var s []int16
		for v := from; v <= to; v++ {
			s = append(s, int16(v))
		}
		return s
	}
	cases := []struct {
		name  string
		loop  bool
		gap   time.Duration
		total int
		want  []int16
	}{
		{"once", false, 0, 800, append(seq(1, 500), make([]int16, 300)...)},
		{"loop", true, 0, 1100, slices.Concat(seq(1, 500), seq(1, 500), seq(1, 100))},
		{"loop with gap", true, 25 * time.Millisecond, 1300,
			slices.Concat(seq(1, 500), make([]int16, 200), seq(1, 500), make([]int16, 100))},
		{"once ignores gap", false, time.Second, 600, append(seq(1, 500), make([]int16, 100)...)},
	}
	for _, tc := range cases {
		for _, sizes := range [][]int{{160}, {7, 333, 1}, {1000}} {
			p := NewClipPlayer(c, tc.loop)
			p.Gap = tc.gap
			got := playSource(p, tc.total, sizes...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s sizes %v: wrong samples", tc.name, sizes)
			}
		}
	}
}

func TestClipPlayerDone(t *testing.T) {
	c := rampClip(320)
	p := NewClipPlayer(c, false)
	buf := make([]int16, 160)
	for i, want := range []bool{false, true, true} {
		p.Fill(buf)
		if p.Done() != want {
			t.Fatalf("after frame %d Done=%v", i+1, p.Done())
		}
	}
	p.Reset()
	if p.Done() {
		t.Fatal("Done after Reset")
	}
	p.Fill(buf)
	if buf[0] != 1 {
		t.Fatalf("Reset did not rewind: %d", buf[0])
	}
	lp := NewClipPlayer(c, true)
	for range 10 {
		lp.Fill(buf)
		if lp.Done() {
			t.Fatal("a looping player reported Done")
		}
	}
	// An empty clip (built by hand: ParseClip refuses one) plays silence and never spins.
	for _, loop := range []bool{false, true} {
		ep := NewClipPlayer(&Clip{}, loop)
		ep.Gap = 0
		buf[0] = 9
		ep.Fill(buf)
		if buf[0] != 0 || ep.Done() == loop {
			t.Fatalf("empty clip loop=%v: sample %d Done %v", loop, buf[0], ep.Done())
		}
	}
}

func TestClipPlayerNoAlloc(t *testing.T) {
	p := NewClipPlayer(rampClip(1000), true)
	p.Gap = 10 * time.Millisecond
	buf := make([]int16, 160)
	if a := testing.AllocsPerRun(500, func() { p.Fill(buf) }); a != 0 {
		t.Fatalf("Fill allocates %v per call", a)
	}
}

func TestClipDuration(t *testing.T) {
	if d := rampClip(12000).Duration(); d != 1500*time.Millisecond {
		t.Fatalf("Duration %v", d)
	}
}

func TestParseClipDetection(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "expected a RIFF/WAVE or Ogg/Opus file"},
		{"text", []byte("hello, world"), "expected a RIFF/WAVE or Ogg/Opus file"},
		{"mp3 id3", []byte("ID3\x04\x00\x00\x00\x00\x00\x00"), "MP3 (ID3 tag) is not supported"},
		{"mp3 frame", []byte{0xff, 0xfb, 0x90, 0x64, 0, 0}, "MPEG audio (MP3)"},
		{"flac", []byte("fLaC\x00\x00\x00\x22"), "FLAC is not supported"},
		{"rf64", []byte("RF64\xff\xff\xff\xffWAVEds64"), "RF64 (64-bit WAV) is not supported"},
		{"m4a", []byte("\x00\x00\x00\x20ftypM4A "), "MP4/M4A is not supported"},
		{"aiff", []byte("FORM\x00\x00\x00\x00AIFF"), "AIFF is not supported"},
	}
	for _, c := range cases {
		_, err := ParseClip(c.data)
		if !errors.Is(err, ErrClipFormat) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestLoadClipDetectsByContent: the file name does not matter, only the bytes.
func TestLoadClipDetectsByContent(t *testing.T) {
	dir := t.TempDir()
	wav := makeWAV(wavSpec{enc: wavS16, rate: 16000, channels: 1, frames: 1600, sig: clipTone(1000, 16000, -12)})
	ogg, _ := makeOpusFile(t, opusFile{rate: 8000, channels: 1, app: opus.AppVoIP, frames: 800,
		sig: clipTone(1000, 8000, -12), preSkip: libopusPreSkip, trimEnd: true})
	for name, data := range map[string][]byte{"music.opus": wav, "music.wav": ogg} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadClip(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.PCM) != 800 {
			t.Errorf("%s: %d samples", name, len(c.PCM))
		}
	}
}

// FuzzParseClip: clip files come from operators' config; whatever the bytes, ParseClip must
// not panic, and its output is bounded by its input — no header field can make it produce
// (or reserve) more than the data can carry.
func FuzzParseClip(f *testing.F) {
	for _, s := range []wavSpec{
		{enc: wavS16, rate: 8000, channels: 1, frames: 64},
		{enc: wavU8, rate: 44100, channels: 2, frames: 200},
		{enc: wavULaw, rate: 16000, channels: 1, frames: 100, extensible: true},
		{enc: wavALaw, rate: 22050, channels: 2, frames: 50},
		{enc: wavF32, rate: 48000, channels: 1, frames: 300},
		{enc: wavS24, rate: 32000, channels: 2, frames: 40, extensible: true},
	} {
		s.sig = clipTone(1000, s.rate, -12)
		f.Add(makeWAV(s))
	}
	ogg, _ := makeOpusFile(f, opusFile{rate: 8000, channels: 1, app: opus.AppVoIP, frames: 480,
		sig: clipTone(1000, 8000, -12), preSkip: libopusPreSkip, trimEnd: true, maxSegs: 3})
	f.Add(ogg)
	ogg2, _ := makeOpusFile(f, opusFile{rate: 48000, channels: 2, app: opus.AppAudio, frames: 1920,
		sig: clipTone(700, 48000, -12), preSkip: libopusPreSkip, bitrate: 128000, maxSegs: 2})
	f.Add(ogg2)
	if b, err := os.ReadFile(filepath.Join("testdata", "sndfile_mono_16k.opus")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseClip(data)
		if err != nil {
			if c != nil {
				t.Fatal("clip and error")
			}
			return
		}
		if len(c.PCM) == 0 {
			t.Fatal("empty clip without error")
		}
		// WAV: at most one output sample per input byte (8 kHz from >= 8 kHz, >= 1 byte
		// per frame). Ogg/Opus: at most 120 ms per packet, a packet at least 1 byte.
		bound := len(data) + 1
		if strings.HasPrefix(c.Format, "Ogg") {
			bound = len(data) * opusMaxFrame8k
		}
		if len(c.PCM) > bound || int64(len(c.PCM)) > maxClipSamples {
			t.Fatalf("%d samples from %d bytes (%s)", len(c.PCM), len(data), c.Format)
		}
		if cap(c.PCM) > 2*bound+opusMaxFrame8k {
			t.Fatalf("reserved %d samples for %d bytes", cap(c.PCM), len(data))
		}
	})
}

func BenchmarkClipPlayerFill160(b *testing.B) {
	p := NewClipPlayer(rampClip(8000*30), true)
	buf := make([]int16, 160)
	b.ReportAllocs()
	for b.Loop() {
		p.Fill(buf)
	}
}

// BenchmarkParseWAV44100Stereo: load cost of one second of CD-quality audio (the
// resampler dominates: 369 taps per 8 kHz output sample).
func BenchmarkParseWAV44100Stereo(b *testing.B) {
	data := makeWAV(wavSpec{enc: wavS16, rate: 44100, channels: 2, frames: 44100, sig: clipTone(1000, 44100, -12)})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseClip(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseOggOpus48kStereo: load cost of one second of 48 kHz stereo Ogg/Opus.
func BenchmarkParseOggOpus48kStereo(b *testing.B) {
	data, _ := makeOpusFile(b, opusFile{rate: 48000, channels: 2, app: opus.AppAudio, frames: 48000,
		sig: clipTone(1000, 48000, -12), preSkip: libopusPreSkip, trimEnd: true})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseClip(data); err != nil {
			b.Fatal(err)
		}
	}
}
