package store

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

// seed writes 30 varied calls and returns them.
func seed(t *testing.T, s Store) []*Call {
	t.Helper()
	outcomes := []Outcome{OutcomeAnswered, OutcomeMissed, OutcomeAbandoned, OutcomeRejected, OutcomeFailed}
	callers := []Party{{Number: "5511900000001"}, {Number: "5511900000002", BSUID: "BR.2"}, {BSUID: "BR.3"}}
	var all []*Call
	for i := range 30 {
		off := t0.Add(time.Duration(i) * time.Minute)
		if i == 11 {
			off = all[10].Offered // same instant: the id breaks the tie
		}
		c := &Call{
			ID: fmt.Sprintf("pc-%02d", i), Direction: []Direction{Inbound, Outbound}[i%2], Offered: off,
			Route: []string{"support", "sales"}[i%3%2], Caller: callers[i%3],
			Ended: off.Add(30 * time.Second), Outcome: outcomes[i%5],
		}
		if i == 29 {
			c.Ended, c.Outcome = time.Time{}, "" // still active
		}
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		all = append(all, c)
	}
	return all
}

// expect is the reference filter: what List must return, in order.
func expect(all []*Call, f Filter) []string {
	var ids []string
	for _, c := range all {
		if !f.From.IsZero() && c.Offered.Before(f.From) || !f.To.IsZero() && !c.Offered.Before(f.To) ||
			f.Direction != "" && c.Direction != f.Direction || f.Outcome != "" && c.Outcome != f.Outcome ||
			f.Route != "" && c.Route != f.Route {
			continue
		}
		if f.Caller != "" && c.Caller.BSUID != f.Caller && (c.Caller.Number == "" || c.Caller.Number != digits(f.Caller)) {
			continue
		}
		ids = append(ids, c.ID)
	}
	slices.SortFunc(ids, func(a, b string) int {
		ca, cb := find(all, a), find(all, b)
		if d := cb.Offered.Compare(ca.Offered); d != 0 {
			return d
		}
		return strings.Compare(b, a)
	})
	return ids
}

func find(all []*Call, id string) *Call {
	for _, c := range all {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// listAll pages through List with a small page size.
func listAll(t *testing.T, s Store, f Filter) []string {
	t.Helper()
	var ids []string
	for page := 0; ; page++ {
		p, err := s.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Calls) > max(f.Limit, 1) {
			t.Fatalf("page of %d over limit %d", len(p.Calls), f.Limit)
		}
		for _, c := range p.Calls {
			ids = append(ids, c.ID)
		}
		if p.Next == "" {
			return ids
		}
		if page > 100 {
			t.Fatal("pagination does not end")
		}
		f.Cursor = p.Next
	}
}

func TestListFiltersAndPagination(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "sqlite", Path: filepath.Join(t.TempDir(), "p.db"), Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all := seed(t, s)
	cases := []struct {
		name string
		f    Filter
		n    int // expected count, checked against the reference too
	}{
		{"everything", Filter{}, 30},
		{"from", Filter{From: t0.Add(20 * time.Minute)}, 10},
		{"range", Filter{From: t0.Add(5 * time.Minute), To: t0.Add(15 * time.Minute)}, 10},
		{"to excludes its instant", Filter{To: t0.Add(2 * time.Minute)}, 2},
		{"inbound", Filter{Direction: Inbound}, 15},
		{"missed", Filter{Outcome: OutcomeMissed}, 6},
		{"active", Filter{Outcome: OutcomeActive}, 1},
		{"route", Filter{Route: "sales"}, 10},
		{"caller number typed", Filter{Caller: "+55 11 90000-0001"}, 10},
		{"caller bsuid", Filter{Caller: "BR.2"}, 10},
		{"caller number of a bsuid user", Filter{Caller: "5511900000002"}, 10},
		{"combined", Filter{Direction: Outbound, Route: "support", Outcome: OutcomeAnswered}, 2}, // i odd, i%5==0, i%3 != 1: 5 and 15
		{"nothing", Filter{Caller: "BR.404"}, 0},
	}
	for _, tc := range cases {
		want := expect(all, tc.f)
		if len(want) != tc.n {
			t.Fatalf("%s: reference gives %d, case says %d", tc.name, len(want), tc.n)
		}
		for _, limit := range []int{1, 4, 7, 50} {
			f := tc.f
			f.Limit = limit
			if got := listAll(t, s, f); !slices.Equal(got, want) {
				t.Errorf("%s limit %d:\n got %v\nwant %v", tc.name, limit, got, want)
			}
		}
	}
}

func TestPaginationStableUnderInserts(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all := seed(t, s)
	p1, err := s.List(ctx, Filter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	// A new call arrives between pages: it is newer, so page 2 must neither
	// repeat nor skip a row (an OFFSET scheme would repeat one).
	if err := s.Create(ctx, &Call{ID: "pc-new", Direction: Inbound, Offered: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	p2, err := s.List(ctx, Filter{Limit: 10, Cursor: p1.Next})
	if err != nil {
		t.Fatal(err)
	}
	want := expect(all, Filter{})
	var got []string
	for _, c := range append(p1.Calls, p2.Calls...) {
		got = append(got, c.ID)
	}
	if !slices.Equal(got, want[:20]) {
		t.Fatalf("got %v\nwant %v", got, want[:20])
	}
	if p, _ := s.List(ctx, Filter{Limit: 1000}); len(p.Calls) != 31 {
		t.Fatalf("limit clamps to MaxLimit, still all 31 rows: %d", len(p.Calls))
	}
	if _, err := s.List(ctx, Filter{Cursor: "not-a-cursor!"}); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		off int64
		id  string
	}{{0, "a"}, {t0.UnixNano(), "pc-0011|x"}, {-5, "ü"}} {
		off, id, err := DecodeCursor(EncodeCursor(tc.off, tc.id))
		if err != nil || off != tc.off || id != tc.id {
			t.Errorf("round trip (%d,%q) -> (%d,%q,%v)", tc.off, tc.id, off, id, err)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(EncodeCursor(t0.UnixNano(), "pc-1"))
	f.Add("")
	f.Add("MTIz")
	f.Fuzz(func(t *testing.T, cur string) {
		off, id, err := DecodeCursor(cur)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("error not ErrBadCursor: %v", err)
			}
			return
		}
		if id == "" {
			t.Fatal("accepted an empty id")
		}
		// What decodes must encode back to a cursor that decodes the same.
		off2, id2, err := DecodeCursor(EncodeCursor(off, id))
		if err != nil || off2 != off || id2 != id {
			t.Fatalf("re-encode: %d %q %v", off2, id2, err)
		}
	})
}
