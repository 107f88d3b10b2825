package impair

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// maxDatagram bounds what is queued; larger datagrams are truncated like a
// UDP read into a buffer of this size would be.
const (
	maxDatagram = 2048
	rxDepth     = 256
)

// item is one queued datagram; items are recycled through Conn.free.
type item struct {
	buf  [maxDatagram]byte
	n    int
	addr net.Addr       // destination (write) or source (read) as net.Addr, if known
	ap   netip.AddrPort // the same as an AddrPort, if known
	due  time.Time
	seq  uint64
	read bool
}

// Conn is an impairing net.PacketConn. It also has the *net.UDPConn
// AddrPort methods, so code written against a UDP socket can use it.
type Conn struct {
	pc  net.PacketConn
	udp *net.UDPConn // pc when it is one: allocation-free AddrPort I/O
	m   Model
	now func() time.Time

	mu     sync.Mutex
	start  time.Time
	seed   uint64
	w, r   judge
	q      queue
	free   []*item
	rdl    time.Time     // read deadline (impaired reads only)
	rdlSet chan struct{} // signalled (capacity 1) when rdl changes

	wake   chan struct{}
	rx     chan *item
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	rmu    sync.Mutex // one reader at a time owns rtimer
	rtimer *time.Timer
}

// Wrap returns conn impaired by m. Close closes conn and stops the
// scheduler (and, when reads are impaired, the reader) goroutine.
func Wrap(conn net.PacketConn, m Model) *Conn {
	return wrap(conn, m, time.Now)
}

func wrap(conn net.PacketConn, m Model, now func() time.Time) *Conn {
	if m.Dir == 0 {
		m.Dir = Write
	}
	if m.Seed == 0 {
		m.Seed = rand.Uint64() | 1
	}
	c := &Conn{
		pc: conn, m: m, now: now, seed: m.Seed,
		start:  now().Add(m.After),
		w:      judge{rng: rand.New(rand.NewPCG(m.Seed, 0x57))},
		r:      judge{rng: rand.New(rand.NewPCG(m.Seed, 0x52))},
		rdlSet: make(chan struct{}, 1),
		wake:   make(chan struct{}, 1),
		rx:     make(chan *item, rxDepth),
		done:   make(chan struct{}),
		rtimer: time.NewTimer(time.Hour),
	}
	c.rtimer.Stop()
	c.udp, _ = conn.(*net.UDPConn)
	c.wg.Add(1)
	go c.schedule()
	if m.Dir&Read != 0 {
		c.wg.Add(1)
		go c.pump()
	}
	return c
}

// Seed is the generator seed in use (log it to replay a run).
func (c *Conn) Seed() uint64 { return c.seed }

// Model is the impairment applied.
func (c *Conn) Model() Model { return c.m }

// Stats returns the counters so far.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Write: c.w.c, Read: c.r.c}
}

// judged says whether p is subject to the impairment at all.
func (c *Conn) judged(p []byte, now time.Time) bool {
	if now.Before(c.start) {
		return false
	}
	return !c.m.MediaOnly || (len(p) > 0 && p[0] >= 128 && p[0] <= 191)
}

func (c *Conn) getItem() *item {
	if n := len(c.free); n > 0 {
		it := c.free[n-1]
		c.free = c.free[:n-1]
		return it
	}
	return new(item)
}

func (c *Conn) putItem(it *item) {
	it.addr, it.ap = nil, netip.AddrPort{}
	c.mu.Lock()
	c.free = append(c.free, it)
	c.mu.Unlock()
}

// enqueue queues a copy of p due at now+delay; c.mu is held.
func (c *Conn) enqueue(j *judge, p []byte, addr net.Addr, ap netip.AddrPort, now time.Time, delay time.Duration, read bool) {
	it := c.getItem()
	it.n = copy(it.buf[:], p)
	it.addr, it.ap, it.read = addr, ap, read
	it.due = now.Add(delay)
	it.seq = j.seq
	j.seq++
	heap.Push(&c.q, it)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// now0 takes the next offer order for a datagram delivered at once; c.mu
// is held.
func (j *judge) now0() {
	j.deliver(j.seq)
	j.seq++
}

// write impairs one outgoing datagram: dropped ones are reported as sent,
// as a lossy network would.
func (c *Conn) write(p []byte, addr net.Addr, ap netip.AddrPort) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	now := c.now()
	if c.m.Dir&Write == 0 || !c.judged(p, now) {
		return c.send(p, addr, ap)
	}
	c.mu.Lock()
	drop, delay := c.w.decide(&c.m, c.start, now)
	if drop {
		c.mu.Unlock()
		return len(p), nil
	}
	if delay == 0 {
		// Due now: send at once (it overtakes anything still queued,
		// as it would on the wire).
		c.w.now0()
		c.mu.Unlock()
		return c.send(p, addr, ap)
	}
	c.enqueue(&c.w, p, addr, ap, now, delay, false)
	c.mu.Unlock()
	return len(p), nil
}

func (c *Conn) send(p []byte, addr net.Addr, ap netip.AddrPort) (int, error) {
	if ap.IsValid() && c.udp != nil {
		return c.udp.WriteToUDPAddrPort(p, ap)
	}
	if addr == nil {
		addr = net.UDPAddrFromAddrPort(ap)
	}
	return c.pc.WriteTo(p, addr)
}

// WriteTo implements net.PacketConn.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return c.write(p, addr, netip.AddrPort{})
}

