package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"math/cmplx"
	"os/exec"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// Speech quality through ponte's transcoding path (issue 7: "speech through
// ponte within 1 dB log-spectral distance (200-3400 Hz) of the reference
// path"). Speech is encoded to Opus at 48 kHz as a WhatsApp client would send
// it, carried through the bridge's two directions with in-memory legs (Opus
// -> PCMU toward the PBX, that PCMU back -> Opus toward Meta) and decoded;
// the reference runs libopus decode -> G.711 -> libopus encode offline on the
// same packets with the same settings. The two results are aligned by
// cross-correlation and compared frame by frame.

const (
	lsdRate   = 8000 // both results are decoded at the PSTN rate: the band of interest ends at 3.4 kHz
	lsdFrame  = 256  // 32 ms analysis frames
	lsdHop    = 128
	lsdLowHz  = 200
	lsdHighHz = 3400
	metaRate  = 48000
	metaBPS   = 32000 // a browser-like wideband Opus stream from the WhatsApp client
	maxLagMs  = 200   // alignment search range either way
	speechDB  = 35    // frames within this many dB of the loudest one are speech
)

// speech48k returns a few seconds of speech at 48 kHz: espeak-ng's when it is
// installed, else a vowel-formant synthesis. The second result names the source.
func speech48k(tb testing.TB) ([]int16, string) {
	if path, err := exec.LookPath("espeak-ng"); err == nil {
		out, err := exec.Command(path, "--stdout", "-s", "150",
			"Thank you for calling. Your order number is four seven two. Please hold while we connect you to an agent.").Output()
		if err == nil {
			if pcm, rate, err := parseMonoWAV(out); err == nil && len(pcm) > rate {
				return resampleLinear(pcm, rate, metaRate), "espeak-ng"
			}
		}
		tb.Logf("espeak-ng failed (%v): using the formant synthesis", err)
	}
	return formantSpeech(metaRate, 4*time.Second), "formant synthesis"
}

// parseMonoWAV reads a 16-bit PCM mono RIFF/WAVE file (what espeak-ng writes).
func parseMonoWAV(b []byte) ([]int16, int, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, 0, errors.New("not a WAV file")
	}
	rate := 0
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(binary.LittleEndian.Uint32(b[p+4:p+8]))
		body := b[p+8:]
		if size > len(body) || size < 0 {
			size = len(body) // streamed output leaves the data size unset (0xffffffff)
		}
		switch id {
		case "fmt ":
			if size < 16 || binary.LittleEndian.Uint16(body[0:2]) != 1 || binary.LittleEndian.Uint16(body[2:4]) != 1 ||
				binary.LittleEndian.Uint16(body[14:16]) != 16 {
				return nil, 0, errors.New("not 16-bit PCM mono")
			}
			rate = int(binary.LittleEndian.Uint32(body[4:8]))
		case "data":
			if rate == 0 {
				return nil, 0, errors.New("data before fmt")
			}
			pcm := make([]int16, size/2)
			for i := range pcm {
				pcm[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return pcm, rate, nil
		}
		p += 8 + size + size&1
	}
	return nil, 0, errors.New("no data chunk")
}

// resampleLinear is good enough to make test input: both paths get the same samples.
func resampleLinear(in []int16, from, to int) []int16 {
	out := make([]int16, int(int64(len(in)-1)*int64(to)/int64(from)))
	for i := range out {
		x := float64(i) * float64(from) / float64(to)
		k := int(x)
		f := x - float64(k)
		out[i] = int16(math.Round(float64(in[k])*(1-f) + float64(in[k+1])*f))
	}
	return out
}

// formantSpeech synthesises voiced speech: a glottal pulse train with a
// gliding pitch through three formant resonators, cycling through the vowels
// /a/, /i/, /u/, /e/ with short pauses, like syllables.
func formantSpeech(rate int, d time.Duration) []int16 {
	vowels := [][3]float64{{730, 1090, 2440}, {270, 2290, 3010}, {300, 870, 2240}, {530, 1840, 2480}}
	n := int(d.Seconds() * float64(rate))
	syl, gap := rate*3/10, rate*8/100            // 300 ms syllables, the last 80 ms silent
	r := math.Exp(-math.Pi * 80 / float64(rate)) // 80 Hz formant bandwidth
	x := make([]float64, n)
	var y [3][2]float64
	phase, peak := 0.0, 0.0
	for i := range x {
		pos := i % syl
		if pos >= syl-gap {
			continue
		}
		f0 := 110 + 30*math.Sin(2*math.Pi*0.7*float64(i)/float64(rate))
		phase += f0 / float64(rate)
		pulse := 0.0
		if phase >= 1 {
			phase, pulse = phase-1, 1
		}
		sum := 0.0
		for j, fc := range vowels[i/syl%len(vowels)] {
			// A two-pole resonator per formant, higher formants weaker.
			a1 := 2 * r * math.Cos(2*math.Pi*fc/float64(rate))
			v := pulse + a1*y[j][0] - r*r*y[j][1]
			y[j][1], y[j][0] = y[j][0], v
			sum += v / float64(j+1)
		}
		x[i] = sum * math.Sin(math.Pi*float64(pos)/float64(syl-gap)) // syllable envelope
		peak = max(peak, math.Abs(x[i]))
	}
	out := make([]int16, n)
	for i, v := range x {
		out[i] = int16(v / peak * 16000) // peak about -6 dBFS
	}
	return out
}

