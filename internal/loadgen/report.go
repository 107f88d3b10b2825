package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Latency summarises one latency over the calls that have it (nearest-rank percentiles).
type Latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// summarize computes nearest-rank percentiles: the p-th percentile of n sorted samples is
// sample ceil(p*n) (1-based), so with 50 samples p99 is the maximum.
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

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// AudioCheck is what one side heard during the hold, after the settle time.
type AudioCheck struct {
	Windows     int     `json:"windows"`          // 20 ms windows that arrived
	Expected    int     `json:"expected_windows"` // how many the interval holds
	ToneWindows int     `json:"tone_windows"`     // windows with the expected tone
	Ratio       float64 `json:"ratio"`            // ToneWindows / Windows
	MeanDBFS    float64 `json:"mean_dbfs"`
	MaxGapMs    float64 `json:"max_gap_ms"`
	Pass        bool    `json:"pass"`
	// Profile is set when the check failed: per 100 ms from the end of the settle time, how
	// many of the five 20 ms windows had the tone.
	Profile string `json:"profile,omitempty"`
}

// StreamCheck is what the WhatsApp caller's peer saw of ponte's RTP (wasim.StreamStats).
type StreamCheck struct {
	Packets      int     `json:"packets"`
	MaxSeqStep   int     `json:"max_seq_step"`   // 1: no sequence gap
	SeqBackwards int     `json:"seq_backwards"`  // reordered or restarted packets
	MaxDriftMs   float64 `json:"max_drift_ms"`   // arrival time vs RTP timestamp, worst packet
	ClockDriftMs float64 `json:"clock_drift_ms"` // spread of the per-second medians of the same
	SSRCs        int     `json:"ssrcs"`          // Meta wants exactly one (§5.3)
}

// FlowResult is one direction of one call, measured at its two ends: packets the sender
// wrote to its socket, RTP packets the receiver got, and the loss in the receiver's sequence
// numbers (RFC 3550 A.3: ponte numbers what it sends, so this is loss between ponte and the
// receiver, or gaps ponte left); and the marker delay samples (ms, detector bias removed).
type FlowResult struct {
	Sent        int     `json:"sent"`
	Received    int     `json:"received"`
	SeqExpected int     `json:"seq_expected"`
	SeqLost     int     `json:"seq_lost"`
	LossPercent float64 `json:"seq_loss_percent"`
	Delays      int     `json:"delay_samples"`
	DelayP50Ms  float64 `json:"delay_p50_ms"`
	DelayMaxMs  float64 `json:"delay_max_ms"`
	Unmatched   int     `json:"markers_unmatched"` // detected transitions with no sent one to pair

	delays []time.Duration // raw: receive minus send
}

// CallResult is one call.
type CallResult struct {
	Index int    `json:"index"`
	WACID string `json:"wacid,omitempty"`
	OK    bool   `json:"ok"`
	Err   string `json:"error,omitempty"`
	// Milliseconds; -1 when the call did not get that far.
	WebhookToPreAcceptMs float64    `json:"webhook_to_pre_accept_ms"`
	PBX200ToAcceptMs     float64    `json:"pbx_200_to_accept_ms"`
	MediaSeconds         float64    `json:"media_seconds"` // accept -> hangup
	CallerHeard          AudioCheck `json:"caller_heard"`  // the PBX's 1000 Hz
	PBXHeard             AudioCheck `json:"pbx_heard"`     // the caller's 440 Hz
	// The RTP stream the caller received from ponte over the whole call.
	ToCaller StreamCheck `json:"to_caller_stream"`
	// Loss and delay per direction (whole call for packets, after the settle time for delay).
	FlowToPBX    FlowResult `json:"flow_to_pbx"`
	FlowToCaller FlowResult `json:"flow_to_caller"`

	pbx200At, acceptedAt, hangupAt time.Time
}

