package transcode

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// WAV (RIFF/WAVE) decoding for clips. RIFF is a sequence of chunks — 4-byte id, 32-bit
// little-endian size, body, a pad byte when the size is odd (Microsoft "Multimedia
// Programming Interface and Data Specifications 1.0", 1991). A WAVE form needs a "fmt "
// chunk (WAVEFORMATEX) and a "data" chunk; anything else (LIST, fact, cue, ...) is skipped.

// wFormatTag values (RFC 2361 Appendix A, mmreg.h).
const (
	wavTagPCM        = 0x0001
	wavTagFloat      = 0x0003
	wavTagALaw       = 0x0006
	wavTagULaw       = 0x0007
	wavTagExtensible = 0xfffe
)

// Bytes 2..15 of every KSDATAFORMAT_SUBTYPE_* GUID that wraps an old format tag: the GUID is
// {tag-0000-0010-8000-00AA00389B71} stored little-endian, so the tag is bytes 0..1.
var wavGUIDSuffix = [14]byte{0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71}

// wavRates are the input sample rates accepted and converted to 8 kHz.
var wavRates = []int{8000, 16000, 22050, 24000, 32000, 44100, 48000}

type wavEncoding int

const (
	wavU8 wavEncoding = iota + 1 // 8-bit PCM is unsigned, offset 128
	wavS16
	wavS24
	wavS32
	wavF32
	wavULaw
	wavALaw
)

func (e wavEncoding) String() string {
	return [...]string{"", "8-bit PCM", "16-bit PCM", "24-bit PCM", "32-bit PCM", "32-bit float", "µ-law", "A-law"}[e]
}

// wavFormat is the validated content of the fmt chunk.
type wavFormat struct {
	enc        wavEncoding
	channels   int
	rate       int
	bytesPer   int // bytes per sample of one channel
	blockAlign int // bytes per frame (all channels)
	extensible bool
}

func (f wavFormat) String() string {
	ch := "mono"
	if f.channels == 2 {
		ch = "stereo"
	}
	ext := ""
	if f.extensible {
		ext = " (extensible)"
	}
	return fmt.Sprintf("WAV %s%s %d Hz %s", f.enc, ext, f.rate, ch)
}

func parseWAV(data []byte) (*Clip, error) {
	if len(data) < 12 {
		return nil, fmt.Errorf("%w: WAV: %d bytes, shorter than the 12-byte RIFF header", ErrClipCorrupt, len(data))
	}
	if form := string(data[8:12]); form != "WAVE" {
		return nil, fmt.Errorf("%w: RIFF form %q is not WAVE", ErrClipFormat, form)
	}
	// The RIFF size bounds the chunk walk when it is consistent, so trailing bytes after
	// the form (an appended tag, say) are not parsed as chunks. Writers that never patched
	// it (0 or 0xffffffff) or got it wrong leave us walking to the end of the data.
	end := len(data)
	if rs := int64(binary.LittleEndian.Uint32(data[4:8])); rs >= 4 && rs+8 <= int64(len(data)) {
		end = int(rs + 8)
	}
	var (
		fmtBody []byte
		pcm     []byte
		haveFmt bool
		haveDat bool
	)
	pos := 12
	for end-pos >= 8 {
		id := string(data[pos : pos+4])
		size := int64(binary.LittleEndian.Uint32(data[pos+4 : pos+8]))
		body := pos + 8
		left := int64(end - body)
		if size > left && int64(len(data)-body) >= size {
			// The chunk fits the file but not the RIFF size: that size was wrong, not the
			// chunk (some writers count only the data chunk).
			end, left = len(data), int64(len(data)-body)
		}
		if size > left {
			// A streaming writer that could not seek back leaves the data size at
			// 0xffffffff: the samples run to the end of the file.
			if id == "data" && size == 0xffffffff {
				size = left
			} else {
				return nil, fmt.Errorf("%w: WAV chunk %q at offset %d claims %d bytes but only %d remain (truncated file?)",
					ErrClipCorrupt, printableID(id), pos, size, left)
			}
		}
		switch id {
		case "fmt ":
			if !haveFmt {
				fmtBody, haveFmt = data[body:body+int(size)], true
			}
		case "data":
			if !haveDat {
				pcm, haveDat = data[body:body+int(size)], true
			}
		}
		pos = body + int(size) + int(size&1)
	}
	if !haveFmt {
		return nil, fmt.Errorf("%w: WAV has no fmt chunk", ErrClipCorrupt)
	}
	if !haveDat {
		return nil, fmt.Errorf("%w: WAV has no data chunk", ErrClipCorrupt)
	}
	f, err := parseWAVFormat(fmtBody)
	if err != nil {
		return nil, err
	}
	frames := int64(len(pcm) / f.blockAlign) // a trailing partial frame is dropped
	if frames*int64(time.Second)/int64(f.rate) > int64(MaxClipDuration) {
		return nil, fmt.Errorf("%w: %s is %v long, limit %v", ErrClipTooLarge, f,
			time.Duration(frames*int64(time.Second)/int64(f.rate)).Round(time.Second), MaxClipDuration)
	}
	return &Clip{PCM: decodeWAV(f, pcm[:frames*int64(f.blockAlign)]), Format: f.String()}, nil
}

// printableID keeps binary garbage out of error messages.
func printableID(id string) string {
	for _, c := range []byte(id) {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", id)
		}
	}
	return id
}