// captureLeg keeps what the bridge writes.
type captureLeg struct{ pkts []rtp.Packet }

func (l *captureLeg) ReadRTP([]byte, *rtp.Packet) error {
	return errors.New("capture leg: not readable")
}
func (l *captureLeg) WriteRTP(h *rtp.Header, payload []byte) error {
	l.pkts = append(l.pkts, rtp.Packet{Header: *h, Payload: bytes.Clone(payload)})
	return nil
}

// metaPackets encodes pcm (48 kHz) into 20 ms Opus packets as a WhatsApp client sends them.
func metaPackets(tb testing.TB, pcm []int16) [][]byte {
	enc, err := transcode.NewEncoder("opus", metaRate, transcode.EncoderOptions{Bitrate: metaBPS, FEC: true, PacketLossPerc: 5})
	if err != nil {
		tb.Fatal(err)
	}
	const n = metaRate / 50
	var out [][]byte
	for i := 0; i+n <= len(pcm); i += n {
		buf := make([]byte, 1500)
		k, err := enc.Encode(pcm[i:i+n], buf)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf[:k])
	}
	return out
}

// throughPonte carries Meta's packets through the bridge to the PBX (PCMU)
// and the PBX's copy of them back to Meta, and returns both outputs.
func throughPonte(tb testing.TB, p mediaParams, fromMeta [][]byte) (toPBX, toMeta []rtp.Packet) {
	wa, pbx := &captureLeg{}, &captureLeg{}
	b := newBridge(slog.New(slog.DiscardHandler), p, wa, pbx, func(error) {})
	if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}); err != nil {
		tb.Fatal(err)
	}
	b.OpenMeta()
	now := time.Now()
	b.toMeta.start, b.toPBX.start = now, now
	// 20 ms steps with zero network jitter: a packet arrives, the clock ticks.
	run := func(d *direction, in []rtp.Packet) {
		t := now
		for i := range in {
			d.mu.Lock()
			d.receive(&in[i], t)
			d.mu.Unlock()
			d.tick(t)
			t = t.Add(frameDur)
		}
		for range 5 { // drain what the playout depth holds
			d.tick(t)
			t = t.Add(frameDur)
		}
	}
	in := make([]rtp.Packet, len(fromMeta))
	for i, pl := range fromMeta {
		in[i] = rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: metaPT, SSRC: 7, SequenceNumber: uint16(i), Timestamp: uint32(i * opusClock)}, Payload: pl}
	}
	run(b.toPBX, in)
	run(b.toMeta, pbx.pkts)
	return pbx.pkts, wa.pkts
}

// referencePath is libopus decode -> G.711 mu-law -> libopus encode, offline,
// with the encoder settings ponte uses toward Meta.
func referencePath(tb testing.TB, p mediaParams, fromMeta [][]byte) [][]byte {
	dec, err := transcode.NewDecoder("opus", pcmRate)
	if err != nil {
		tb.Fatal(err)
	}
	enc, err := transcode.NewEncoder("opus", pcmRate, transcode.EncoderOptions{
		Complexity: p.Complexity, Bitrate: p.Bitrate, FEC: true, PacketLossPerc: 5,
	})
	if err != nil {
		tb.Fatal(err)
	}
	pcm, ulaw := make([]int16, pcmFrame), make([]byte, pcmFrame)
	var out [][]byte
	for _, pl := range fromMeta {
		n, err := dec.Decode(pl, pcm)
		if err != nil || n != pcmFrame {
			tb.Fatalf("reference decode: %d samples, %v", n, err)
		}
		transcode.ULawEncode(ulaw, pcm)
		transcode.ULawDecode(pcm, ulaw)
		buf := make([]byte, 1500)
		k, err := enc.Encode(pcm, buf)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf[:k])
	}
	return out
}

// decodeOpus decodes a packet sequence at lsdRate.
func decodeOpus(tb testing.TB, pkts [][]byte) []float64 {
	dec, err := transcode.NewDecoder("opus", lsdRate)
	if err != nil {
		tb.Fatal(err)
	}
	pcm := make([]int16, lsdRate/50*6)
	var out []float64
	for _, pl := range pkts {
		n, err := dec.Decode(pl, pcm)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range pcm[:n] {
			out = append(out, float64(s))
		}
	}
	return out
}

// align returns the lag (samples) by which b trails a: the maximum of their
// cross-correlation within maxLag.
func align(a, b []float64, maxLag int) int {
	best, bestLag := math.Inf(-1), 0
	for lag := -maxLag; lag <= maxLag; lag++ {
		s := 0.0
		for i := range a {
			if j := i + lag; j >= 0 && j < len(b) {
				s += a[i] * b[j]
			}
		}
		if s > best {
			best, bestLag = s, lag
		}
	}
	return bestLag
}

