package transcode

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// Announcement and music clips (issue 4 item 2, queue mode): a WAV or Ogg/Opus file from
// config is decoded once, at load time, to ponte's bridge format (8 kHz mono int16) and then
// played frame by frame toward the caller by a ClipPlayer, which does no work per frame
// beyond a copy.

// ClipRate is the sample rate of every Clip: the bridge's 8 kHz narrowband PCM.
const ClipRate = 8000

// Limits on clip files. They bound the memory a config file (or a fuzzer) can make ponte
// spend: the input is read whole (at most MaxClipBytes) and the decoded PCM is at most
// MaxClipDuration at 8 kHz (57.6 MB).
const (
	MaxClipBytes    = 50 << 20
	MaxClipDuration = time.Hour
)

const maxClipSamples = int64(MaxClipDuration/time.Second) * ClipRate

// Sentinel errors of clip loading; returned wrapped with %w and a message naming the problem.
var (
	ErrClipFormat      = errors.New("transcode: unrecognised clip file format")
	ErrClipUnsupported = errors.New("transcode: unsupported clip encoding")
	ErrClipCorrupt     = errors.New("transcode: malformed clip file")
	ErrClipTooLarge    = errors.New("transcode: clip too large")
	ErrClipEmpty       = errors.New("transcode: clip has no audio")
)

// Clip is decoded audio ready for the bridge: mono int16 PCM at ClipRate. A loaded Clip is
// immutable, so one Clip (e.g. the queue music of a route) may be played by many
// ClipPlayers on many calls at once.
type Clip struct {
	PCM    []int16 // 8 kHz mono samples; read-only once the Clip is shared
	Format string  // what was decoded, e.g. "WAV µ-law 16000 Hz stereo", for logs
}

// Duration is the playing time of the clip.
func (c *Clip) Duration() time.Duration {
	return time.Duration(len(c.PCM)) * time.Second / ClipRate
}

// LoadClip reads and decodes the WAV or Ogg/Opus file at path (format detected by content,
// not by name). A file larger than MaxClipBytes is refused before it is read.
func LoadClip(path string) (*Clip, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clip %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > MaxClipBytes {
		return nil, fmt.Errorf("clip %s: %w: file is %d bytes, limit %d", path, ErrClipTooLarge, st.Size(), MaxClipBytes)
	}
	c, err := ReadClip(f)
	if err != nil {
		return nil, fmt.Errorf("clip %s: %w", path, err)
	}
	return c, nil
}

// ReadClip reads r to the end (at most MaxClipBytes) and decodes it like ParseClip.
func ReadClip(r io.Reader) (*Clip, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxClipBytes+1))
	if err != nil {
		return nil, err
	}
	return ParseClip(data)
}

// ParseClip decodes a WAV (RIFF/WAVE) or Ogg/Opus file held in data, detecting the format
// from its first bytes. data is not retained.
func ParseClip(data []byte) (*Clip, error) {
	if len(data) > MaxClipBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrClipTooLarge, len(data), MaxClipBytes)
	}
	var (
		c   *Clip
		err error
	)
	switch {
	case len(data) >= 4 && string(data[:4]) == "RIFF":
		c, err = parseWAV(data)
	case len(data) >= 4 && string(data[:4]) == "OggS":
		c, err = parseOggOpus(data)
	default:
		return nil, fmt.Errorf("%w: %s", ErrClipFormat, sniffFormat(data))
	}
	if err != nil {
		return nil, err
	}
	if len(c.PCM) == 0 {
		return nil, fmt.Errorf("%w (%s)", ErrClipEmpty, c.Format)
	}
	return c, nil
}

