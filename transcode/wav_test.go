package transcode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wavSpec describes a WAV file for makeWAV.
type wavSpec struct {
	enc        wavEncoding
	rate       int
	channels   int
	extensible bool
	frames     int
	// sig gives channel ch's sample at frame i on the int16 scale (float for precision).
	sig func(ch, i int) float64
	// chunksBefore are raw chunks (id+size+body+pad) placed between fmt and data.
	chunksBefore []byte
}

var wavEncTag = map[wavEncoding]uint16{
	wavU8: wavTagPCM, wavS16: wavTagPCM, wavS24: wavTagPCM, wavS32: wavTagPCM,
	wavF32: wavTagFloat, wavULaw: wavTagULaw, wavALaw: wavTagALaw,
}

var wavEncBytes = map[wavEncoding]int{wavU8: 1, wavS16: 2, wavS24: 3, wavS32: 4, wavF32: 4, wavULaw: 1, wavALaw: 1}

// riffChunk frames body as a RIFF chunk with its pad byte.
func riffChunk(id string, body []byte) []byte {
	b := append([]byte(id), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(body)))
	b = append(b, body...)
	if len(body)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func wavFmtBody(tag uint16, channels, rate, bytesPer int, extensible bool) []byte {
	le := binary.LittleEndian
	b := make([]byte, 16)
	outTag := tag
	if extensible {
		outTag = wavTagExtensible
	}
	le.PutUint16(b[0:], outTag)
	le.PutUint16(b[2:], uint16(channels))
	le.PutUint32(b[4:], uint32(rate))
	le.PutUint32(b[8:], uint32(rate*channels*bytesPer))
	le.PutUint16(b[12:], uint16(channels*bytesPer))
	le.PutUint16(b[14:], uint16(8*bytesPer))
	if extensible {
		ext := make([]byte, 24)
		le.PutUint16(ext[0:], 22)
		le.PutUint16(ext[2:], uint16(8*bytesPer))
		le.PutUint32(ext[4:], map[int]uint32{1: 0x4, 2: 0x3}[channels])
		le.PutUint16(ext[8:], tag)
		copy(ext[10:], wavGUIDSuffix[:])
		b = append(b, ext...)
	}
	return b
}

func encodeWAVSample(enc wavEncoding, v float64, dst []byte) {
	le := binary.LittleEndian
	switch enc {
	case wavU8:
		dst[0] = byte(int(math.Round(max(-128, min(127, v/256)))) + 128)
	case wavS16:
		le.PutUint16(dst, uint16(clampRound(v)))
	case wavS24:
		x := int32(math.Round(max(-8388608, min(8388607, v*256))))
		dst[0], dst[1], dst[2] = byte(x), byte(x>>8), byte(x>>16)
	case wavS32:
		le.PutUint32(dst, uint32(int32(math.Round(max(-2147483648, min(2147483647, v*65536))))))
	case wavF32:
		le.PutUint32(dst, math.Float32bits(float32(v/32768)))
	case wavULaw:
		ULawEncode(dst[:1], []int16{clampRound(v)})
	case wavALaw:
		ALawEncode(dst[:1], []int16{clampRound(v)})
	}
}

func makeWAV(s wavSpec) []byte {
	bp := wavEncBytes[s.enc]
	data := make([]byte, s.frames*s.channels*bp)
	for i := range s.frames {
		for ch := range s.channels {
			encodeWAVSample(s.enc, s.sig(ch, i), data[(i*s.channels+ch)*bp:])
		}
	}
	body := append([]byte("WAVE"), riffChunk("fmt ", wavFmtBody(wavEncTag[s.enc], s.channels, s.rate, bp, s.extensible))...)
	body = append(body, s.chunksBefore...)
	body = append(body, riffChunk("data", data)...)
	return riffChunk("RIFF", body)
}

