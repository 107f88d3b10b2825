package transcode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hraban/opus"
)

// --- a test-only Ogg muxer (RFC 3533) ---

type oggMux struct {
	out     []byte
	serial  uint32
	seq     uint32
	maxSegs int // lacing values per page before a page is flushed (255 max)
	// pending page
	lacing  []byte
	body    []byte
	cont    bool  // first data on the pending page continues a packet
	granule int64 // granule of the last packet completed on the pending page
	done    bool  // a packet completed on the pending page
}

func newOggMux(serial uint32, maxSegs int) *oggMux {
	return &oggMux{serial: serial, maxSegs: maxSegs, granule: oggNoGranule}
}

// page appends a complete page with the given fields to dst.
func oggPageBytes(flags byte, granule int64, serial, seq uint32, lacing, body []byte) []byte {
	h := make([]byte, oggHeaderLen, oggHeaderLen+len(lacing)+len(body))
	copy(h, "OggS")
	h[5] = flags
	binary.LittleEndian.PutUint64(h[6:], uint64(granule))
	binary.LittleEndian.PutUint32(h[14:], serial)
	binary.LittleEndian.PutUint32(h[18:], seq)
	h[26] = byte(len(lacing))
	h = append(h, lacing...)
	h = append(h, body...)
	binary.LittleEndian.PutUint32(h[22:], oggCRC(0, h))
	return h
}

func (m *oggMux) flush(flags byte) {
	if m.cont {
		flags |= oggFlagCont
	}
	if m.seq == 0 {
		flags |= oggFlagBOS
	}
	g := m.granule
	if !m.done {
		g = oggNoGranule
	}
	m.out = append(m.out, oggPageBytes(flags, g, m.serial, m.seq, m.lacing, m.body)...)
	m.seq++
	m.lacing, m.body, m.done, m.cont = nil, nil, false, false
}

// packet laces p onto pages; granule is the stream position after it. own forces it onto a
// fresh page of its own (the Ogg Opus headers, RFC 7845 §3).
func (m *oggMux) packet(p []byte, granule int64, own bool) {
	if own && len(m.lacing) > 0 {
		m.flush(0)
	}
	rest := p
	for first := true; ; first = false {
		if len(m.lacing) == m.maxSegs {
			m.flush(0)
			m.cont = !first // the page opens in the middle of this packet
		}
		n := min(255, len(rest))
		m.lacing = append(m.lacing, byte(n))
		m.body = append(m.body, rest[:n]...)
		rest = rest[n:]
		if n < 255 {
			break
		}
	}
	m.granule, m.done = granule, true
	if own {
		m.flush(0)
	}
}

// finish flushes the last page with EOS, overriding its granule when endGranule >= 0.
func (m *oggMux) finish(endGranule int64) []byte {
	if endGranule >= 0 {
		m.granule = endGranule
	}
	m.flush(oggFlagEOS)
	return m.out
}

// opusHeadBytes builds an OpusHead (RFC 7845 §5.1).
func opusHeadBytes(channels int, preSkip uint16, gainQ8 int16) []byte {
	b := []byte("OpusHead\x01")
	b = append(b, byte(channels), 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(b[10:], preSkip)
	binary.LittleEndian.PutUint16(b[16:], uint16(gainQ8))
	return b
}

var opusTagsBytes = []byte("OpusTags\x05\x00\x00\x00ponte\x00\x00\x00\x00")

// opusFile describes an Ogg/Opus file made by makeOpusFile.
type opusFile struct {
	rate, channels int
	bitrate        int
	app            opus.Application
	frameMs        int
	sig            func(ch, i int) float64 // at rate
	frames         int                     // input samples per channel
	preSkip        uint16
	gainQ8         int16
	maxSegs        int
	serial         uint32
	trimEnd        bool // end granule = exact input length (RFC 7845 §4.4)
}

// encodeOpus returns the packets of f's signal, each 20 ms (or frameMs). Like opusenc, it
// codes pre-skip's worth of silence past the end so the encoder's look-ahead is flushed and
// the decoder, after discarding pre-skip, still has the whole input.
func encodeOpus(t testing.TB, f opusFile) [][]byte {
	enc, err := opus.NewEncoder(f.rate, f.channels, f.app)
	if err != nil {
		t.Fatal(err)
	}
	if f.bitrate > 0 {
		if err := enc.SetBitrate(f.bitrate); err != nil {
			t.Fatal(err)
		}
	}
	fs := f.rate * f.frameMs / 1000
	var pkts [][]byte
	pcm := make([]int16, fs*f.channels)
	buf := make([]byte, 4000)
	for start := 0; start < f.frames+int(f.preSkip)*f.rate/48000; start += fs {
		for i := range fs {
			for ch := range f.channels {
				v := 0.0
				if start+i < f.frames {
					v = f.sig(ch, start+i)
				}
				pcm[i*f.channels+ch] = clampRound(v)
			}
		}
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, bytes.Clone(buf[:n]))
	}
	return pkts
}

