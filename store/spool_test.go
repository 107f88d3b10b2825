package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// errDisk is what a failing database returns: not the record's fault.
var errDisk = errors.New("disk I/O error")

// flaky is a real in-memory SQLite store whose writes fail on demand, and
// which logs the writes that reached the database, in order.
type flaky struct {
	*SQLite
	down   atomic.Bool
	lost   atomic.Bool // writes commit but report a failure (the reply was lost)
	closed atomic.Bool
	mu     sync.Mutex
	log    []string // "create A", "update B"
}

func newFlaky(t *testing.T) *flaky {
	t.Helper()
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC, Events: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &flaky{SQLite: s}
}

func (f *flaky) wrote(op, id string) {
	f.mu.Lock()
	f.log = append(f.log, op+" "+id)
	f.mu.Unlock()
}

func (f *flaky) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

func (f *flaky) Create(ctx context.Context, c *Call, events ...EventType) error {
	if f.down.Load() {
		return fmt.Errorf("store: create %s: %w", c.ID, errDisk)
	}
	if f.lost.Load() {
		cp := *c // the caller never hears the reply
		if err := f.SQLite.Create(ctx, &cp, events...); err != nil {
			return err
		}
		f.wrote("create", c.ID)
		return fmt.Errorf("store: create %s: %w", c.ID, context.DeadlineExceeded)
	}
	err := f.SQLite.Create(ctx, c, events...)
	if err == nil {
		f.wrote("create", c.ID)
	}
	return err
}

func (f *flaky) Update(ctx context.Context, c *Call, events ...EventType) error {
	if f.down.Load() {
		return fmt.Errorf("store: update %s: %w", c.ID, errDisk)
	}
	err := f.SQLite.Update(ctx, c, events...)
	if err == nil {
		f.wrote("update", c.ID)
	}
	return err
}

func (f *flaky) Ping(ctx context.Context) error {
	if f.down.Load() {
		return fmt.Errorf("store: ping: %w", errDisk)
	}
	return f.SQLite.Ping(ctx)
}

// Close is recorded; the test's cleanup closes the database, so the test can
// read it after the Spool closed.
func (f *flaky) Close() error { f.closed.Store(true); return nil }

// fakeClock is the Spool's retry clock: the test sees each wait asked for
// and ends it by sending a tick.
type fakeClock struct {
	delays chan time.Duration
	tick   chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{delays: make(chan time.Duration, 64), tick: make(chan time.Time)}
}

func (fc *fakeClock) after(d time.Duration) <-chan time.Time {
	fc.delays <- d
	return fc.tick
}

// nextDelay returns the wait the Spool asked for next.
func (fc *fakeClock) nextDelay(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-fc.delays:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the spool never waited to retry")
		return 0
	}
}

func newTestSpool(t *testing.T, f *flaky, o SpoolOptions) (*Spool, *fakeClock) {
	t.Helper()
	fc := newFakeClock()
	o.after = fc.after
	sp := NewSpool(f, o)
	t.Cleanup(func() { sp.Close() })
	return sp, fc
}

// settle ticks the retry clock until the queue is written (generous bound,
// not a timing assertion).
func settle(t *testing.T, sp *Spool, fc *fakeClock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for sp.Queued() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still queued", sp.Queued())
		}
		select {
		case fc.tick <- time.Now():
		case <-time.After(time.Millisecond):
		}
	}
}

// gwCall writes a call as gateway/records.go persist does: Create until it
// holds a protocol number, Update afterwards, a fresh snapshot each time.
type gwCall struct{ rec Call }

func newGWCall(id string) *gwCall {
	return &gwCall{rec: Call{ID: id, Direction: Inbound, Offered: t0, Caller: Party{Number: "5511987654321"}, Attempts: []Attempt{}, Transfers: []Transfer{}}}
}

