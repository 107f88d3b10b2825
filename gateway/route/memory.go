package route

import (
	"sort"
	"sync"
	"time"
)

// Memory is an in-memory AgentMemory for a single node and for tests; the
// store package keeps the durable one. It holds at most max callers: when
// full it first drops answers older than the window, then the oldest eighth,
// so memory stays bounded on a busy line and eviction costs O(n log n) once
// per n/8 inserts.
type Memory struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	m      map[string]memEntry
}

type memEntry struct {
	agent string
	at    time.Time
}

// NewMemory returns a Memory keeping answers for window (0: never expire on
// their own) and at most max callers (<= 0: 100000).
func NewMemory(window time.Duration, max int) *Memory {
	if max <= 0 {
		max = 100000
	}
	return &Memory{window: window, max: max, m: make(map[string]memEntry)}
}

// Remember records that agent answered the caller key at at. An older
// answer never replaces a newer one (calls can end out of order).
func (m *Memory) Remember(key, agent string, at time.Time) {
	if key == "" || agent == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.m[key]; ok && e.at.After(at) {
		return
	}
	if _, ok := m.m[key]; !ok && len(m.m) >= m.max {
		m.evict(at)
	}
	m.m[key] = memEntry{agent, at}
}

// LastAgent implements AgentMemory.
func (m *Memory) LastAgent(key string) (string, time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[key]
	return e.agent, e.at, ok
}

// Len is the number of callers remembered.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

func (m *Memory) evict(now time.Time) {
	if m.window > 0 {
		for k, e := range m.m {
			if now.Sub(e.at) > m.window {
				delete(m.m, k)
			}
		}
		if len(m.m) < m.max {
			return
		}
	}
	type ka struct {
		k  string
		at time.Time
	}
	all := make([]ka, 0, len(m.m))
	for k, e := range m.m {
		all = append(all, ka{k, e.at})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	n := len(all)/8 + 1
	for _, e := range all[:n] {
		delete(m.m, e.k)
	}
}
