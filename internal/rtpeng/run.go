package rtpeng

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
	"sync"
	"time"

	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/transcode"
	"github.com/ponte-gw/ponte/webrtc"

	"github.com/ponte-gw/ponte/internal/procstat"
)

// ErrOptions wraps invalid options.
var ErrOptions = errors.New("rtpeng: invalid options")

// Options shape one run; the names and defaults follow `ponte load` (internal/loadgen) so the
// same flags mean the same load.
type Options struct {
	Rtpengine   string        // the rtpengine binary (default: "rtpengine" on PATH)
	Calls       int           // total calls (default 1)
	Concurrency int           // most calls in progress at once (default 1)
	Rate        float64       // new calls per second; 0 starts them as fast as Concurrency allows
	Hold        time.Duration // media time of each call (default 5 s)
	Codec       string        // the plain side's codec: PCMU (transcoded to Opus) or opus (passthrough)
	Settle      time.Duration // start of each hold left out of the audio check (default min(500 ms, hold/2))
	PortMin     int           // rtpengine's media port range starts here (default 30000)
	Dir         string        // rtpengine's pidfile and log; default a temp dir, removed unless something failed
	LogLevel    int           // rtpengine's --log-level (syslog 0..7, default 4: warnings)
	Logger      *slog.Logger  // the harness's own log (pion); default discarded
}

const (
	daemonGrace  = 10 * time.Second
	rssEvery     = 100 * time.Millisecond
	portsPerCall = 16 // rtpengine takes RTP/RTCP pairs on each side, with room for reuse lag
)

