package permit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

var _ Graph = (*whatsapp.Client)(nil) // the real client fits

var ctx = context.Background()

const biz = "106540352242922"

var t0 = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

// clock is the injected time; tests move it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type sent struct {
	business, to string
	req          whatsapp.PermissionRequest
}

// fakeGraph records calls and answers from a script.
type fakeGraph struct {
	mu      sync.Mutex
	perm    map[string]*whatsapp.CallPermission // by user; missing: no_permission
	permErr error
	gets    []string // users asked about (user_wa_id or recipient)
	bsuid   []string // recipients asked about
	sends   []sent
	sendErr error
	waID    map[string]string // `to` -> wa_id in the messages response
	n       int
}

func newGraph() *fakeGraph {
	return &fakeGraph{perm: map[string]*whatsapp.CallPermission{}, waID: map[string]string{}}
}

func (g *fakeGraph) CallPermissions(_ context.Context, phoneNumberID, userWaID, recipient string) (*whatsapp.CallPermission, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := userWaID
	if u == "" {
		u = recipient
		g.bsuid = append(g.bsuid, recipient)
	}
	g.gets = append(g.gets, u)
	if g.permErr != nil {
		return nil, g.permErr
	}
	if p, ok := g.perm[u]; ok {
		cp := *p
		return &cp, nil
	}
	return &whatsapp.CallPermission{Status: "no_permission", Actions: []whatsapp.PermissionAction{
		{Name: "send_call_permission_request", CanPerform: true},
		{Name: "start_call", CanPerform: false},
	}}, nil
}

func (g *fakeGraph) SendPermissionRequest(_ context.Context, phoneNumberID, to string, r whatsapp.PermissionRequest) (whatsapp.MessageResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sendErr != nil {
		return whatsapp.MessageResult{}, g.sendErr
	}
	g.n++
	g.sends = append(g.sends, sent{phoneNumberID, to, r})
	wa := g.waID[to]
	if wa == "" {
		wa = to
	}
	return whatsapp.MessageResult{MessageID: "wamid.req" + string(rune('0'+g.n)), Input: to, WaID: wa}, nil
}

func (g *fakeGraph) counts() (gets, sends int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.gets), len(g.sends)
}

func (g *fakeGraph) set(user string, p *whatsapp.CallPermission) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.perm[user] = p
}