func makeOpusFile(t testing.TB, f opusFile) ([]byte, [][]byte) {
	if f.frameMs == 0 {
		f.frameMs = 20
	}
	if f.maxSegs == 0 {
		f.maxSegs = 255
	}
	pkts := encodeOpus(t, f)
	m := newOggMux(f.serial, f.maxSegs)
	m.packet(opusHeadBytes(f.channels, f.preSkip, f.gainQ8), 0, true)
	m.packet(opusTagsBytes, 0, true)
	// Granules count from the start of the decoded output, pre-skip included (RFC 7845 §4):
	// the last one is pre-skip + the input length.
	var gp int64
	for _, p := range pkts {
		gp += int64(48 * f.frameMs)
		m.packet(p, gp, false)
	}
	end := int64(-1)
	if f.trimEnd {
		end = int64(f.preSkip) + int64(f.frames)*48000/int64(f.rate)
	}
	return m.finish(end), pkts
}

// libopusPreSkip is libopus's encoder delay at 48 kHz for the VoIP and audio applications:
// 2.5 ms of look-ahead plus 4 ms of delay compensation (opus_encoder.c), 312 samples.
const libopusPreSkip = 312

func countContinued(file []byte) (pages, continued int) {
	for pos := 0; pos < len(file); {
		p, n, err := readOggPage(file[pos:], pos)
		if err != nil {
			panic(err)
		}
		pages++
		if p.flags&oggFlagCont != 0 {
			continued++
		}
		pos += n
	}
	return pages, continued
}