// sniffFormat names common formats that are not supported, so that the error tells an
// operator what they gave us instead of only what we wanted.
func sniffFormat(data []byte) string {
	magic := []struct{ prefix, name string }{
		{"RF64", "RF64 (64-bit WAV)"},
		{"ID3", "MP3 (ID3 tag)"},
		{"fLaC", "FLAC"},
		{"FORM", "AIFF"},
		{"\x2e\x73\x6e\x64", "Sun/NeXT .au"},
		{"#!AMR", "AMR"},
	}
	for _, m := range magic {
		if bytes.HasPrefix(data, []byte(m.prefix)) {
			return m.name + " is not supported; convert to WAV or Ogg/Opus"
		}
	}
	if len(data) >= 2 && data[0] == 0xff && data[1]&0xe0 == 0xe0 {
		return "looks like MPEG audio (MP3), not supported; convert to WAV or Ogg/Opus"
	}
	if len(data) >= 8 && string(data[4:8]) == "ftyp" {
		return "MP4/M4A is not supported; convert to WAV or Ogg/Opus"
	}
	return "expected a RIFF/WAVE or Ogg/Opus file"
}

// PCMSource is anything that produces the next frame of bridge PCM on demand: a ClipPlayer,
// a Ringback. Fill must not allocate.
type PCMSource interface {
	Fill(pcm []int16)
}

// ClipPlayer plays a Clip frame by frame. Not safe for concurrent use: one per call leg.
type ClipPlayer struct {
	clip *Clip
	// Loop restarts the clip when it ends (queue music); otherwise the player falls silent
	// and Done reports true (a closing announcement).
	Loop bool
	// Gap is the silence inserted before each repetition when looping (an announcement
	// repeated every few seconds). Zero loops seamlessly.
	Gap time.Duration

	pos int // index into clip.PCM; past its end we are in the gap
	gap int // samples of gap already played
}

// NewClipPlayer returns a player of c positioned at its start.
func NewClipPlayer(c *Clip, loop bool) *ClipPlayer {
	return &ClipPlayer{clip: c, Loop: loop}
}

// Fill writes the next len(pcm) samples: clip audio, then (looping) the gap and the clip
// again, or (not looping) silence. It never allocates.
func (p *ClipPlayer) Fill(pcm []int16) {
	src := p.clip.PCM
	if len(src) == 0 {
		clear(pcm)
		return
	}
	for len(pcm) > 0 {
		if p.pos < len(src) {
			n := copy(pcm, src[p.pos:])
			p.pos += n
			pcm = pcm[n:]
			continue
		}
		if !p.Loop {
			clear(pcm)
			return
		}
		gapLen := int(p.Gap * ClipRate / time.Second)
		if p.gap < gapLen {
			n := min(len(pcm), gapLen-p.gap)
			clear(pcm[:n])
			p.gap += n
			pcm = pcm[n:]
			continue
		}
		p.pos, p.gap = 0, 0
	}
}

// Done reports whether a non-looping player has played the whole clip. A looping player
// is never done.
func (p *ClipPlayer) Done() bool {
	return !p.Loop && p.pos >= len(p.clip.PCM)
}

// Reset rewinds the player to the start of the clip.
func (p *ClipPlayer) Reset() { p.pos, p.gap = 0, 0 }

// --- sample-rate conversion to 8 kHz ---
//
// Rational resampling by L/M (up by L, low-pass, down by M) in polyphase form: output n is
// the dot product of the input window ending at floor((nM+D)/L) with phase (nM+D) mod L of
// the prototype filter, where D is the prototype's group delay, so the output is time-
// aligned with the input (no leading delay, no lost tail).
//
// The prototype is a Kaiser-windowed sinc designed at L·Fs_in with
//   passband 0..3400 Hz (the G.712 telephone band), ripple < ±0.001 dB,
//   stopband from 4000 Hz (the 8 kHz output's Nyquist frequency), attenuation >= 80 dB,
// so nothing folds back into the 0..4 kHz band from above 4 kHz (e.g. a 5 kHz tone that
// would alias to 3 kHz is 80 dB down). Kaiser's formulas: beta = 0.1102(A-8.7) and
// N = (A-8)/(2.285·Δω) taps, Δω the transition width in radians at L·Fs_in.

const (
	rsPassHz = 3400.0
	rsStopHz = 4000.0
	rsAttDB  = 80.0
)