func (o *Options) normalize() error {
	if o.Rtpengine == "" {
		o.Rtpengine = "rtpengine"
	}
	if o.Calls == 0 {
		o.Calls = 1
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	if o.Hold == 0 {
		o.Hold = 5 * time.Second
	}
	if o.Calls < 0 || o.Concurrency < 0 || o.Rate < 0 || o.Hold < 0 || o.Settle < 0 || o.PortMin < 0 {
		return fmt.Errorf("%w: calls, concurrency, rate, hold, settle and port-min must not be negative", ErrOptions)
	}
	switch strings.ToLower(o.Codec) {
	case "", "pcmu":
		o.Codec = transcode.CodecPCMU
	case "pcma":
		o.Codec = transcode.CodecPCMA
	case "opus":
		o.Codec = transcode.CodecOpus
	default:
		return fmt.Errorf("%w: codec %q is not one of PCMU, PCMA, opus", ErrOptions, o.Codec)
	}
	if o.Settle == 0 {
		o.Settle = min(500*time.Millisecond, o.Hold/2)
	}
	if o.Settle >= o.Hold {
		return fmt.Errorf("%w: settle %v leaves nothing of hold %v to check", ErrOptions, o.Settle, o.Hold)
	}
	if o.PortMin == 0 {
		o.PortMin = 30000
	}
	if o.PortMin+o.Concurrency*portsPerCall+100 > 65535 {
		return fmt.Errorf("%w: port range from %d too small for %d concurrent calls", ErrOptions, o.PortMin, o.Concurrency)
	}
	if o.LogLevel == 0 {
		o.LogLevel = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run starts rtpengine, places the calls through it and reports. The error is for a run that
// could not take place (bad options, rtpengine missing or not starting); failed calls are in
// the report. rtpengine is stopped (by its PID) before Run returns.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(o.Rtpengine)
	if err != nil {
		return nil, fmt.Errorf("rtpeng: %w (Debian: apt-get install rtpengine-daemon)", err)
	}
	dir, keepDir := o.Dir, o.Dir != ""
	if dir == "" {
		dir, err = os.MkdirTemp("", "ponte-rtpe-")
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
	opusLoop, err := encodeLoop(transcode.CodecOpus, webrtcHz)
	if err != nil {
		return nil, err
	}
	plainLoop, err := encodeLoop(o.Codec, plainHz)
	if err != nil {
		return nil, err
	}
	ngPort, err := scenario.FreeUDP()
	if err != nil {
		return nil, err
	}
	ng, err := Dial("127.0.0.1:" + strconv.Itoa(ngPort))
	if err != nil {
		return nil, err
	}
	defer ng.Close()
	d, err := startDaemon(ctx, daemonConf{
		Bin: bin, Dir: dir, NGPort: ngPort, PortMin: o.PortMin,
		PortMax: o.PortMin + o.Concurrency*portsPerCall + 100, LogLevel: o.LogLevel,
	}, ng)
	if err != nil {
		keepDir = true
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = d.stop(daemonGrace)
		}
	}()
	pid := d.pid()
	if fp, err := d.pidFromFile(); err == nil && fp != pid {
		return nil, fmt.Errorf("rtpeng: pidfile says %d, the child is %d: rtpengine forked", fp, pid)
	}

	rep = &Report{
		Gateway: "rtpengine", GatewayVersion: version(ctx, bin), Codec: o.Codec, Transcoding: o.Codec != transcode.CodecOpus,
		Calls: o.Calls, Concurrency: o.Concurrency, Rate: o.Rate, Hold: o.Hold.String(), Settle: o.Settle.String(),
		CPUs: runtime.NumCPU(), ClockTick: procstat.ClockTick(ctx), GatewayPID: pid,
	}
	if rep.GatewayRSSIdleKiB, err = procstat.StatusKiB(pid, "VmRSS"); err != nil {
		return nil, fmt.Errorf("rtpeng: rtpengine RSS: %w", err)
	}
	rss := procstat.StartRSSSampler(pid, rssEvery, rep.GatewayRSSIdleKiB)
	env := &callEnv{
		o: &o, ng: ng, runID: fmt.Sprintf("ponte-load-%d-%d", os.Getpid(), time.Now().UnixNano()),
		opusLoop: opusLoop, plainLoop: plainLoop, log: webrtc.NewPionLoggerFactory(o.Logger),
	}

	rep.HostLoadAvg[0] = procstat.LoadAvg1()
	hostBusy0, steal0, herr := procstat.HostCPU()
	ticks0, cerr := procstat.CPUTicks(pid)
	self0 := procstat.SelfCPU()
	t0 := time.Now()
	rep.Results = placeCalls(ctx, env)
	ticks1, cerr1 := procstat.CPUTicks(pid)
	self1 := procstat.SelfCPU()
	t1 := time.Now()
	hostBusy1, steal1, herr1 := procstat.HostCPU()
	rep.HostLoadAvg[1] = procstat.LoadAvg1()
	rep.GatewayRSSPeakKiB = rss.Stop()
	rep.GatewayHWMKiB, _ = procstat.StatusKiB(pid, "VmHWM")
	if err := errors.Join(cerr, cerr1); err != nil {
		keepDir = true
		return nil, fmt.Errorf("rtpeng: rtpengine CPU: %w (log: %s)", err, d.logPath)
	}
	rep.GatewayCPUSeconds = float64(ticks1-ticks0) / float64(rep.ClockTick)
	rep.LoadgenCPUSeconds = (self1 - self0).Seconds()
	rep.MeasuredSeconds = t1.Sub(t0).Seconds()
	if rep.MeasuredSeconds > 0 {
		rep.GatewayCPUPercentAvg = 100 * rep.GatewayCPUSeconds / rep.MeasuredSeconds
	}
	if herr == nil && herr1 == nil && rep.MeasuredSeconds > 0 {
		capacity := rep.MeasuredSeconds * float64(rep.CPUs)
		busy := float64(hostBusy1-hostBusy0) / float64(rep.ClockTick)
		rep.HostBusyPercent = 100 * busy / capacity
		rep.HostStealPercent = 100 * float64(steal1-steal0) / float64(rep.ClockTick) / capacity
		rep.OtherCPUSeconds = max(0, busy-rep.GatewayCPUSeconds-rep.LoadgenCPUSeconds)
	}
	rep.total() // after the RSS figures: it derives the per-call memory from them

	stopped = true
	if err := d.stop(daemonGrace); err != nil {
		rep.GatewayExit = err.Error()
	}
	rep.QueueOverflows = queueOverflows(d.logPath)
	if !processGone(pid) {
		rep.GatewayExit = strings.TrimPrefix(rep.GatewayExit+"; ", "; ") + fmt.Sprintf("process %d still exists after stop", pid)
	}
	if rep.Failed > 0 || rep.AudioOK < rep.Calls || rep.GatewayExit != "" || rep.QueueOverflows > 0 {
		rep.GatewayLog = d.logPath
	}
	return rep, nil
}

// placeCalls starts the calls, the i-th not before i/Rate seconds after the first and only
// while fewer than Concurrency are in progress (as `ponte load` does), and waits for all.
func placeCalls(ctx context.Context, env *callEnv) []CallResult {
	o := env.o
	res := make([]CallResult, o.Calls)
	for i := range res {
		res[i] = CallResult{Index: i, Err: ErrNotStarted.Error(), SetupMs: -1}
	}
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
schedule:
	for i := range res {
		if o.Rate > 0 {
			t := time.NewTimer(time.Until(start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))))
			select {
			case <-ctx.Done():
				t.Stop()
				break schedule
			case <-t.C:
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break schedule
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res[i] = env.run(ctx, i)
		}()
	}
	wg.Wait()
	return res
}
