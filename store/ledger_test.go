package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// ledgers runs f against every Ledger implementation: SQLite on a file in
// t.TempDir() and the memory one, so both behave the same.
func ledgers(t *testing.T, f func(t *testing.T, l Ledger)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		f(t, openFile(t, filepath.Join(t.TempDir(), "ledger.db"), false))
	})
	t.Run("memory", func(t *testing.T) { f(t, NewMemoryLedger()) })
}

const (
	biz  = "106540352242922"
	user = "5511987654321"
)

var l0 = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

func hours(h float64) time.Duration { return time.Duration(h * float64(time.Hour)) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLedgerPermission(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		p, err := l.Permission(ctx, biz, user)
		must(t, err)
		if p.State != PermissionNone || !p.Updated.IsZero() || p.Business != biz || p.User != user {
			t.Fatalf("unknown pair: %+v", p)
		}
		steps := []Permission{
			{Business: biz, User: user, State: PermissionTemporary, Expires: l0.Add(7 * 24 * time.Hour), Source: "reply", Updated: l0},
			{Business: biz, User: user, State: PermissionTemporary, Expires: l0.Add(7 * 24 * time.Hour), Source: "reply",
				Updated: l0.Add(time.Hour), RequestsBlockedUntil: l0.Add(25 * time.Hour)},
			{Business: biz, User: user, State: PermissionPermanent, Source: "meta", Updated: l0.Add(2 * time.Hour)},
			{Business: biz, User: user, State: PermissionRevoked, Source: "reply_automatic", Updated: l0.Add(3 * time.Hour)},
		}
		for i, want := range steps {
			must(t, l.SetPermission(ctx, want))
			got, err := l.Permission(ctx, biz, user)
			must(t, err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: got %+v, want %+v", i, got, want)
			}
		}
		// Another business number is another pair.
		if p, _ := l.Permission(ctx, "other", user); p.State != PermissionNone {
			t.Fatalf("other business sees %q", p.State)
		}
		for _, bad := range []Permission{
			{Business: biz, User: user, State: "maybe"},
			{Business: "", User: user, State: PermissionNone},
			{Business: biz, User: "", State: PermissionNone},
		} {
			if err := l.SetPermission(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("SetPermission(%+v) = %v, want ErrInvalid", bad, err)
			}
		}
	})
}

func TestLedgerRequestCounters(t *testing.T) {
	type req struct {
		at   time.Duration // after l0
		kind string
	}
	cases := []struct {
		name      string
		reqs      []req
		connected []time.Duration // MarkConnected times after l0
		now       time.Duration
		want24h   int
		want7d    int
		wantTimes []time.Duration
	}{
		{name: "none", now: hours(1)},
		{name: "one just sent", reqs: []req{{0, RequestInteractive}}, now: hours(1), want24h: 1, want7d: 1, wantTimes: []time.Duration{0}},
		{name: "exactly 24 h old leaves the day", reqs: []req{{0, RequestTemplate}}, now: hours(24), want24h: 0, want7d: 1, wantTimes: []time.Duration{0}},
		{name: "23h59 old still counts", reqs: []req{{0, RequestTemplate}}, now: hours(24) - time.Minute, want24h: 1, want7d: 1, wantTimes: []time.Duration{0}},
		{name: "two in a week", reqs: []req{{0, RequestInteractive}, {hours(30), RequestTemplate}}, now: hours(31),
			want24h: 1, want7d: 2, wantTimes: []time.Duration{0, hours(30)}},
		{name: "7 days old leaves the week", reqs: []req{{0, RequestInteractive}, {hours(30), RequestTemplate}}, now: hours(168),
			want24h: 0, want7d: 1, wantTimes: []time.Duration{hours(30)}},
		{name: "connected call resets", reqs: []req{{0, RequestInteractive}, {hours(30), RequestTemplate}}, connected: []time.Duration{hours(31)},
			now: hours(32)},
		{name: "requests after the reset count", reqs: []req{{0, RequestInteractive}, {hours(30), RequestTemplate}, {hours(33), RequestInteractive}},
			connected: []time.Duration{hours(31)}, now: hours(34), want24h: 1, want7d: 1, wantTimes: []time.Duration{hours(33)}},
		{name: "an older connected mark does not move back", reqs: []req{{hours(2), RequestInteractive}},
			connected: []time.Duration{hours(3), hours(1)}, now: hours(4)},
		{name: "a request in the future is not counted yet", reqs: []req{{hours(5), RequestInteractive}}, now: hours(4)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledgers(t, func(t *testing.T, l Ledger) {
				for i, r := range tc.reqs {
					must(t, l.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: user, At: l0.Add(r.at), Kind: r.kind,
						WAMID: "wamid." + string(rune('A'+i))}))
				}
				// Another pair's requests never count.
				must(t, l.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: "5511900000000", At: l0, Kind: RequestTemplate}))
				for _, c := range tc.connected {
					must(t, l.MarkConnected(ctx, biz, user, l0.Add(c)))
				}
				c, err := l.PairCounters(ctx, biz, user, l0.Add(tc.now))
				must(t, err)
				var times []time.Duration
				for _, at := range c.RequestTimes {
					times = append(times, at.Sub(l0))
				}
				if c.RequestsLast24h != tc.want24h || c.RequestsLast7d != tc.want7d || !reflect.DeepEqual(times, tc.wantTimes) {
					t.Fatalf("24h %d 7d %d times %v; want %d %d %v", c.RequestsLast24h, c.RequestsLast7d, times, tc.want24h, tc.want7d, tc.wantTimes)
				}
				if n := len(tc.wantTimes); n > 0 {
					if !c.OldestRequestIn7d.Equal(l0.Add(tc.wantTimes[0])) || !c.LastRequestAt.Equal(l0.Add(tc.wantTimes[n-1])) {
						t.Fatalf("oldest %v last %v", c.OldestRequestIn7d, c.LastRequestAt)
					}
				} else if !c.OldestRequestIn7d.IsZero() || !c.LastRequestAt.IsZero() {
					t.Fatalf("no request counted but oldest %v last %v", c.OldestRequestIn7d, c.LastRequestAt)
				}
				if len(tc.connected) > 0 && !c.LastConnected.Equal(l0.Add(slicesMax(tc.connected))) {
					t.Fatalf("last connected %v", c.LastConnected)
				}
			})
		})
	}
}

