package sip

import (
	"net/netip"
	"sync"
	"time"
)

// maxLimiterEntries bounds the per-address state a flood of spoofed
// sources can make the server keep.
const maxLimiterEntries = 4096

// ipLimiter is a token bucket per source address for requests that failed
// authentication or matched no trunk: each failure spends a token, tokens
// come back at rate per second up to burst, and a source with no token left
// is ignored. Buckets live in a bounded map refilled lazily on use; nothing
// runs in the background.
type ipLimiter struct {
	rate  float64
	burst float64
	max   int

	mu sync.Mutex
	m  map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newIPLimiter(rate float64, burst, max int) *ipLimiter {
	return &ipLimiter{rate: rate, burst: float64(burst), max: max, m: map[netip.Addr]*bucket{}}
}

// refill brings b up to date at now.
func (l *ipLimiter) refill(b *bucket, now time.Time) {
	b.tokens = l.level(b, now)
	if now.After(b.last) {
		b.last = now
	}
}

// level is b's token count at now, b left unchanged.
func (l *ipLimiter) level(b *bucket, now time.Time) float64 {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		return min(l.burst, b.tokens+dt*l.rate)
	}
	return b.tokens
}

// exhausted reports whether ip has no token left, without spending one.
func (l *ipLimiter) exhausted(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[ip]
	if b == nil {
		return false
	}
	l.refill(b, now)
	return b.tokens < 1
}

// take spends a token of ip; false when there was none.
func (l *ipLimiter) take(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[ip]
	if b == nil {
		if len(l.m) >= l.max {
			l.evictLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[ip] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evictLocked makes room: buckets that have refilled completely carry no
// information and go first; if none has, the one with the most tokens left
// (the least suspicious; the oldest among equals) goes, so that a source
// that spent its failures cannot get a fresh bucket by flooding the map
// with other addresses.
func (l *ipLimiter) evictLocked(now time.Time) {
	var victim netip.Addr
	var best float64
	var bestAt time.Time
	freed := false
	for ip, b := range l.m {
		lv := l.level(b, now)
		if lv >= l.burst {
			delete(l.m, ip)
			freed = true
			continue
		}
		if !victim.IsValid() || lv > best || (lv == best && b.last.Before(bestAt)) {
			victim, best, bestAt = ip, lv, b.last
		}
	}
	if !freed && victim.IsValid() {
		delete(l.m, victim)
	}
}

// size is the number of tracked sources.
func (l *ipLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
