package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sample is one line of the Prometheus text exposition format: name{labels} value.
type sample struct {
	name, labels string
	value        float64
}

type samples []sample

// parseMetrics reads the text format (comments and malformed lines are skipped).
func parseMetrics(r io.Reader) samples {
	var out samples
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := line[:i]
		name, labels := key, ""
		if j := strings.IndexByte(key, '{'); j >= 0 {
			name, labels = key[:j], key[j:]
		}
		out = append(out, sample{name: name, labels: labels, value: v})
	}
	return out
}

// sum adds the samples of name whose labels include every want (`leg="whatsapp"`); found
// is false when there is none.
func (s samples) sum(name string, want ...string) (total float64, found bool) {
next:
	for _, x := range s {
		if x.name != name {
			continue
		}
		for _, w := range want {
			if !strings.Contains(x.labels, w) {
				continue next
			}
		}
		total += x.value
		found = true
	}
	return total, found
}

// scrape GETs the gateway's admin /metrics.
func scrape(ctx context.Context, admin string) (samples, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadgen: /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body), nil
}

// goroutineEvery is how often go_goroutines is scraped during the run: each scrape costs the
// gateway a little CPU (counted in its CPU per call-second), so not often.
const goroutineEvery = 2 * time.Second

// goSampler scrapes go_goroutines while calls run and keeps the sample taken at the highest
// number of calls in progress (the latest of equals), for goroutines per call.
type goSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	calls  int // calls in progress at the kept sample
	gor    int
}

func startGoSampler(admin string, active *atomic.Int64) *goSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &goSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(goroutineEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n := int(active.Load())
			m, err := scrape(ctx, admin)
			if err != nil || n == 0 {
				continue
			}
			if g, ok := m.sum("go_goroutines"); ok && n >= int(active.Load()) {
				s.mu.Lock()
				if n >= s.calls {
					s.calls, s.gor = n, int(g)
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// stop ends sampling: calls in progress and goroutines at the kept sample.
func (s *goSampler) stop() (calls, goroutines int) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.gor
}