// clipTone returns a signal function: freq Hz at dbfs (LevelDBFS scale) sampled at rate.
func clipTone(freq float64, rate int, dbfs float64) func(ch, i int) float64 {
	a := AmpForDBFS(dbfs)
	return func(_, i int) float64 { return a * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)) }
}

// clipMid is the central part of pcm, away from the filter's start and end transients.
func clipMid(pcm []int16, n int) []int16 {
	s := (len(pcm) - n) / 2
	return pcm[s : s+n]
}

func TestWAVFormatsAndRates(t *testing.T) {
	encs := []wavEncoding{wavU8, wavS16, wavS24, wavS32, wavF32, wavULaw, wavALaw}
	for _, enc := range encs {
		for _, rate := range wavRates {
			for _, ch := range []int{1, 2} {
				for _, ext := range []bool{false, true} {
					name := fmt.Sprintf("%v/%d/%dch/ext=%v", enc, rate, ch, ext)
					t.Run(name, func(t *testing.T) {
						frames := rate / 2 // 0.5 s
						data := makeWAV(wavSpec{enc: enc, rate: rate, channels: ch, extensible: ext,
							frames: frames, sig: clipTone(1000, rate, -12)})
						c, err := ParseClip(data)
						if err != nil {
							t.Fatal(err)
						}
						if want := (frames*8000 + rate - 1) / rate; len(c.PCM) != want {
							t.Fatalf("%d samples, want %d", len(c.PCM), want)
						}
						m := clipMid(c.PCM, 2400)
						// 8-bit PCM has ~-50 dB of quantisation noise, G.711 ~-38 dB SNR at
						// this level: allow for that in the purity check, not in the level.
						if l := ToneLevelDBFS(m, 8000, 1000); math.Abs(l+12) > 0.3 {
							t.Errorf("1 kHz at %.2f dBFS, want -12", l)
						}
						noise := 10 * math.Log10(max(1e-12, math.Pow(10, LevelDBFS(m)/10)-Goertzel(m, 8000, 1000)))
						if noise > -45 {
							t.Errorf("residual (everything but 1 kHz) at %.1f dBFS", noise)
						}
						if !strings.Contains(c.Format, enc.String()) || !strings.Contains(c.Format, fmt.Sprint(rate)) {
							t.Errorf("Format %q", c.Format)
						}
					})
				}
			}
		}
	}
}

// TestWAVStereoDownmix: the downmix averages the channels, so a tone present in only one
// channel comes out 6 dB down and one in both keeps its level.
func TestWAVStereoDownmix(t *testing.T) {
	l, r := clipTone(1000, 44100, -12), clipTone(1500, 44100, -12)
	data := makeWAV(wavSpec{enc: wavS16, rate: 44100, channels: 2, frames: 22050, sig: func(ch, i int) float64 {
		if ch == 0 {
			return l(0, i)
		}
		return r(0, i)
	}})
	c, err := ParseClip(data)
	if err != nil {
		t.Fatal(err)
	}
	m := clipMid(c.PCM, 2400)
	for _, f := range []float64{1000, 1500} {
		if lv := ToneLevelDBFS(m, 8000, f); math.Abs(lv+18.02) > 0.1 {
			t.Errorf("%v Hz at %.2f dBFS, want -18.02", f, lv)
		}
	}
}

// TestResamplerStopband: every input above 4 kHz, which would fold back into 0..4 kHz, is
// attenuated by at least 75 dB (design 80 dB) — e.g. 5 kHz at 48 kHz would alias to 3 kHz.
func TestResamplerStopband(t *testing.T) {
	for _, rate := range wavRates[1:] {
		for _, f := range []float64{4000, 4100, 4500, 5000, 7000, 9000, 10500, 15000, 21000, 23000} {
			if f >= float64(rate)/2-200 {
				continue
			}
			data := makeWAV(wavSpec{enc: wavS16, rate: rate, channels: 1, frames: rate / 2, sig: clipTone(f, rate, -6)})
			c, err := ParseClip(data)
			if err != nil {
				t.Fatal(err)
			}
			if l := LevelDBFS(clipMid(c.PCM, 2400)); l > -6-75 {
				t.Errorf("%d Hz input, %v Hz tone: output at %.1f dBFS, attenuation %.1f dB < 75",
					rate, f, l, -6-l)
			}
		}
	}
}

