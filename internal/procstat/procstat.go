// Package procstat reads what ponte's measuring tools (ponte load, ponte bare, ponte
// load-rtpengine) need from Linux's /proc (proc(5)) and getrusage(2): a process's CPU
// ticks and memory, the host's busy and stolen CPU, the load average.
package procstat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrFormat is returned when a /proc file does not have the documented layout.
var ErrFormat = errors.New("procstat: unexpected /proc format")

// CPUTicks returns utime+stime of pid in clock ticks, summed over all its threads
// (proc(5), /proc/<pid>/stat fields 14 and 15).
func CPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	u, s, err := ParseStatCPU(b)
	if err != nil {
		return 0, err
	}
	return u + s, nil
}

// ParseStatCPU extracts utime and stime from a /proc/<pid>/stat line. Field 2 (comm) is in
// parentheses and may itself contain spaces and parentheses, so the fields are counted from
// the last ')' (proc(5)): after it comes field 3 (state), so utime (14) is the 12th word and
// stime (15) the 13th.
func ParseStatCPU(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%w: stat has no ')'", ErrFormat)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%w: stat has %d fields after comm, want >= 13", ErrFormat, len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%w: utime %q", ErrFormat, f[11])
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("%w: stime %q", ErrFormat, f[12])
	}
	return utime, stime, nil
}

// StatusKiB reads one "Name:  1234 kB" line of /proc/<pid>/status (VmRSS, VmHWM).
func StatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return ParseStatusKiB(b, field)
}

// ParseStatusKiB finds field in a /proc/<pid>/status text; the kernel prints these sizes
// in kB (meaning KiB, proc(5)).
func ParseStatusKiB(b []byte, field string) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%w: %s: %q", ErrFormat, field, strings.TrimSpace(rest))
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("%w: %s: %q", ErrFormat, field, f[0])
		}
		return v, nil
	}
	return 0, fmt.Errorf("%w: no %s line", ErrFormat, field)
}

// HostCPU reads the aggregate "cpu" line of /proc/stat (proc(5)): clock ticks over all CPUs
// since boot that were busy (user, nice, system, irq, softirq; guest time is already in user
// and nice) and stolen (steal: the hypervisor ran something else while this VM wanted the CPU).
func HostCPU() (busy, steal uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return ParseHostCPU(b)
}

// ParseHostCPU parses the aggregate "cpu" line of a /proc/stat text (see HostCPU).
func ParseHostCPU(b []byte) (busy, steal uint64, err error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("%w: /proc/stat starts with %q", ErrFormat, line)
	}
	var v [8]uint64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("%w: /proc/stat column %d %q", ErrFormat, i+1, f[i+1])
		}
	}
	return v[0] + v[1] + v[2] + v[5] + v[6], v[7], nil
}

// ClockTick is sysconf(_SC_CLK_TCK), the unit of utime/stime, from `getconf CLK_TCK`;
// 100 (USER_HZ on every Linux architecture Go supports) if getconf is missing.
func ClockTick(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		return 100
	}
	return n
}

// LoadAvg1 is the host's 1-minute load average (/proc/loadavg), -1 if unreadable.
func LoadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// SelfCPU is this process's own user+system CPU time.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RSSSampler keeps the highest VmRSS of a process, read at a fixed period on a goroutine it
// owns until Stop.
type RSSSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	peak   int64
}

// StartRSSSampler samples pid's VmRSS every period, starting from initial KiB.
func StartRSSSampler(pid int, every time.Duration, initial int64) *RSSSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &RSSSampler{cancel: cancel, done: make(chan struct{}), peak: initial}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := StatusKiB(pid, "VmRSS"); err == nil && v > s.peak {
				s.peak = v
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak in KiB.
func (s *RSSSampler) Stop() int64 {
	s.cancel()
	<-s.done
	return s.peak
}