func TestOggOpusDecode(t *testing.T) {
	l1k := clipTone(1000, 48000, -12)
	r15 := clipTone(1500, 48000, -12)
	cases := []struct {
		name   string
		f      opusFile
		levels map[float64]float64 // expected tone levels, dBFS
		n      int                 // expected samples at 8 kHz
	}{
		{"mono 8k voip", opusFile{rate: 8000, channels: 1, app: opus.AppVoIP, frames: 8000,
			sig: clipTone(1000, 8000, -12), preSkip: libopusPreSkip, trimEnd: true}, map[float64]float64{1000: -12}, 8000},
		{"mono 48k 60ms packets", opusFile{rate: 48000, channels: 1, app: opus.AppAudio, frames: 48000, frameMs: 60,
			sig: l1k, preSkip: libopusPreSkip, trimEnd: true}, map[float64]float64{1000: -12}, 8000},
		// Stereo at 256 kb/s: ~640-byte packets, laced as 255,255,x, and 2 segments per page
		// so every packet spans pages.
		{"stereo 48k split packets", opusFile{rate: 48000, channels: 2, app: opus.AppAudio, frames: 48000, bitrate: 256000,
			sig: func(ch, i int) float64 {
				if ch == 0 {
					return l1k(0, i)
				}
				return r15(0, i)
			}, preSkip: libopusPreSkip, maxSegs: 2, trimEnd: true}, map[float64]float64{1000: -18.02, 1500: -18.02}, 8000},
		// 0.55 s is 27.5 frames: the last packet is half padding, cut by the end granule.
		{"end trimming", opusFile{rate: 16000, channels: 1, app: opus.AppAudio, frames: 8800,
			sig: clipTone(1000, 16000, -12), preSkip: libopusPreSkip, trimEnd: true}, map[float64]float64{1000: -12}, 4400},
		// Without end trimming the whole last packet plays: 28 × 20 ms.
		{"no end trimming", opusFile{rate: 16000, channels: 1, app: opus.AppAudio, frames: 8800,
			sig: clipTone(1000, 16000, -12), preSkip: libopusPreSkip}, map[float64]float64{1000: -12}, 28*160 - 52},
		{"gain -6 dB", opusFile{rate: 48000, channels: 1, app: opus.AppAudio, frames: 48000,
			sig: l1k, preSkip: libopusPreSkip, gainQ8: -6 * 256, trimEnd: true}, map[float64]float64{1000: -18}, 8000},
		{"gain +3.5 dB", opusFile{rate: 48000, channels: 1, app: opus.AppAudio, frames: 48000,
			sig: l1k, preSkip: libopusPreSkip, gainQ8: 896, trimEnd: true}, map[float64]float64{1000: -8.5}, 8000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file, pkts := makeOpusFile(t, c.f)
			if c.f.maxSegs > 0 {
				if _, cont := countContinued(file); cont < len(pkts)/2 {
					t.Fatalf("only %d continued pages: packets not split as intended", cont)
				}
				big := 0
				for _, p := range pkts {
					if len(p) > 510 {
						big++
					}
				}
				if big < len(pkts)/2 {
					t.Fatalf("only %d of %d packets over 510 bytes", big, len(pkts))
				}
			}
			clip, err := ParseClip(file)
			if err != nil {
				t.Fatal(err)
			}
			if len(clip.PCM) != c.n {
				t.Fatalf("%d samples, want %d", len(clip.PCM), c.n)
			}
			m := clipMid(clip.PCM, 2400)
			var sum float64
			for f, want := range c.levels {
				if l := ToneLevelDBFS(m, 8000, f); math.Abs(l-want) > 0.5 {
					t.Errorf("%v Hz at %.2f dBFS, want %.2f", f, l, want)
				}
				sum += Goertzel(m, 8000, f)
			}
			// Opus at these rates codes a pure tone with more than 20 dB SNR (SILK at
			// 16 kb/s, the worst here, ~23 dB).
			if rest := PowerToDBFS(math.Pow(10, LevelDBFS(m)/10) - sum); rest > PowerToDBFS(sum)-20 {
				t.Errorf("energy outside the tones at %.1f dBFS", rest)
			}
		})
	}
}

// TestOggOpusPreSkip: pre-skip removes the encoder's delay, so a burst 300 ms into the
// input starts 300 ms into the clip; ignoring it would put the burst 6.5 ms late.
func TestOggOpusPreSkip(t *testing.T) {
	for _, rate := range []int{8000, 48000} {
		onset := rate * 3 / 10
		a := AmpForDBFS(-6)
		f := opusFile{rate: rate, channels: 1, app: opus.AppAudio, frames: rate * 6 / 10,
			sig: func(_, i int) float64 {
				if i < onset {
					return 0
				}
				return a * math.Sin(2*math.Pi*500*float64(i-onset)/float64(rate))
			}, preSkip: libopusPreSkip, trimEnd: true}
		file, _ := makeOpusFile(t, f)
		clip, err := ParseClip(file)
		if err != nil {
			t.Fatal(err)
		}
		// The envelope's half-amplitude point, on 1 ms blocks.
		first := -1
		for i := 0; i+8 <= len(clip.PCM); i += 8 {
			if LevelDBFS(clip.PCM[i:i+8]) > -12 {
				first = i
				break
			}
		}
		if first < 2400-16 || first > 2400+16 {
			t.Errorf("%d Hz encoder: burst at sample %d, want 2400±16 (2 ms)", rate, first)
		}
	}
}

