package rtpeng

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pion/sdp/v3"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

// Tones and levels of the run, as in `ponte load`: the WebRTC (WhatsApp) side speaks 440 Hz,
// the plain RTP (PBX) side 1000 Hz, both at -12 dBFS.
const (
	webrtcHz  = 440
	plainHz   = 1000
	toneDBFS  = -12
	frameDur  = 20 * time.Millisecond
	loopLen   = 50 // frames: 1 s, a whole number of periods of both tones, so the loop is seamless
	pcmRate   = 8000
	frameSamp = pcmRate / 50
)

// callerHeardDBFS is the level the WebRTC side should hear the plain side's tone at.
// Transcoding, rtpengine encodes Opus in stereo (TOC s=1) and its resampler (ffmpeg's
// libswresample) upmixes mono at the centre-mix level of -3 dB (M_SQRT1_2) per channel, so
// the decoded tone is 3 dB below what was sent; the check expects that level, with the usual
// ±3 dB, rather than failing rtpengine on a loudness convention.
func callerHeardDBFS(codec string) float64 {
	if codec != transcode.CodecOpus {
		return toneDBFS - 3
	}
	return toneDBFS
}

// Audio pass criteria, the same as `ponte load` (internal/loadgen): the expected tone in
// >= 98 % of the 20 ms windows after the settle time, and >= 90 % of the windows arrived.
const (
	minToneRatio   = 0.98
	minWindowShare = 0.90
)

// loop is a tone encoded once, replayed frame after frame: the load generator's own cost per
// packet stays a copy, so its CPU does not crowd out the gateway under test.
type loop struct {
	frames [][]byte
	step   uint32 // RTP timestamp per frame: 960 for Opus (48 kHz clock, RFC 7587 §4.1), 160 for G.711
}

// encodeLoop encodes loopLen frames of a hz tone at toneDBFS with codec (Opus at complexity 5,
// the rate `ponte load`'s simulators use).
func encodeLoop(codec string, hz float64) (*loop, error) {
	enc, err := transcode.NewEncoder(codec, pcmRate, transcode.EncoderOptions{Complexity: 5})
	if err != nil {
		return nil, err
	}
	tone := transcode.NewToneGen(hz, pcmRate, transcode.AmpForDBFS(toneDBFS))
	pcm := make([]int16, frameSamp)
	l := &loop{step: transcode.TimestampStep(codec, frameDur), frames: make([][]byte, loopLen)}
	out := make([]byte, 1500)
	// Two rounds, the second kept: the encoder state at the loop's start is then the one its
	// end leaves, so the replayed frames join as one continuous stream (no glitch at the wrap).
	for range 2 {
		for i := range loopLen {
			tone.Fill(pcm)
			n, err := enc.Encode(pcm, out)
			if err != nil {
				return nil, fmt.Errorf("rtpeng: encode %s: %w", codec, err)
			}
			l.frames[i] = append(l.frames[i][:0], out[:n]...)
		}
	}
	return l, nil
}

// AudioCheck is what one side heard during the hold, after the settle time (the same fields
// and JSON names as internal/loadgen.AudioCheck).
type AudioCheck struct {
	Windows     int     `json:"windows"`
	Expected    int     `json:"expected_windows"`
	ToneWindows int     `json:"tone_windows"`
	Ratio       float64 `json:"ratio"`
	MeanDBFS    float64 `json:"mean_dbfs"`
	MaxGapMs    float64 `json:"max_gap_ms"`
	Pass        bool    `json:"pass"`
}