func slicesMax(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d[1:] {
		m = max(m, v)
	}
	return m
}

func TestLedgerRequestOutcomeAndValidation(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		must(t, l.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: user, At: l0, Kind: RequestInteractive, WAMID: "wamid.1"}))
		must(t, l.SetRequestOutcome(ctx, "wamid.1", "accepted"))
		if err := l.SetRequestOutcome(ctx, "wamid.nope", "accepted"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown wamid: %v", err)
		}
		for _, bad := range []PermissionRequest{
			{Business: biz, User: user, At: l0, Kind: "sms"},
			{Business: biz, User: user, Kind: RequestTemplate},
			{Business: biz, At: l0, Kind: RequestTemplate},
		} {
			if err := l.AddPermissionRequest(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("AddPermissionRequest(%+v) = %v, want ErrInvalid", bad, err)
			}
		}
	})
}

func TestLedgerCalls(t *testing.T) {
	type call struct {
		at      time.Duration
		wacid   string
		outcome string // final outcome set at at+1 min; "" leaves it in progress
	}
	cases := []struct {
		name        string
		calls       []call
		connected   []time.Duration
		now         time.Duration
		connected24 int
		oldestConn  time.Duration // -1: zero
		unanswered  int
		inProgress  bool
		since       time.Duration
	}{
		{name: "nothing", now: hours(1), oldestConn: -1},
		{name: "run of unanswered and rejected", calls: []call{{0, "w1", CallUnanswered}, {hours(1), "w2", CallRejected}, {hours(2), "w3", CallFailed}},
			now: hours(3), oldestConn: -1, unanswered: 2},
		{name: "connected resets the run", calls: []call{{0, "w1", CallUnanswered}, {hours(1), "w2", CallConnected}, {hours(2), "w3", CallUnanswered}},
			connected: []time.Duration{hours(1) + time.Minute}, now: hours(3), connected24: 1, oldestConn: hours(1), unanswered: 1},
		{name: "a UIC connect resets it too", calls: []call{{0, "w1", CallUnanswered}, {hours(1), "w2", CallRejected}},
			connected: []time.Duration{hours(2)}, now: hours(3), oldestConn: -1},
		{name: "connected calls in 24 h", calls: []call{{0, "w1", CallConnected}, {hours(10), "w2", CallConnected}, {hours(20), "w3", CallConnected}},
			now: hours(24), connected24: 2, oldestConn: hours(10)},
		{name: "in progress", calls: []call{{0, "w1", CallConnected}, {hours(1), "w2", ""}}, now: hours(2), connected24: 1, inProgress: true, since: hours(1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledgers(t, func(t *testing.T, l Ledger) {
				for _, c := range tc.calls {
					must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: user, WACID: c.wacid, At: l0.Add(c.at), Outcome: CallInProgress}))
					if c.outcome != "" {
						must(t, l.SetCallOutcome(ctx, c.wacid, c.outcome, l0.Add(c.at+time.Minute)))
					}
				}
				for _, at := range tc.connected {
					must(t, l.MarkConnected(ctx, biz, user, l0.Add(at)))
				}
				got, err := l.PairCounters(ctx, biz, user, l0.Add(tc.now))
				must(t, err)
				want := time.Time{}
				if tc.oldestConn >= 0 {
					want = l0.Add(tc.oldestConn)
				}
				if tc.connected24 == 0 {
					want = time.Time{}
				}
				var since time.Time
				if tc.inProgress {
					since = l0.Add(tc.since)
				}
				if got.ConnectedLast24h != tc.connected24 || !got.OldestConnectedIn24h.Equal(want) ||
					got.ConsecutiveUnanswered != tc.unanswered || got.InProgress != tc.inProgress || !got.InProgressSince.Equal(since) {
					t.Fatalf("got %+v", got)
				}
			})
		})
	}
}