// TestResamplerPassband: the telephone band 300..3400 Hz passes with < 0.1 dB deviation.
func TestResamplerPassband(t *testing.T) {
	for _, rate := range wavRates[1:] {
		for _, f := range []float64{300, 1000, 2000, 3000, 3400} {
			data := makeWAV(wavSpec{enc: wavS16, rate: rate, channels: 1, frames: rate / 2, sig: clipTone(f, rate, -6)})
			c, err := ParseClip(data)
			if err != nil {
				t.Fatal(err)
			}
			if l := ToneLevelDBFS(clipMid(c.PCM, 3200), 8000, f); math.Abs(l+6) > 0.1 {
				t.Errorf("%d Hz input, %v Hz: %.3f dBFS, want -6", rate, f, l)
			}
		}
	}
}

// TestResamplerTimeAlignment: the filter's group delay is compensated, so a burst that
// starts 250 ms into the file starts 250 ms (sample 2000) into the clip.
func TestResamplerTimeAlignment(t *testing.T) {
	for _, rate := range wavRates {
		onset := rate / 4
		a := AmpForDBFS(-6)
		data := makeWAV(wavSpec{enc: wavS16, rate: rate, channels: 1, frames: rate / 2, sig: func(_, i int) float64 {
			if i < onset {
				return 0
			}
			return a * math.Sin(2*math.Pi*1000*float64(i-onset)/float64(rate))
		}})
		c, err := ParseClip(data)
		if err != nil {
			t.Fatal(err)
		}
		first := -1
		for i, v := range c.PCM {
			if math.Abs(float64(v)) > a/2 {
				first = i
				break
			}
		}
		// sin reaches half amplitude 1/12 period (0.7 sample at 8 kHz) after the onset.
		if first < 2000-2 || first > 2000+3 {
			t.Errorf("%d Hz: burst starts at sample %d, want 2000", rate, first)
		}
	}
}

func TestWAVChunkHandling(t *testing.T) {
	sig := clipTone(1000, 8000, -12)
	base := wavSpec{enc: wavS16, rate: 8000, channels: 1, frames: 800, sig: sig}
	ref, err := ParseClip(makeWAV(base))
	if err != nil {
		t.Fatal(err)
	}
	withList := base
	withList.chunksBefore = append(riffChunk("LIST", []byte("INFOISFT\x05\x00\x00\x00ponte")), riffChunk("fact", []byte{0x20, 3, 0, 0})...)
	streaming := makeWAV(base)
	binary.LittleEndian.PutUint32(streaming[40:], 0xffffffff) // data size unknown
	binary.LittleEndian.PutUint32(streaming[4:], 0)           // RIFF size unknown
	// data chunk before fmt chunk (the order is not fixed by readers in practice).
	fmtFirst := makeWAV(base)
	swapped := append([]byte("RIFF\x00\x00\x00\x00WAVE"), fmtFirst[36:]...)
	swapped = append(swapped, fmtFirst[12:36]...)
	binary.LittleEndian.PutUint32(swapped[4:], uint32(len(swapped)-8))
	trailing := append(makeWAV(base), []byte("ID3\x03\x00junk after the RIFF form")...)
	smallRIFF := makeWAV(base)
	binary.LittleEndian.PutUint32(smallRIFF[4:], 1600) // counts only the samples
	partialFrame := makeWAV(wavSpec{enc: wavS16, rate: 8000, channels: 2, frames: 800, sig: sig})
	binary.LittleEndian.PutUint32(partialFrame[40:], binary.LittleEndian.Uint32(partialFrame[40:])-1)

	cases := []struct {
		name string
		data []byte
		n    int
	}{
		{"odd LIST and fact chunks", makeWAV(withList), 800},
		{"streaming sizes", streaming, 800},
		{"data before fmt", swapped, 800},
		{"trailing junk", trailing, 800},
		{"RIFF size too small", smallRIFF, 800},
		{"partial last frame", partialFrame, 799},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseClip(c.data)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.PCM) != c.n {
				t.Fatalf("%d samples, want %d", len(got.PCM), c.n)
			}
			if !bytes.Equal(i16bytes(got.PCM), i16bytes(ref.PCM[:c.n])) {
				t.Fatal("samples differ from the plain file")
			}
		})
	}
}

