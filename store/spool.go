package store

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Spool keeps calls going while the database is down (issue 8 item 5: "store
// unavailable: calls proceed; records held in a bounded spool and written
// when the store returns"). It wraps another Store; everything but call
// record writes goes straight through.
//
// Create and Update are tried on the inner store first. When that fails for
// a reason that is not the record's fault (see permanent), or while earlier
// records still wait, the record is queued in memory, the caller gets nil and
// the call goes on. A goroutine owned by the Spool retries with backoff
// (RetryMin doubling to RetryMax) and writes the queue in order once the
// store answers again; Close stops it and makes one last bounded attempt.
//
// What is kept, and in which order:
//   - Records are whole snapshots (store.go), so a newer write of a call
//     makes an older queued one obsolete: a write replaces the call's last
//     queued item when that item carries no events. Items that carry events
//     are never rewritten while there is room, because an outbox event's body
//     is the record as written in the same transaction (the business sees the
//     call as it was when it was answered, not as it ended).
//   - A call's items keep their order, so its Create is written before its
//     Updates and its events reach the outbox in the order they happened.
//     Items of different calls are independent records.
//   - Events are written when their item is, with that moment's outbox
//     timestamp: a receiver sees them late, never lost.
//
// Overflow (MaxRecords queued, a new item needs a slot), least loss first:
//  1. fold the oldest item that has a later item of the same call into that
//     later one (the snapshot is superseded anyway; its events move to the
//     later item, keeping their order, and a Create stays a Create): no
//     record and no event is lost, only the events' bodies show a later
//     state;
//  2. otherwise drop the oldest queued Update: that call's row exists, only
//     its latest change is lost;
//  3. otherwise drop the oldest queued Create: that call has no row until it
//     writes again (a later Update of it recreates the record, see write).
//
// Kept-new, dropped-old because a live call writes again and so recovers,
// while the newest calls would otherwise meet a wall of old records. Every
// record given up (steps 2-3, a record the store refuses when the queue is
// written, records still queued when Close gives up) counts in Dropped and
// is logged with its call id. "Nothing lost" therefore holds for an outage
// shorter than the spool and a stop with a store that answers; records still
// queued at exit are lost (the spool is memory, on purpose: a full disk is
// the usual outage, the one a disk spool could not survive either).
//
// Reads go to the inner store, except that Get returns a call's latest
// queued snapshot (without protocol number) while it waits: List, LastAgent
// and the outbox do not see queued records until they are written.
//
// Ping is the inner store's (so it still says "store unavailable"); /readyz
// should use Status, which stays healthy while records spool with room to
// spare (a load balancer must not take the gateway out of service for a
// fault its callers do not feel) and fails once records are being dropped.
type Spool struct {
	inner // every method the Spool does not override goes to the inner store

	o   SpoolOptions
	log *slog.Logger

	mu    sync.Mutex
	q     list.List             // *spooled, oldest first
	calls map[string]*spoolCall // queued items per call id
	proto map[string]time.Time  // calls whose caller holds no protocol number (their Create was queued)
	shut  bool                  // Close began: writes are refused
	n     atomic.Int64          // q.Len(), read without the lock by Queued
	drops atomic.Uint64         // records given up

	kick      chan struct{} // a record was queued
	runCtx    context.Context
	stopRun   context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// inner is the embedded store's field name.
type inner = Store

var _ Store = (*Spool)(nil)

// ErrSpoolFull is what Status reports once records are being dropped.
var ErrSpoolFull = errors.New("store: unavailable and the record spool is full")

// SpoolOptions configures NewSpool. Zero values take the defaults.
type SpoolOptions struct {
	MaxRecords   int           // queued records at most; default 10000
	RetryMin     time.Duration // first retry after a failure; default 1 s
	RetryMax     time.Duration // the retry interval doubles up to this; default 30 s
	WriteTimeout time.Duration // one queued write; default 5 s
	CloseTimeout time.Duration // Close's last attempt to write the queue; default 5 s
	Logger       *slog.Logger

	after func(time.Duration) <-chan time.Time // the retry clock (tests); default time.After
}

// Spool defaults.
const (
	DefaultSpoolRecords = 10000
	defaultRetryMin     = time.Second
	defaultRetryMax     = 30 * time.Second
	defaultSpoolWrite   = 5 * time.Second
	defaultSpoolClose   = 5 * time.Second
	// protoKeep bounds how long the Spool remembers a call whose caller has
	// no protocol number, should that call never write again.
	protoKeep = 12 * time.Hour
)

type spoolOp uint8

const (
	opCreate spoolOp = iota
	opUpdate
)

func (o spoolOp) String() string {
	if o == opCreate {
		return "create"
	}
	return "update"
}

// spooled is one queued write.
type spooled struct {
	op       spoolOp
	call     Call // a private copy
	events   []EventType
	inflight bool // being written by drain: never rewritten or removed by others
}

type spoolCall struct {
	n    int           // items of the call in the queue
	last *list.Element // its newest item
}

// NewSpool wraps st and starts the retry goroutine; Close stops it and closes
// st.
func NewSpool(st Store, o SpoolOptions) *Spool {
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultSpoolRecords
	}
	if o.RetryMin <= 0 {
		o.RetryMin = defaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(defaultRetryMax, o.RetryMin)
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = defaultSpoolWrite
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = defaultSpoolClose
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.after == nil {
		o.after = time.After
	}
	s := &Spool{inner: st, o: o, log: o.Logger, calls: map[string]*spoolCall{}, proto: map[string]time.Time{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.runCtx, s.stopRun = context.WithCancel(context.Background())
	go s.run()
	return s
}

// Queued returns the records waiting for the store (ponte_store_spool_records).
func (s *Spool) Queued() int { return int(s.n.Load()) }

// Dropped returns the records given up since start
// (ponte_store_spool_dropped_total).
func (s *Spool) Dropped() uint64 { return s.drops.Load() }

// Stats returns Queued and Dropped together, the shape
// metrics.WatchStoreSpool reads.
func (s *Spool) Stats() (queued int, dropped uint64) { return s.Queued(), s.Dropped() }

// SpoolStatus is the Spool's state for /readyz.
type SpoolStatus struct {
	Ping    error // the inner store's Ping: nil when it takes writes
	Queued  int
	Dropped uint64
	Max     int // SpoolOptions.MaxRecords
}

// Err is what /readyz should fail on: nil while records are written, or
// spooled with room left (calls do not feel the outage, so a load balancer
// must not take the gateway out of service for it); ErrSpoolFull, wrapped
// with the store's error, once the spool is full and records are dropped.
func (st SpoolStatus) Err() error {
	if st.Ping != nil && st.Queued >= st.Max {
		return fmt.Errorf("%w (%d records, %d dropped): %v", ErrSpoolFull, st.Queued, st.Dropped, st.Ping)
	}
	return nil
}

// String is /readyz's line for the store.
func (st SpoolStatus) String() string {
	switch {
	case st.Err() != nil:
		return st.Err().Error()
	case st.Ping == nil && st.Queued == 0:
		return "ok"
	case st.Ping == nil:
		return fmt.Sprintf("ok, writing %d spooled records", st.Queued)
	default:
		return fmt.Sprintf("unavailable (%v): spooling %d of at most %d records, calls go on", st.Ping, st.Queued, st.Max)
	}
}

// Status pings the inner store and reports the spool's state.
func (s *Spool) Status(ctx context.Context) SpoolStatus {
	return SpoolStatus{Ping: s.inner.Ping(ctx), Queued: s.Queued(), Dropped: s.Dropped(), Max: s.o.MaxRecords}
}

// Pending is the inner store's outbox signal when it has one (api's
// deliverer looks for it); nil otherwise, which a select never picks.
func (s *Spool) Pending() <-chan struct{} {
	if p, ok := s.inner.(interface{ Pending() <-chan struct{} }); ok {
		return p.Pending()
	}
	return nil
}

// Create records a new call, or queues it while the store is unavailable
// (c.Protocol then stays empty).
func (s *Spool) Create(ctx context.Context, c *Call, events ...EventType) error {
	return s.put(ctx, opCreate, c, events)
}

// Update writes c's record, or queues it while the store is unavailable.
func (s *Spool) Update(ctx context.Context, c *Call, events ...EventType) error {
	return s.put(ctx, opUpdate, c, events)
}

func (s *Spool) put(ctx context.Context, op spoolOp, c *Call, events []EventType) error {
	// Validate here, so a bad record is refused to its caller even when it
	// would only be queued (prepare is idempotent: the inner store runs it
	// again).
	if err := prepare(c); err != nil {
		return err
	}
	if err := checkEvents(events); err != nil {
		return err
	}
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return ErrClosed
	}
	_, noProto := s.proto[c.ID]
	// A caller that never got a protocol number repeats Create (the gateway
	// creates until it holds one): for a call the Spool created, that is an
	// update, and writing it directly as one hands the caller its number.
	if op == opCreate && (noProto || s.calls[c.ID] != nil) {
		op = opUpdate
	}
	if s.q.Len() > 0 {
		// Records wait: this one goes behind them, in order.
		s.enqueueLocked(op, c, events)
		s.mu.Unlock()
		s.log.Warn("store: call record spooled behind earlier records", "call", c.ID, "op", op.String(), "queued", s.Queued())
		return nil
	}
	s.mu.Unlock()

	err := s.write(ctx, op, c, events, noProto)
	switch {
	case err == nil:
		if noProto {
			s.mu.Lock()
			delete(s.proto, c.ID)
			s.mu.Unlock()
		}
		return nil
	case permanent(err):
		return err
	}
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return err
	}
	s.enqueueLocked(op, c, events)
	s.mu.Unlock()
	s.log.Warn("store: unavailable, call record spooled", "call", c.ID, "op", op.String(), "queued", s.Queued(), "err", err)
	return nil
}

// permanent reports whether err is the record's fault rather than the
// database's: retrying cannot help and the caller must hear of it. Anything
// else (I/O errors, locks, timeouts, a closed or unreachable database) is
// taken as the store being unavailable.
func permanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound)
}

