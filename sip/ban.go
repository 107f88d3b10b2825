package sip

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ErrBanned is what the transport filter returns for a stream (TCP, TLS)
// from a banned source: sipgo closes the connection on it.
var ErrBanned = errors.New("sip: source banned")

// BanConfig bans sources that keep failing authentication (H-SIPSEC, issue
// 8): After failures within Within ban the source for For. Every message
// from a banned source is then dropped in the transport filter, before
// sipgo parses it, creates a transaction or answers.
type BanConfig struct {
	After  int           // failures; default DefaultBanAfter
	Within time.Duration // default DefaultBanWithin
	// For is the ban's length; default DefaultBanFor, negative: no bans.
	For time.Duration
}

// Ban defaults.
const (
	DefaultBanAfter  = 10
	DefaultBanWithin = time.Minute
	DefaultBanFor    = 10 * time.Minute
)

// banSample is how many entries eviction looks at when a map is full: a
// random sample (Go's map order), as Redis's approximate LRU does, keeps a
// flood of spoofed sources from costing a full scan per packet.
const banSample = 64

// banList counts failures per source and holds the bans. The count is a
// sliding window of length Within, approximated with two fixed windows per
// source (the previous window's count weighted by how much of it still
// overlaps, plus the current one's), as rate limiters at scale do: After
// failures inside any Within ban, in O(1) memory per source. Both maps are
// bounded by max; nothing runs in the background (expiry is lazy).
type banList struct {
	log *slog.Logger

	mu     sync.Mutex
	after  float64
	within time.Duration
	dur    time.Duration // <= 0: off
	exempt []netip.Prefix
	max    int
	scores map[netip.Addr]*banScore
	until  map[netip.Addr]time.Time

	active atomic.Int64  // len(until): the transport filter's lock-free fast path
	bans   atomic.Uint64 // bans imposed
}

type banScore struct {
	start     time.Time // of the current window
	prev, cur float64   // failures in the previous and the current window
}

func newBanList(log *slog.Logger, entries int) *banList {
	return &banList{log: log, max: entries, scores: map[netip.Addr]*banScore{}, until: map[netip.Addr]time.Time{}}
}

// configure sets the policy; bans and scores in force are kept. exempt are
// the sources never banned (trunk allow-lists and known peers).
func (b *banList) configure(c BanConfig, exempt []netip.Prefix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.after, b.within, b.dur, b.exempt = float64(c.After), c.Within, c.For, exempt
	if b.dur <= 0 {
		clear(b.until)
		clear(b.scores)
		b.active.Store(0)
	}
}

// banned reports whether ip is banned at now. Without any ban in force it
// takes no lock.
func (b *banList) banned(ip netip.Addr, now time.Time) bool {
	if b == nil || b.active.Load() == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.until[ip]
	if !ok {
		return false
	}
	if !now.Before(t) {
		delete(b.until, ip)
		b.active.Store(int64(len(b.until)))
		return false
	}
	return true
}

// fail records a failure of ip and bans it when its score reaches After.
// An exempt source is logged instead, once per crossing.
func (b *banList) fail(ip netip.Addr, now time.Time, what string) {
	if b == nil || !ip.IsValid() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dur <= 0 || b.after <= 0 {
		return
	}
	if t, ok := b.until[ip]; ok && now.Before(t) {
		return // banned already: what slips through does not extend the ban
	}
	s := b.scores[ip]
	if s == nil {
		if len(b.scores) >= b.max {
			b.evictScoreLocked(now)
		}
		s = &banScore{start: now}
		b.scores[ip] = s
	}
	b.rollLocked(s, now)
	s.cur++
	if b.levelLocked(s, now) < b.after {
		return
	}
	delete(b.scores, ip)
	if allowed(b.exempt, ip) {
		// Issue 8: never ban a trunk's own address; a PBX that keeps
		// failing is misconfigured, and the operator must hear of it.
		b.log.Warn("sip: trunk address keeps failing authentication; not banned (allow-listed)", "source", ip, "last", what)
		return
	}
	if _, ok := b.until[ip]; !ok && len(b.until) >= b.max {
		b.evictBanLocked()
	}
	b.until[ip] = now.Add(b.dur)
	b.active.Store(int64(len(b.until)))
	b.bans.Add(1)
	b.log.Warn("sip: source banned", "source", ip, "for", b.dur, "last", what)
}

