package store

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// MemoryLedger is the Ledger kept in process memory: for runs without a
// store and for tests. It behaves as the SQLite ledger does (the same tests
// run against both); it forgets everything on restart.
type MemoryLedger struct {
	mu       sync.Mutex
	perms    map[pair]Permission
	requests []PermissionRequest
	calls    []memCall
	conn     map[pair]time.Time
	windows  map[pair]time.Time
	aliases  map[string]string
}

type pair struct{ business, user string }

type memCall struct {
	CallAttempt
	ended time.Time
}

var _ Ledger = (*MemoryLedger)(nil)

// NewMemoryLedger returns an empty ledger.
func NewMemoryLedger() *MemoryLedger {
	return &MemoryLedger{perms: map[pair]Permission{}, conn: map[pair]time.Time{},
		windows: map[pair]time.Time{}, aliases: map[string]string{}}
}

// utc drops the monotonic reading and zone, as a round trip through the
// database does, so both implementations return equal times.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

func (m *MemoryLedger) Permission(_ context.Context, business, user string) (Permission, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.perms[pair{business, user}]; ok {
		return p, nil
	}
	return Permission{Business: business, User: user, State: PermissionNone}, nil
}

func (m *MemoryLedger) SetPermission(_ context.Context, p Permission) error {
	if err := checkPermission(p); err != nil {
		return err
	}
	if p.Updated.IsZero() {
		p.Updated = time.Now()
	}
	p.Expires, p.Updated, p.RequestsBlockedUntil = utc(p.Expires), utc(p.Updated), utc(p.RequestsBlockedUntil)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.perms[pair{p.Business, p.User}] = p
	return nil
}

func (m *MemoryLedger) AddPermissionRequest(_ context.Context, r PermissionRequest) error {
	if err := checkRequest(r); err != nil {
		return err
	}
	if r.Outcome == "" {
		r.Outcome = "sent"
	}
	r.At = utc(r.At)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, r)
	return nil
}

