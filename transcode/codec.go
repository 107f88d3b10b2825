package transcode

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hraban/opus"
)

// Sentinel errors of the codec layer; returned wrapped with %w.
var (
	ErrUnknownCodec  = errors.New("transcode: unknown codec")
	ErrBadRate       = errors.New("transcode: unsupported PCM rate for codec")
	ErrShortBuffer   = errors.New("transcode: destination buffer too small")
	ErrEmptyPayload  = errors.New("transcode: empty payload")
	ErrCodecInternal = errors.New("transcode: codec library error")
)

// Canonical codec names (SDP rtpmap encoding names, RFC 3551 §6 and RFC 7587 §7).
const (
	CodecPCMU = "PCMU"
	CodecPCMA = "PCMA"
	CodecOpus = "opus"
)

// Decoder turns RTP payloads of one stream into PCM. One Decoder per stream: Opus keeps state.
type Decoder interface {
	// Decode one RTP payload into pcm (mono int16 at the pcmRate given to NewDecoder);
	// returns samples written.
	Decode(payload []byte, pcm []int16) (int, error)
	// Conceal fills pcm with concealment for one lost frame of len(pcm) samples (libopus PLC
	// for opus; fade of the last frame toward silence for G.711). Returns samples written.
	Conceal(pcm []int16) (int, error)
	// DecodeFEC recovers the lost frame *before* next from next's in-band FEC (opus); for
	// G.711 it behaves like Conceal. len(pcm) is the lost frame's duration.
	DecodeFEC(next []byte, pcm []int16) (int, error)
}

// Encoder turns PCM frames into RTP payloads.
type Encoder interface {
	Encode(pcm []int16, dst []byte) (int, error) // one frame in, one RTP payload out
}

// EncoderOptions tune the Opus encoder; G.711 ignores them. Zero values select defaults.
type EncoderOptions struct {
	Complexity     int  // 0..10; 0 selects the default 5 (libopus cost grows steeply above 5)
	Bitrate        int  // bps; 0 selects 16000 at 8 kHz (24000 with FEC, see newOpusEncoder; 24000 at 16 kHz, 32000 above)
	FEC            bool // in-band FEC (RFC 7587 §3.3 useinbandfec)
	PacketLossPerc int  // expected loss, drives how much FEC libopus spends
	DTX            bool // discontinuous transmission (RFC 7587 §3.1.3 usedtx)
}

// normCodec maps SDP encoding names case-insensitively (RFC 4855 §3: names are case-insensitive).
func normCodec(codec string) (string, error) {
	switch {
	case strings.EqualFold(codec, CodecPCMU):
		return CodecPCMU, nil
	case strings.EqualFold(codec, CodecPCMA):
		return CodecPCMA, nil
	case strings.EqualFold(codec, CodecOpus):
		return CodecOpus, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownCodec, codec)
}

// ClockRate is the RTP clock of codec: 8000 for PCMU/PCMA (RFC 3551 §4.5.14), 48000 for
// opus (RFC 7587 §4.1: always 48000, whatever the internal or decoded rate). 0 if unknown.
func ClockRate(codec string) int {
	c, err := normCodec(codec)
	if err != nil {
		return 0
	}
	if c == CodecOpus {
		return 48000
	}
	return 8000
}

// TimestampStep is the RTP timestamp increment of one frame of duration d for codec
// (e.g. opus 20 ms -> 960, PCMU 20 ms -> 160). 0 if the codec is unknown.
func TimestampStep(codec string, d time.Duration) uint32 {
	return uint32(int64(ClockRate(codec)) * int64(d) / int64(time.Second))
}

// FrameSamples is the number of PCM samples in d at rate (8000, 20 ms -> 160).
func FrameSamples(rate int, d time.Duration) int {
	return int(int64(rate) * int64(d) / int64(time.Second))
}

func validOpusRate(r int) bool {
	switch r {
	case 8000, 12000, 16000, 24000, 48000:
		return true
	}
	return false
}