// write sends one record to the inner store. With heal set (the record
// went through the spool) a Create that finds the call already written
// (its commit's reply was lost, or the caller repeated Create) becomes an
// Update, and an Update that finds no row (its Create was dropped) becomes a
// Create: the snapshot is whole, so either way the record ends as it should.
// Its events may then be written twice, never lost.
func (s *Spool) write(ctx context.Context, op spoolOp, c *Call, events []EventType, heal bool) error {
	var err error
	if op == opCreate {
		err = s.inner.Create(ctx, c, events...)
		if heal && errors.Is(err, ErrExists) {
			err = s.inner.Update(ctx, c, events...)
		}
		return err
	}
	err = s.inner.Update(ctx, c, events...)
	if heal && errors.Is(err, ErrNotFound) {
		err = s.inner.Create(ctx, c, events...)
	}
	return err
}

// enqueueLocked queues a copy of c. s.mu is held.
func (s *Spool) enqueueLocked(op spoolOp, c *Call, events []EventType) {
	id := c.ID
	if op == opCreate {
		s.proto[id] = time.Now()
		s.pruneProtoLocked()
	}
	defer s.signal()
	if cq := s.calls[id]; cq != nil {
		last := cq.last.Value.(*spooled)
		switch {
		case last.inflight:
		case len(last.events) == 0:
			// The newer snapshot supersedes the queued one; a queued Create
			// stays a Create.
			last.call, last.events = copyCall(c), slices.Clone(events)
			return
		case s.q.Len() >= s.o.MaxRecords:
			// Full: fold into the call's last item rather than lose a record.
			last.call, last.events = copyCall(c), append(last.events, events...)
			return
		}
	}
	if s.q.Len() >= s.o.MaxRecords && !s.makeRoomLocked() {
		s.drops.Add(1)
		s.log.Error("store: record spool full, call record dropped", "call", id, "op", op.String())
		return
	}
	e := s.q.PushBack(&spooled{op: op, call: copyCall(c), events: slices.Clone(events)})
	cq := s.calls[id]
	if cq == nil {
		cq = &spoolCall{}
		s.calls[id] = cq
	}
	cq.n++
	cq.last = e
	s.n.Store(int64(s.q.Len()))
}

