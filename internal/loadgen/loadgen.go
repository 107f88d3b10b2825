// Package loadgen is `ponte load`: it runs the WhatsApp (Meta) simulator and the PBX
// simulator in its own process, starts `ponte serve` as a child process pointed at them, places
// calls through it and measures the gateway from outside: signalling latencies from the
// simulators' own timestamps, audio both ways with tone analysis, and the child's CPU and
// memory from /proc. The load generator's CPU (WebRTC callers, Opus, PBX media) is therefore
// never counted as the gateway's.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"

	"github.com/ponte-gw/ponte/internal/procstat"
)

// ErrOptions wraps invalid options.
var ErrOptions = errors.New("loadgen: invalid options")

// Options shape one run.
type Options struct {
	Ponte       string        // the ponte binary to run as `ponte serve` (required)
	Calls       int           // total calls (default 1; with Duration, 0 is no limit)
	Duration    time.Duration // if set, no call starts this long after the first
	Concurrency int           // most calls in progress at once (default 1)
	Rate        float64       // new calls per second; 0 starts them as fast as Concurrency allows
	Hold        time.Duration // talk time of each call, from accept to the caller's hang-up (default 5 s)
	Codec       string        // the PBX's (and trunk's) only codec: PCMU, PCMA or opus (default PCMU)
	// Settle is the start of each hold left out of the audio check (codec and jitter buffer
	// start-up). Default: 500 ms, at most half the hold.
	Settle   time.Duration
	Dir      string       // where the config and the gateway log go; default a temp dir, removed unless something failed
	LogLevel string       // the gateway's log level (default warn)
	Logger   *slog.Logger // the simulators' log (default discarded)
	// Ring is how long the PBX rings before it answers (default 1 s; negative: at once). A
	// real PBX rings a person or a callbot's queue; a PBX answering within ~200 ms of
	// pre_accept answers before ICE and DTLS have finished, and then PBX 200 -> accept and
	// the first words toward the caller wait for them (pion checks ICE pairs every 200 ms).
	Ring time.Duration
	// NoMedia is a signalling-only run: callers are real pion peers (ICE, DTLS) that send
	// nothing, the PBX sends nothing, no audio is checked; the gateway still plays silence.
	NoMedia bool
	// GatewayCPUs and LoadgenCPUs pin the gateway child and this process (taskset -c
	// syntax, e.g. "0" and "1"); empty: not pinned.
	GatewayCPUs, LoadgenCPUs string
	// StoreFile keeps the gateway's call records in a SQLite file in Dir, as in production,
	// instead of the in-memory store (which holds every record in the gateway's RSS).
	StoreFile bool
	// Callers is how many distinct WhatsApp numbers call (cycled); 0: a new one per call.
	// The gateway remembers each caller's agent for the sticky-agent window (at least an
	// hour), so a soak with a new number per call grows that memory for its whole run.
	Callers int
	// Soak, if set, runs calls continuously for Duration with quiescent baselines and samples
	// the gateway's RSS, goroutines and fds over time (soak.go); Report.Soak has the verdict.
	Soak *SoakOptions
}

// Audio pass criteria (brief: the expected tone in >= 98 % of windows). The window count is
// checked too, so that audio which stopped arriving altogether cannot pass on a few windows.
const (
	minToneRatio   = 0.98
	minWindowShare = 0.90
	setupTimeout   = 35 * time.Second // > accept_deadline (30 s): the gateway gives up first
	endTimeout     = 10 * time.Second
	childGrace     = 10 * time.Second
	rssEvery       = 100 * time.Millisecond
)

