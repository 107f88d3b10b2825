package config

import "time"

// Admission limits new calls so the calls in progress keep their quality
// (issue 6 item 5). Over a limit, a new WhatsApp call is rejected with the
// Graph API before pre_accept and a new SIP INVITE gets 503 with Retry-After
// (RFC 3261 §21.5.4); both are counted.
type Admission struct {
	// MaxCalls is the most calls in progress at once; 0: no limit.
	MaxCalls int `yaml:"max_calls"`
	// MaxCPU is the host's CPU busy fraction (0 < max_cpu <= 1, all cores
	// together, from /proc/stat) over CPUWindow above which new calls are
	// refused; 0: no CPU limit.
	MaxCPU float64 `yaml:"max_cpu"`
	// CPUWindow is the sliding window the load is measured over (default 10s).
	CPUWindow Duration `yaml:"cpu_window"`
	// RetryAfter is the Retry-After of a 503 sent over a limit (default 10s).
	RetryAfter Duration `yaml:"retry_after"`
}

// Drain is what SIGTERM does (issue 6 item 4): /readyz fails, new calls are
// refused, calls in progress go on for up to Timeout and are then ended
// cleanly (terminate toward Meta, BYE toward the PBX).
type Drain struct {
	// Timeout is how long calls in progress may go on (default 5m). Container
	// runtimes kill after their own grace period (docker: 10s by default):
	// set it longer than Timeout (stop_grace_period in compose).
	Timeout Duration `yaml:"timeout"`
	// RetryAfter is the Retry-After of the 503 a SIP INVITE gets while
	// draining (default 60s): long enough for the PBX to pick another node.
	RetryAfter Duration `yaml:"retry_after"`
}

func (c *Config) applyOpsDefaults() {
	if c.Admission.CPUWindow == 0 {
		c.Admission.CPUWindow = Duration(10 * time.Second)
	}
	if c.Admission.RetryAfter == 0 {
		c.Admission.RetryAfter = Duration(10 * time.Second)
	}
	if c.Drain.Timeout == 0 {
		c.Drain.Timeout = Duration(5 * time.Minute)
	}
	if c.Drain.RetryAfter == 0 {
		c.Drain.RetryAfter = Duration(60 * time.Second)
	}
}

func (c *Config) validateOps(add func(path, format string, a ...any)) {
	a, d := c.Admission, c.Drain
	if a.MaxCalls < 0 {
		add("admission.max_calls", "%d: want 0 (no limit) or more", a.MaxCalls)
	}
	if a.MaxCPU < 0 || a.MaxCPU > 1 {
		add("admission.max_cpu", "%g: want a fraction of the host's CPU in (0, 1], or 0 for no limit", a.MaxCPU)
	}
	if a.CPUWindow.D() < time.Second || a.CPUWindow.D() > 10*time.Minute {
		add("admission.cpu_window", "%s: want 1s to 10m", a.CPUWindow.D())
	}
	// Retry-After is whole seconds (RFC 3261 §20.33).
	if a.RetryAfter.D() < time.Second {
		add("admission.retry_after", "%s: want at least 1s", a.RetryAfter.D())
	}
	if d.RetryAfter.D() < time.Second {
		add("drain.retry_after", "%s: want at least 1s", d.RetryAfter.D())
	}
	if d.Timeout.D() < 0 {
		add("drain.timeout", "%s: want 0 or more", d.Timeout.D())
	}
}
