package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestOutboxHeadOfLinePerCall(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC, Events: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := &Call{ID: "A", Direction: Inbound, Offered: t0}
	b := &Call{ID: "B", Direction: Inbound, Offered: t0}
	if err := s.Create(ctx, a, EventOffered); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, b, EventOffered); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Pending():
	default:
		t.Fatal("no pending signal after enqueue")
	}
	a.Answered = t0.Add(5 * time.Second)
	if err := s.Update(ctx, a, EventAnswered); err != nil {
		t.Fatal(err)
	}
	a.Ended = t0.Add(time.Minute)
	if err := s.Update(ctx, a, EventEnded); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	type step struct {
		name string
		do   func(evs []Event) error
		want []string // "call/type" due after the step
	}
	names := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.CallID+"/"+string(e.Type))
		}
		return out
	}
	steps := []step{
		{"start", nil, []string{"A/call.offered", "B/call.offered"}},
		// A's head fails: A's later events wait behind it, B goes on.
		{"A1 fails", func(evs []Event) error { return s.MarkFailed(ctx, evs[0].Seq, now.Add(time.Hour), "503") }, []string{"B/call.offered"}},
		{"B1 sent", func(evs []Event) error { return s.MarkSent(ctx, evs[0].Seq) }, nil},
	}
	var evs []Event
	for _, st := range steps {
		if st.do != nil {
			if err := st.do(evs); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		evs, err = s.Due(ctx, now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(evs); fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Fatalf("%s: due %v, want %v", st.name, got, st.want)
		}
	}
	// An hour later A1 is due again, with its attempt counted.
	later := now.Add(time.Hour)
	evs, _ = s.Due(ctx, later, 10)
	if len(evs) != 1 || evs[0].Type != EventOffered || evs[0].Attempts != 1 || evs[0].LastError != "503" {
		t.Fatalf("retry: %+v", evs)
	}
	// Giving A1 up releases A2 then A3, in order.
	if err := s.MarkDead(ctx, evs[0].Seq, "too old"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []EventType{EventAnswered, EventEnded} {
		evs, _ = s.Due(ctx, later, 10)
		if len(evs) != 1 || evs[0].Type != want {
			t.Fatalf("want %s: %+v", want, evs)
		}
		if err := s.MarkSent(ctx, evs[0].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if evs, _ = s.Due(ctx, later, 10); len(evs) != 0 {
		t.Fatalf("left over: %+v", evs)
	}
	dead, err := s.DeadEvents(ctx, 10)
	if err != nil || len(dead) != 1 || dead[0].CallID != "A" || dead[0].Attempts != 2 {
		t.Fatalf("dead: %+v %v", dead, err)
	}
	if err := s.MarkSent(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mark unknown: %v", err)
	}
}

func TestEventsOffDropsEvents(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC, Events: false})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Create(ctx, &Call{ID: "x", Direction: Inbound, Offered: t0}, EventOffered); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.Due(ctx, time.Now(), 10); len(evs) != 0 {
		t.Fatalf("events stored with events off: %+v", evs)
	}
}

// BenchmarkCreate measures recorded calls per second on a file database
// (WAL, synchronous=NORMAL): one Create with its call.offered event.
func BenchmarkCreate(b *testing.B) {
	s := openFile(b, filepath.Join(b.TempDir(), "bench.db"), true)
	c := fullCall("")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.ID, c.Protocol = fmt.Sprintf("pc-%d", i), ""
		if err := s.Create(ctx, c, EventOffered); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
}

// BenchmarkCallLifecycle is what one call costs the store: Create on offer,
// three Updates (answered, attempt, ended) and two more events.
func BenchmarkCallLifecycle(b *testing.B) {
	s := openFile(b, filepath.Join(b.TempDir(), "bench.db"), true)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := fullCall(fmt.Sprintf("pc-%d", i))
		c.Ended, c.Outcome = time.Time{}, ""
		if err := s.Create(ctx, c, EventOffered); err != nil {
			b.Fatal(err)
		}
		if err := s.Update(ctx, c, EventAnswered); err != nil {
			b.Fatal(err)
		}
		if err := s.Update(ctx, c); err != nil {
			b.Fatal(err)
		}
		c.Ended = c.Answered.Add(time.Minute)
		if err := s.Update(ctx, c, EventEnded); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