// parseWAVFormat validates a WAVEFORMATEX / WAVEFORMATEXTENSIBLE body.
func parseWAVFormat(b []byte) (wavFormat, error) {
	var f wavFormat
	if len(b) < 16 {
		return f, fmt.Errorf("%w: WAV fmt chunk is %d bytes, need at least 16", ErrClipCorrupt, len(b))
	}
	le := binary.LittleEndian
	tag := le.Uint16(b[0:2])
	f.channels = int(le.Uint16(b[2:4]))
	rate := le.Uint32(b[4:8])
	f.blockAlign = int(le.Uint16(b[12:14]))
	bits := int(le.Uint16(b[14:16]))
	if tag == wavTagExtensible {
		// WAVEFORMATEXTENSIBLE: cbSize(2) >= 22, wValidBitsPerSample(2), dwChannelMask(4),
		// SubFormat GUID(16) whose first two bytes are the real format tag.
		if len(b) < 40 || le.Uint16(b[16:18]) < 22 {
			return f, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE fmt chunk is %d bytes, need 40", ErrClipCorrupt, len(b))
		}
		if [14]byte(b[26:40]) != wavGUIDSuffix {
			return f, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE with non-standard SubFormat GUID % x", ErrClipUnsupported, b[24:40])
		}
		tag = le.Uint16(b[24:26])
		f.extensible = true
	}
	switch {
	case tag == wavTagPCM && bits == 8:
		f.enc, f.bytesPer = wavU8, 1
	case tag == wavTagPCM && bits == 16:
		f.enc, f.bytesPer = wavS16, 2
	case tag == wavTagPCM && bits == 24:
		f.enc, f.bytesPer = wavS24, 3
	case tag == wavTagPCM && bits == 32:
		f.enc, f.bytesPer = wavS32, 4
	case tag == wavTagFloat && bits == 32:
		f.enc, f.bytesPer = wavF32, 4
	case tag == wavTagULaw && bits == 8:
		f.enc, f.bytesPer = wavULaw, 1
	case tag == wavTagALaw && bits == 8:
		f.enc, f.bytesPer = wavALaw, 1
	case tag == wavTagPCM || tag == wavTagFloat || tag == wavTagULaw || tag == wavTagALaw:
		return f, fmt.Errorf("%w: WAV %s with %d bits per sample", ErrClipUnsupported, wavTagName(tag), bits)
	default:
		return f, fmt.Errorf("%w: WAV %s; use PCM (8/16/24/32-bit), 32-bit float, µ-law or A-law",
			ErrClipUnsupported, wavTagName(tag))
	}
	if f.channels != 1 && f.channels != 2 {
		return f, fmt.Errorf("%w: WAV with %d channels; only mono and stereo", ErrClipUnsupported, f.channels)
	}
	ok := false
	for _, r := range wavRates {
		ok = ok || uint32(r) == rate
	}
	if !ok {
		return f, fmt.Errorf("%w: WAV sample rate %d Hz; supported rates are %v", ErrClipUnsupported, rate, wavRates)
	}
	f.rate = int(rate)
	if f.blockAlign != f.channels*f.bytesPer {
		return f, fmt.Errorf("%w: WAV block align %d, expected %d for %d×%s", ErrClipCorrupt,
			f.blockAlign, f.channels*f.bytesPer, f.channels, f.enc)
	}
	return f, nil
}

func wavTagName(tag uint16) string {
	names := map[uint16]string{
		wavTagPCM: "PCM", wavTagFloat: "IEEE float", wavTagALaw: "A-law", wavTagULaw: "µ-law",
		0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG",
		0x0055: "MP3", 0x0064: "G.721 ADPCM", 0x0065: "G.723 ADPCM", 0x0161: "WMA",
	}
	if n, ok := names[tag]; ok {
		return fmt.Sprintf("format 0x%04x (%s)", tag, n)
	}
	return fmt.Sprintf("format 0x%04x", tag)
}

// sample decodes one channel sample at the start of b as a value on the int16 scale.
func (f wavFormat) sample(b []byte) float64 {
	switch f.enc {
	case wavU8:
		return float64(int(b[0])-128) * 256
	case wavS16:
		return float64(int16(binary.LittleEndian.Uint16(b)))
	case wavS24:
		v := int32(uint32(b[0])<<8|uint32(b[1])<<16|uint32(b[2])<<24) >> 8
		return float64(v) / 256
	case wavS32:
		return float64(int32(binary.LittleEndian.Uint32(b))) / 65536
	case wavF32:
		v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b))) * 32768
		if math.IsNaN(v) {
			return 0
		}
		return max(-32768, min(32767, v)) // also tames ±Inf before it reaches the filter
	case wavULaw:
		return float64(ulawDec[b[0]])
	default: // wavALaw
		return float64(alawDec[b[0]])
	}
}

// decodeWAV turns the data chunk (whole frames only) into 8 kHz mono PCM: channels are
// averaged (an equal-weight downmix, so a signal in both channels keeps its level and one in
// a single channel drops 6 dB), then resampled.
func decodeWAV(f wavFormat, data []byte) []int16 {
	pos := 0
	src := func(dst []float64) int {
		n := min(len(dst), (len(data)-pos)/f.blockAlign)
		for i := range n {
			fr := data[pos : pos+f.blockAlign]
			s := f.sample(fr)
			if f.channels == 2 {
				s = (s + f.sample(fr[f.bytesPer:])) / 2
			}
			dst[i] = s
			pos += f.blockAlign
		}
		return n
	}
	frames := int64(len(data) / f.blockAlign)
	if f.rate == ClipRate {
		out := make([]int16, frames)
		var buf [512]float64
		for o := 0; ; {
			n := src(buf[:])
			for _, v := range buf[:n] {
				out[o] = clampRound(v)
				o++
			}
			if n < len(buf) {
				return out
			}
		}
	}
	rs := newPolyphase(f.rate)
	return rs.run(src, frames, make([]int16, 0, rs.outLen(frames)))
}