// NewDecoder creates a decoder for codec producing mono PCM at pcmRate. G.711 needs 8000.
// Opus is decoded by libopus directly at pcmRate (8000 for the PSTN side): a 48 kHz browser
// stream comes out at 8 kHz with no resampler (libopus resamples internally).
func NewDecoder(codec string, pcmRate int) (Decoder, error) {
	c, err := normCodec(codec)
	if err != nil {
		return nil, err
	}
	switch c {
	case CodecPCMU, CodecPCMA:
		if pcmRate != 8000 {
			return nil, fmt.Errorf("%w: %s at %d Hz", ErrBadRate, c, pcmRate)
		}
		d := &g711Decoder{alaw: c == CodecPCMA, last: make([]int16, 0, 960)}
		return d, nil
	default:
		if !validOpusRate(pcmRate) {
			return nil, fmt.Errorf("%w: opus at %d Hz", ErrBadRate, pcmRate)
		}
		od, err := opus.NewDecoder(pcmRate, 1)
		if err != nil {
			return nil, fmt.Errorf("%w: opus decoder: %w", ErrCodecInternal, err)
		}
		return &opusDecoder{dec: od}, nil
	}
}

// NewEncoder creates an encoder for codec taking mono PCM at pcmRate. G.711 needs 8000.
// Opus: libopus encoder at pcmRate with OPUS_APPLICATION_VOIP; at 8000 it emits narrowband
// SILK packets, which any Opus decoder plays (RTP clock still 48 kHz, RFC 7587 §4.1).
func NewEncoder(codec string, pcmRate int, o EncoderOptions) (Encoder, error) {
	c, err := normCodec(codec)
	if err != nil {
		return nil, err
	}
	switch c {
	case CodecPCMU, CodecPCMA:
		if pcmRate != 8000 {
			return nil, fmt.Errorf("%w: %s at %d Hz", ErrBadRate, c, pcmRate)
		}
		return g711Encoder{alaw: c == CodecPCMA}, nil
	default:
		if !validOpusRate(pcmRate) {
			return nil, fmt.Errorf("%w: opus at %d Hz", ErrBadRate, pcmRate)
		}
		return newOpusEncoder(pcmRate, o)
	}
}

func newOpusEncoder(rate int, o EncoderOptions) (Encoder, error) {
	enc, err := opus.NewEncoder(rate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("%w: opus encoder: %w", ErrCodecInternal, err)
	}
	cx := o.Complexity
	if cx == 0 {
		cx = 5
	}
	br := o.Bitrate
	if br == 0 {
		switch {
		case rate <= 8000 && o.FEC:
			// libopus (1.3.1, measured) emits no LBRR at all at 16 kbps narrowband: SILK's
			// FEC threshold is ~17 kbps. FEC without the bits for it would be a silent no-op.
			br = 24000
		case rate <= 8000:
			br = 16000
		case rate <= 16000:
			br = 24000
		default:
			br = 32000
		}
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"complexity", func() error { return enc.SetComplexity(cx) }},
		{"bitrate", func() error { return enc.SetBitrate(br) }},
		{"fec", func() error { return enc.SetInBandFEC(o.FEC) }},
		{"loss", func() error { return enc.SetPacketLossPerc(o.PacketLossPerc) }},
		{"dtx", func() error { return enc.SetDTX(o.DTX) }},
	}
	for _, s := range steps {
		if err := s.f(); err != nil {
			return nil, fmt.Errorf("%w: opus %s: %w", ErrCodecInternal, s.name, err)
		}
	}
	return &opusEncoder{enc: enc}, nil
}

// --- G.711 ---

type g711Encoder struct{ alaw bool }

func (e g711Encoder) Encode(pcm []int16, dst []byte) (int, error) {
	if len(dst) < len(pcm) {
		return 0, fmt.Errorf("%w: %d bytes for %d samples", ErrShortBuffer, len(dst), len(pcm))
	}
	if e.alaw {
		return ALawEncode(dst, pcm), nil
	}
	return ULawEncode(dst, pcm), nil
}

// g711Decoder keeps the last good frame so a lost frame can be concealed by replaying it
// with a fade toward silence (in the spirit of ITU-T G.711 Appendix I, much simplified:
// after g711FadeFrames consecutive losses the output is silence).
type g711Decoder struct {
	alaw bool
	last []int16 // last decoded frame (capacity preallocated; grows once if frames are larger)
	gain float64 // gain at the start of the next concealed frame
}