// Report is the outcome of a run.
type Report struct {
	Codec       string  `json:"codec"`
	Transcoding bool    `json:"transcoding"` // the PBX codec is not Opus
	Calls       int     `json:"calls"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate_per_s"`
	Hold        string  `json:"hold"`
	Settle      string  `json:"audio_settle"` // start of each hold left out of the audio check
	Ring        string  `json:"pbx_ring"`     // how long the PBX rang before answering

	OK     int `json:"calls_ok"`
	Failed int `json:"calls_failed"`

	WebhookToPreAccept Latency `json:"webhook_to_pre_accept"`
	PBX200ToAccept     Latency `json:"pbx_200_to_accept"`

	CallerHeardOK int `json:"caller_heard_1000hz_ok"`
	PBXHeardOK    int `json:"pbx_heard_440hz_ok"`
	AudioOK       int `json:"audio_ok"` // both directions passed

	// Gateway CPU (utime+stime of the child) between just before the first call and just
	// after the last call ended, per second of media (sum over calls of accept -> hangup).
	GatewayCPUSeconds    float64 `json:"gateway_cpu_seconds"`
	MediaSeconds         float64 `json:"media_call_seconds"`
	CPUPerCallSecond     float64 `json:"gateway_cpu_seconds_per_call_second"`
	GatewayCPUPercentAvg float64 `json:"gateway_cpu_percent_avg"` // of one core, over the measured interval
	GatewayRSSIdleKiB    int64   `json:"gateway_rss_idle_kib"`    // VmRSS just before the first call
	GatewayRSSPeakKiB    int64   `json:"gateway_rss_peak_kib"`    // highest VmRSS sampled
	GatewayHWMKiB        int64   `json:"gateway_vmhwm_kib"`       // kernel's peak RSS (VmHWM)

	MeasuredSeconds   float64    `json:"measured_seconds"` // first call start -> last call end
	LoadgenCPUSeconds float64    `json:"loadgen_cpu_seconds"`
	CPUs              int        `json:"cpus"`
	HostLoadAvg       [2]float64 `json:"host_loadavg_1m_before_after"`
	HostBusyPercent   float64    `json:"host_busy_percent"`  // of all CPUs over the measured interval
	HostStealPercent  float64    `json:"host_steal_percent"` // of all CPUs: time the hypervisor took
	OtherCPUSeconds   float64    `json:"other_cpu_seconds"`  // host busy time used by neither process
	ClockTick         int        `json:"clk_tck"`
	GatewayExit       string     `json:"gateway_exit,omitempty"` // error stopping the child, if any
	GatewayLog        string     `json:"gateway_log,omitempty"`  // kept when a call failed

	// Media is false for a signalling-only run (-media=false): no audio sent, none checked.
	Media bool `json:"media"`
	// One-way delay through ponte per direction, pooled over the marker transitions of all
	// calls after their settle time.
	DelayToPBX    DelaySummary `json:"delay_to_pbx"`
	DelayToCaller DelaySummary `json:"delay_to_caller"`
	DelayModel    *delayModel  `json:"delay_model,omitempty"`
	LossToPBX     LossSummary  `json:"loss_to_pbx"`
	LossToCaller  LossSummary  `json:"loss_to_caller"`
	// LossPass: both directions under 0.1 % (issue 7's loss criterion).
	LossPass bool `json:"loss_under_0_1_percent"`
	// CallsPerCore is 1 / CPUPerCallSecond: calls one core of this machine carries.
	CallsPerCore float64 `json:"calls_per_core"`
	// Per call memory and goroutines: (peak - idle) / calls in progress at the peak.
	PeakConcurrent    int     `json:"peak_concurrent_calls"`
	RSSPerCallKiB     float64 `json:"gateway_rss_per_call_kib"`
	GoroutinesIdle    int     `json:"gateway_goroutines_idle"`
	GoroutinesAtPeak  int     `json:"gateway_goroutines_at_peak"`
	GoroutineCalls    int     `json:"calls_at_goroutine_peak"`
	GoroutinesPerCall float64 `json:"gateway_goroutines_per_call"`
	GatewayCPUList    string  `json:"gateway_cpus_allowed"`
	LoadgenCPUList    string  `json:"loadgen_cpus_allowed"`
	DurationLimit     string  `json:"duration,omitempty"`

	// Soak is the soak's samples and verdict (Options.Soak; nil otherwise).
	Soak *SoakReport `json:"soak,omitempty"`

	Results []CallResult `json:"call_results"`
}