func check(a *audio.Analyzer, from, to time.Time) AudioCheck {
	rp := a.Report(from, to)
	exp := int(to.Sub(from) / audio.WindowDuration)
	return AudioCheck{
		Windows: rp.Windows, Expected: exp, ToneWindows: rp.ToneWindows, Ratio: rp.ToneRatio,
		MeanDBFS: math.Round(rp.MeanDBFS*10) / 10, MaxGapMs: ms(rp.MaxGap),
		Pass: rp.ToneRatio >= minToneRatio && float64(rp.Windows) >= minWindowShare*float64(exp),
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// ErrSDP wraps SDP that the harness cannot use.
var ErrSDP = errors.New("rtpeng: unusable SDP")

// plainOffer is the plain RTP side's SDP offer (RFC 4566, RFC 3264): PCMU/8000 at PT 0
// (RFC 3551 §6), or Opus at PT 111 (RFC 7587 §7) for passthrough; rtcp-mux (RFC 5761) keeps
// rtpengine's RTCP on the one socket, where the reader tells it apart by its PT.
func plainOffer(port int, codec string, sessID uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=- %d 1 IN IP4 127.0.0.1\r\ns=ponte-load\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n", sessID)
	if codec == transcode.CodecOpus {
		fmt.Fprintf(&b, "m=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n", port)
	} else {
		fmt.Fprintf(&b, "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", port)
	}
	b.WriteString("a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n")
	return b.String()
}

// withBundle adds "a=group:BUNDLE <mid>" (RFC 9143) to an offer that has a mid but no BUNDLE
// group: rtpengine 10.5 sends none, and pion rejects the m-line (port 0) of an offer without
// one under max-bundle. An offer that has a group is returned as it is.
func withBundle(offer string) (string, error) {
	if strings.Contains(offer, "a=group:BUNDLE") {
		return offer, nil
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return "", fmt.Errorf("%w: %v", ErrSDP, err)
	}
	if len(sd.MediaDescriptions) != 1 {
		return "", fmt.Errorf("%w: %d m-lines, want 1", ErrSDP, len(sd.MediaDescriptions))
	}
	mid, ok := sd.MediaDescriptions[0].Attribute("mid")
	if !ok || mid == "" {
		return "", fmt.Errorf("%w: no a=mid to bundle", ErrSDP)
	}
	i := strings.Index(offer, "\nm=")
	if i < 0 {
		return "", fmt.Errorf("%w: no m-line", ErrSDP)
	}
	eol := "\n"
	if i > 0 && offer[i-1] == '\r' {
		eol = "\r\n"
	}
	return offer[:i+1] + "a=group:BUNDLE " + mid + eol + offer[i+1:], nil
}

// remoteMedia is where, and with which payload type, the answerer wants the plain side's RTP.
type remoteMedia struct {
	Addr string // ip:port
	PT   uint8  // first format of the m-line
}

// parseAnswer reads the address, port and first payload type of the single audio m-line of
// rtpengine's answer to the plain side. Only loopback addresses are accepted: the harness
// must never send media off the machine.
func parseAnswer(s string) (remoteMedia, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(s); err != nil {
		return remoteMedia{}, fmt.Errorf("%w: %v", ErrSDP, err)
	}
	if len(sd.MediaDescriptions) != 1 {
		return remoteMedia{}, fmt.Errorf("%w: %d m-lines, want 1", ErrSDP, len(sd.MediaDescriptions))
	}
	md := sd.MediaDescriptions[0]
	ci := sd.ConnectionInformation
	if md.ConnectionInformation != nil {
		ci = md.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return remoteMedia{}, fmt.Errorf("%w: no c= line", ErrSDP)
	}
	ip := ci.Address.Address
	if !strings.HasPrefix(ip, "127.") {
		return remoteMedia{}, fmt.Errorf("%w: media address %s is not loopback", ErrSDP, ip)
	}
	port := md.MediaName.Port.Value
	if port <= 0 || port > 65535 {
		return remoteMedia{}, fmt.Errorf("%w: port %d", ErrSDP, port)
	}
	if len(md.MediaName.Formats) == 0 {
		return remoteMedia{}, fmt.Errorf("%w: m-line without formats", ErrSDP)
	}
	var pt int
	if _, err := fmt.Sscanf(md.MediaName.Formats[0], "%d", &pt); err != nil || pt < 0 || pt > 127 {
		return remoteMedia{}, fmt.Errorf("%w: payload type %q", ErrSDP, md.MediaName.Formats[0])
	}
	return remoteMedia{Addr: fmt.Sprintf("%s:%d", ip, port), PT: uint8(pt)}, nil
}

// pionAnswerForRtpengine gives pion's answer a real connection address. pion writes
// "c=IN IP4 0.0.0.0" and port 9 (RFC 8839 §4.2.1.3: the address comes from the ICE
// candidates), but rtpengine 10.5 reads 0.0.0.0 as the RFC 2543 hold convention and answers
// the plain side with c=0.0.0.0 and a=sendonly. The socket's own loopback address and port are
// the host candidate anyway.
func pionAnswerForRtpengine(answer string, port int) string {
	answer = strings.ReplaceAll(answer, "c=IN IP4 0.0.0.0", "c=IN IP4 127.0.0.1")
	return strings.Replace(answer, "m=audio 9 ", fmt.Sprintf("m=audio %d ", port), 1)
}