func (g *gwCall) persist(t *testing.T, st Store, events ...EventType) {
	t.Helper()
	sc := g.rec
	sc.Attempts = slices.Clone(g.rec.Attempts) // the gateway builds new slices each time
	var err error
	if g.rec.Protocol == "" {
		err = st.Create(ctx, &sc, events...)
		g.rec.Protocol = sc.Protocol
	} else {
		err = st.Update(ctx, &sc, events...)
	}
	if err != nil {
		t.Fatalf("persist %s %v: %v", g.rec.ID, events, err)
	}
}

// sentEvent is an outbox event as the business receives it.
type sentEvent struct {
	Type EventType
	Call Call
}

// drainOutbox hands out every pending event, per call in order.
func drainOutbox(t *testing.T, st Outbox) map[string][]sentEvent {
	t.Helper()
	out := map[string][]sentEvent{}
	for range 100 {
		evs, err := st.Due(ctx, time.Now().Add(time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, ev := range evs {
			var b struct {
				Type EventType `json:"type"`
				Call Call      `json:"call"`
			}
			if err := json.Unmarshal(ev.Body, &b); err != nil {
				t.Fatal(err)
			}
			out[ev.CallID] = append(out[ev.CallID], sentEvent{b.Type, b.Call})
			if err := st.MarkSent(ctx, ev.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Fatal("outbox never emptied")
	return nil
}

func eventTypes(evs []sentEvent) []EventType {
	var out []EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestSpoolOutageKeepsEveryRecordInOrder(t *testing.T) {
	f := newFlaky(t)
	sp, fc := newTestSpool(t, f, SpoolOptions{})

	a := newGWCall("A")
	a.persist(t, sp, EventOffered)
	if a.rec.Protocol == "" || sp.Queued() != 0 {
		t.Fatalf("healthy store: protocol %q, queued %d", a.rec.Protocol, sp.Queued())
	}

	f.down.Store(true)
	a.rec.Answered, a.rec.AnsweredBy = t0.Add(10*time.Second), "agent7"
	a.persist(t, sp, EventAnswered) // queued
	b := newGWCall("B")
	b.rec.Offered = t0.Add(time.Second)
	b.persist(t, sp, EventOffered) // queued Create; b holds no protocol
	if b.rec.Protocol != "" {
		t.Fatalf("spooled Create gave protocol %q", b.rec.Protocol)
	}
	b.rec.Route = "sales"
	b.persist(t, sp) // the gateway creates again: queued as B's update
	b.rec.RouteHook = "ok"
	b.persist(t, sp) // replaces that update (no events)
	a.rec.Ended, a.rec.Outcome, a.rec.EndReason = t0.Add(70*time.Second), OutcomeAnswered, "completed"
	a.persist(t, sp, EventEnded) // behind A's answered update, which carries an event
	if got := sp.Queued(); got != 4 {
		t.Fatalf("queued %d, want 4 (A answered, B create, B update, A ended)", got)
	}
	if got, err := sp.Get(ctx, "B"); err != nil || got.RouteHook != "ok" {
		t.Fatalf("Get of a spooled call: %+v, %v", got, err)
	}
	if _, err := f.SQLite.Get(ctx, "B"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("B reached the database while it was down: %v", err)
	}

	f.down.Store(false)
	settle(t, sp, fc)
	want := []string{"create A", "update A", "create B", "update B", "update A"}
	if got := f.writes(); !slices.Equal(got, want) {
		t.Fatalf("writes %v, want %v", got, want)
	}
	ra, err := f.SQLite.Get(ctx, "A")
	if err != nil || ra.Outcome != OutcomeAnswered || ra.AnsweredBy != "agent7" || !ra.Ended.Equal(a.rec.Ended) || ra.Protocol != a.rec.Protocol {
		t.Fatalf("A in the database: %+v, %v", ra, err)
	}
	rb, err := f.SQLite.Get(ctx, "B")
	if err != nil || rb.Route != "sales" || rb.RouteHook != "ok" || rb.Protocol == "" {
		t.Fatalf("B in the database: %+v, %v", rb, err)
	}

	evs := drainOutbox(t, f.SQLite)
	if got := eventTypes(evs["A"]); !slices.Equal(got, []EventType{EventOffered, EventAnswered, EventEnded}) {
		t.Fatalf("A's events %v", got)
	}
	// Each event carries the record as it was when it happened.
	if e := evs["A"][1].Call; e.Answered.IsZero() || !e.Ended.IsZero() {
		t.Errorf("call.answered body: answered %v ended %v", e.Answered, e.Ended)
	}
	if e := evs["A"][2].Call; e.Ended.IsZero() {
		t.Errorf("call.ended body without end")
	}
	if got := eventTypes(evs["B"]); !slices.Equal(got, []EventType{EventOffered}) || evs["B"][0].Call.Route != "" {
		t.Fatalf("B's events %v, offered body route %q (want the first snapshot's)", got, evs["B"][0].Call.Route)
	}

	// The gateway still holds no protocol for B: its next Create becomes an
	// update, which hands it the number; after that it updates.
	b.rec.AnsweredBy = "agent9"
	b.persist(t, sp, EventAnswered)
	if b.rec.Protocol != rb.Protocol {
		t.Fatalf("B's protocol after recovery %q, want %q", b.rec.Protocol, rb.Protocol)
	}
	b.rec.Ended, b.rec.Outcome = t0.Add(time.Minute), OutcomeAnswered
	b.persist(t, sp, EventEnded)
	want = append(want, "update B", "update B")
	if got := f.writes(); !slices.Equal(got, want) || sp.Queued() != 0 || sp.Dropped() != 0 {
		t.Fatalf("writes %v (want %v), queued %d, dropped %d", got, want, sp.Queued(), sp.Dropped())
	}
	if got := eventTypes(drainOutbox(t, f.SQLite)["B"]); !slices.Equal(got, []EventType{EventAnswered, EventEnded}) {
		t.Fatalf("B's later events %v", got)
	}
}

func TestSpoolBackoff(t *testing.T) {
	f := newFlaky(t)
	sp, fc := newTestSpool(t, f, SpoolOptions{})
	f.down.Store(true)
	newGWCall("A").persist(t, sp, EventOffered)
	var got []time.Duration
	for range 7 {
		got = append(got, fc.nextDelay(t))
		fc.tick <- time.Now() // the retry fails: the store is down
	}
	s := time.Second
	if want := []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}; !slices.Equal(got, want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	if d := fc.nextDelay(t); d != 30*s {
		t.Fatalf("wait %v", d)
	}
	f.down.Store(false)
	fc.tick <- time.Now()
	settle(t, sp, fc)
	// A new outage starts again from RetryMin.
	f.down.Store(true)
	newGWCall("B").persist(t, sp)
	if d := fc.nextDelay(t); d != s {
		t.Fatalf("first wait of a new outage %v, want 1s", d)
	}
	f.down.Store(false) // Close writes B
}

func TestSpoolOverflow(t *testing.T) {
	t.Run("fold keeps every record and event", func(t *testing.T) {
		f := newFlaky(t)
		sp, fc := newTestSpool(t, f, SpoolOptions{MaxRecords: 3})
		f.down.Store(true)
		a := newGWCall("A")
		a.persist(t, sp, EventOffered)
		a.rec.Answered = t0.Add(5 * time.Second)
		a.persist(t, sp, EventAnswered)
		a.rec.Ended, a.rec.Outcome = t0.Add(time.Minute), OutcomeAnswered
		a.persist(t, sp, EventEnded)
		b := newGWCall("B")
		b.persist(t, sp, EventOffered) // full: A's Create folds into its answered update
		if sp.Queued() != 3 || sp.Dropped() != 0 {
			t.Fatalf("queued %d dropped %d, want 3 and 0", sp.Queued(), sp.Dropped())
		}
		c := newGWCall("C")
		c.persist(t, sp, EventOffered) // full again: A's two items fold into one
		if sp.Queued() != 3 || sp.Dropped() != 0 {
			t.Fatalf("queued %d dropped %d, want 3 and 0", sp.Queued(), sp.Dropped())
		}
		f.down.Store(false)
		settle(t, sp, fc)
		if got, want := f.writes(), []string{"create A", "create B", "create C"}; !slices.Equal(got, want) {
			t.Fatalf("writes %v, want %v", got, want)
		}
		if ra, err := f.SQLite.Get(ctx, "A"); err != nil || ra.Ended.IsZero() {
			t.Fatalf("A: %+v %v", ra, err)
		}
		evs := drainOutbox(t, f.SQLite)
		if got := eventTypes(evs["A"]); !slices.Equal(got, []EventType{EventOffered, EventAnswered, EventEnded}) {
			t.Fatalf("A's events %v", got)
		}
		for _, id := range []string{"B", "C"} {
			if got := eventTypes(evs[id]); !slices.Equal(got, []EventType{EventOffered}) {
				t.Fatalf("%s's events %v", id, got)
			}
		}
	})

	t.Run("drops the oldest update before any create", func(t *testing.T) {
		f := newFlaky(t)
		sp, fc := newTestSpool(t, f, SpoolOptions{MaxRecords: 3})
		a, b := newGWCall("A"), newGWCall("B")
		a.persist(t, sp)
		b.persist(t, sp)
		f.down.Store(true)
		a.rec.Route = "a2"
		a.persist(t, sp)
		b.rec.Route = "b2"
		b.persist(t, sp)
		newGWCall("C").persist(t, sp)
		newGWCall("D").persist(t, sp) // full, one item per call: A's update goes
		if sp.Queued() != 3 || sp.Dropped() != 1 {
			t.Fatalf("queued %d dropped %d, want 3 and 1", sp.Queued(), sp.Dropped())
		}
		f.down.Store(false)
		settle(t, sp, fc)
		if got, want := f.writes(), []string{"create A", "create B", "update B", "create C", "create D"}; !slices.Equal(got, want) {
			t.Fatalf("writes %v, want %v", got, want)
		}
		if ra, _ := f.SQLite.Get(ctx, "A"); ra.Route != "" {
			t.Fatalf("A's dropped update was written: route %q", ra.Route)
		}
		if rb, _ := f.SQLite.Get(ctx, "B"); rb.Route != "b2" {
			t.Fatalf("B's route %q", rb.Route)
		}
	})

	t.Run("drops the oldest create; its call's next write recreates it", func(t *testing.T) {
		f := newFlaky(t)
		sp, fc := newTestSpool(t, f, SpoolOptions{MaxRecords: 2})
		f.down.Store(true)
		a, b, c := newGWCall("A"), newGWCall("B"), newGWCall("C")
		a.persist(t, sp, EventOffered)
		b.persist(t, sp, EventOffered)
		c.persist(t, sp, EventOffered) // A's create goes
		if sp.Queued() != 2 || sp.Dropped() != 1 {
			t.Fatalf("queued %d dropped %d, want 2 and 1", sp.Queued(), sp.Dropped())
		}
		f.down.Store(false)
		settle(t, sp, fc)
		if _, err := f.SQLite.Get(ctx, "A"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("A after its create was dropped: %v", err)
		}
		a.rec.Ended, a.rec.Outcome = t0.Add(time.Minute), OutcomeMissed
		a.persist(t, sp, EventEnded) // Create again, taken as an update, heals into a create
		if a.rec.Protocol == "" {
			t.Fatal("A got no protocol number")
		}
		ra, err := f.SQLite.Get(ctx, "A")
		if err != nil || ra.Outcome != OutcomeMissed {
			t.Fatalf("A recreated: %+v %v", ra, err)
		}
		if got := eventTypes(drainOutbox(t, f.SQLite)["A"]); !slices.Equal(got, []EventType{EventEnded}) {
			t.Fatalf("A's events %v", got)
		}
	})
}

// Queued writes that meet the record in an unexpected state still land: a
// Create whose first attempt committed (its reply was lost) becomes an
// update, an Update of a call the database lacks becomes a create.
func TestSpoolHealsQueuedWrites(t *testing.T) {
	f := newFlaky(t)
	sp, fc := newTestSpool(t, f, SpoolOptions{})
	f.lost.Store(true)
	a := newGWCall("A")
	a.persist(t, sp, EventOffered) // committed, but the Spool saw a failure
	f.lost.Store(false)
	if a.rec.Protocol != "" || sp.Queued() != 1 {
		t.Fatalf("protocol %q queued %d", a.rec.Protocol, sp.Queued())
	}
	z := newGWCall("Z")
	z.rec.Protocol, z.rec.Route = "2026-1121-9999", "z" // the caller thinks Z exists
	z.persist(t, sp, EventAnswered)                     // behind A: queued
	settle(t, sp, fc)
	if got, want := f.writes(), []string{"create A", "update A", "create Z"}; !slices.Equal(got, want) {
		t.Fatalf("writes %v, want %v", got, want)
	}
	if rz, err := f.SQLite.Get(ctx, "Z"); err != nil || rz.Route != "z" {
		t.Fatalf("Z: %+v %v", rz, err)
	}
	evs := drainOutbox(t, f.SQLite)
	// At least once: the lost reply's events are written again.
	if got := eventTypes(evs["A"]); !slices.Equal(got, []EventType{EventOffered, EventOffered}) {
		t.Fatalf("A's events %v", got)
	}
	if got := eventTypes(evs["Z"]); !slices.Equal(got, []EventType{EventAnswered}) {
		t.Fatalf("Z's events %v", got)
	}
	if sp.Dropped() != 0 {
		t.Fatalf("dropped %d", sp.Dropped())
	}
}

func TestSpoolRefusesBadRecords(t *testing.T) {
	f := newFlaky(t)
	sp, _ := newTestSpool(t, f, SpoolOptions{})
	if err := sp.Create(ctx, &Call{ID: "A", Direction: Inbound, Offered: t0}); err != nil {
		t.Fatal(err)
	}
	for _, down := range []bool{false, true} {
		f.down.Store(down)
		cases := []struct {
			name string
			do   func() error
			want error
		}{
			{"no id", func() error { return sp.Create(ctx, &Call{Direction: Inbound, Offered: t0}) }, ErrInvalid},
			{"bad direction", func() error { return sp.Update(ctx, &Call{ID: "A", Direction: "sideways", Offered: t0}) }, ErrInvalid},
			{"bad event", func() error { return sp.Update(ctx, &Call{ID: "A", Direction: Inbound, Offered: t0}, "call.exploded") }, ErrInvalid},
		}
		if !down {
			cases = append(cases,
				struct {
					name string
					do   func() error
					want error
				}{"duplicate", func() error { return sp.Create(ctx, &Call{ID: "A", Direction: Inbound, Offered: t0}) }, ErrExists},
				struct {
					name string
					do   func() error
					want error
				}{"unknown call", func() error { return sp.Update(ctx, &Call{ID: "Z", Direction: Inbound, Offered: t0}) }, ErrNotFound})
		}
		for _, tc := range cases {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Errorf("down=%v %s: %v, want %v", down, tc.name, err, tc.want)
			}
		}
		if sp.Queued() != 0 || sp.Dropped() != 0 {
			t.Fatalf("down=%v: bad records queued %d dropped %d", down, sp.Queued(), sp.Dropped())
		}
	}
}

func TestSpoolCloseWritesTheQueue(t *testing.T) {
	f := newFlaky(t)
	sp, _ := newTestSpool(t, f, SpoolOptions{})
	f.down.Store(true)
	newGWCall("A").persist(t, sp, EventOffered)
	newGWCall("B").persist(t, sp, EventOffered)
	f.down.Store(false) // the store is back, the retry has not run yet
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.writes(); !slices.Equal(got, []string{"create A", "create B"}) || !f.closed.Load() || sp.Dropped() != 0 {
		t.Fatalf("after Close: writes %v, inner closed %v, dropped %d", got, f.closed.Load(), sp.Dropped())
	}
	if err := sp.Create(ctx, &newGWCall("C").rec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close: %v", err)
	}
}

func TestSpoolCloseGivesUpAndCounts(t *testing.T) {
	f := newFlaky(t)
	sp, _ := newTestSpool(t, f, SpoolOptions{CloseTimeout: 50 * time.Millisecond, RetryMin: 10 * time.Millisecond})
	f.down.Store(true)
	newGWCall("A").persist(t, sp, EventOffered)
	newGWCall("B").persist(t, sp, EventOffered)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if sp.Queued() != 0 || sp.Dropped() != 2 || !f.closed.Load() || len(f.writes()) != 0 {
		t.Fatalf("queued %d dropped %d closed %v writes %v", sp.Queued(), sp.Dropped(), f.closed.Load(), f.writes())
	}
}

func TestSpoolStatus(t *testing.T) {
	f := newFlaky(t)
	sp, _ := newTestSpool(t, f, SpoolOptions{MaxRecords: 2})
	check := func(wantErr error, wantText string) {
		t.Helper()
		st := sp.Status(ctx)
		if err := st.Err(); !errors.Is(err, wantErr) || !strings.Contains(st.String(), wantText) {
			t.Fatalf("Status %q, Err %v; want %q, %v", st, err, wantText, wantErr)
		}
		if (st.Ping == nil) == f.down.Load() {
			t.Fatalf("Status.Ping %v with the store down=%v", st.Ping, f.down.Load())
		}
		if pe := sp.Ping(ctx); (pe == nil) == f.down.Load() {
			t.Fatalf("Ping %v with the store down=%v", pe, f.down.Load())
		}
	}
	check(nil, "ok")
	f.down.Store(true)
	newGWCall("A").persist(t, sp)
	check(nil, "spooling 1 of at most 2 records, calls go on")
	newGWCall("B").persist(t, sp)
	check(ErrSpoolFull, "record spool is full (2 records, 0 dropped): store: ping: disk I/O error")
	f.down.Store(false)
	check(nil, "ok, writing 2 spooled records")
	if q, d := sp.Stats(); q != 2 || d != 0 {
		t.Fatalf("Stats %d %d", q, d)
	}
}

// Random outages, writes of several calls and retries: once the store is
// back every call's record is its last snapshot and its events are all
// there, in order (the spool never overflows here).
func TestSpoolRandomOutagesLoseNothing(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			f := newFlaky(t)
			sp, fc := newTestSpool(t, f, SpoolOptions{MaxRecords: 1000})
			calls := make([]*gwCall, 5)
			sent := map[string][]EventType{}
			step := map[string]int{}
			for range 200 {
				switch r := rng.IntN(10); {
				case r == 0:
					f.down.Store(!f.down.Load())
				case r == 1:
					select {
					case fc.tick <- time.Now():
					case <-time.After(time.Millisecond):
					}
				default:
					i := rng.IntN(len(calls))
					if calls[i] == nil || !calls[i].rec.Ended.IsZero() {
						calls[i] = newGWCall(fmt.Sprintf("c%d-%d", i, rng.Uint32()))
						calls[i].persist(t, sp, EventOffered)
						sent[calls[i].rec.ID] = []EventType{EventOffered}
						continue
					}
					c := calls[i]
					step[c.rec.ID]++
					c.rec.RouteHook = fmt.Sprint(step[c.rec.ID])
					var ev []EventType
					switch rng.IntN(6) {
					case 0:
						ev = []EventType{EventTransferred}
					case 1:
						c.rec.Ended, c.rec.Outcome = t0.Add(time.Minute), OutcomeAnswered
						ev = []EventType{EventEnded}
					}
					c.persist(t, sp, ev...)
					sent[c.rec.ID] = append(sent[c.rec.ID], ev...)
				}
			}
			f.down.Store(false)
			settle(t, sp, fc)
			if sp.Dropped() != 0 {
				t.Fatalf("dropped %d", sp.Dropped())
			}
			got := drainOutbox(t, f.SQLite)
			for id, want := range sent {
				r, err := f.SQLite.Get(ctx, id)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				if want := fmt.Sprint(step[id]); step[id] > 0 && r.RouteHook != want {
					t.Errorf("%s: record at step %q, want %q", id, r.RouteHook, want)
				}
				if g := eventTypes(got[id]); !slices.Equal(g, want) {
					t.Errorf("%s: events %v, want %v", id, g, want)
				}
			}
		})
	}
}
