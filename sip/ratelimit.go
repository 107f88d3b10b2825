package sip

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
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

// screen runs before authentication on every new INVITE (H-SIPSEC, issue
// 8): a scanner's INVITE is dropped and counts toward its ban; a source
// over its INVITE rate is refused. Sources on a trunk's address allow-list
// are exempt from both: the operator listed them, a PBX carries many users
// at once (a dialer campaign or a call-centre shift start is a legitimate
// burst), and admission control (Admit: calls, CPS, CPU) already bounds
// what they can cost. Everyone else, digest trunks included, shares the
// per-source bucket.
//
// Over the limit the answer is 480 Temporarily Unavailable with a
// Retry-After of the time a token takes to return, not 503: RFC 3261
// §21.5.4 and RFC 3263 §4.3 make a proxy that gets 503 treat the whole
// server as failed and send it nothing for Retry-After, which would black
// out the trunk for every call, while 480 (with its per-request Retry-After,
// §20.33) fails just this call with a temporary cause (Q.850 18, RFC 3398)
// and triggers no retry storm. 486 would tell the caller the WhatsApp user
// is busy, which is false. Under Unauthorized=drop, and once the source's
// failure bucket is empty, nothing is sent (so a flood gets no answers).
func (in *inbound) screen(req *sip.Request, tx sip.ServerTransaction, ip netip.Addr, s snapshot) bool {
	if addressTrunk(s.trunks, ip) {
		return true
	}
	if scannerRequest(req) {
		in.u.sec.scanners.Add(1)
		s.ban.fail(ip, s.now, "scanner")
		return false
	}
	if s.invites.take(ip, s.now) {
		return true
	}
	in.inviteLimited.Add(1)
	if s.drop || !s.limit.take(ip, s.now) {
		return false
	}
	retry := 1
	if r := s.invites.rate; r > 0 && r < 1 {
		retry = int(math.Ceil(1 / r))
	}
	respond(tx, req, 480, "Temporarily Unavailable", nil, sip.NewHeader("Retry-After", strconv.Itoa(retry)))
	return false
}

// addressTrunk: ip is on some trunk's address allow-list.
func addressTrunk(trunks []InboundTrunk, ip netip.Addr) bool {
	for i := range trunks {
		if allowed(trunks[i].Allow, ip) {
			return true
		}
	}
	return false
}