// polyphase is a 8 kHz resampler for one input rate.
type polyphase struct {
	l, m int       // interpolation and decimation factors (in·L/M = 8000)
	k    int       // taps per phase
	d    int64     // group delay of the prototype, in samples at L·Fs_in
	taps []float64 // taps[p*k+k-1-j] = L·h[j·L+p]: phase p, reversed for a forward dot product
}

func rsGCD(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func newPolyphase(inRate int) *polyphase {
	g := rsGCD(inRate, ClipRate)
	l, m := ClipRate/g, inRate/g
	upRate := float64(inRate) * float64(l)
	dw := 2 * math.Pi * (rsStopHz - rsPassHz) / upRate
	n := int(math.Ceil((rsAttDB-8)/(2.285*dw))) + 1
	k := (n + l - 1) / l
	n = k * l
	// The windowed sinc takes an odd length nw <= n so that its group delay (nw-1)/2 is a
	// whole number of samples; a tap left over at the end stays zero.
	nw := n
	if nw%2 == 0 {
		nw--
	}
	beta := 0.1102 * (rsAttDB - 8.7)
	fc := (rsPassHz + rsStopHz) / 2 / upRate // cycles per sample at L·Fs_in
	center := float64(nw-1) / 2
	proto := make([]float64, n)
	var sum float64
	i0b := besselI0(beta)
	for i := range nw {
		x := float64(i) - center
		var s float64
		if x == 0 {
			s = 2 * fc
		} else {
			s = math.Sin(2*math.Pi*fc*x) / (math.Pi * x)
		}
		r := 2*float64(i)/float64(nw-1) - 1
		w := besselI0(beta*math.Sqrt(max(0, 1-r*r))) / i0b
		proto[i] = s * w
		sum += proto[i]
	}
	scale := float64(l) / sum // unity DC gain after zero-stuffing by L
	taps := make([]float64, n)
	for p := range l {
		for j := range k {
			taps[p*k+k-1-j] = proto[j*l+p] * scale
		}
	}
	return &polyphase{l: l, m: m, k: k, d: int64(nw-1) / 2, taps: taps}
}

// besselI0 is the zeroth-order modified Bessel function of the first kind (power series).
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	for k := 1; k < 200; k++ {
		term *= (x / (2 * float64(k))) * (x / (2 * float64(k)))
		sum += term
		if term < sum*1e-17 {
			break
		}
	}
	return sum
}

// outLen is the number of 8 kHz samples produced from in input samples: ceil(in·L/M).
func (f *polyphase) outLen(in int64) int64 {
	return (in*int64(f.l) + int64(f.m) - 1) / int64(f.m)
}

// run resamples in input samples pulled from src (which fills dst with the next mono
// samples and returns how many it wrote, fewer than len(dst) only at the end) and appends
// the result to out.
// Memory is the filter plus one block, whatever the clip length.
func (f *polyphase) run(src func(dst []float64) int, in int64, out []int16) []int16 {
	const block = 4096
	k := f.k
	// win holds x[base .. base+len(win)-1]; samples before 0 and after the end are zero.
	win := make([]float64, k, k-1+block)
	base := int64(-k)
	eof := false
	total := f.outLen(in)
	for n := int64(0); n < total; n++ {
		t := n*int64(f.m) + f.d
		a, p := t/int64(f.l), int(t%int64(f.l))
		for a >= base+int64(len(win)) {
			keep := k - 1
			drop := len(win) - keep
			copy(win, win[drop:])
			win = win[:keep]
			base += int64(drop)
			add := win[keep : keep+block]
			got := 0
			if !eof {
				got = src(add)
				eof = got < len(add)
			}
			clear(add[got:])
			win = win[:keep+block]
		}
		x := win[a-base-int64(k)+1 : a-base+1]
		h := f.taps[p*k : p*k+k]
		var acc float64
		for j, c := range h {
			acc += c * x[j]
		}
		out = append(out, clampRound(acc))
	}
	return out
}

func clampRound(v float64) int16 {
	v = math.Round(v)
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return int16(v)
}