// makeRoomLocked frees one slot, by the order in Spool's comment. It
// reports false when nothing can be freed (the only item is being written).
func (s *Spool) makeRoomLocked() bool {
	for e := s.q.Front(); e != nil; e = e.Next() {
		it := e.Value.(*spooled)
		if it.inflight || s.calls[it.call.ID].n < 2 {
			continue
		}
		for n := e.Next(); n != nil; n = n.Next() {
			later := n.Value.(*spooled)
			if later.call.ID != it.call.ID {
				continue
			}
			later.events = append(slices.Clone(it.events), later.events...)
			if it.op == opCreate {
				later.op = opCreate
			}
			s.removeLocked(e)
			return true
		}
	}
	for _, op := range []spoolOp{opUpdate, opCreate} {
		for e := s.q.Front(); e != nil; e = e.Next() {
			it := e.Value.(*spooled)
			if it.inflight || it.op != op {
				continue
			}
			s.removeLocked(e)
			s.drops.Add(1)
			s.log.Error("store: record spool full, oldest call record dropped", "call", it.call.ID, "op", it.op.String(), "events", len(it.events))
			return true
		}
	}
	return false
}

// removeLocked takes e out of the queue and keeps its call's count and last
// item right.
func (s *Spool) removeLocked(e *list.Element) {
	id := e.Value.(*spooled).call.ID
	if cq := s.calls[id]; cq != nil {
		if cq.n--; cq.n == 0 {
			delete(s.calls, id)
		} else if cq.last == e {
			for p := e.Prev(); p != nil; p = p.Prev() {
				if p.Value.(*spooled).call.ID == id {
					cq.last = p
					break
				}
			}
		}
	}
	s.q.Remove(e)
	s.n.Store(int64(s.q.Len()))
}

