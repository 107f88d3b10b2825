package rtpeng

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Latency summarises one latency over the calls that have it (nearest-rank percentiles, as
// internal/loadgen).
type Latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// summarize: the p-th percentile of n sorted samples is sample ceil(p*n) (1-based).
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Latency{N: len(s), P50Ms: ms(rank(0.50)), P99Ms: ms(rank(0.99)), MaxMs: ms(s[len(s)-1])}
}

// Report is the outcome of a run. Fields that mean the same as in internal/loadgen.Report
// carry the same JSON names ("gateway" is rtpengine here), so one script can read both.
type Report struct {
	Gateway        string  `json:"gateway"` // "rtpengine"
	GatewayVersion string  `json:"gateway_version"`
	Codec          string  `json:"codec"`
	Transcoding    bool    `json:"transcoding"` // the plain side's codec is not Opus
	Calls          int     `json:"calls"`
	Concurrency    int     `json:"concurrency"`
	Rate           float64 `json:"rate_per_s"`
	Hold           string  `json:"hold"`
	Settle         string  `json:"audio_settle"`

	OK     int `json:"calls_ok"`
	Failed int `json:"calls_failed"`

	// ng offer sent -> the WebRTC side connected (ICE and DTLS done): rtpengine's share of call
	// setup. Not comparable with ponte's webhook -> pre_accept (there is no webhook here).
	Setup Latency `json:"setup_offer_to_connected"`

	CallerHeardOK int `json:"caller_heard_1000hz_ok"`
	PBXHeardOK    int `json:"pbx_heard_440hz_ok"`
	AudioOK       int `json:"audio_ok"`

	// Packets over all calls, per direction (caller = the WebRTC side, PBX = the plain side);
	// sent/received/loss_percent as in `ponte load`'s loss_to_caller and loss_to_pbx.
	ToCaller Direction `json:"loss_to_caller"`
	ToPBX    Direction `json:"loss_to_pbx"`
	// LossPass: both directions under 0.1 % (issue 7's loss criterion).
	LossPass bool `json:"loss_under_0_1_percent"`
	// RSSPerCallKiB is (peak - idle) / concurrency.
	RSSPerCallKiB float64 `json:"gateway_rss_per_call_kib"`

	GatewayPID           int     `json:"gateway_pid"`
	GatewayCPUSeconds    float64 `json:"gateway_cpu_seconds"`
	MediaSeconds         float64 `json:"media_call_seconds"`
	CPUPerCallSecond     float64 `json:"gateway_cpu_seconds_per_call_second"`
	CallsPerCore         float64 `json:"calls_per_core"` // 1 / CPUPerCallSecond: calls one fully used core carries
	GatewayCPUPercentAvg float64 `json:"gateway_cpu_percent_avg"`
	GatewayRSSIdleKiB    int64   `json:"gateway_rss_idle_kib"`
	GatewayRSSPeakKiB    int64   `json:"gateway_rss_peak_kib"`
	GatewayHWMKiB        int64   `json:"gateway_vmhwm_kib"`

	MeasuredSeconds   float64    `json:"measured_seconds"`
	LoadgenCPUSeconds float64    `json:"loadgen_cpu_seconds"`
	CPUs              int        `json:"cpus"`
	HostLoadAvg       [2]float64 `json:"host_loadavg_1m_before_after"`
	HostBusyPercent   float64    `json:"host_busy_percent"`
	HostStealPercent  float64    `json:"host_steal_percent"`
	OtherCPUSeconds   float64    `json:"other_cpu_seconds"`
	ClockTick         int        `json:"clk_tck"`
	// QueueOverflows counts rtpengine's own "UDP receive queue" errors in its log: its media
	// threads fell behind and it discarded packets (a starved rtpengine, not a harness fault).
	QueueOverflows int    `json:"rtpengine_queue_overflow_logs"`
	GatewayExit    string `json:"gateway_exit,omitempty"`
	GatewayLog     string `json:"gateway_log,omitempty"`

	Results []CallResult `json:"call_results"`
}

// total fills the counts, sums and ratios from Results and the CPU figures.
func (r *Report) total() {
	var setup []time.Duration
	for _, c := range r.Results {
		if c.SetupMs >= 0 {
			setup = append(setup, time.Duration(c.SetupMs*float64(time.Millisecond)))
		}
		r.ToCaller.Sent += c.ToCaller.Sent
		r.ToCaller.Received += c.ToCaller.Received
		r.ToPBX.Sent += c.ToPBX.Sent
		r.ToPBX.Received += c.ToPBX.Received
		r.ToCaller.SeqExpected += c.ToCaller.SeqExpected
		r.ToCaller.SeqLost += c.ToCaller.SeqLost
		r.ToPBX.SeqExpected += c.ToPBX.SeqExpected
		r.ToPBX.SeqLost += c.ToPBX.SeqLost
		if !c.OK {
			r.Failed++
			continue
		}
		r.OK++
		r.MediaSeconds += c.MediaSeconds
		if c.CallerHeard.Pass {
			r.CallerHeardOK++
		}
		if c.PBXHeard.Pass {
			r.PBXHeardOK++
		}
		if c.CallerHeard.Pass && c.PBXHeard.Pass {
			r.AudioOK++
		}
	}
	r.ToCaller.finish()
	r.ToPBX.finish()
	r.LossPass = r.ToCaller.Sent > 0 && r.ToPBX.Sent > 0 && r.ToCaller.LossPct < 0.1 && r.ToPBX.LossPct < 0.1
	if r.Concurrency > 0 {
		r.RSSPerCallKiB = float64(r.GatewayRSSPeakKiB-r.GatewayRSSIdleKiB) / float64(min(r.Concurrency, r.Calls))
	}
	r.Setup = summarize(setup)
	if r.MediaSeconds > 0 {
		r.CPUPerCallSecond = r.GatewayCPUSeconds / r.MediaSeconds
	}
	if r.CPUPerCallSecond > 0 {
		r.CallsPerCore = 1 / r.CPUPerCallSecond
	}
}