// fft is an in-place radix-2 FFT; len(x) must be a power of two.
func fft(x []complex128) {
	n := len(x)
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			x[i], x[j] = x[j], x[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		w := cmplx.Exp(complex(0, -2*math.Pi/float64(size)))
		for start := 0; start < n; start += size {
			wk := complex(1, 0)
			for k := 0; k < size/2; k++ {
				u, v := x[start+k], x[start+k+size/2]*wk
				x[start+k], x[start+k+size/2] = u+v, u-v
				wk *= w
			}
		}
	}
}

// powerSpectrum of one Hann-windowed frame.
func powerSpectrum(frame []float64) []float64 {
	x := make([]complex128, len(frame))
	for i, s := range frame {
		w := 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(len(frame)))
		x[i] = complex(s*w, 0)
	}
	fft(x)
	p := make([]float64, len(frame)/2+1)
	for i := range p {
		p[i] = real(x[i])*real(x[i]) + imag(x[i])*imag(x[i])
	}
	return p
}

// logSpectralDistance compares test with ref (ref leads test by lag samples):
// per frame, the RMS over the 200-3400 Hz bins of the difference of their
// log power spectra in dB; the mean over the frames where ref holds speech.
func logSpectralDistance(ref, test []float64, lag int) (lsd float64, frames int) {
	var energies []float64
	var starts []int
	for s := 0; s+lsdFrame <= len(ref); s += lsdHop {
		if t := s + lag; t < 0 || t+lsdFrame > len(test) {
			continue
		}
		e := 0.0
		for _, v := range ref[s : s+lsdFrame] {
			e += v * v
		}
		energies, starts = append(energies, e), append(starts, s)
	}
	maxE := 0.0
	for _, e := range energies {
		maxE = max(maxE, e)
	}
	lo, hi := lsdLowHz*lsdFrame/lsdRate, lsdHighHz*lsdFrame/lsdRate
	floor := maxE / lsdFrame * 1e-9 // keeps log() finite in empty bins
	sum := 0.0
	for i, s := range starts {
		if energies[i] < maxE*math.Pow(10, -speechDB/10.0) {
			continue
		}
		pr, pt := powerSpectrum(ref[s:s+lsdFrame]), powerSpectrum(test[s+lag:s+lag+lsdFrame])
		d2 := 0.0
		for k := lo; k <= hi; k++ {
			d := 10 * math.Log10((pr[k]+floor)/(pt[k]+floor))
			d2 += d * d
		}
		sum += math.Sqrt(d2 / float64(hi-lo+1))
		frames++
	}
	if frames == 0 {
		return math.Inf(1), 0
	}
	return sum / float64(frames), frames
}

func payloads(pkts []rtp.Packet) [][]byte {
	out := make([][]byte, len(pkts))
	for i := range pkts {
		out[i] = pkts[i].Payload
	}
	return out
}

// TestSpeechQualityThroughPonte: speech that crosses ponte (Opus 48 kHz ->
// PCMU -> Opus at complexity 5 and the configured bitrate) stays within 1 dB
// log-spectral distance (200-3400 Hz) of the offline reference path. As a
// check that the measure can fail, the same speech through a 6 kbps encoder
// must land well above the limit.
func TestSpeechQualityThroughPonte(t *testing.T) {
	speech, src := speech48k(t)
	p := mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}
	fromMeta := metaPackets(t, speech)
	toPBX, toMeta := throughPonte(t, p, fromMeta)
	for _, pk := range toPBX {
		if pk.PayloadType != 0 || len(pk.Payload) != pcmFrame {
			t.Fatalf("toward the PBX: PT %d, %d bytes", pk.PayloadType, len(pk.Payload))
		}
	}
	ref := decodeOpus(t, referencePath(t, p, fromMeta))
	got := decodeOpus(t, payloads(toMeta))
	lag := align(ref, got, maxLagMs*lsdRate/1000)
	lsd, n := logSpectralDistance(ref, got, lag)
	t.Logf("%s, %.1f s: %d packets in, %d to the PBX, %d to Meta; lag %d samples; LSD %.3f dB over %d speech frames",
		src, float64(len(speech))/metaRate, len(fromMeta), len(toPBX), len(toMeta), lag, lsd, n)
	if n < 50 {
		t.Fatalf("only %d speech frames compared", n)
	}
	if lsd > 1 {
		t.Errorf("log-spectral distance %.3f dB from the reference path, want <= 1 dB", lsd)
	}

	// Control: a 6 kbps encode of the same path is measurably worse, so the
	// measure above does not pass whatever it is given.
	low := p
	low.Bitrate = 6000
	ctl := decodeOpus(t, referencePath(t, low, fromMeta))
	clsd, _ := logSpectralDistance(ref, ctl, align(ref, ctl, maxLagMs*lsdRate/1000))
	t.Logf("control (6 kbps encoder toward Meta): LSD %.3f dB", clsd)
	if clsd <= 1 {
		t.Errorf("control path at 6 kbps measured %.3f dB: the measure does not discriminate", clsd)
	}
}