// TestOggOpusStreams: the first Opus logical stream is chosen among multiplexed and
// chained streams, and the others are ignored.
func TestOggOpusStreams(t *testing.T) {
	base := opusFile{rate: 8000, channels: 1, app: opus.AppVoIP, frames: 4000, sig: clipTone(1000, 8000, -12),
		preSkip: libopusPreSkip, trimEnd: true, serial: 0x1111}
	one, _ := makeOpusFile(t, base)
	other := base
	other.sig, other.serial = clipTone(2000, 8000, -12), 0x2222
	two, _ := makeOpusFile(t, other)
	// A non-Opus stream (a Vorbis-like identification header) with a few data pages.
	vorbis := func(serial uint32) [][]byte {
		return [][]byte{
			oggPageBytes(oggFlagBOS, 0, serial, 0, []byte{30}, append([]byte("\x01vorbis"), make([]byte, 23)...)),
			oggPageBytes(0, 100, serial, 1, []byte{3}, []byte{1, 2, 3}),
			oggPageBytes(oggFlagEOS, 200, serial, 2, []byte{2}, []byte{4, 5}),
		}
	}
	pages := func(file []byte) [][]byte {
		var out [][]byte
		for pos := 0; pos < len(file); {
			_, n, err := readOggPage(file[pos:], pos)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, file[pos:pos+n])
			pos += n
		}
		return out
	}
	// Grouped multiplexing (RFC 3533 §4): all BOS pages first, then data pages interleaved.
	v, o := vorbis(0x3333), pages(one)
	muxed := bytes.Join([][]byte{v[0], o[0], o[1], v[1], o[2], v[2]}, nil)
	muxed = append(muxed, bytes.Join(o[3:], nil)...)
	cases := []struct {
		name string
		data []byte
	}{
		{"plain", one},
		{"multiplexed with vorbis", muxed},
		{"vorbis link then opus", append(bytes.Join(vorbis(0x4444), nil), one...)},
		{"chained opus then opus", append(bytes.Clone(one), two...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clip, err := ParseClip(c.data)
			if err != nil {
				t.Fatal(err)
			}
			if len(clip.PCM) != 4000 {
				t.Fatalf("%d samples, want 4000", len(clip.PCM))
			}
			m := clipMid(clip.PCM, 2400)
			if l := ToneLevelDBFS(m, 8000, 1000); math.Abs(l+12) > 0.5 {
				t.Errorf("1 kHz at %.2f dBFS", l)
			}
			if l := ToneLevelDBFS(m, 8000, 2000); l > -50 {
				t.Errorf("2 kHz of the second stream leaked in at %.1f dBFS", l)
			}
		})
	}
}

func TestOggOpusErrors(t *testing.T) {
	good, _ := makeOpusFile(t, opusFile{rate: 8000, channels: 1, app: opus.AppVoIP, frames: 1600,
		sig: clipTone(1000, 8000, -12), preSkip: libopusPreSkip, maxSegs: 3})
	pg := func(file []byte) (offs []int) {
		for pos := 0; pos < len(file); {
			_, n, err := readOggPage(file[pos:], pos)
			if err != nil {
				t.Fatal(err)
			}
			offs = append(offs, pos)
			pos += n
		}
		return offs
	}
	offs := pg(good)
	crcFlip := bytes.Clone(good)
	crcFlip[offs[2]+40] ^= 1
	seqGap := bytes.Clone(good[:offs[2]])
	seqGap = append(seqGap, good[offs[3]:]...)
	headWith := func(mut func(h []byte) []byte) []byte {
		m := newOggMux(1, 255)
		m.packet(mut(opusHeadBytes(1, 312, 0)), 0, true)
		m.packet(opusTagsBytes, 0, true)
		return append(m.finish(-1), good[offs[2]:]...)
	}
	noTags := func() []byte {
		m := newOggMux(1, 255)
		m.packet(opusHeadBytes(1, 312, 0), 0, true)
		m.packet([]byte{0xfc, 0xff, 0xfe}, 960, false)
		return m.finish(-1)
	}()
	// 30100 packets of 120 ms (CELT 20 ms × 6, code 3, empty frames): 1h0m12s in 90 KB.
	tooLong := func() []byte {
		m := newOggMux(1, 255)
		m.packet(opusHeadBytes(1, 312, 0), 0, true)
		m.packet(opusTagsBytes, 0, true)
		for i := range 30100 {
			m.packet([]byte{0xfb, 0x06}, int64(i+1)*5760, false)
		}
		return m.finish(-1)
	}()
	cases := []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"too long", tooLong, ErrClipTooLarge, "is 1h0m12s long"},
		{"crc", crcFlip, ErrClipCorrupt, "fails its CRC"},
		{"truncated page", good[:len(good)-3], ErrClipCorrupt, "truncated"},
		{"truncated header", good[:offs[1]+10], ErrClipCorrupt, "truncated (10 bytes left)"},
		{"lost page", seqGap, ErrClipCorrupt, "sequence jumps from 1 to 3"},
		{"junk between pages", append(bytes.Clone(good[:offs[1]]), append([]byte("junk"), good[offs[1]:]...)...), ErrClipCorrupt, "no Ogg capture pattern"},
		{"no opus", oggPageBytes(oggFlagBOS|oggFlagEOS, 0, 9, 0, []byte{30}, append([]byte("\x01vorbis"), make([]byte, 23)...)), ErrClipUnsupported, "no OpusHead"},
		{"version 16", headWith(func(h []byte) []byte { h[8] = 16; return h }), ErrClipUnsupported, "version 16"},
		{"family 1", headWith(func(h []byte) []byte { h[18] = 1; return append(h, 1, 0, 0) }), ErrClipUnsupported, "mapping family 1"},
		{"0 channels", headWith(func(h []byte) []byte { h[9] = 0; return h }), ErrClipCorrupt, "0 channels"},
		{"short head", headWith(func(h []byte) []byte { return h[:18] }), ErrClipCorrupt, "OpusHead is 18 bytes"},
		{"no tags", noTags, ErrClipCorrupt, "without an OpusTags"},
		{"headers only", good[:offs[2]], ErrClipEmpty, "Ogg/Opus mono"},
		{"page version", func() []byte {
			b := bytes.Clone(good)
			b[4] = 1
			return b
		}(), ErrClipUnsupported, "page version 1"},
		{"stray continuation", func() []byte {
			b := bytes.Clone(good[:offs[1]])
			p, _, _ := readOggPage(good[offs[1]:], 0)
			b = append(b, oggPageBytes(p.flags|oggFlagCont, p.granule, p.serial, p.seq, p.lacing, p.body)...)
			return append(b, good[offs[2]:]...)
		}(), ErrClipCorrupt, "continuation flag true but a packet is not pending"},
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

