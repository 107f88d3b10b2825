package bare

import (
	"fmt"
	"runtime"
	"time"

	"github.com/ponte-gw/ponte/transcode"
)

// CodecCost is the codec-only cost of transcoding: the same frames the callers and PBX
// endpoints send, decoded and re-encoded in-process with the relay's codec settings, with
// nothing else around them (no sockets, no SRTP, no goroutine hand-off).
type CodecCost struct {
	CallSeconds      float64 `json:"call_seconds"`                // call-seconds of audio processed (50 frames each way per second)
	CPUSeconds       float64 `json:"cpu_seconds"`                 // thread CPU for both directions
	CPUPerCallSecond float64 `json:"cpu_seconds_per_call_second"` // CPUSeconds / CallSeconds
	// Per 20 ms frame: Opus decode to 8 kHz + G.711 encode (toward the PBX), and G.711 decode +
	// Opus encode from 8 kHz (toward WhatsApp).
	ToPBXUsPerFrame float64 `json:"to_pbx_us_per_frame"`
	ToWAUsPerFrame  float64 `json:"to_wa_us_per_frame"`
}

// codecOnly runs callSeconds worth of frames through the transcoding codecs on one locked OS
// thread and measures that thread's CPU time (getrusage RUSAGE_THREAD): libopus runs on the
// calling thread through cgo, so it is all counted, and nothing else is.
func codecOnly(m *media, callSeconds float64, complexity, bitrate int) (*CodecCost, error) {
	frames := int(callSeconds * float64(time.Second/frameDur))
	if frames < 1 {
		frames = 1
	}
	opusDec, err := transcode.NewDecoder("opus", pcmRate)
	if err != nil {
		return nil, err
	}
	g711Enc, err := transcode.NewEncoder(m.pbxCodec, pcmRate, transcode.EncoderOptions{})
	if err != nil {
		return nil, err
	}
	g711Dec, err := transcode.NewDecoder(m.pbxCodec, pcmRate)
	if err != nil {
		return nil, err
	}
	opusEnc, err := transcode.NewEncoder("opus", pcmRate, transcode.EncoderOptions{
		Complexity: complexity, Bitrate: bitrate, FEC: true, PacketLossPerc: 5,
	})
	if err != nil {
		return nil, err
	}
	pcm := make([]int16, maxPCM)
	out := make([]byte, mtu)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := threadCPU()
	for i := range frames {
		k, err := opusDec.Decode(m.waOpus[i%loopFrames], pcm)
		if err == nil {
			_, err = g711Enc.Encode(pcm[:k], out)
		}
		if err != nil {
			return nil, fmt.Errorf("bare: codec-only to PBX: %w", err)
		}
	}
	t1 := threadCPU()
	for i := range frames {
		k, err := g711Dec.Decode(m.pbx[i%loopFrames], pcm)
		if err == nil {
			_, err = opusEnc.Encode(pcm[:k], out)
		}
		if err != nil {
			return nil, fmt.Errorf("bare: codec-only to WA: %w", err)
		}
	}
	t2 := threadCPU()
	cs := float64(frames) / float64(time.Second/frameDur)
	cc := &CodecCost{
		CallSeconds:     cs,
		CPUSeconds:      (t2 - t0).Seconds(),
		ToPBXUsPerFrame: float64((t1-t0)/time.Nanosecond) / 1e3 / float64(frames),
		ToWAUsPerFrame:  float64((t2-t1)/time.Nanosecond) / 1e3 / float64(frames),
	}
	cc.CPUPerCallSecond = cc.CPUSeconds / cs
	return cc, nil
}
