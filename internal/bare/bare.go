// Package bare measures the bare cost of the parts of a ponte call (issue 7): what any relay
// between a WhatsApp WebRTC leg and a plain RTP leg must spend, so that ponte's own CPU per
// call can be compared with it in the same run.
//
// Three figures, each in CPU-seconds per call-second:
//   - codec only: the transcoding codecs (libopus decode to 8 kHz + G.711 encode, G.711
//     decode + libopus encode at ponte's settings) run in-process on the same frames;
//   - bare legs: `ponte bare-child` relaying Opus unchanged between a pion peer connection
//     (DTLS-SRTP, ICE, ponte's pion settings) and a plain UDP socket;
//   - bare transcoding relay: the same child decoding and re-encoding as it relays.
//
// The child is its own process so that its CPU (utime+stime from /proc/<pid>/stat, the method
// of `ponte load`) excludes the load generator's. The parent runs N simulated WhatsApp callers
// (real ICE and DTLS-SRTP, pre-encoded Opus every 20 ms) and N plain RTP endpoints
// (pre-encoded G.711 or Opus every 20 ms), counts the packets both ways and checks the tones.
package bare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/internal/procstat"
)

// ErrOptions wraps invalid options.
var ErrOptions = errors.New("bare: invalid options")

// Options shape one measurement.
type Options struct {
	Binary string        // the ponte binary, re-executed as `Binary bare-child` (required)
	Calls  int           // concurrent calls (default 10)
	Hold   time.Duration // measured talk time, all calls up (default 10 s)
	Codec  string        // the plain side's codec: PCMU, PCMA (transcoding) or opus (passthrough)
	// Legs also measures the bare legs (child in passthrough mode, same calls and hold) after
	// a transcoding run, so that one run reports every part. Ignored for opus.
	Legs bool
	// GatewayCPUs and LoadgenCPUs pin the child and this process (taskset -c list syntax,
	// e.g. "1" and "0"); empty: no pinning.
	GatewayCPUs, LoadgenCPUs string
	// CodecSeconds is how many call-seconds the codec-only measurement processes
	// (default Calls*Hold, at most 60 s: the figure is per call-second either way).
	CodecSeconds float64
	// Settle runs after the last call connected and before the measured hold (default 500 ms):
	// set-up work (DTLS, first decodes) stays out of the hold's CPU.
	Settle time.Duration
	// SetupParallel bounds calls being set up at once (default 10).
	SetupParallel int
	// ChildArgs are extra arguments after `bare-child` (tests use them).
	ChildArgs []string
	Logger    *slog.Logger // pion's logs of the parent (default discarded)
}

// Opus settings toward WhatsApp: ponte's defaults (config media.opus_complexity,
// media.opus_bitrate).
const (
	opusComplexity = 5
	opusBitrate    = 24000
	maxCodecSecs   = 60
)

func (o *Options) normalize() error {
	if o.Binary == "" {
		return fmt.Errorf("%w: no binary", ErrOptions)
	}
	if o.Calls == 0 {
		o.Calls = 10
	}
	if o.Hold == 0 {
		o.Hold = 10 * time.Second
	}
	if o.Calls < 0 || o.Hold < 0 || o.Settle < 0 || o.CodecSeconds < 0 || o.SetupParallel < 0 {
		return fmt.Errorf("%w: calls, hold, settle, codec seconds and setup parallelism must not be negative", ErrOptions)
	}
	c, err := normCodec(o.Codec)
	if o.Codec == "" {
		c, err = "PCMU", nil
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrOptions, err)
	}
	o.Codec = c
	if o.CodecSeconds == 0 {
		o.CodecSeconds = min(float64(o.Calls)*o.Hold.Seconds(), maxCodecSecs)
	}
	if o.Settle == 0 {
		o.Settle = 500 * time.Millisecond
	}
	if o.SetupParallel == 0 {
		o.SetupParallel = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run measures the parts: the child relay in the requested mode, the bare legs if asked, and
// the codec-only cost when transcoding. The error is for a run that could not take place;
// failed calls and lost packets are in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	rep := &Report{
		Calls: o.Calls, Hold: o.Hold.String(), Codec: o.Codec, Transcoding: o.Codec != "opus",
		CPUs: runtime.NumCPU(), ClockTick: procstat.ClockTick(ctx), GatewayCPUs: o.GatewayCPUs, LoadgenCPUs: o.LoadgenCPUs,
	}
	if o.LoadgenCPUs != "" {
		if err := pinSelf(ctx, o.LoadgenCPUs); err != nil {
			return nil, err
		}
	}
	m, err := newMedia(o.Codec)
	if err != nil {
		return nil, err
	}
	if rep.Relay, err = runChild(ctx, o, m, rep.ClockTick); err != nil {
		return nil, err
	}
	if !rep.Transcoding {
		return rep, nil
	}
	if o.Legs {
		pm, err := newMedia("opus")
		if err != nil {
			return nil, err
		}
		if rep.Legs, err = runChild(ctx, o, pm, rep.ClockTick); err != nil {
			return nil, err
		}
	}
	if rep.CodecOnly, err = codecOnly(m, o.CodecSeconds, opusComplexity, opusBitrate); err != nil {
		return nil, err
	}
	if rep.Legs != nil {
		rep.BarePartsCPUPerCallSecond = rep.CodecOnly.CPUPerCallSecond + rep.Legs.CPUPerCallSecond
	}
	return rep, nil
}

// pinSelf pins every thread of this process to cpus (taskset -a -p -c); threads created later
// inherit the mask from the thread that clones them.
func pinSelf(ctx context.Context, cpus string) error {
	out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: taskset -c %s: %v: %s", ErrOptions, cpus, err, strings.TrimSpace(string(out)))
	}
	return nil
}