func (o *Options) normalize() error {
	if o.Ponte == "" {
		return fmt.Errorf("%w: no ponte binary", ErrOptions)
	}
	if o.Calls == 0 && o.Duration == 0 {
		o.Calls = 1
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	if o.Hold == 0 {
		o.Hold = 5 * time.Second
	}
	if o.Calls < 0 || o.Callers < 0 || o.Concurrency < 0 || o.Rate < 0 || o.Hold < 0 || o.Settle < 0 || o.Duration < 0 {
		return fmt.Errorf("%w: calls, concurrency, rate, hold, settle and duration must not be negative", ErrOptions)
	}
	for _, l := range []string{o.GatewayCPUs, o.LoadgenCPUs} {
		if _, err := parseCPUList(l); err != nil {
			return fmt.Errorf("%w: %w", ErrOptions, err)
		}
	}
	switch strings.ToLower(o.Codec) {
	case "", "pcmu":
		o.Codec = "PCMU"
	case "pcma":
		o.Codec = "PCMA"
	case "opus":
		o.Codec = "opus"
	default:
		return fmt.Errorf("%w: codec %q is not one of PCMU, PCMA, opus", ErrOptions, o.Codec)
	}
	if o.Ring == 0 {
		o.Ring = time.Second
	}
	if o.Settle == 0 {
		o.Settle = min(500*time.Millisecond, o.Hold/2)
	}
	if o.Settle >= o.Hold {
		return fmt.Errorf("%w: settle %v leaves nothing of hold %v to check", ErrOptions, o.Settle, o.Hold)
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.Soak != nil {
		o.Soak.normalize(o)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// storeDSN is the records file in dir when a file store is asked for.
func storeDSN(file bool, dir string) string {
	if !file {
		return ""
	}
	return filepath.Join(dir, "ponte.db")
}

// Run starts the simulators and the gateway, places the calls and reports. The error is for
// a run that could not take place (bad options, the gateway did not start); failed calls
// are in the report (Report.Failed).
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	// The temp dir goes away unless its gateway log explains a failure.
	dir, keepDir := o.Dir, o.Dir != ""
	if dir == "" {
		dir, err = os.MkdirTemp("", "ponte-load-")
	} else {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if !keepDir && (rep == nil || rep.GatewayLog == "") {
			_ = os.RemoveAll(dir)
		}
	}()

	public, err := scenario.FreeTCP()
	if err != nil {
		return nil, err
	}
	admin, err := scenario.FreeTCP()
	if err != nil {
		return nil, err
	}
	rtcPort, err := scenario.FreeUDP()
	if err != nil {
		return nil, err
	}
	gwCPUs, _ := parseCPUList(o.GatewayCPUs) // checked by normalize
	if lgCPUs, _ := parseCPUList(o.LoadgenCPUs); lgCPUs != nil {
		if err := pinSelf(lgCPUs); err != nil {
			return nil, fmt.Errorf("loadgen: pin the load generator: %w", err)
		}
	}
	r := &runner{o: o, match: newMatcher(), sides: &pbxSides{analyse: !o.NoMedia}}
	var model *delayModel
	pbxReplay := map[string][][]byte{}
	if !o.NoMedia {
		// Both voices are encoded once here and replayed by every call (issue 7: the
		// generator's own cost stays small).
		callerPCM, pbxPCM := loopPCM(callerHz), loopPCM(pbxHz)
		if r.callerLoop, err = encodeLoop("opus", callerPCM, callerOpus); err != nil {
			return nil, err
		}
		if pbxReplay[o.Codec], err = encodeLoop(o.Codec, pbxPCM, pbxOpts); err != nil {
			return nil, err
		}
		if model, err = newDelayModel(o.Codec, r.callerLoop, pbxReplay[o.Codec], callerPCM); err != nil {
			return nil, err
		}
		r.bias = model.bias
	}

	simCtx, stopSims := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSims()
	meta, err := wasim.Start(simCtx, wasim.Config{
		WebhookURL: "http://" + public + "/webhook", AppSecret: scenario.AppSecret, AccessToken: scenario.AccessToken,
		PhoneNumberID: scenario.PhoneNumberID, DisplayNumber: scenario.DisplayNumber, Logger: o.Logger.With("sim", "meta"),
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: meta simulator: %w", err)
	}
	defer meta.Close()
	pbxSim, err := pbx.Start(simCtx, pbx.Config{
		Listen: "127.0.0.1:0", Codecs: []string{o.Codec}, ExpectToneHz: callerHz, Logger: o.Logger.With("sim", "pbx"),
		Silent: o.NoMedia, Replay: pbxReplay, AnswerDelay: max(0, o.Ring),
		OnSent:  func(c *pbx.Call, n int, at time.Time) { r.sides.get(c).fromPBX.onSent(n, at) },
		OnRTP:   func(c *pbx.Call, h *rtp.Header, _ time.Time) { r.sides.get(c).toPBX.onRTP(h) },
		OnAudio: func(c *pbx.Call, pcm []int16, at time.Time) { r.sides.get(c).toPBX.onAudio(pcm, at) },
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: pbx simulator: %w", err)
	}
	defer pbxSim.Close()

	cfgPath, err := writeConfig(dir, gatewayConf{
		Public: public, Admin: admin, WebRTCPort: rtcPort, GraphURL: meta.GraphURL(),
		PBXAddr: pbxSim.Addr().String(), Codec: o.Codec, LogLevel: o.LogLevel,
		// A silent PBX (-media=false) must not trip the gateway's RTP timeout during a hold.
		RTPTimeout: max(60*time.Second, 2*o.Hold),
		StoreDSN:   storeDSN(o.StoreFile, dir),
		Pprof:      o.Soak != nil && o.Soak.HeapProfiles != "",
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: config: %w", err)
	}
	logPath := filepath.Join(dir, "ponte.log")
	ch, err := startChild(o.Ponte, cfgPath, logPath, gwCPUs)
	if err != nil {
		return nil, err
	}
	// The child stops before the simulators close (deferred later, runs earlier), so calls it
	// still holds end cleanly against live peers.
	childStopped := false
	defer func() {
		if !childStopped {
			_ = ch.stop(childGrace)
		}
	}()
	if err := ch.waitHealthy(ctx, admin, 15*time.Second); err != nil {
		keepDir = true
		return nil, fmt.Errorf("%w (log: %s)", err, logPath)
	}

	rep = &Report{
		Codec: o.Codec, Transcoding: o.Codec != "opus", Calls: o.Calls, Concurrency: o.Concurrency,
		Rate: o.Rate, Hold: o.Hold.String(), Settle: o.Settle.String(), CPUs: runtime.NumCPU(),
		ClockTick: procstat.ClockTick(ctx), Media: !o.NoMedia, DelayModel: model, Ring: max(0, o.Ring).String(),
		GatewayCPUList: allowedCPUs(strconv.Itoa(ch.pid())), LoadgenCPUList: allowedCPUs("self"),
	}
	if o.Duration > 0 {
		rep.DurationLimit = o.Duration.String()
	}
	pid := ch.pid()
	if rep.GatewayRSSIdleKiB, err = procstat.StatusKiB(pid, "VmRSS"); err != nil {
		return nil, fmt.Errorf("loadgen: gateway RSS: %w", err)
	}
	if m, err := scrape(ctx, admin); err == nil {
		g, _ := m.sum("go_goroutines")
		rep.GoroutinesIdle = int(g)
	}
	rss := procstat.StartRSSSampler(pid, rssEvery, rep.GatewayRSSIdleKiB)
	gors := startGoSampler(admin, &r.active)

	r.meta, r.pbx = meta, pbxSim
	dispCtx, stopDispatch := context.WithCancel(ctx)
	var dispWG sync.WaitGroup
	dispWG.Add(1)
	go func() { defer dispWG.Done(); r.match.dispatch(dispCtx, pbxSim) }()

	rep.HostLoadAvg[0] = procstat.LoadAvg1()
	hostBusy0, steal0, herr := procstat.HostCPU()
	ticks0, cerr := procstat.CPUTicks(pid)
	self0 := procstat.SelfCPU()
	t0 := time.Now()
	if o.Soak != nil {
		rep.Results, rep.Soak = r.soak(ctx, pid, admin)
	} else {
		rep.Results = r.placeCalls(ctx)
	}
	ticks1, cerr1 := procstat.CPUTicks(pid)
	self1 := procstat.SelfCPU()
	t1 := time.Now()
	hostBusy1, steal1, herr1 := procstat.HostCPU()
	rep.HostLoadAvg[1] = procstat.LoadAvg1()

	stopDispatch()
	dispWG.Wait()
	rep.GatewayRSSPeakKiB = rss.Stop()
	rep.GoroutineCalls, rep.GoroutinesAtPeak = gors.stop()
	rep.Calls = len(rep.Results)
	rep.PeakConcurrent = int(r.peak.Load())
	legs := gatewayLegs(ctx, admin)
	rep.GatewayHWMKiB, _ = procstat.StatusKiB(pid, "VmHWM")
	if err := errors.Join(cerr, cerr1); err != nil {
		keepDir = true
		return nil, fmt.Errorf("loadgen: gateway CPU: %w (log: %s)", err, logPath)
	}
	rep.GatewayCPUSeconds = float64(ticks1-ticks0) / float64(rep.ClockTick)
	rep.LoadgenCPUSeconds = (self1 - self0).Seconds()
	rep.MeasuredSeconds = t1.Sub(t0).Seconds()
	if rep.MeasuredSeconds > 0 {
		rep.GatewayCPUPercentAvg = 100 * rep.GatewayCPUSeconds / rep.MeasuredSeconds
	}
	// What the rest of the machine did meanwhile: other processes and, in a VM, the hypervisor
	// (steal) take CPU from both processes, which shows up as audio gaps and slow setups that
	// are not the gateway's doing.
	if herr == nil && herr1 == nil && rep.MeasuredSeconds > 0 {
		capacity := rep.MeasuredSeconds * float64(rep.CPUs)
		busy := float64(hostBusy1-hostBusy0) / float64(rep.ClockTick)
		rep.HostBusyPercent = 100 * busy / capacity
		rep.HostStealPercent = 100 * float64(steal1-steal0) / float64(rep.ClockTick) / capacity
		rep.OtherCPUSeconds = max(0, busy-rep.GatewayCPUSeconds-rep.LoadgenCPUSeconds)
	}
	r.fillFromSimulator(rep)
	r.fillMedia(rep, legs)

	childStopped = true
	if err := ch.stop(childGrace); err != nil {
		rep.GatewayExit = err.Error()
	}
	if rep.Failed > 0 || (rep.Media && rep.AudioOK < rep.Calls) || rep.GatewayExit != "" {
		rep.GatewayLog = logPath
	}
	return rep, nil
}

// fillFromSimulator computes the latencies from the simulators' records and the totals.
// webhook -> pre_accept runs from the connect webhook's send time (WebhookDelivery.At) to the
// arrival of the first pre_accept for the call id at the fake Graph API; PBX 200 -> accept from
// the PBX simulator sending its 200 to the arrival of the first accept.
func (r *runner) fillFromSimulator(rep *Report) {
	connect := map[string]time.Time{}
	for _, w := range r.meta.Webhooks() {
		if _, seen := connect[w.CallID]; w.Event == "connect" && !seen {
			connect[w.CallID] = w.At
		}
	}
	pre, acc := map[string]time.Time{}, map[string]time.Time{}
	for _, g := range r.meta.Requests() {
		var first map[string]time.Time
		switch g.Action {
		case "pre_accept":
			first = pre
		case "accept":
			first = acc
		default:
			continue
		}
		if _, seen := first[g.CallID]; !seen {
			first[g.CallID] = g.ReceivedAt
		}
	}
	var preLat, accLat []time.Duration
	for i := range rep.Results {
		c := &rep.Results[i]
		c.WebhookToPreAcceptMs, c.PBX200ToAcceptMs = -1, -1
		if at, ok := pre[c.WACID]; ok && !connect[c.WACID].IsZero() {
			d := at.Sub(connect[c.WACID])
			preLat = append(preLat, d)
			c.WebhookToPreAcceptMs = ms(d)
		}
		if at, ok := acc[c.WACID]; ok && !c.pbx200At.IsZero() {
			d := at.Sub(c.pbx200At)
			accLat = append(accLat, d)
			c.PBX200ToAcceptMs = ms(d)
		}
		if c.OK {
			rep.OK++
			rep.MediaSeconds += c.MediaSeconds
		} else {
			rep.Failed++
		}
		if c.OK && c.CallerHeard.Pass {
			rep.CallerHeardOK++
		}
		if c.OK && c.PBXHeard.Pass {
			rep.PBXHeardOK++
		}
		if c.OK && c.CallerHeard.Pass && c.PBXHeard.Pass {
			rep.AudioOK++
		}
	}
	rep.WebhookToPreAccept, rep.PBX200ToAccept = summarize(preLat), summarize(accLat)
	if rep.MediaSeconds > 0 {
		rep.CPUPerCallSecond = rep.GatewayCPUSeconds / rep.MediaSeconds
	}
}
