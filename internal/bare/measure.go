package bare

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"

	"github.com/ponte-gw/ponte/internal/procstat"
)

// Audio pass criteria, as in ponte load: the expected tone in >= 98 % of the 20 ms windows
// of the hold, and at least 90 % of the windows arrived.
const (
	minToneRatio   = 0.98
	minWindowShare = 0.90
)

// runChild starts the child, places the calls, measures the hold and stops everything.
func runChild(ctx context.Context, o Options, m *media, tick int) (run *ChildRun, err error) {
	cp, err := startChildProc(o)
	if err != nil {
		return nil, err
	}
	var calls []*call
	defer func() {
		for _, c := range calls {
			c.close()
		}
		if serr := cp.stop(); serr != nil && run != nil {
			run.ChildExit = serr.Error()
		}
	}()
	if _, err := cp.wait(ctx, cp.ready, readyTimeout); err != nil {
		return nil, err
	}
	pid := cp.cmd.Process.Pid
	run = &ChildRun{Mode: "transcoding", Codec: m.pbxCodec, Calls: o.Calls}
	if m.pbxCodec == "opus" {
		run.Mode = "passthrough"
	}
	if run.ChildRSSIdleKiB, err = procstat.StatusKiB(pid, "VmRSS"); err != nil {
		return nil, fmt.Errorf("bare: child RSS: %w", err)
	}
	rss := procstat.StartRSSSampler(pid, rssEvery, run.ChildRSSIdleKiB)
	defer rss.Stop()

	ticksA, errA := procstat.CPUTicks(pid)
	tA := time.Now()
	var errs []string
	calls, errs, run.CallsFailed = setupCalls(ctx, o, cp, m)
	run.CallsOK, run.Errors = len(calls), errs
	ticksB, errB := procstat.CPUTicks(pid)
	run.SetupSeconds = time.Since(tA).Seconds()
	if len(calls) == 0 {
		return run, nil
	}
	if !sleepCtx(ctx, o.Settle) {
		return nil, ctx.Err()
	}

	s0 := cp.childStats(ctx)
	run.HostLoadAvg[0] = procstat.LoadAvg1()
	hostBusy0, steal0, herr0 := procstat.HostCPU()
	ticks0, err0 := procstat.CPUTicks(pid)
	self0, t0 := procstat.SelfCPU(), time.Now()
	if !sleepCtx(ctx, o.Hold) {
		return nil, ctx.Err()
	}
	ticks1, err1 := procstat.CPUTicks(pid)
	self1, t1 := procstat.SelfCPU(), time.Now()
	hostBusy1, steal1, herr1 := procstat.HostCPU()
	run.HostLoadAvg[1] = procstat.LoadAvg1()
	s1 := cp.childStats(ctx)
	if s0 != nil && s1 != nil {
		if pk := (s1.ToPBXIn + s1.ToWAIn) - (s0.ToPBXIn + s0.ToWAIn); pk > 0 {
			run.ChildAllocsPerPacket = float64(s1.Mallocs-s0.Mallocs) / float64(pk)
		}
	}
	if err := errors.Join(errA, errB, err0, err1); err != nil {
		return nil, fmt.Errorf("bare: child CPU: %w", err)
	}

	for _, c := range calls {
		c.stop()
	}
	sleepCtx(ctx, drainTime)
	run.Child = cp.childStats(ctx)
	run.ChildRSSPeakKiB = rss.Stop()
	run.ChildHWMKiB, _ = procstat.StatusKiB(pid, "VmHWM")

	ts := float64(tick)
	run.SetupCPUSeconds = float64(ticksB-ticksA) / ts
	run.SetupCPUPerCall = run.SetupCPUSeconds / float64(len(calls)+run.CallsFailed)
	run.MeasuredSeconds = t1.Sub(t0).Seconds()
	run.CallSeconds = float64(len(calls)) * run.MeasuredSeconds
	run.ChildCPUSeconds = float64(ticks1-ticks0) / ts
	run.CPUPerCallSecond = run.ChildCPUSeconds / run.CallSeconds
	run.CPUPercentOfCore = 100 * run.ChildCPUSeconds / run.MeasuredSeconds
	run.RSSPerCallKiB = float64(run.ChildRSSPeakKiB-run.ChildRSSIdleKiB) / float64(len(calls))
	run.LoadgenCPUSeconds = (self1 - self0).Seconds()
	if herr0 == nil && herr1 == nil {
		capacity := run.MeasuredSeconds * float64(runtime.NumCPU())
		run.HostBusyPercent = 100 * float64(hostBusy1-hostBusy0) / ts / capacity
		run.HostStealPercent = 100 * float64(steal1-steal0) / ts / capacity
	}

	expected := int(t1.Sub(t0) / frameDur)
	var due int64
	run.CallerToneRatioMin, run.PBXToneRatioMin = 1, 1
	for _, c := range calls {
		due += c.framesDue()
		run.ToPBX.Sent += c.waSent.Load()
		run.ToPBX.Received += c.pbxRecv.Load()
		run.ToWA.Sent += c.pbxSent.Load()
		run.ToWA.Received += c.waRecv.Load()
		wa, pbx := c.waHeard.Report(t0, t1), c.pbxHeard.Report(t0, t1)
		run.CallerToneRatioMin = min(run.CallerToneRatioMin, wa.ToneRatio)
		run.PBXToneRatioMin = min(run.PBXToneRatioMin, pbx.ToneRatio)
		if heard(wa, expected) {
			run.CallerHeardOK++
		}
		if heard(pbx, expected) {
			run.PBXHeardOK++
		}
	}
	run.ToPBX.finish()
	run.ToWA.finish()
	if due > 0 {
		run.SentPercent = 100 * float64(run.ToPBX.Sent+run.ToWA.Sent) / float64(2*due)
	}
	return run, nil
}

// heard applies the audio pass criteria to one side's report.
func heard(r audio.Report, expected int) bool {
	return r.ToneRatio >= minToneRatio && float64(r.Windows) >= minWindowShare*float64(expected)
}