func TestLedgerCallOutcomeRules(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		a := CallAttempt{Business: biz, User: user, WACID: "wacid.1", At: l0, Outcome: CallInProgress}
		must(t, l.AddCallAttempt(ctx, a))
		if err := l.AddCallAttempt(ctx, a); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate wacid: %v", err)
		}
		// Refused connects have no wacid; several may exist.
		for range 2 {
			must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: user, At: l0, Outcome: CallFailed}))
		}
		must(t, l.SetCallOutcome(ctx, "wacid.1", CallConnected, l0.Add(time.Minute)))
		// The first final outcome wins.
		must(t, l.SetCallOutcome(ctx, "wacid.1", CallUnanswered, l0.Add(2*time.Minute)))
		c, err := l.PairCounters(ctx, biz, user, l0.Add(time.Hour))
		must(t, err)
		if c.ConnectedLast24h != 1 || c.ConsecutiveUnanswered != 0 || c.InProgress {
			t.Fatalf("counters %+v", c)
		}
		if err := l.SetCallOutcome(ctx, "wacid.unknown", CallConnected, l0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown wacid: %v", err)
		}
		for _, bad := range []struct{ wacid, outcome string }{{"wacid.1", "maybe"}, {"wacid.1", CallInProgress}, {"", CallConnected}} {
			if err := l.SetCallOutcome(ctx, bad.wacid, bad.outcome, l0); !errors.Is(err, ErrInvalid) {
				t.Errorf("SetCallOutcome(%q, %q) = %v, want ErrInvalid", bad.wacid, bad.outcome, err)
			}
		}
		if err := l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: user, At: l0, Outcome: "ringing"}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad outcome: %v", err)
		}
	})
}

func TestLedgerBusinessInitiations(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		for i, at := range []time.Duration{0, hours(1), hours(2), hours(30)} {
			must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: user, WACID: "w" + string(rune('a'+i)), At: l0.Add(at), Outcome: CallInProgress}))
		}
		must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: "5511900000001", At: l0.Add(hours(3)), Outcome: CallFailed}))
		must(t, l.AddCallAttempt(ctx, CallAttempt{Business: "other", User: user, At: l0.Add(hours(3)), Outcome: CallFailed}))
		cases := []struct {
			since  time.Duration
			n      int
			oldest time.Duration
		}{{-time.Hour, 5, 0}, {0, 4, hours(1)}, {hours(2), 2, hours(3)}, {hours(30), 0, -1}}
		for _, tc := range cases {
			n, oldest, err := l.BusinessInitiations(ctx, biz, l0.Add(tc.since))
			must(t, err)
			want := time.Time{}
			if tc.oldest >= 0 {
				want = l0.Add(tc.oldest)
			}
			if n != tc.n || !oldest.Equal(want) {
				t.Errorf("since %v: %d %v, want %d %v", tc.since, n, oldest, tc.n, want)
			}
		}
	})
}

