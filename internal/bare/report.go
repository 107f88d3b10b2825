package bare

import (
	"fmt"
	"io"
	"strings"
)

// Direction counts one direction's packets over the whole media time of the connected calls
// (senders start once both ends are connected; counted after a drain).
type Direction struct {
	Sent        int64   `json:"sent"`
	Received    int64   `json:"received"`
	Lost        int64   `json:"lost"`
	LossPercent float64 `json:"loss_percent"`
}

func (d *Direction) finish() {
	d.Lost = max(0, d.Sent-d.Received)
	if d.Sent > 0 {
		d.LossPercent = 100 * float64(d.Lost) / float64(d.Sent)
	}
}

// ChildRun is one run of the child relay.
type ChildRun struct {
	Mode        string   `json:"mode"`  // transcoding or passthrough
	Codec       string   `json:"codec"` // the plain RTP side's codec
	Calls       int      `json:"calls"`
	CallsOK     int      `json:"calls_ok"`
	CallsFailed int      `json:"calls_failed"`
	Errors      []string `json:"errors,omitempty"`

	// Set-up (ICE, DTLS, codec creation) until the last call connected, media of the early
	// calls included. Not part of the per-call-second figure.
	SetupSeconds    float64 `json:"setup_seconds"`
	SetupCPUSeconds float64 `json:"setup_cpu_seconds"`
	SetupCPUPerCall float64 `json:"setup_cpu_seconds_per_call"`

	// The hold: every connected call relaying both ways, after the settle time.
	MeasuredSeconds  float64 `json:"measured_seconds"`
	CallSeconds      float64 `json:"call_seconds"`
	ChildCPUSeconds  float64 `json:"child_cpu_seconds"`
	CPUPerCallSecond float64 `json:"cpu_seconds_per_call_second"`
	CPUPercentOfCore float64 `json:"cpu_percent_of_one_core"`

	ToPBX Direction `json:"to_pbx"` // caller -> child -> PBX endpoint
	ToWA  Direction `json:"to_wa"`  // PBX endpoint -> child -> caller
	// SentPercent is the share of the due 20 ms frames the senders managed to send: well
	// under 100 means the load generator was starved of CPU (tone checks then fail on gaps
	// that are not the child's doing).
	SentPercent float64 `json:"sent_percent_of_due"`
	// The worst call's share of arrived 20 ms windows that carried the expected tone (the
	// pass counts below also want >= 90 % of the windows to have arrived in time).
	CallerToneRatioMin float64 `json:"caller_tone_ratio_min"`
	PBXToneRatioMin    float64 `json:"pbx_tone_ratio_min"`
	CallerHeardOK      int     `json:"caller_heard_1000hz_ok"`
	PBXHeardOK         int     `json:"pbx_heard_440hz_ok"`

	ChildRSSIdleKiB int64       `json:"child_rss_idle_kib"`
	ChildRSSPeakKiB int64       `json:"child_rss_peak_kib"`
	ChildHWMKiB     int64       `json:"child_vmhwm_kib"`
	RSSPerCallKiB   float64     `json:"rss_per_call_kib"` // (peak - idle) / connected calls
	Child           *ChildStats `json:"child_counters,omitempty"`
	// ChildAllocsPerPacket is the child's heap allocations over the hold per packet it read
	// (both directions): pion's, since the relay's own loops reuse their buffers.
	ChildAllocsPerPacket float64 `json:"child_allocs_per_packet"`
	ChildExit            string  `json:"child_exit,omitempty"`

	LoadgenCPUSeconds float64    `json:"loadgen_cpu_seconds"` // this process over the hold
	HostBusyPercent   float64    `json:"host_busy_percent"`   // of all CPUs over the hold
	HostStealPercent  float64    `json:"host_steal_percent"`
	HostLoadAvg       [2]float64 `json:"host_loadavg_1m_before_after"`
}

// Report is the outcome of Run.
type Report struct {
	Calls       int    `json:"calls"`
	Hold        string `json:"hold"`
	Codec       string `json:"codec"`
	Transcoding bool   `json:"transcoding"`
	CPUs        int    `json:"cpus"`
	ClockTick   int    `json:"clk_tck"`
	GatewayCPUs string `json:"child_cpus,omitempty"`
	LoadgenCPUs string `json:"loadgen_cpus,omitempty"`

	Relay     *ChildRun  `json:"relay"`          // the child in the requested mode
	Legs      *ChildRun  `json:"legs,omitempty"` // the child in passthrough mode (Options.Legs)
	CodecOnly *CodecCost `json:"codec_only,omitempty"`
	// BarePartsCPUPerCallSecond is codec only + bare legs: issue 7's "bare cost of its parts"
	// for a transcoded call (0 unless both were measured).
	BarePartsCPUPerCallSecond float64 `json:"bare_parts_cpu_seconds_per_call_second,omitempty"`
}