func i16bytes(p []int16) []byte {
	b := make([]byte, 2*len(p))
	for i, v := range p {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	return b
}

func TestWAVErrors(t *testing.T) {
	good := func() []byte {
		return makeWAV(wavSpec{enc: wavS16, rate: 8000, channels: 1, frames: 100, sig: clipTone(1000, 8000, -12)})
	}
	patch := func(off int, v uint32, size int) []byte {
		b := good()
		if size == 2 {
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		} else {
			binary.LittleEndian.PutUint32(b[off:], v)
		}
		return b
	}
	withFmt := func(fmtBody []byte) []byte {
		body := append([]byte("WAVE"), riffChunk("fmt ", fmtBody)...)
		body = append(body, riffChunk("data", make([]byte, 64))...)
		return riffChunk("RIFF", body)
	}
	badGUID := wavFmtBody(wavTagPCM, 1, 8000, 2, true)
	badGUID[30] ^= 0xff
	cases := []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"short", []byte("RIFF\x04\x00\x00\x00WAV"), ErrClipCorrupt, "shorter than"},
		{"AVI", []byte("RIFF\x04\x00\x00\x00AVI "), ErrClipFormat, `"AVI "`},
		{"truncated data", good()[:100], ErrClipCorrupt, `chunk "data" at offset 36 claims 200 bytes but only 56 remain`},
		{"huge chunk", patch(16, 0x7ffffff0, 4), ErrClipCorrupt, `chunk "fmt " at offset 12 claims`},
		{"no data", riffChunk("RIFF", append([]byte("WAVE"), riffChunk("fmt ", wavFmtBody(1, 1, 8000, 2, false))...)), ErrClipCorrupt, "no data chunk"},
		{"no fmt", riffChunk("RIFF", append([]byte("WAVE"), riffChunk("data", []byte{1, 2})...)), ErrClipCorrupt, "no fmt chunk"},
		{"short fmt", withFmt(make([]byte, 14)), ErrClipCorrupt, "fmt chunk is 14 bytes"},
		{"MS ADPCM", patch(20, 2, 2), ErrClipUnsupported, "MS ADPCM"},
		{"MP3 in WAV", patch(20, 0x55, 2), ErrClipUnsupported, "MP3"},
		{"12-bit PCM", patch(34, 12, 2), ErrClipUnsupported, "(PCM) with 12 bits"},
		{"64-bit float", withFmt(wavFmtBody(wavTagFloat, 1, 8000, 8, false)), ErrClipUnsupported, "(IEEE float) with 64 bits"},
		{"16-bit µ-law", withFmt(wavFmtBody(wavTagULaw, 1, 8000, 2, false)), ErrClipUnsupported, "(µ-law) with 16 bits"},
		{"3 channels", withFmt(wavFmtBody(wavTagPCM, 3, 8000, 2, false)), ErrClipUnsupported, "3 channels"},
		{"0 channels", withFmt(wavFmtBody(wavTagPCM, 0, 8000, 2, false)), ErrClipUnsupported, "0 channels"},
		{"11025 Hz", withFmt(wavFmtBody(wavTagPCM, 1, 11025, 2, false)), ErrClipUnsupported, "sample rate 11025 Hz"},
		{"block align", patch(32, 4, 2), ErrClipCorrupt, "block align 4, expected 2"},
		{"binary chunk id", append(good()[:36], append([]byte{0, 1, 2, 3, 0xff, 0xff, 0xff, 0x0f}, good()[44:]...)...), ErrClipCorrupt, `chunk "00010203"`},
		{"extensible truncated", withFmt(wavFmtBody(wavTagPCM, 1, 8000, 2, true)[:30]), ErrClipCorrupt, "EXTENSIBLE fmt chunk is 30 bytes"},
		{"extensible GUID", withFmt(badGUID), ErrClipUnsupported, "SubFormat GUID"},
		{"empty data", riffChunk("RIFF", append(append([]byte("WAVE"), riffChunk("fmt ", wavFmtBody(1, 1, 8000, 2, false))...), riffChunk("data", nil)...)), ErrClipEmpty, "WAV 16-bit PCM 8000 Hz mono"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseClip(c.data)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not mention %q", err, c.msg)
			}
		})
	}
}