func TestLedgerWindow(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		if w, err := l.WindowLastInbound(ctx, biz, user); err != nil || !w.IsZero() {
			t.Fatalf("no window: %v %v", w, err)
		}
		must(t, l.TouchWindow(ctx, biz, user, l0.Add(time.Hour)))
		must(t, l.TouchWindow(ctx, biz, user, l0)) // a late, older event never moves it back
		if w, _ := l.WindowLastInbound(ctx, biz, user); !w.Equal(l0.Add(time.Hour)) {
			t.Fatalf("window %v", w)
		}
		must(t, l.TouchWindow(ctx, biz, user, l0.Add(2*time.Hour)))
		if w, _ := l.WindowLastInbound(ctx, biz, user); !w.Equal(l0.Add(2 * time.Hour)) {
			t.Fatalf("window %v", w)
		}
	})
}

func TestLedgerMarkConnectedClearsRequestBlock(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		must(t, l.SetPermission(ctx, Permission{Business: biz, User: user, State: PermissionNone, Source: "meta", Updated: l0,
			RequestsBlockedUntil: l0.Add(24 * time.Hour)}))
		must(t, l.MarkConnected(ctx, biz, user, l0.Add(time.Hour)))
		p, err := l.Permission(ctx, biz, user)
		must(t, err)
		if !p.RequestsBlockedUntil.IsZero() || p.State != PermissionNone || p.Source != "meta" {
			t.Fatalf("after a connected call: %+v", p)
		}
	})
}

// Brazil's ninth digit: calls dialled 5511987654321 reach wa_id
// 551187654321; once learned, everything sits under the wa_id.
func TestLedgerAlias(t *testing.T) {
	const dialled, waID = "5511987654321", "551187654321"
	ledgers(t, func(t *testing.T, l Ledger) {
		if got, err := l.ResolveAlias(ctx, dialled); err != nil || got != dialled {
			t.Fatalf("unknown alias: %q %v", got, err)
		}
		// Under the dialled number: a request, a call, a window, a
		// connected mark and a permission older than the wa_id's.
		must(t, l.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: dialled, At: l0, Kind: RequestTemplate, WAMID: "wamid.1"}))
		must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: dialled, WACID: "wacid.1", At: l0.Add(time.Hour), Outcome: CallInProgress}))
		must(t, l.SetCallOutcome(ctx, "wacid.1", CallUnanswered, l0.Add(61*time.Minute)))
		must(t, l.TouchWindow(ctx, biz, dialled, l0.Add(2*time.Hour)))
		must(t, l.SetPermission(ctx, Permission{Business: biz, User: dialled, State: PermissionNone, Source: "meta", Updated: l0}))
		must(t, l.SetPermission(ctx, Permission{Business: biz, User: waID, State: PermissionTemporary, Source: "reply",
			Expires: l0.Add(7 * 24 * time.Hour), Updated: l0.Add(time.Minute)}))
		must(t, l.TouchWindow(ctx, biz, waID, l0.Add(time.Hour)))
		// On another business number the dialled key's permission is newer.
		must(t, l.SetPermission(ctx, Permission{Business: "other", User: dialled, State: PermissionPermanent, Source: "reply", Updated: l0}))

		must(t, l.LearnAlias(ctx, dialled, waID, l0.Add(3*time.Hour)))
		if got, _ := l.ResolveAlias(ctx, dialled); got != waID {
			t.Fatalf("resolve: %q", got)
		}
		c, err := l.PairCounters(ctx, biz, waID, l0.Add(4*time.Hour))
		must(t, err)
		if c.RequestsLast24h != 1 || c.ConsecutiveUnanswered != 1 {
			t.Fatalf("counters under the wa_id: %+v", c)
		}
		if c, _ := l.PairCounters(ctx, biz, dialled, l0.Add(4*time.Hour)); c.RequestsLast24h != 0 || c.ConsecutiveUnanswered != 0 {
			t.Fatalf("counters left under the dialled number: %+v", c)
		}
		if p, _ := l.Permission(ctx, biz, waID); p.State != PermissionTemporary {
			t.Fatalf("the newer permission (wa_id's) lost: %+v", p)
		}
		if p, _ := l.Permission(ctx, "other", waID); p.State != PermissionPermanent || p.User != waID {
			t.Fatalf("the dialled key's permission did not move: %+v", p)
		}
		if p, _ := l.Permission(ctx, biz, dialled); !p.Updated.IsZero() {
			t.Fatalf("permission left under the dialled number: %+v", p)
		}
		if w, _ := l.WindowLastInbound(ctx, biz, waID); !w.Equal(l0.Add(2 * time.Hour)) {
			t.Fatalf("window %v: the newer one should win", w)
		}
		// The call moved with its wacid: its outcome still updates.
		must(t, l.SetCallOutcome(ctx, "wacid.1", CallConnected, l0))
		for _, bad := range [][2]string{{"", waID}, {dialled, ""}, {waID, waID}} {
			if err := l.LearnAlias(ctx, bad[0], bad[1], l0); !errors.Is(err, ErrInvalid) {
				t.Errorf("LearnAlias(%q, %q) = %v", bad[0], bad[1], err)
			}
		}
	})
}

