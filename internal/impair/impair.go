// Package impair degrades a datagram path the way a bad network does, for
// tests: random loss, jitter (which reorders packets once it exceeds their
// spacing) and periodic burst loss, all from a seeded generator so a failing
// run can be replayed. Wrap puts it in front of any net.PacketConn; the
// simulators use it on their media sockets.
package impair

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"time"
)

// Dir selects which way through the wrapped socket is impaired.
type Dir int

const (
	Write Dir = 1 << iota // datagrams this side sends
	Read                  // datagrams this side receives
	Both  = Write | Read
)

// Dist is the shape of the per-packet extra delay.
type Dist int

const (
	// Uniform draws the extra delay uniformly in [0, Jitter].
	Uniform Dist = iota
	// Exponential draws it from an exponential law of mean Jitter/3,
	// truncated at Jitter: most packets are a little late, a few very late,
	// as queues on a real path behave.
	Exponential
)

// Model describes the impairment. The zero Model passes everything through.
type Model struct {
	// Seed of the PCG generator (math/rand/v2). 0 picks a random seed;
	// Conn.Seed reports the one in use so a test can log it.
	Seed uint64
	Dir  Dir // default Write

	// Loss is the probability (0..1) that a datagram is dropped, drawn
	// independently per datagram (Bernoulli loss).
	Loss float64

	// Jitter is the largest extra delay given to a datagram, drawn per
	// datagram from Dist. Datagrams are delivered in due-time order, so a
	// later one overtakes an earlier one when their draws differ by more than
	// their spacing.
	Jitter time.Duration
	Dist   Dist

	// Every BurstEvery, everything is dropped for BurstLen: bursts cover
	// [k*BurstEvery, k*BurstEvery+BurstLen) after the start, k >= 1, so
	// the first one comes a full period after Wrap (call setup is spared).
	BurstEvery, BurstLen time.Duration

	// After spares the first After of the connection: nothing is impaired
	// (and no burst period starts) before Wrap + After.
	After time.Duration

	// MediaOnly impairs only RTP and RTCP (first byte 128..191, RFC 7983
	// §7); STUN and DTLS pass untouched, for tests about media rather than
	// about connectivity establishment.
	MediaOnly bool
}

// Active reports whether m impairs anything.
func (m *Model) Active() bool {
	return m != nil && (m.Loss > 0 || m.Jitter > 0 || (m.BurstEvery > 0 && m.BurstLen > 0))
}

// Counters count one direction of a Conn.
type Counters struct {
	Sent      uint64 // datagrams offered to the impairment (the ones it chose to judge)
	Dropped   uint64 // dropped by random loss
	Burst     uint64 // dropped inside a burst window
	Delayed   uint64 // given a non-zero extra delay
	Reordered uint64 // delivered after a datagram that was offered later
	Overflow  uint64 // read side: dropped because the reader fell 256 datagrams behind
}

// Stats are the counters of both directions.
type Stats struct{ Write, Read Counters }

// judge is one direction's decision state: the generator and counters,
// guarded by Conn.mu.
type judge struct {
	rng       *rand.Rand
	c         Counters
	seq       uint64 // offer order
	delivered uint64 // highest offer order delivered so far (+1)
}

// decide says whether a datagram offered at now is dropped and, if not, the
// extra delay it gets. Conn.mu is held.
func (j *judge) decide(m *Model, start, now time.Time) (drop bool, delay time.Duration) {
	j.c.Sent++
	if m.BurstEvery > 0 && m.BurstLen > 0 {
		if el := now.Sub(start); el >= m.BurstEvery && el%m.BurstEvery < m.BurstLen {
			j.c.Burst++
			return true, 0
		}
	}
	// The loss draw is made for every datagram outside bursts, so the loss
	// pattern for a seed does not depend on the jitter setting.
	lost := j.rng.Float64() < m.Loss
	if lost {
		j.c.Dropped++
		return true, 0
	}
	if m.Jitter > 0 {
		switch m.Dist {
		case Exponential:
			mean := float64(m.Jitter) / 3
			delay = time.Duration(math.Min(j.rng.ExpFloat64()*mean, float64(m.Jitter)))
		default:
			delay = time.Duration(j.rng.Int64N(int64(m.Jitter) + 1))
		}
		if delay > 0 {
			j.c.Delayed++
		}
	}
	return false, delay
}

// deliver notes that the datagram of offer order seq left the queue.
func (j *judge) deliver(seq uint64) {
	if seq+1 < j.delivered {
		j.c.Reordered++
		return
	}
	j.delivered = seq + 1
}

// queue is a min-heap of datagrams by due time (then offer order, so equal
// delays keep their order).
type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, k int) bool {
	if q[i].due.Equal(q[k].due) {
		return q[i].seq < q[k].seq
	}
	return q[i].due.Before(q[k].due)
}
func (q queue) Swap(i, k int) { q[i], q[k] = q[k], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return it
}

var _ heap.Interface = (*queue)(nil)