func (m *MemoryLedger) SetRequestOutcome(_ context.Context, wamid, outcome string) error {
	if wamid == "" || outcome == "" {
		return fmt.Errorf("%w: request outcome needs a wamid and an outcome", ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	for i := range m.requests {
		if m.requests[i].WAMID == wamid {
			m.requests[i].Outcome, found = outcome, true
		}
	}
	if !found {
		return fmt.Errorf("%w: permission request %q", ErrNotFound, wamid)
	}
	return nil
}

func (m *MemoryLedger) AddCallAttempt(_ context.Context, a CallAttempt) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	a.At = utc(a.At)
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.WACID != "" {
		for _, c := range m.calls {
			if c.WACID == a.WACID {
				return fmt.Errorf("%w: business call %s", ErrExists, a.WACID)
			}
		}
	}
	c := memCall{CallAttempt: a}
	if a.Outcome != CallInProgress {
		c.ended = a.At
	}
	m.calls = append(m.calls, c)
	return nil
}

func (m *MemoryLedger) SetCallOutcome(_ context.Context, wacid, outcome string, at time.Time) error {
	if wacid == "" || !validCallOutcome(outcome) || outcome == CallInProgress {
		return fmt.Errorf("%w: call outcome %q for wacid %q", ErrInvalid, outcome, wacid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.calls {
		c := &m.calls[i]
		if c.WACID != wacid {
			continue
		}
		if c.Outcome == CallInProgress {
			c.Outcome = outcome
		}
		if c.ended.IsZero() {
			c.ended = utc(at)
		}
		return nil
	}
	return fmt.Errorf("%w: business call %s", ErrNotFound, wacid)
}

func (m *MemoryLedger) MarkConnected(_ context.Context, business, user string, at time.Time) error {
	if err := checkPair(business, user); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := pair{business, user}
	if at = utc(at); at.After(m.conn[k]) {
		m.conn[k] = at
	}
	if p, ok := m.perms[k]; ok {
		p.RequestsBlockedUntil = time.Time{}
		m.perms[k] = p
	}
	return nil
}

func (m *MemoryLedger) PairCounters(_ context.Context, business, user string, now time.Time) (PairCounters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var c PairCounters
	k := pair{business, user}
	lc := m.conn[k]
	c.LastConnected = lc
	since := now.Add(-7 * 24 * time.Hour)
	if lc.After(since) {
		since = lc
	}
	var times []time.Time
	for _, r := range m.requests {
		if r.Business == business && r.User == user && r.At.After(since) && !r.At.After(now) {
			times = append(times, r.At)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	fillRequests(&c, times, now)
	day := now.Add(-24 * time.Hour)
	for _, a := range m.calls {
		if a.Business != business || a.User != user {
			continue
		}
		switch inWindow := a.At.After(day) && !a.At.After(now); {
		case a.Outcome == CallConnected && inWindow:
			c.ConnectedLast24h++
			if c.OldestConnectedIn24h.IsZero() || a.At.Before(c.OldestConnectedIn24h) {
				c.OldestConnectedIn24h = a.At
			}
		case (a.Outcome == CallUnanswered || a.Outcome == CallRejected) && a.At.After(lc) && !a.At.After(now):
			c.ConsecutiveUnanswered++
		case a.Outcome == CallInProgress:
			c.InProgress = true
			if a.At.After(c.InProgressSince) {
				c.InProgressSince = a.At
			}
		}
	}
	return c, nil
}

func (m *MemoryLedger) BusinessInitiations(_ context.Context, business string, since time.Time) (int, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, oldest := 0, time.Time{}
	for _, a := range m.calls {
		if a.Business == business && a.At.After(since) {
			n++
			if oldest.IsZero() || a.At.Before(oldest) {
				oldest = a.At
			}
		}
	}
	return n, oldest, nil
}

func (m *MemoryLedger) LearnAlias(_ context.Context, input, waID string, at time.Time) error {
	if input == "" || waID == "" || input == waID || len(input) > 128 || len(waID) > 128 {
		return fmt.Errorf("%w: alias %q -> %q", ErrInvalid, input, waID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.aliases[input] = waID
	for i := range m.calls {
		if m.calls[i].User == input {
			m.calls[i].User = waID
		}
	}
	for i := range m.requests {
		if m.requests[i].User == input {
			m.requests[i].User = waID
		}
	}
	// One entry per pair: the newer wins, ties go to the wa_id's.
	for k, p := range m.perms {
		if k.user != input {
			continue
		}
		delete(m.perms, k)
		nk := pair{k.business, waID}
		if cur, ok := m.perms[nk]; !ok || p.Updated.After(cur.Updated) {
			p.User = waID
			m.perms[nk] = p
		}
	}
	for _, mp := range []map[pair]time.Time{m.windows, m.conn} {
		for k, t := range mp {
			if k.user != input {
				continue
			}
			delete(mp, k)
			nk := pair{k.business, waID}
			if cur, ok := mp[nk]; !ok || t.After(cur) {
				mp[nk] = t
			}
		}
	}
	return nil
}

func (m *MemoryLedger) ResolveAlias(_ context.Context, input string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if wa, ok := m.aliases[input]; ok {
		return wa, nil
	}
	return input, nil
}

func (m *MemoryLedger) TouchWindow(_ context.Context, business, user string, at time.Time) error {
	if err := checkPair(business, user); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := pair{business, user}
	if at = utc(at); at.After(m.windows[k]) {
		m.windows[k] = at
	}
	return nil
}

func (m *MemoryLedger) WindowLastInbound(_ context.Context, business, user string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.windows[pair{business, user}], nil
}

func (m *MemoryLedger) PruneLedger(_ context.Context, before time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	reqs := m.requests[:0]
	for _, r := range m.requests {
		if !r.At.Before(before) {
			reqs = append(reqs, r)
		}
	}
	clear(m.requests[len(reqs):])
	m.requests = reqs
	calls := m.calls[:0]
	for _, c := range m.calls {
		if !c.At.Before(before) {
			calls = append(calls, c)
		}
	}
	clear(m.calls[len(calls):])
	m.calls = calls
	for _, mp := range []map[pair]time.Time{m.windows, m.conn} {
		for k, t := range mp {
			if t.Before(before) {
				delete(mp, k)
			}
		}
	}
	for k, p := range m.perms {
		if p.Updated.Before(before) && (p.State == PermissionNone ||
			(p.State == PermissionTemporary && !p.Expires.IsZero() && p.Expires.Before(before))) {
			delete(m.perms, k)
		}
	}
	return nil
}