// granted is Meta's answer for a user who may be called.
func granted(status string, exp time.Time) *whatsapp.CallPermission {
	return &whatsapp.CallPermission{Status: status, Expiration: exp, Actions: []whatsapp.PermissionAction{
		{Name: "send_call_permission_request", CanPerform: true},
		{Name: "start_call", CanPerform: true},
	}}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a Service on a ledger with a fake Graph and clock.
type fixture struct {
	s  *Service
	l  store.Ledger
	g  *fakeGraph
	ck *clock
}

func newFixture(t *testing.T, l store.Ledger, lim Limits) *fixture {
	t.Helper()
	f := &fixture{l: l, g: newGraph(), ck: &clock{t: t0}}
	f.s = New(l, f.g, lim, f.ck.Now, quiet)
	return f
}

// ledgers runs fn on each ledger implementation.
func ledgers(t *testing.T, fn func(t *testing.T, l store.Ledger)) {
	t.Helper()
	t.Run("memory", func(t *testing.T) { fn(t, store.NewMemoryLedger()) })
	t.Run("sqlite", func(t *testing.T) {
		s, err := store.Open(ctx, store.Options{Driver: "sqlite", Path: filepath.Join(t.TempDir(), "p.db"), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fn(t, s)
	})
}

func TestNormalizeNumber(t *testing.T) {
	cases := []struct {
		in, cc string
		want   string
		bsuid  bool
		err    bool
	}{
		{in: "+55 (11) 98765-4321", want: "5511987654321"},
		{in: "+5511987654321", cc: "1", want: "5511987654321"},
		{in: "005511987654321", cc: "55", want: "5511987654321"},
		{in: "011987654321", cc: "55", want: "5511987654321"},          // national, trunk 0
		{in: "011987654321", err: true},                                // national without a country code
		{in: "11987654321", cc: "+55", want: "5511987654321"},          // national without the trunk 0
		{in: "5511987654321", cc: "55", want: "5511987654321"},         // already international
		{in: "55.11.98765.4321", want: "5511987654321"},                // dots
		{in: "+1 (408) 555-1234;phone-context=x", want: "14085551234"}, // RFC 3966 parameters
		{in: "US.13491208655302741918", want: "US.13491208655302741918", bsuid: true},
		{in: "  BR.1234567890  ", cc: "55", want: "BR.1234567890", bsuid: true},
		{in: "+55 11 9x765", err: true},
		{in: "55+11987654321", err: true},
		{in: "++5511987654321", err: true},
		{in: "+0511987654321", err: true},    // no country code starts with 0
		{in: "+1234567890123456", err: true}, // 16 digits
		{in: "12345", err: true},
		{in: "", err: true},
		{in: "sip:+5511987654321@x", err: true},
		{in: "1001", cc: "bogus", err: true}, // an extension, and an unusable country code
	}
	for _, tc := range cases {
		got, bsuid, err := NormalizeNumber(tc.in, tc.cc)
		if tc.err {
			if !errors.Is(err, ErrBadNumber) {
				t.Errorf("NormalizeNumber(%q, %q) = %q, %v; want ErrBadNumber", tc.in, tc.cc, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || bsuid != tc.bsuid {
			t.Errorf("NormalizeNumber(%q, %q) = %q, %v, %v; want %q, %v", tc.in, tc.cc, got, bsuid, err, tc.want, tc.bsuid)
		}
	}
}

func TestIsBSUID(t *testing.T) {
	for s, want := range map[string]bool{
		"US.13491208655302741918": true, "BR.ENT.99": true, "john.doe": true,
		"5511987654321": false, "55.11.9876": false, ".US123": false, "US": false, "US.12 34": false, "US.12@x": false,
	} {
		if IsBSUID(s) != want {
			t.Errorf("IsBSUID(%q) = %v", s, !want)
		}
	}
}

// Brazil's ninth digit: dialled 5511 9 8765 4321, wa_id 551187654321.
func TestNormalizeResolvesAlias(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.s.LearnAlias(ctx, "+55 11 98765-4321", "551187654321")
		for _, in := range []string{"+55 11 98765-4321", "011987654321", "5511987654321"} {
			got, bsuid, err := f.s.Normalize(in, "55")
			if err != nil || bsuid || got != "551187654321" {
				t.Errorf("Normalize(%q) = %q %v %v", in, got, bsuid, err)
			}
		}
		// The wa_id itself and other numbers are left alone.
		if got, _, _ := f.s.Normalize("+551187654321", ""); got != "551187654321" {
			t.Errorf("wa_id: %q", got)
		}
		if got, _, _ := f.s.Normalize("+5511912345678", ""); got != "5511912345678" {
			t.Errorf("other: %q", got)
		}
		// Nonsense aliases are not learned.
		f.s.LearnAlias(ctx, "US.123", "5511912345678")
		f.s.LearnAlias(ctx, "5511912345678", "5511912345678")
		if got, _, _ := f.s.Normalize("+5511912345678", ""); got != "5511912345678" {
			t.Errorf("after bad aliases: %q", got)
		}
	})
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"+55 (11) 98765-4321", "011987654321", "US.1349120865", "00 1 408 555 1234", ";", "+", "0", "a.b", "++1"} {
		f.Add(s, "55")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, in, cc string) {
		got, bsuid, err := NormalizeNumber(in, cc)
		if err != nil {
			if !errors.Is(err, ErrBadNumber) || got != "" {
				t.Fatalf("error %v with result %q", err, got)
			}
			return
		}
		if bsuid {
			if !IsBSUID(got) || got != strings.TrimSpace(got) {
				t.Fatalf("BSUID %q", got)
			}
			return
		}
		if len(got) < 7 || len(got) > 15 || got[0] == '0' || strings.Trim(got, "0123456789") != "" {
			t.Fatalf("%q, %q -> %q is not E.164 digits", in, cc, got)
		}
		// Written back in international form, it normalises to itself
		// whatever the default country code.
		if again, b, err := NormalizeNumber("+"+got, "44"); err != nil || b || again != got {
			t.Fatalf("+%s -> %q %v %v", got, again, b, err)
		}
	})
}

func TestWarningAndHuman(t *testing.T) {
	if got := warning(`say "no" \ now` + "\r\n"); got != `399 ponte "say \"no\" \\ now  "` {
		t.Errorf("warning: %s", got)
	}
	for d, want := range map[time.Duration]string{
		40 * time.Second: "40s", 2 * time.Minute: "2m", 5*time.Hour + 3*time.Minute + 10*time.Second: "5h3m",
		22 * time.Hour: "22h", 118 * time.Hour: "118h",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
	lim := DefaultLimits()
	if lim.RequestsPer24h != 1 || lim.RequestsPer7d != 2 || lim.ConnectedPer24h != 100 || lim.InitiationsPer24h != 10000 ||
		lim.WarnAfterUnanswered != 2 || lim.RevokeAfterUnanswered != 4 || lim.StopBeforeRevoke || lim.Window != 24*time.Hour ||
		lim.TemporaryValidity != 7*24*time.Hour || lim.CacheTTL != time.Minute || lim.GetRate != 5 {
		t.Errorf("defaults: %+v", lim)
	}
}