// TestOggOpusFromLibsndfile decodes files written by libsndfile 1.2.0's own Ogg/Opus writer
// (10 ms packets, an OpusTags padded across 255-byte lacing values): a 1 kHz sine at
// -12 dBFS in both channels. No opusenc or ffmpeg exists on the build machine; see
// testdata/README.md.
func TestOggOpusFromLibsndfile(t *testing.T) {
	cases := []struct {
		file, format string
		n            int
	}{
		{"sndfile_stereo_48k.opus", "Ogg/Opus stereo (input 48000 Hz), pre-skip 312, gain 0.00 dB", 8000},
		{"sndfile_mono_16k.opus", "Ogg/Opus mono (input 16000 Hz), pre-skip 312, gain 0.00 dB", 4000},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			clip, err := LoadClip(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if clip.Format != c.format {
				t.Errorf("Format %q", clip.Format)
			}
			if len(clip.PCM) != c.n {
				t.Errorf("%d samples, want %d", len(clip.PCM), c.n)
			}
			if l := ToneLevelDBFS(clipMid(clip.PCM, 2400), 8000, 1000); math.Abs(l+12) > 0.5 {
				t.Errorf("1 kHz at %.2f dBFS, want -12", l)
			}
		})
	}
}

// TestOggOpusStopband: a 5 kHz tone in a 48 kHz Opus stream, decoded at 8 kHz, does not
// fold back to 3 kHz: libopus band-limits before decimating.
func TestOggOpusStopband(t *testing.T) {
	for _, f := range []float64{5000, 7000} {
		file, _ := makeOpusFile(t, opusFile{rate: 48000, channels: 1, app: opus.AppAudio, frames: 24000,
			sig: clipTone(f, 48000, -6), bitrate: 64000, preSkip: libopusPreSkip, trimEnd: true})
		clip, err := ParseClip(file)
		if err != nil {
			t.Fatal(err)
		}
		if l := LevelDBFS(clipMid(clip.PCM, 2400)); l > -6-40 {
			t.Errorf("%v Hz: output at %.1f dBFS, attenuation %.1f dB < 40", f, l, -6-l)
		}
	}
}