// TestWAVTooLong: a file over MaxClipDuration is refused before decoding.
func TestWAVTooLong(t *testing.T) {
	const frames = 3601 * 8000 // 1 h 1 s of 8-bit µ-law at 8 kHz: 28.8 MB
	hdr := makeWAV(wavSpec{enc: wavULaw, rate: 8000, channels: 1, frames: 0})
	file := make([]byte, len(hdr)+frames) // one allocation: the samples are zero (silence)
	copy(file, hdr)
	binary.LittleEndian.PutUint32(file[4:], uint32(len(file)-8))
	binary.LittleEndian.PutUint32(file[len(hdr)-4:], frames)
	_, err := ParseClip(file)
	if !errors.Is(err, ErrClipTooLarge) || !strings.Contains(err.Error(), "1h0m1s long") {
		t.Fatalf("err %v", err)
	}
}

// TestWAVFromSox decodes files written by SoX 14.4.2, an independent WAV writer (sox adds
// a fact chunk for G.711 and writes WAVE_FORMAT_EXTENSIBLE for 24-bit). testdata/README.md
// has the commands; each holds a 1 kHz sine at -12 dBFS.
func TestWAVFromSox(t *testing.T) {
	cases := []struct {
		file   string
		format string
		ms     int
	}{
		{"sox_ulaw_8k_mono.wav", "WAV µ-law 8000 Hz mono", 250},
		{"sox_alaw_8k_stereo.wav", "WAV A-law 8000 Hz stereo", 250},
		{"sox_u8_22050_mono.wav", "WAV 8-bit PCM 22050 Hz mono", 250},
		{"sox_s24_44100_stereo.wav", "WAV 24-bit PCM (extensible) 44100 Hz stereo", 150},
		{"sox_f32_48k_mono.wav", "WAV 32-bit float 48000 Hz mono", 100},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			clip, err := LoadClip(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if clip.Format != c.format {
				t.Errorf("Format %q, want %q", clip.Format, c.format)
			}
			if len(clip.PCM) != c.ms*8 {
				t.Errorf("%d samples, want %d", len(clip.PCM), c.ms*8)
			}
			if l := ToneLevelDBFS(clipMid(clip.PCM, 640), 8000, 1000); math.Abs(l+12) > 0.3 {
				t.Errorf("1 kHz at %.2f dBFS, want -12", l)
			}
		})
	}
}

func TestLoadClipErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadClip(filepath.Join(dir, "missing.wav")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// A sparse 60 MB file: refused from its size, never read.
	big := filepath.Join(dir, "big.wav")
	if err := os.WriteFile(big, makeWAV(wavSpec{enc: wavS16, rate: 8000, channels: 1, frames: 10, sig: clipTone(1000, 8000, -12)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 60<<20); err != nil {
		t.Fatal(err)
	}
	_, err := LoadClip(big)
	if !errors.Is(err, ErrClipTooLarge) || !strings.Contains(err.Error(), big) {
		t.Errorf("60 MB file: %v", err)
	}
}