// DelaySummary is a direction's delay: as measured (detector bias removed), and what ponte
// added beyond its jitter buffer depth and the codecs' algorithmic delay (DelayModel).
type DelaySummary struct {
	Including Latency `json:"including_jitter_buffer_and_codecs"`
	Added     Latency `json:"added_by_ponte"`
	Unmatched int     `json:"markers_unmatched"`
}

// LossSummary totals a direction. GatewayInLost is ponte's own count of packets missing on
// arrival from the sender (RFC 3550 A.3, ponte_rtp_lost_packets_total of the source leg,
// -1 if not scraped): loss before ponte, which transcoding would otherwise hide behind its
// concealment. LossPercent = (GatewayInLost + SeqLost) / Sent.
type LossSummary struct {
	Sent          int     `json:"sent"`
	Received      int     `json:"received"`
	SeqLost       int     `json:"receiver_seq_lost"`
	GatewayIn     int     `json:"gateway_received"`
	GatewayInLost int     `json:"gateway_in_lost"`
	LossPercent   float64 `json:"loss_percent"`
}

// WriteTable prints the report for a human.
func (r *Report) WriteTable(w io.Writer) {
	mode := "passthrough"
	if r.Transcoding {
		mode = "transcoding"
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("ponte load: %d calls, concurrency %d, rate %g/s, hold %s, PBX codec %s (%s), PBX rings %s",
		r.Calls, r.Concurrency, r.Rate, r.Hold, r.Codec, mode, r.Ring)
	p("  %-24s ok %d   failed %d", "calls", r.OK, r.Failed)
	lat := func(name string, l Latency) {
		if l.N == 0 {
			p("  %-24s (no samples)", name)
			return
		}
		p("  %-24s p50 %8.2f ms   p99 %8.2f ms   max %8.2f ms   (n=%d)", name, l.P50Ms, l.P99Ms, l.MaxMs, l.N)
	}
	lat("webhook -> pre_accept", r.WebhookToPreAccept)
	lat("PBX 200 -> accept", r.PBX200ToAccept)
	if r.Media {
		p("  %-24s caller heard 1000 Hz %d/%d   PBX heard 440 Hz %d/%d   both %d/%d   (>= 98%% of 20 ms windows, first %s of each hold and the marker windows skipped)",
			"audio", r.CallerHeardOK, r.Calls, r.PBXHeardOK, r.Calls, r.AudioOK, r.Calls, r.Settle)
		lat("delay WA -> PBX", r.DelayToPBX.Including)
		lat("  added by ponte", r.DelayToPBX.Added)
		lat("delay PBX -> WA", r.DelayToCaller.Including)
		lat("  added by ponte", r.DelayToCaller.Added)
		if m := r.DelayModel; m != nil {
			p("  %-24s subtracted for \"added\": jitter buffer %.0f ms (media.jitter_frames) + codec chain %.2f ms to PBX, %.2f ms to WA (offline, same codecs); detector bias %.2f ms removed from both",
				"", m.JitterBufferMs, m.CodecToPBXMs, m.CodecToCallerMs, m.BiasMs)
		}
		if u := r.DelayToPBX.Unmatched + r.DelayToCaller.Unmatched; u > 0 {
			p("  %-24s %d marker detections had no sent marker to pair with", "", u)
		}
		loss := func(name string, l LossSummary) {
			p("  %-24s sent %d   received %d   lost: %d before ponte (its count), %d after (receiver seq)   = %.3f %%",
				name, l.Sent, l.Received, l.GatewayInLost, l.SeqLost, l.LossPercent)
		}
		loss("loss WA -> PBX", r.LossToPBX)
		loss("loss PBX -> WA", r.LossToCaller)
		verdict := "PASS"
		if !r.LossPass {
			verdict = "FAIL"
		}
		p("  %-24s %s (< 0.1 %% each way)", "loss criterion", verdict)
	} else {
		p("  %-24s not sent, not checked (-media=false): the gateway still plays silence both ways", "audio")
	}
	p("  %-24s %.2f CPU-s over %.1f call-seconds of media = %.5f CPU-s per call-second (%.2f %% of a core per call)",
		"gateway CPU", r.GatewayCPUSeconds, r.MediaSeconds, r.CPUPerCallSecond, r.CPUPerCallSecond*100)
	p("  %-24s %.1f calls per core   %.1f %% of one core on average over %.1f s",
		"", r.CallsPerCore, r.GatewayCPUPercentAvg, r.MeasuredSeconds)
	p("  %-24s idle %.1f MiB   peak %.1f MiB   (VmHWM %.1f MiB)   = %.0f KiB per call at %d calls",
		"gateway RSS", kib(r.GatewayRSSIdleKiB), kib(r.GatewayRSSPeakKiB), kib(r.GatewayHWMKiB), r.RSSPerCallKiB, r.PeakConcurrent)
	p("  %-24s idle %d   %d with %d calls in progress   = %.1f per call",
		"gateway goroutines", r.GoroutinesIdle, r.GoroutinesAtPeak, r.GoroutineCalls, r.GoroutinesPerCall)
	if r.GatewayCPUList != "" || r.LoadgenCPUList != "" {
		p("  %-24s gateway on CPUs %s, load generator on CPUs %s", "CPUs allowed", r.GatewayCPUList, r.LoadgenCPUList)
	}
	p("  %-24s %.2f CPU-s in its own process (not counted above)", "load generator", r.LoadgenCPUSeconds)
	p("  %-24s %d CPUs, CLK_TCK %d; during the run %.0f %% busy, %.0f %% stolen by the hypervisor, %.2f CPU-s used by other processes",
		"host", r.CPUs, r.ClockTick, r.HostBusyPercent, r.HostStealPercent, r.OtherCPUSeconds)
	p("  %-24s load average %.2f before, %.2f after", "", r.HostLoadAvg[0], r.HostLoadAvg[1])
	if r.GatewayExit != "" {
		p("  %-24s %s", "gateway exit", r.GatewayExit)
	}
	var bad []string
	for _, c := range r.Results {
		if c.OK && (!r.Media || c.CallerHeard.Pass && c.PBXHeard.Pass) {
			continue
		}
		s := fmt.Sprintf("call %d %s:", c.Index, c.WACID)
		if !c.OK {
			s += " FAILED: " + c.Err
		}
		if c.OK && r.Media && !c.CallerHeard.Pass {
			s += fmt.Sprintf(" caller heard 1000 Hz in %d of %d windows (%d arrived, longest gap %.0f ms, per 100 ms %s);",
				c.CallerHeard.ToneWindows, c.CallerHeard.Expected, c.CallerHeard.Windows, c.CallerHeard.MaxGapMs, c.CallerHeard.Profile)
		}
		if c.OK && r.Media && !c.PBXHeard.Pass {
			s += fmt.Sprintf(" PBX heard 440 Hz in %d of %d windows (%d arrived, longest gap %.0f ms, per 100 ms %s);",
				c.PBXHeard.ToneWindows, c.PBXHeard.Expected, c.PBXHeard.Windows, c.PBXHeard.MaxGapMs, c.PBXHeard.Profile)
		}
		bad = append(bad, strings.TrimSuffix(s, ";"))
	}
	for _, b := range bad {
		p("  %s", b)
	}
	if r.GatewayLog != "" {
		p("  gateway log kept: %s", r.GatewayLog)
	}
}

func kib(v int64) float64 { return float64(v) / 1024 }