// rollLocked moves s's windows forward to now.
func (b *banList) rollLocked(s *banScore, now time.Time) {
	if b.within <= 0 {
		return // one window for ever
	}
	switch el := now.Sub(s.start); {
	case el >= 2*b.within:
		s.start, s.prev, s.cur = now, 0, 0
	case el >= b.within:
		s.start, s.prev, s.cur = s.start.Add(b.within), s.cur, 0
	}
}

// levelLocked estimates the failures of s in the Within before now.
func (b *banList) levelLocked(s *banScore, now time.Time) float64 {
	if b.within <= 0 {
		return s.cur
	}
	prev, cur, start := s.prev, s.cur, s.start
	switch el := now.Sub(start); {
	case el >= 2*b.within:
		return 0
	case el >= b.within:
		prev, cur, start = cur, 0, start.Add(b.within)
	}
	el := now.Sub(start)
	if el < 0 {
		el = 0
	}
	return prev*(1-el.Seconds()/b.within.Seconds()) + cur
}

// evictScoreLocked drops the least suspicious score of a sample.
func (b *banList) evictScoreLocked(now time.Time) {
	var victim netip.Addr
	low, n := 0.0, 0
	for ip, s := range b.scores {
		lv := b.levelLocked(s, now)
		if lv == 0 {
			delete(b.scores, ip)
			return
		}
		if !victim.IsValid() || lv < low {
			victim, low = ip, lv
		}
		if n++; n == banSample {
			break
		}
	}
	delete(b.scores, victim)
}

// evictBanLocked drops the ban of a sample that ends first.
func (b *banList) evictBanLocked() { delete(b.until, earliestOfSample(b.until)) }

// earliestOfSample returns the address with the earliest time among
// banSample entries of m (map order): bounded work on a full map.
func earliestOfSample(m map[netip.Addr]time.Time) netip.Addr {
	var victim netip.Addr
	var first time.Time
	n := 0
	for ip, t := range m {
		if !victim.IsValid() || t.Before(first) {
			victim, first = ip, t
		}
		if n++; n == banSample {
			break
		}
	}
	return victim
}

// current is the number of sources banned at now (expired bans pruned).
func (b *banList) current(now time.Time) int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ip, t := range b.until {
		if !now.Before(t) {
			delete(b.until, ip)
		}
	}
	b.active.Store(int64(len(b.until)))
	return len(b.until)
}

// security is the UA's protection state shared by the transport filter,
// the request handlers and the tls: listeners (H-SIPSEC). Its zero value
// filters nothing: SetServer installs the policy.
type security struct {
	pol atomic.Pointer[secPolicy]

	banDropped atomic.Uint64 // messages dropped because their source was banned
	scanners   atomic.Uint64 // requests dropped as scanner traffic
	strangers  atomic.Uint64 // OPTIONS, REGISTER and other methods from unknown sources refused or dropped

	certs certStore // tls.go
}

// secPolicy is what the filter judges by; replaced whole by SetServer.
type secPolicy struct {
	ban   *banList
	known []netip.Prefix // trunk allow-lists and peers: never banned or filtered as scanners
	now   func() time.Time
}

// readFilter is sipgo's transport read filter (sip.WithTransportLayerReadFilter):
// it runs on every datagram and stream read before parsing. A banned
// source's datagram is discarded (nil, nil) and its stream closed
// (ErrBanned); a UDP request whose User-Agent names a scanner is discarded
// too, and counts toward the source's ban.
func (s *security) readFilter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	pol := s.pol.Load()
	if pol == nil {
		return data, nil
	}
	ip := addrIP(p.RemoteAddr)
	if !ip.IsValid() {
		return data, nil
	}
	now := pol.now()
	if pol.ban.banned(ip, now) {
		s.banDropped.Add(1)
		if p.Transport == "UDP" {
			return nil, nil
		}
		return nil, ErrBanned
	}
	// A datagram is one whole message, so its header can be read safely
	// here; stream reads may split one and are judged after parsing.
	if p.Transport == "UDP" && !allowed(pol.known, ip) && rawScanner(data) {
		s.scanners.Add(1)
		pol.ban.fail(ip, now, "scanner")
		return nil, nil
	}
	return data, nil
}

// addrIP is the unmapped IP of a transport address, without allocating for
// the UDP and TCP address types sipgo passes.
func addrIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