func TestLedgerPrune(t *testing.T) {
	ledgers(t, func(t *testing.T, l Ledger) {
		old, recent := l0, l0.Add(9*24*time.Hour)
		for i, at := range []time.Time{old, recent} {
			u := []string{"5511900000001", "5511900000002"}[i]
			must(t, l.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: u, At: at, Kind: RequestTemplate}))
			must(t, l.AddCallAttempt(ctx, CallAttempt{Business: biz, User: u, At: at, Outcome: CallFailed}))
			must(t, l.TouchWindow(ctx, biz, u, at))
			must(t, l.MarkConnected(ctx, biz, u, at))
		}
		perms := []Permission{
			{Business: biz, User: "a", State: PermissionNone, Updated: old},                                        // pruned
			{Business: biz, User: "b", State: PermissionTemporary, Expires: old.Add(12 * time.Hour), Updated: old}, // expired: pruned
			{Business: biz, User: "c", State: PermissionTemporary, Expires: old.Add(10 * 24 * time.Hour), Updated: old},
			{Business: biz, User: "d", State: PermissionPermanent, Updated: old},
			{Business: biz, User: "e", State: PermissionRevoked, Updated: old},
			{Business: biz, User: "f", State: PermissionNone, Updated: recent},
		}
		for _, p := range perms {
			must(t, l.SetPermission(ctx, p))
		}
		before := recent.Add(-8 * 24 * time.Hour)
		must(t, l.PruneLedger(ctx, before))
		if n, _, _ := l.BusinessInitiations(ctx, biz, time.Time{}); n != 1 {
			t.Fatalf("%d calls left, want 1", n)
		}
		for i, u := range []string{"5511900000001", "5511900000002"} {
			c, _ := l.PairCounters(ctx, biz, u, recent.Add(time.Hour))
			w, _ := l.WindowLastInbound(ctx, biz, u)
			kept := i == 1
			if (c.LastConnected.IsZero() == kept) || (w.IsZero() == kept) {
				t.Errorf("%s: kept=%v but connected %v window %v", u, kept, c.LastConnected, w)
			}
		}
		c, _ := l.PairCounters(ctx, biz, "5511900000002", recent.Add(time.Second))
		if c.RequestsLast7d != 0 { // the request is at the connected mark: not after it
			t.Errorf("requests %d", c.RequestsLast7d)
		}
		for _, p := range perms {
			got, _ := l.Permission(ctx, biz, p.User)
			wantKept := p.User != "a" && p.User != "b"
			if got.Updated.IsZero() == wantKept {
				t.Errorf("permission %s: kept=%v, want %v", p.User, !got.Updated.IsZero(), wantKept)
			}
		}
	})
}

func TestLedgerSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s := openFile(t, path, false)
	must(t, s.SetPermission(ctx, Permission{Business: biz, User: user, State: PermissionPermanent, Source: "reply", Updated: l0}))
	must(t, s.AddPermissionRequest(ctx, PermissionRequest{Business: biz, User: user, At: l0, Kind: RequestInteractive}))
	must(t, s.AddCallAttempt(ctx, CallAttempt{Business: biz, User: user, WACID: "wacid.9", At: l0, Outcome: CallInProgress}))
	must(t, s.LearnAlias(ctx, "5215512345678", "525512345678", l0))
	s.Close()
	s = openFile(t, path, false)
	if p, _ := s.Permission(ctx, biz, user); p.State != PermissionPermanent {
		t.Fatalf("permission after restart: %+v", p)
	}
	c, err := s.PairCounters(ctx, biz, user, l0.Add(time.Hour))
	must(t, err)
	if c.RequestsLast24h != 1 || !c.InProgress {
		t.Fatalf("counters after restart: %+v", c)
	}
	if wa, _ := s.ResolveAlias(ctx, "5215512345678"); wa != "525512345678" {
		t.Fatalf("alias after restart: %q", wa)
	}
	if v, _ := s.SchemaVersion(ctx); v < 2 {
		t.Fatalf("schema version %d", v)
	}
}
