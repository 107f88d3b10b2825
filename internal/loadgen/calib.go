package loadgen

import (
	"fmt"
	"slices"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

// Gateway media settings the load config pins (configYAML), so that the delay constants
// below are known rather than assumed from defaults.
const (
	gwJitterFrames   = 1     // media.jitter_frames: the playout depth target (config/config.go, gateway/bridge.go newDirection)
	gwOpusComplexity = 5     // media.opus_complexity (issue 7: quality fixed at complexity 5)
	gwOpusBitrate    = 24000 // media.opus_bitrate toward Meta when transcoding
)

// gwOpusToMeta is the encoder ponte uses toward Meta when it transcodes (gateway/bridge.go
// SetPBX: complexity, bitrate, in-band FEC at 5 % expected loss).
var gwOpusToMeta = transcode.EncoderOptions{Complexity: gwOpusComplexity, Bitrate: gwOpusBitrate, FEC: true, PacketLossPerc: 5}

// callerOpus is the simulated WhatsApp user's encoder (sim/wasim sendMedia's settings);
// pbxEncoder the PBX simulator's (sim/pbx setCodecs: defaults).
var (
	callerOpus = transcode.EncoderOptions{Complexity: 5}
	pbxOpts    = transcode.EncoderOptions{}
)

// calRounds: loops run through a chain offline; the first is left out (codec start-up).
const calRounds = 4

// chainDelay is the delay the marker shows through a codec chain with no network, no jitter
// buffer and no scheduling: loop (payloads of src) is decoded; if via is set, re-encoded with
// via (opts) and decoded again, as ponte transcodes; every frame "arrives" exactly 20 ms after
// the previous one. The result is the codecs' algorithmic delay (libopus's lookahead: the
// encoder's 2.5 ms plus 4 ms of delay compensation outside RESTRICTED_LOWDELAY, at whatever
// rate, OPUS_GET_LOOKAHEAD; G.711 has none) plus the detector's own bias, measured on the
// very chain the live audio takes, so subtracting it leaves what the network path, ponte's
// scheduling and its jitter buffer added.
func chainDelay(loop [][]byte, src, via string, opts transcode.EncoderOptions) (time.Duration, error) {
	dec, err := transcode.NewDecoder(src, 8000)
	if err != nil {
		return 0, err
	}
	var enc transcode.Encoder
	var dec2 transcode.Decoder
	if via != "" {
		if enc, err = transcode.NewEncoder(via, 8000, opts); err != nil {
			return 0, err
		}
		if dec2, err = transcode.NewDecoder(via, 8000); err != nil {
			return 0, err
		}
	}
	var det markerDetector
	var sent []time.Time
	t0 := time.Unix(1_000_000, 0)
	pcm := make([]int16, 960)
	pay := make([]byte, 1500)
	for i := range calRounds * len(loop) {
		at := t0.Add(time.Duration(i) * frameDur)
		if i%len(loop) == markAt {
			sent = append(sent, at)
		}
		n, err := dec.Decode(loop[i%len(loop)], pcm)
		if err != nil {
			return 0, fmt.Errorf("loadgen: calibrate %s: %w", src, err)
		}
		if enc != nil {
			m, err := enc.Encode(pcm[:n], pay)
			if err != nil {
				return 0, fmt.Errorf("loadgen: calibrate %s: %w", via, err)
			}
			if n, err = dec2.Decode(pay[:m], pcm); err != nil {
				return 0, fmt.Errorf("loadgen: calibrate %s: %w", via, err)
			}
		}
		det.add(pcm[:n], at)
	}
	return calibrated(sent, det.found, t0.Add(time.Duration(len(loop))*frameDur))
}

// pcmDelay is the detector's bias: the loop's PCM fed to it directly, no codec.
func pcmDelay(pcm []int16) (time.Duration, error) {
	var det markerDetector
	var sent []time.Time
	t0 := time.Unix(1_000_000, 0)
	frames := len(pcm) / frameSamples
	for i := range calRounds * frames {
		at := t0.Add(time.Duration(i) * frameDur)
		if i%frames == markAt {
			sent = append(sent, at)
		}
		k := i % frames
		det.add(pcm[k*frameSamples:(k+1)*frameSamples], at)
	}
	return calibrated(sent, det.found, t0.Add(time.Duration(frames)*frameDur))
}

// calibrated is the median delay of the rounds after the first; every round must show it.
func calibrated(sent, found []time.Time, from time.Time) (time.Duration, error) {
	ds, _ := matchDelays(sent, found, from, from.Add(time.Hour))
	if len(ds) < calRounds-1 {
		return 0, fmt.Errorf("loadgen: calibration found %d of %d marker transitions", len(ds), calRounds-1)
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}

// delayModel is what is subtracted from the measured one-way delays (Report.DelayModel).
type delayModel struct {
	BiasMs          float64 `json:"detector_bias_ms"`         // the detector on the loop's own PCM
	CodecToPBXMs    float64 `json:"codec_chain_to_pbx_ms"`    // offline chain delay minus bias, WhatsApp -> PBX
	CodecToCallerMs float64 `json:"codec_chain_to_caller_ms"` // the same, PBX -> WhatsApp
	JitterBufferMs  float64 `json:"gateway_jitter_buffer_ms"` // media.jitter_frames x 20 ms
	Note            string  `json:"note"`

	bias, chainToPBX, chainToCaller time.Duration
}

// newDelayModel calibrates the chains of a run. Transcoding (PBX codec G.711): toward the PBX
// the caller's Opus is decoded by ponte and re-encoded to G.711; toward the caller the PBX's
// G.711 is decoded and re-encoded to Opus with ponte's settings. Passthrough: each side's Opus
// is decoded by the other side only.
func newDelayModel(codec string, callerLoop, pbxLoop [][]byte, callerPCM []int16) (*delayModel, error) {
	m := &delayModel{JitterBufferMs: ms(gwJitterFrames * frameDur)}
	var err error
	if m.bias, err = pcmDelay(callerPCM); err != nil {
		return nil, err
	}
	if codec == "opus" {
		if m.chainToPBX, err = chainDelay(callerLoop, "opus", "", transcode.EncoderOptions{}); err != nil {
			return nil, err
		}
		if m.chainToCaller, err = chainDelay(pbxLoop, "opus", "", transcode.EncoderOptions{}); err != nil {
			return nil, err
		}
	} else {
		if m.chainToPBX, err = chainDelay(callerLoop, "opus", codec, transcode.EncoderOptions{}); err != nil {
			return nil, err
		}
		if m.chainToCaller, err = chainDelay(pbxLoop, codec, "opus", gwOpusToMeta); err != nil {
			return nil, err
		}
	}
	m.BiasMs = ms(m.bias)
	m.CodecToPBXMs, m.CodecToCallerMs = ms(m.chainToPBX-m.bias), ms(m.chainToCaller-m.bias)
	m.Note = "including = measured - detector bias; added by ponte = measured - offline codec chain (same encoders, decoders and loop, no network) - media.jitter_frames x 20 ms"
	return m, nil
}