// OK reports whether every call connected, nothing was lost and every tone was heard.
func (r *Report) OK() bool {
	for _, c := range []*ChildRun{r.Relay, r.Legs} {
		if c == nil {
			continue
		}
		if c.CallsFailed > 0 || c.CallerHeardOK < c.CallsOK || c.PBXHeardOK < c.CallsOK || c.ToPBX.Lost > 0 || c.ToWA.Lost > 0 {
			return false
		}
	}
	return r.Relay != nil
}

// WriteTable prints the report for a human.
func (r *Report) WriteTable(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	pin := ""
	if r.GatewayCPUs != "" || r.LoadgenCPUs != "" {
		pin = fmt.Sprintf(", child on CPUs %q, load generator on %q", r.GatewayCPUs, r.LoadgenCPUs)
	}
	p("ponte bare: %d calls, hold %s, plain side %s; %d CPUs, CLK_TCK %d%s", r.Calls, r.Hold, r.Codec, r.CPUs, r.ClockTick, pin)
	if r.CodecOnly != nil {
		c := r.CodecOnly
		p("  %-26s %.5f CPU-s per call-second   (Opus->8k + G.711 enc %.1f us/frame, G.711 dec + Opus enc c%d %d bps %.1f us/frame; %.0f call-s)",
			"codec only", c.CPUPerCallSecond, c.ToPBXUsPerFrame, opusComplexity, opusBitrate, c.ToWAUsPerFrame, c.CallSeconds)
	}
	for _, c := range []*ChildRun{r.Legs, r.Relay} {
		if c == nil {
			continue
		}
		name := "bare transcoding relay"
		if c.Mode == "passthrough" {
			name = "bare legs (passthrough)"
		}
		writeRun(p, name, c)
	}
	if r.BarePartsCPUPerCallSecond > 0 {
		p("  %-26s %.5f CPU-s per call-second   (codec only + bare legs: the 1.2x target's base)", "bare parts", r.BarePartsCPUPerCallSecond)
	}
}

func writeRun(p func(string, ...any), name string, c *ChildRun) {
	p("  %-26s %.5f CPU-s per call-second   (%.2f CPU-s over %.1f call-s; %.1f %% of a core for %d calls)",
		name, c.CPUPerCallSecond, c.ChildCPUSeconds, c.CallSeconds, c.CPUPercentOfCore, c.CallsOK)
	p("  %-26s calls ok %d failed %d; set-up %.2f s, %.4f CPU-s per call", "", c.CallsOK, c.CallsFailed, c.SetupSeconds, c.SetupCPUPerCall)
	p("  %-26s to PBX %d/%d (loss %.3f %%)   to WA %d/%d (loss %.3f %%)   senders sent %.1f %% of the frames due", "",
		c.ToPBX.Received, c.ToPBX.Sent, c.ToPBX.LossPercent, c.ToWA.Received, c.ToWA.Sent, c.ToWA.LossPercent, c.SentPercent)
	if c.SentPercent > 0 && c.SentPercent < 99 {
		p("  %-26s the load generator was starved of CPU: gaps in the tone checks are its own", "WARNING")
	}
	p("  %-26s PBX heard 440 Hz %d/%d   caller heard 1000 Hz %d/%d   (worst call: tone in %.1f %% / %.1f %% of the windows that arrived)", "",
		c.PBXHeardOK, c.CallsOK, c.CallerHeardOK, c.CallsOK, 100*c.PBXToneRatioMin, 100*c.CallerToneRatioMin)
	p("  %-26s child RSS idle %.1f MiB, peak %.1f MiB (%.0f KiB per call)", "", kib(c.ChildRSSIdleKiB), kib(c.ChildRSSPeakKiB), c.RSSPerCallKiB)
	if c.Child != nil {
		p("  %-26s child relayed to PBX %d/%d, to WA %d/%d, %d errors, %d goroutines, %.2f heap allocations per packet", "",
			c.Child.ToPBXOut, c.Child.ToPBXIn, c.Child.ToWAOut, c.Child.ToWAIn, c.Child.Errors, c.Child.Goroutines, c.ChildAllocsPerPacket)
	}
	p("  %-26s host %.0f %% busy, %.0f %% steal, load %.2f -> %.2f; load generator %.2f CPU-s", "",
		c.HostBusyPercent, c.HostStealPercent, c.HostLoadAvg[0], c.HostLoadAvg[1], c.LoadgenCPUSeconds)
	if len(c.Errors) > 0 {
		p("  %-26s %s", "errors", strings.Join(c.Errors, "; "))
	}
	if c.ChildExit != "" {
		p("  %-26s %s", "child exit", c.ChildExit)
	}
}

func kib(v int64) float64 { return float64(v) / 1024 }