// WriteTable prints the report for a human.
func (r *Report) WriteTable(w io.Writer) {
	mode := "passthrough: Opus, DTLS-SRTP <-> RTP"
	if r.Transcoding {
		mode = "transcoding: WebRTC Opus <-> " + r.Codec
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("rtpengine %s load: %d calls, concurrency %d, rate %g/s, hold %s (%s)",
		r.GatewayVersion, r.Calls, r.Concurrency, r.Rate, r.Hold, mode)
	p("  %-24s ok %d   failed %d", "calls", r.OK, r.Failed)
	if r.Setup.N > 0 {
		p("  %-24s p50 %8.2f ms   p99 %8.2f ms   max %8.2f ms   (n=%d)", "offer -> connected",
			r.Setup.P50Ms, r.Setup.P99Ms, r.Setup.MaxMs, r.Setup.N)
	}
	p("  %-24s caller heard 1000 Hz %d/%d   PBX heard 440 Hz %d/%d   both %d/%d   (>= 98%% of 20 ms windows, first %s of each hold skipped)",
		"audio", r.CallerHeardOK, r.Calls, r.PBXHeardOK, r.Calls, r.AudioOK, r.Calls, r.Settle)
	p("  %-24s to caller %d/%d (loss %.3f %%, %d in sequence gaps)   to PBX %d/%d (loss %.3f %%, %d in sequence gaps)",
		"packets received/sent", r.ToCaller.Received, r.ToCaller.Sent, r.ToCaller.LossPct, r.ToCaller.SeqLost,
		r.ToPBX.Received, r.ToPBX.Sent, r.ToPBX.LossPct, r.ToPBX.SeqLost)
	p("  %-24s %.2f CPU-s over %.1f call-seconds of media = %.5f CPU-s per call-second (%.1f calls per core)",
		"rtpengine CPU", r.GatewayCPUSeconds, r.MediaSeconds, r.CPUPerCallSecond, r.CallsPerCore)
	p("  %-24s %.1f %% of one core on average over %.1f s", "", r.GatewayCPUPercentAvg, r.MeasuredSeconds)
	p("  %-24s idle %.1f MiB   peak %.1f MiB   (VmHWM %.1f MiB)   %.0f KiB per call", "rtpengine RSS",
		kib(r.GatewayRSSIdleKiB), kib(r.GatewayRSSPeakKiB), kib(r.GatewayHWMKiB), r.RSSPerCallKiB)
	p("  %-24s %.2f CPU-s in its own process (not counted above)", "load generator", r.LoadgenCPUSeconds)
	p("  %-24s %d CPUs, CLK_TCK %d; during the run %.0f %% busy, %.0f %% stolen by the hypervisor, %.2f CPU-s used by other processes",
		"host", r.CPUs, r.ClockTick, r.HostBusyPercent, r.HostStealPercent, r.OtherCPUSeconds)
	p("  %-24s load average %.2f before, %.2f after", "", r.HostLoadAvg[0], r.HostLoadAvg[1])
	if r.QueueOverflows > 0 {
		p("  %-24s %d \"UDP receive queue\" errors in its log: it fell behind and discarded packets", "rtpengine overload", r.QueueOverflows)
	}
	if r.GatewayExit != "" {
		p("  %-24s %s", "rtpengine exit", r.GatewayExit)
	}
	for _, c := range r.Results {
		if c.OK && c.CallerHeard.Pass && c.PBXHeard.Pass {
			continue
		}
		s := fmt.Sprintf("call %d %s:", c.Index, c.CallID)
		if !c.OK {
			s += " FAILED: " + c.Err + ";"
		}
		if !c.CallerHeard.Pass {
			s += fmt.Sprintf(" caller heard 1000 Hz in %d of %d windows (%d arrived, longest gap %.0f ms);",
				c.CallerHeard.ToneWindows, c.CallerHeard.Expected, c.CallerHeard.Windows, c.CallerHeard.MaxGapMs)
		}
		if !c.PBXHeard.Pass {
			s += fmt.Sprintf(" PBX heard 440 Hz in %d of %d windows (%d arrived, longest gap %.0f ms);",
				c.PBXHeard.ToneWindows, c.PBXHeard.Expected, c.PBXHeard.Windows, c.PBXHeard.MaxGapMs)
		}
		p("  %s", strings.TrimSuffix(s, ";"))
	}
	if r.GatewayLog != "" {
		p("  rtpengine log kept: %s", r.GatewayLog)
	}
}

func kib(v int64) float64 { return float64(v) / 1024 }