// pruneProtoLocked forgets, past twice the spool's size, calls that never
// wrote again.
func (s *Spool) pruneProtoLocked() {
	if len(s.proto) <= 2*s.o.MaxRecords {
		return
	}
	old := time.Now().Add(-protoKeep)
	for id, at := range s.proto {
		if at.Before(old) {
			delete(s.proto, id)
		}
	}
}

func (s *Spool) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// copyCall copies c with its slices, so the caller may reuse them.
func copyCall(c *Call) Call {
	cp := *c
	cp.Attempts = slices.Clone(c.Attempts)
	cp.Transfers = slices.Clone(c.Transfers)
	cp.MetaErrors = slices.Clone(c.MetaErrors)
	return cp
}

// Get returns a queued call's latest snapshot while it waits, else asks the
// inner store.
func (s *Spool) Get(ctx context.Context, idOrProtocol string) (*Call, error) {
	s.mu.Lock()
	if cq := s.calls[idOrProtocol]; cq != nil {
		c := copyCall(&cq.last.Value.(*spooled).call)
		s.mu.Unlock()
		return &c, nil
	}
	s.mu.Unlock()
	return s.inner.Get(ctx, idOrProtocol)
}

// run retries the queue: after each failure it waits RetryMin, doubling up
// to RetryMax, and starts again from RetryMin once the queue is written.
func (s *Spool) run() {
	defer close(s.done)
	delay := s.o.RetryMin
	for {
		select {
		case <-s.runCtx.Done():
			return
		case <-s.kick:
		}
		// The record was queued because a write just failed (or behind one
		// that did): wait before the first retry.
		for {
			select {
			case <-s.runCtx.Done():
				return
			case <-s.o.after(delay):
			}
			if s.drain(s.runCtx) {
				delay = s.o.RetryMin
				break
			}
			delay = min(2*delay, s.o.RetryMax)
		}
	}
}

// drain writes the queue in order. It reports true when the queue is empty
// and false when the store still fails (the failed record stays first).
func (s *Spool) drain(ctx context.Context) bool {
	written := 0
	defer func() {
		if written > 0 {
			s.log.Info("store: spooled call records written", "records", written, "queued", s.Queued())
		}
	}()
	for {
		s.mu.Lock()
		e := s.q.Front()
		if e == nil {
			s.mu.Unlock()
			return true
		}
		it := e.Value.(*spooled)
		it.inflight = true
		op, c, events := it.op, copyCall(&it.call), it.events
		s.mu.Unlock()

		wctx, cancel := context.WithTimeout(ctx, s.o.WriteTimeout)
		err := s.write(wctx, op, &c, events, true)
		cancel()

		s.mu.Lock()
		it.inflight = false
		if err != nil && !permanent(err) {
			s.mu.Unlock()
			s.log.Debug("store: still unavailable", "queued", s.Queued(), "err", err)
			return false
		}
		s.removeLocked(e)
		if s.calls[c.ID] == nil && !c.Ended.IsZero() {
			delete(s.proto, c.ID) // an ended call writes no more
		}
		s.mu.Unlock()
		if err != nil {
			s.drops.Add(1)
			s.log.Error("store: spooled call record refused by the store, dropped", "call", c.ID, "op", op.String(), "err", err)
			continue
		}
		written++
	}
}

// Close stops the retry goroutine, tries once more, for at most
// CloseTimeout, to write what is queued, and closes the inner store.
// Records still queued then are counted in Dropped and logged.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.shut = true
		s.mu.Unlock()
		s.stopRun()
		<-s.done

		ctx, cancel := context.WithTimeout(context.Background(), s.o.CloseTimeout)
		defer cancel()
		for !s.drain(ctx) {
			t := time.NewTimer(min(s.o.RetryMin, s.o.CloseTimeout/4))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			if ctx.Err() != nil {
				break
			}
		}
		s.mu.Lock()
		for e := s.q.Front(); e != nil; e = s.q.Front() {
			it := e.Value.(*spooled)
			s.removeLocked(e)
			s.drops.Add(1)
			s.log.Error("store: unavailable at stop, call record lost", "call", it.call.ID, "op", it.op.String(), "events", len(it.events))
		}
		s.mu.Unlock()
		s.closeErr = s.inner.Close()
	})
	return s.closeErr
}