// WriteToUDPAddrPort is (*net.UDPConn).WriteToUDPAddrPort, impaired.
func (c *Conn) WriteToUDPAddrPort(p []byte, ap netip.AddrPort) (int, error) {
	return c.write(p, nil, ap)
}

// schedule delivers queued datagrams at their due time: it is the only
// goroutine that takes items off the queue, so delivery follows due order.
func (c *Conn) schedule() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		var wait time.Duration = -1
		var it *item
		if c.q.Len() > 0 {
			if d := c.q[0].due.Sub(c.now()); d > 0 {
				wait = d
			} else {
				it = heap.Pop(&c.q).(*item)
				if it.read {
					c.r.deliver(it.seq)
				} else {
					c.w.deliver(it.seq)
				}
			}
		}
		c.mu.Unlock()
		if it != nil {
			c.deliver(it)
			continue
		}
		var tc <-chan time.Time
		if wait >= 0 {
			t.Reset(wait)
			tc = t.C
		}
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-tc:
		}
		t.Stop()
	}
}

func (c *Conn) deliver(it *item) {
	if !it.read {
		_, _ = c.send(it.buf[:it.n], it.addr, it.ap)
		c.putItem(it)
		return
	}
	select {
	case c.rx <- it:
	default:
		c.mu.Lock()
		c.r.c.Overflow++
		c.mu.Unlock()
		c.putItem(it)
	}
}

// pump reads the wrapped socket when reads are impaired and passes each
// datagram through the impairment to rx (via the queue when delayed).
func (c *Conn) pump() {
	defer c.wg.Done()
	var b [maxDatagram]byte
	for {
		var (
			n    int
			addr net.Addr
			ap   netip.AddrPort
			err  error
		)
		if c.udp != nil {
			n, ap, err = c.udp.ReadFromUDPAddrPort(b[:])
		} else {
			n, addr, err = c.pc.ReadFrom(b[:])
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-c.done:
				return
			default:
				continue // e.g. ICMP port unreachable surfaced on a later read
			}
		}
		now := c.now()
		c.mu.Lock()
		drop, delay := false, time.Duration(0)
		if c.judged(b[:n], now) {
			drop, delay = c.r.decide(&c.m, c.start, now)
		}
		if drop {
			c.mu.Unlock()
			continue
		}
		if delay > 0 {
			c.enqueue(&c.r, b[:n], addr, ap, now, delay, true)
			c.mu.Unlock()
			continue
		}
		c.r.now0()
		it := c.getItem()
		c.mu.Unlock()
		it.n = copy(it.buf[:], b[:n])
		it.addr, it.ap, it.read = addr, ap, true
		c.deliver(it)
	}
}

// readItem waits for the next impaired datagram, honouring the read deadline.
func (c *Conn) readItem() (*item, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		select { // a change before this read is picked up below
		case <-c.rdlSet:
		default:
		}
		c.mu.Lock()
		dl, changed := c.rdl, c.rdlSet
		c.mu.Unlock()
		var tc <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				select {
				case it := <-c.rx:
					return it, nil
				default:
					return nil, os.ErrDeadlineExceeded
				}
			}
			c.rtimer.Reset(d)
			tc = c.rtimer.C
		}
		select {
		case it := <-c.rx:
			c.rtimer.Stop()
			return it, nil
		case <-c.done:
			c.rtimer.Stop()
			return nil, net.ErrClosed
		case <-tc:
			return nil, os.ErrDeadlineExceeded
		case <-changed:
			c.rtimer.Stop() // the deadline moved: wait again with the new one
		}
	}
}

// ReadFrom implements net.PacketConn.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.m.Dir&Read == 0 {
		return c.pc.ReadFrom(p)
	}
	it, err := c.readItem()
	if err != nil {
		return 0, nil, err
	}
	n, addr := copy(p, it.buf[:it.n]), it.addr
	if addr == nil {
		addr = net.UDPAddrFromAddrPort(it.ap)
	}
	c.putItem(it)
	return n, addr, nil
}

// ReadFromUDPAddrPort is (*net.UDPConn).ReadFromUDPAddrPort, impaired.
func (c *Conn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	if c.m.Dir&Read == 0 {
		if c.udp != nil {
			return c.udp.ReadFromUDPAddrPort(p)
		}
		n, addr, err := c.pc.ReadFrom(p)
		return n, addrPort(addr), err
	}
	it, err := c.readItem()
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	n, ap := copy(p, it.buf[:it.n]), it.ap
	if !ap.IsValid() {
		ap = addrPort(it.addr)
	}
	c.putItem(it)
	return n, ap, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	return netip.AddrPort{}
}

// Close closes the wrapped socket, drops what is queued and stops the
// goroutines. Safe to call more than once.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.done)
		err = c.pc.Close()
		c.wg.Wait()
	})
	return err
}

// LocalAddr implements net.PacketConn.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// SetReadDeadline implements net.PacketConn; with impaired reads it bounds
// the wait for the next delivered datagram.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.m.Dir&Read == 0 {
		return c.pc.SetReadDeadline(t)
	}
	c.mu.Lock()
	c.rdl = t
	c.mu.Unlock()
	select {
	case c.rdlSet <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline implements net.PacketConn (it bounds the wrapped
// socket's writes; queued datagrams are not covered).
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

var _ net.PacketConn = (*Conn)(nil)
