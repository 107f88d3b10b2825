package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrProcStat: /proc/stat has no aggregate "cpu" line ponte can read.
var ErrProcStat = errors.New("metrics: unreadable /proc/stat cpu line")

// CPUSample is a cumulative CPU time reading: Busy of Total, in any unit.
type CPUSample struct{ Busy, Total uint64 }

// CPULoad is the busy fraction of the host's CPU over a sliding window, for
// admission control: one sample per interval, the load being the busy share
// of the time between the oldest and the newest sample in the window.
//
// It reads the aggregate "cpu" line of /proc/stat (proc(5): user nice system
// idle iowait irq softirq steal, in USER_HZ ticks), so other processes on
// the host count too: the media of every call suffers when the host is
// saturated, whoever saturates it. Where /proc/stat is unreadable it falls
// back to this process's own CPU time (getrusage(2)) against wall time times
// the number of CPUs.
type CPULoad struct {
	read     func() (CPUSample, error)
	interval time.Duration

	mu      sync.Mutex
	samples []CPUSample // ring, oldest at next once full
	next    int
	full    bool
	load    float64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewCPULoad samples every interval over window (defaults 1 s and 10 s) and
// starts its goroutine; Close stops it. read nil means the host's CPU.
func NewCPULoad(window, interval time.Duration, read func() (CPUSample, error)) *CPULoad {
	if interval <= 0 {
		interval = time.Second
	}
	if window <= 0 {
		window = 10 * time.Second
	}
	if read == nil {
		read = hostCPU()
	}
	c := &CPULoad{
		read: read, interval: interval,
		samples: make([]CPUSample, max(int(window/interval), 1)+1),
		stop:    make(chan struct{}), done: make(chan struct{}),
	}
	c.Sample()
	go c.run()
	return c
}

func (c *CPULoad) run() {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Sample()
		}
	}
}

// Sample takes one reading now (the goroutine calls it every interval;
// tests call it directly).
func (c *CPULoad) Sample() {
	s, err := c.read()
	if err != nil {
		return // keep the last load: an unreadable sample is not an idle host
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples[c.next] = s
	c.next = (c.next + 1) % len(c.samples)
	if c.next == 0 {
		c.full = true
	}
	oldest := c.samples[0]
	if c.full {
		oldest = c.samples[c.next]
	}
	if s.Total > oldest.Total && s.Busy >= oldest.Busy {
		c.load = min(float64(s.Busy-oldest.Busy)/float64(s.Total-oldest.Total), 1)
	}
}

// Load returns the busy fraction (0..1) over the window.
func (c *CPULoad) Load() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.load
}

// Close stops sampling.
func (c *CPULoad) Close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// hostCPU reads /proc/stat, or this process's rusage when that fails.
func hostCPU() func() (CPUSample, error) {
	if _, err := readProcStat(); err == nil {
		return readProcStat
	}
	start := time.Now()
	return func() (CPUSample, error) {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return CPUSample{}, err
		}
		busy := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		wall := time.Since(start) * time.Duration(runtime.NumCPU())
		return CPUSample{Busy: uint64(busy), Total: uint64(wall)}, nil
	}
}

func readProcStat() (CPUSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUSample{}, err
	}
	return ParseProcStat(b)
}

// ParseProcStat reads the aggregate "cpu" line of /proc/stat (proc(5)):
// busy is everything but idle and iowait; guest time is already included in
// user and nice, so it is not added again.
func ParseProcStat(b []byte) (CPUSample, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || string(f[0]) != "cpu" {
			continue
		}
		if len(f) < 5 {
			return CPUSample{}, fmt.Errorf("%w: %d fields", ErrProcStat, len(f)-1)
		}
		var s CPUSample
		for i, v := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return CPUSample{}, fmt.Errorf("%w: %v", ErrProcStat, err)
			}
			if s.Total+n < s.Total {
				return CPUSample{}, fmt.Errorf("%w: overflow", ErrProcStat)
			}
			s.Total += n
			if i != 3 && i != 4 {
				s.Busy += n
			}
		}
		return s, nil
	}
	return CPUSample{}, ErrProcStat
}
