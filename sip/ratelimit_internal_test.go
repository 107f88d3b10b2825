package sip

import (
	"net/netip"
	"testing"
	"time"
)

func TestIPLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	t0 := time.Unix(1_700_000_000, 0)
	l := newIPLimiter(2, 3, 16) // 2 per second, burst 3
	steps := []struct {
		name string
		ip   netip.Addr
		at   time.Duration
		want bool
	}{
		{"burst 1", a, 0, true},
		{"burst 2", a, 0, true},
		{"burst 3", a, 0, true},
		{"empty", a, 0, false},
		{"other source has its own bucket", b, 0, true},
		{"still empty after 0.4 s", a, 400 * time.Millisecond, false},
		{"one token back after 0.5 s", a, 900 * time.Millisecond, true},
		{"and only one", a, 900 * time.Millisecond, false},
		{"full again after a long pause", a, time.Hour, true},
		{"full: 2", a, time.Hour, true},
		{"full: 3", a, time.Hour, true},
		{"empty again", a, time.Hour, false},
	}
	for _, s := range steps {
		if got := l.take(s.ip, t0.Add(s.at)); got != s.want {
			t.Fatalf("%s: take = %v, want %v", s.name, got, s.want)
		}
	}
	if !l.exhausted(a, t0.Add(time.Hour)) || l.exhausted(b, t0.Add(time.Hour)) {
		t.Fatal("exhausted: a should be, b not")
	}
	if l.exhausted(netip.MustParseAddr("192.0.2.99"), t0) {
		t.Fatal("unknown source exhausted")
	}
}

// TestIPLimiterBounded: a flood of sources never grows the map past its
// bound, and eviction prefers idle (refilled) buckets over active ones.
func TestIPLimiterBounded(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newIPLimiter(1, 2, 8)
	hot := netip.MustParseAddr("198.51.100.1")
	l.take(hot, t0)
	l.take(hot, t0)
	for i := 0; i < 1000; i++ {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		l.take(ip, t0.Add(time.Duration(i)*time.Millisecond))
		if n := l.size(); n > 8 {
			t.Fatalf("map grew to %d entries", n)
		}
	}
	// hot spent its burst at t0 and refills in 2 s; at 1 s of flood it was
	// not idle, so it must have survived every sweep until it refilled.
	if l.exhausted(hot, t0.Add(500*time.Millisecond)) != true {
		t.Fatal("the active bucket was evicted")
	}
}
