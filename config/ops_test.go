package config

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAdmissionDrainKeys(t *testing.T) {
	base, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	parse := func(extra string) (*Config, error) {
		return Parse("x.yaml", append(append([]byte{}, base...), extra...), fullEnv)
	}
	c, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if a, d := c.Admission, c.Drain; a.MaxCalls != 0 || a.MaxCPU != 0 || a.CPUWindow.D() != 10*time.Second ||
		a.RetryAfter.D() != 10*time.Second || d.Timeout.D() != 5*time.Minute || d.RetryAfter.D() != time.Minute {
		t.Fatalf("defaults: %+v %+v", a, d)
	}
	c, err = parse("admission: { max_calls: 200, max_cpu: 0.85, cpu_window: 30s, retry_after: 5s }\ndrain: { timeout: 90s, retry_after: 2m }\n")
	if err != nil {
		t.Fatal(err)
	}
	if a, d := c.Admission, c.Drain; a.MaxCalls != 200 || a.MaxCPU != 0.85 || a.CPUWindow.D() != 30*time.Second ||
		a.RetryAfter.D() != 5*time.Second || d.Timeout.D() != 90*time.Second || d.RetryAfter.D() != 2*time.Minute {
		t.Fatalf("parsed: %+v %+v", a, d)
	}
	lines := strings.Count(string(base), "\n")
	for _, bad := range []struct{ extra, want string }{
		{"admission: { max_calls: -1 }\n", "admission.max_calls: -1: want 0"},
		{"admission: { max_cpu: 85 }\n", "admission.max_cpu: 85: want a fraction"},
		{"admission: { cpu_window: 100ms }\n", "admission.cpu_window: 100ms: want 1s to 10m"},
		{"admission: { retry_after: 0.5 }\n", "admission.retry_after: 500ms: want at least 1s"},
		{"drain: { timeout: -1s }\n", "drain.timeout: -1s: want 0 or more"},
		{"drain: { retry_after: 0.2 }\n", "drain.retry_after: 200ms: want at least 1s"},
		{"drain: { grace: 1m }\n", "drain.grace: unknown key"},
	} {
		_, err := parse(bad.extra)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want %q", bad.extra, err, bad.want)
			continue
		}
		// The problem names the line of the appended key.
		if line := "line " + strconv.Itoa(lines+1); !strings.Contains(err.Error(), line) {
			t.Errorf("%q: error %v does not name %s", bad.extra, err, line)
		}
	}
}