const g711FadeFrames = 3 // 60 ms at 20 ms frames, then silence

func (d *g711Decoder) Decode(payload []byte, pcm []int16) (int, error) {
	if len(payload) == 0 {
		return 0, ErrEmptyPayload
	}
	if len(pcm) < len(payload) {
		return 0, fmt.Errorf("%w: %d samples for %d bytes", ErrShortBuffer, len(pcm), len(payload))
	}
	var n int
	if d.alaw {
		n = ALawDecode(pcm, payload)
	} else {
		n = ULawDecode(pcm, payload)
	}
	d.last = append(d.last[:0], pcm[:n]...)
	d.gain = 1
	return n, nil
}

func (d *g711Decoder) Conceal(pcm []int16) (int, error) {
	n := len(pcm)
	if len(d.last) == 0 || d.gain <= 0 {
		clear(pcm)
		return n, nil
	}
	// Linear fade across the frame from gain to gain-1/g711FadeFrames, repeating the last
	// frame periodically when pcm is longer than it.
	step := 1.0 / float64(g711FadeFrames) / float64(n)
	g := d.gain
	for i := range pcm {
		if g < 0 {
			g = 0
		}
		pcm[i] = int16(float64(d.last[i%len(d.last)]) * g)
		g -= step
	}
	d.gain -= 1.0 / float64(g711FadeFrames)
	return n, nil
}

func (d *g711Decoder) DecodeFEC(_ []byte, pcm []int16) (int, error) { return d.Conceal(pcm) }

// --- Opus ---

type opusEncoder struct{ enc *opus.Encoder }

func (e *opusEncoder) Encode(pcm []int16, dst []byte) (int, error) {
	// The binding writes up to cap(dst); cap it at len(dst) so we never write past it.
	n, err := e.enc.Encode(pcm, dst[:len(dst):len(dst)])
	if err != nil {
		return 0, fmt.Errorf("%w: opus encode: %w", ErrCodecInternal, err)
	}
	return n, nil
}

type opusDecoder struct{ dec *opus.Decoder }

func (d *opusDecoder) Decode(payload []byte, pcm []int16) (int, error) {
	if len(payload) == 0 {
		return 0, ErrEmptyPayload
	}
	if len(pcm) == 0 {
		return 0, fmt.Errorf("%w: empty pcm buffer", ErrShortBuffer)
	}
	// The binding sizes the output from cap(pcm): cap it at len(pcm) so a packet longer
	// than the caller's buffer fails (OPUS_BUFFER_TOO_SMALL) instead of writing past len.
	n, err := d.dec.Decode(payload, pcm[:len(pcm):len(pcm)])
	if err != nil {
		return 0, fmt.Errorf("%w: opus decode: %w", ErrCodecInternal, err)
	}
	return n, nil
}

// Conceal runs libopus PLC. The binding sizes the frame from cap(pcm), so the slice is
// capped at len(pcm): the concealed duration is exactly what the caller asked for.
func (d *opusDecoder) Conceal(pcm []int16) (int, error) {
	n := len(pcm)
	if n == 0 {
		return 0, nil
	}
	if err := d.dec.DecodePLC(pcm[:n:n]); err != nil {
		return 0, fmt.Errorf("%w: opus plc: %w", ErrCodecInternal, err)
	}
	return n, nil
}

// DecodeFEC decodes the LBRR (in-band FEC) data carried in next for the frame before it
// (RFC 6716 §4.2.4, RFC 7587 §3.3); libopus falls back to PLC when next has none. The
// decoder must later also Decode next itself for its own frame.
func (d *opusDecoder) DecodeFEC(next []byte, pcm []int16) (int, error) {
	n := len(pcm)
	if n == 0 {
		return 0, nil
	}
	if len(next) == 0 {
		return d.Conceal(pcm)
	}
	if err := d.dec.DecodeFEC(next, pcm[:n:n]); err != nil {
		return 0, fmt.Errorf("%w: opus fec: %w", ErrCodecInternal, err)
	}
	return n, nil
}
