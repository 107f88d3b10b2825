package loadgen

import (
	"context"
	"time"

	"github.com/ponte-gw/ponte/metrics"
)

// gatewayLegs waits (up to 5 s) until the gateway has no call left, since it adds a call's
// packet counters when the call ends, and scrapes /metrics; nil if it cannot.
func gatewayLegs(ctx context.Context, admin string) samples {
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := scrape(ctx, admin)
		if err != nil {
			return nil
		}
		if n, _ := m.sum("ponte_calls_active"); n == 0 || time.Now().After(deadline) {
			return m
		}
		select {
		case <-ctx.Done():
			return m
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lossPass is issue 7's loss criterion: under 0.1 % each way.
const lossPass = 0.1

// fillMedia totals loss and delay per direction and the per call figures.
func (r *runner) fillMedia(rep *Report, gw samples) {
	if rep.CPUPerCallSecond > 0 {
		rep.CallsPerCore = 1 / rep.CPUPerCallSecond
	}
	if rep.PeakConcurrent > 0 {
		rep.RSSPerCallKiB = float64(rep.GatewayRSSPeakKiB-rep.GatewayRSSIdleKiB) / float64(rep.PeakConcurrent)
	}
	if rep.GoroutineCalls > 0 {
		rep.GoroutinesPerCall = float64(rep.GoroutinesAtPeak-rep.GoroutinesIdle) / float64(rep.GoroutineCalls)
	}
	rep.LossToPBX = lossTotal(rep.Results, func(c *CallResult) FlowResult { return c.FlowToPBX }, gw, metrics.LegWhatsApp)
	rep.LossToCaller = lossTotal(rep.Results, func(c *CallResult) FlowResult { return c.FlowToCaller }, gw, metrics.LegSIP)
	if !rep.Media {
		return
	}
	rep.LossPass = rep.LossToPBX.Sent > 0 && rep.LossToCaller.Sent > 0 &&
		rep.LossToPBX.LossPercent < lossPass && rep.LossToCaller.LossPercent < lossPass
	m := rep.DelayModel
	if m == nil {
		return
	}
	jb := gwJitterFrames * frameDur
	delays := func(get func(*CallResult) FlowResult, chain time.Duration) DelaySummary {
		var inc, add []time.Duration
		var ds DelaySummary
		for i := range rep.Results {
			f := get(&rep.Results[i])
			ds.Unmatched += f.Unmatched
			for _, d := range f.delays {
				inc = append(inc, d-m.bias)
				add = append(add, d-chain-jb)
			}
		}
		ds.Including, ds.Added = summarize(inc), summarize(add)
		return ds
	}
	rep.DelayToPBX = delays(func(c *CallResult) FlowResult { return c.FlowToPBX }, m.chainToPBX)
	rep.DelayToCaller = delays(func(c *CallResult) FlowResult { return c.FlowToCaller }, m.chainToCaller)
}

// lossTotal sums a direction over the calls. The gateway's counters cover every call it
// saw, failed ones included; source is its leg the direction enters by.
func lossTotal(res []CallResult, get func(*CallResult) FlowResult, gw samples, source string) LossSummary {
	var l LossSummary
	for i := range res {
		f := get(&res[i])
		l.Sent += f.Sent
		l.Received += f.Received
		l.SeqLost += f.SeqLost
	}
	l.GatewayIn, l.GatewayInLost = -1, -1
	if in, ok := gw.sum("ponte_rtp_packets_total", `leg="`+source+`"`, `direction="in"`); ok {
		l.GatewayIn = int(in)
	}
	if lost, ok := gw.sum("ponte_rtp_lost_packets_total", `leg="`+source+`"`); ok {
		l.GatewayInLost = int(lost)
	}
	if l.Sent > 0 {
		l.LossPercent = 100 * float64(max(0, l.GatewayInLost)+l.SeqLost) / float64(l.Sent)
	}
	return l
}
