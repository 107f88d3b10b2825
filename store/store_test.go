package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var ctx = context.Background()

func openFile(t testing.TB, path string, events bool) *SQLite {
	t.Helper()
	s, err := Open(ctx, Options{Driver: "sqlite", Path: path, Location: time.UTC, Events: events})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 11, 21, 14, 0, 0, 123456789, time.UTC)

// fullCall has every field set, as an answered and transferred call.
func fullCall(id string) *Call {
	return &Call{
		ID: id, WACID: "wacid.HBgL" + id, SIPCallID: "sip-" + id, Direction: Inbound,
		Caller:         Party{Number: "+55 11 98765-4321", BSUID: "BR.1234567890", Name: "Ana", Username: "ana.s"},
		BusinessNumber: "+551140004000", PhoneNumberID: "1234567890", Route: "support", Mode: "ring_then_answer", RouteHook: "ok",
		Attempts: []Attempt{
			{Target: "sip:sales@pbx", Trunk: "pbx-main", SIPCallID: "a1", Started: t0.Add(time.Second), Ended: t0.Add(16 * time.Second), Result: "ring_timeout"},
			{Target: "sip:default@pbx", Trunk: "pbx-main", SIPCallID: "a2", Started: t0.Add(16 * time.Second), Ended: t0.Add(20 * time.Second), Result: "200", Agent: "agent7"},
		},
		Transfers:   []Transfer{{At: t0.Add(60 * time.Second), By: "agent7", ReferTo: "sip:billing@pbx", Target: "sip:billing@pbx", Trunk: "pbx-main", Result: "200"}},
		AnsweredBy:  "agent7",
		Offered:     t0,
		PreAccepted: t0.Add(300 * time.Millisecond),
		Accepted:    t0.Add(20*time.Second + 200*time.Millisecond),
		Answered:    t0.Add(20 * time.Second),
		Ended:       t0.Add(125*time.Second + 500*time.Millisecond),
		Outcome:     OutcomeAnswered, EndReason: "completed", EndedBy: EndedByCaller,
		MetaStatus: "COMPLETED", MetaErrors: []int{138021},
		Media: Media{
			WhatsApp: LegMedia{Codec: "opus", PacketsSent: 5000, PacketsReceived: 4990, PacketsLost: 10, JitterMs: 4.5, RTTMs: 120, MOS: 4.3},
			SIP:      LegMedia{Codec: "PCMA", PacketsSent: 4990, PacketsReceived: 5000, PacketsLost: 0, JitterMs: 1.25, RTTMs: 2, MOS: 4.4},
			MOS:      4.3,
		},
	}
}

// same compares two records field by field, times by instant.
func same(t *testing.T, got, want *Call) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("record differs:\n got %s\nwant %s", g, w)
	}
}

func TestRecordsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ponte.db")
	s := openFile(t, path, true)
	c := fullCall("pc-1")
	c.Ended, c.Outcome = time.Time{}, ""
	if err := s.Create(ctx, c, EventOffered); err != nil {
		t.Fatal(err)
	}
	if c.Protocol != "2026-1121-0001" || c.Outcome != OutcomeActive || c.Caller.Number != "5511987654321" {
		t.Fatalf("create: protocol %q outcome %q number %q", c.Protocol, c.Outcome, c.Caller.Number)
	}
	c.Ended, c.Outcome = t0.Add(125*time.Second+500*time.Millisecond), OutcomeAnswered
	if err := s.Update(ctx, c, EventEnded); err != nil {
		t.Fatal(err)
	}
	if c.Duration != 105500*time.Millisecond {
		t.Fatalf("duration %v, want 1m45.5s (ended - answered)", c.Duration)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openFile(t, path, true)
	if v, err := s2.SchemaVersion(ctx); err != nil || v != len(realMigrations(t)) {
		t.Fatalf("schema version %d, %v", v, err)
	}
	got, err := s2.Get(ctx, "pc-1")
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, c)
	// The outbox survived too, in order.
	evs, err := s2.Due(ctx, time.Now(), 10)
	if err != nil || len(evs) != 1 || evs[0].Type != EventOffered {
		t.Fatalf("due after restart: %+v %v", evs, err)
	}
	if err := s2.MarkSent(ctx, evs[0].Seq); err != nil {
		t.Fatal(err)
	}
	evs, _ = s2.Due(ctx, time.Now(), 10)
	if len(evs) != 1 || evs[0].Type != EventEnded {
		t.Fatalf("second event: %+v", evs)
	}
	var body struct {
		ID   string    `json:"id"`
		Type EventType `json:"type"`
		Call Call      `json:"call"`
	}
	if err := json.Unmarshal(evs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ID != evs[0].ID || body.Type != EventEnded || body.Call.Protocol != "2026-1121-0001" || body.Call.Duration != c.Duration {
		t.Fatalf("event body: %+v", body)
	}
}

func TestMemoryDriverAndPing(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	c := fullCall("pc-m")
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, c.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, c)
	if _, err := Open(ctx, Options{Driver: "postgres"}); !errors.Is(err, ErrUnknownDriver) {
		t.Fatalf("unknown driver: %v", err)
	}
}

func TestProtocolNumbers(t *testing.T) {
	sp, err := time.LoadLocation("America/Sao_Paulo")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	s, err := Open(ctx, Options{Driver: "memory", Location: sp})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 2026-11-21 01:30 UTC is 2026-11-20 22:30 in São Paulo (UTC-3, no DST since 2019).
	late := time.Date(2026, 11, 21, 1, 30, 0, 0, time.UTC)
	cases := []struct {
		offered time.Time
		want    string
	}{
		{late, "2026-1120-0001"},
		{late.Add(time.Minute), "2026-1120-0002"},
		{late.Add(3 * time.Hour), "2026-1121-0001"}, // 01:30 local next day: new sequence
		{late.Add(2 * time.Minute), "2026-1120-0003"},
	}
	for i, tc := range cases {
		c := &Call{ID: fmt.Sprintf("pc-%d", i), Direction: Inbound, Offered: tc.offered}
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		if c.Protocol != tc.want {
			t.Errorf("call %d: protocol %q, want %q", i, c.Protocol, tc.want)
		}
	}
	// Typed the way people say it.
	for _, typed := range []string{"2026-1120-0002", "2026 1120 2", "2026112002", " 2026.1120.0002 "} {
		c, err := s.Get(ctx, typed)
		if err != nil || c.ID != "pc-1" {
			t.Errorf("Get(%q) = %v, %v", typed, c, err)
		}
	}
	if _, err := s.Get(ctx, "2026-1120-0009"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing protocol: %v", err)
	}
}

func TestParseProtocol(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"2026-1121-0042", "2026-1121-0042", true},
		{"2026112100042", "2026-1121-0042", true},
		{"2026-1121-12345", "2026-1121-12345", true},
		{"2026-1321-0042", "", false}, // month 13
		{"2026-1121-0000", "", false}, // sequences start at 1
		{"2026-1121", "", false},
		{"pc-0011aabb", "", false},
		{"2026-1121-00x2", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		got, ok := ParseProtocol(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidationAndErrors(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC, Events: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct {
		name string
		mod  func(c *Call)
		evs  []EventType
	}{
		{"no id", func(c *Call) { c.ID = "" }, nil},
		{"bad direction", func(c *Call) { c.Direction = "sideways" }, nil},
		{"no offered", func(c *Call) { c.Offered = time.Time{} }, nil},
		{"bad outcome", func(c *Call) { c.Outcome = "meh" }, nil},
		{"bad event", func(c *Call) {}, []EventType{"call.exploded"}},
	}
	for _, tc := range cases {
		c := fullCall("pc-v")
		tc.mod(c)
		if err := s.Create(ctx, c, tc.evs...); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	c := fullCall("pc-ok")
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, fullCall("pc-ok")); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	if err := s.Update(ctx, fullCall("pc-none")); !errors.Is(err, ErrNotFound) {
		t.Errorf("update unknown: %v", err)
	}
	if _, err := s.Get(ctx, "pc-none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	// An ended call without an outcome gets one rather than being lost.
	c.Outcome = ""
	if err := s.Update(ctx, c); err != nil || c.Outcome != OutcomeAnswered {
		t.Errorf("derived outcome %q, %v", c.Outcome, err)
	}
	c.Answered, c.AnsweredBy, c.Outcome = time.Time{}, "", ""
	if err := s.Update(ctx, c); err != nil || c.Outcome != OutcomeFailed || c.Duration != 0 {
		t.Errorf("derived outcome %q duration %v, %v", c.Outcome, c.Duration, err)
	}
	// A failed Create leaves no trace in the outbox (same transaction).
	evs, _ := s.Due(ctx, time.Now(), 100)
	if len(evs) != 0 {
		t.Errorf("events from failed writes: %+v", evs)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	s := openFile(t, path, false)
	if _, err := s.w.Exec(`INSERT INTO schema_version (version, applied) VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, Options{Driver: "sqlite", Path: path}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
	// WAL is on for file databases.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
}

func TestCloseInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	s := openFile(t, path, true)
	ringing := &Call{ID: "pc-ringing", Direction: Inbound, Offered: t0, Caller: Party{Number: "5511900000001"},
		Attempts: []Attempt{{Target: "sip:a@pbx", Started: t0.Add(time.Second)}}}
	talking := &Call{ID: "pc-talking", Direction: Outbound, Offered: t0.Add(time.Minute), Answered: t0.Add(70 * time.Second), AnsweredBy: "agent3"}
	done := fullCall("pc-done")
	for _, c := range []*Call{ringing, talking, done} {
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	s.Close() // the process "stops" with two calls open

	s = openFile(t, path, true)
	now := t0.Add(10 * time.Minute)
	n, err := s.CloseInterrupted(ctx, now)
	if err != nil || n != 2 {
		t.Fatalf("closed %d, %v; want 2", n, err)
	}
	cases := []struct {
		id       string
		outcome  Outcome
		duration time.Duration
	}{
		{"pc-ringing", OutcomeFailed, 0},
		{"pc-talking", OutcomeAnswered, now.Sub(t0.Add(70 * time.Second))},
	}
	for _, tc := range cases {
		c, err := s.Get(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if !c.Ended.Equal(now) || c.EndReason != EndReasonInterrupted || c.EndedBy != EndedBySystem || c.Outcome != tc.outcome || c.Duration != tc.duration {
			t.Errorf("%s: ended %v reason %q by %q outcome %q duration %v", tc.id, c.Ended, c.EndReason, c.EndedBy, c.Outcome, c.Duration)
		}
	}
	d, _ := s.Get(ctx, "pc-done")
	if d.EndReason != "completed" || !d.Ended.Equal(done.Ended) {
		t.Errorf("an ended call was touched: %+v", d)
	}
	evs, _ := s.Due(ctx, time.Now(), 10)
	if len(evs) != 2 || evs[0].CallID != "pc-ringing" || evs[1].CallID != "pc-talking" || evs[0].Type != EventEnded {
		t.Errorf("call.ended events: %+v", evs)
	}
	if n, err := s.CloseInterrupted(ctx, now); n != 0 || err != nil {
		t.Errorf("second run closed %d, %v", n, err)
	}
}

func TestLastAgent(t *testing.T) {
	s, err := Open(ctx, Options{Driver: "memory", Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	add := func(id, number, bsuid, agent string, answered time.Time) {
		c := &Call{ID: id, Direction: Inbound, Offered: answered.Add(-10 * time.Second), Answered: answered, AnsweredBy: agent,
			Caller: Party{Number: number, BSUID: bsuid}}
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	add("c1", "5511911110000", "", "agent1", t0)
	add("c2", "5511911110000", "", "agent2", t0.Add(time.Hour))
	add("c3", "", "BR.777", "agent9", t0.Add(2*time.Hour))                                                     // BSUID-only user
	add("c4", "5511922220000", "", "", t0.Add(3*time.Hour))                                                    // missed: no agent
	add("c5", "5511933330000", "BR.333", "agent5", t0)                                                         // both ids
	if err := s.Create(ctx, &Call{ID: "c6", Direction: Inbound, Offered: t0.Add(4 * time.Hour)}); err != nil { // empty number
		t.Fatal(err)
	}
	cases := []struct {
		key   string
		since time.Time
		want  string
	}{
		{"5511911110000", t0.Add(-time.Hour), "agent2"},       // the latest
		{"+55 (11) 91111-0000", t0.Add(-time.Hour), "agent2"}, // typed with punctuation
		{"5511911110000", t0.Add(2 * time.Hour), ""},          // outside the window
		{"5511911110000", t0.Add(time.Hour), "agent2"},        // window edge is inclusive
		{"BR.777", t0, "agent9"},
		{"BR.333", t0, "agent5"},
		{"5511933330000", t0, "agent5"},
		{"5511922220000", t0, ""}, // answered by nobody
		{"", t0, ""},              // never matches the BSUID-only rows' empty number
	}
	for _, tc := range cases {
		got, _, err := s.LastAgent(ctx, tc.key, tc.since)
		if err != nil || got != tc.want {
			t.Errorf("LastAgent(%q, %v) = %q, %v; want %q", tc.key, tc.since, got, err, tc.want)
		}
	}
}

// A failing migration leaves the database as it was: all pending migrations
// run in one transaction.
func TestMigrationIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	s := openFile(t, path, false)
	real := realMigrations(t)
	n := len(real)
	if v, _ := s.SchemaVersion(ctx); v != n {
		t.Fatalf("schema version %d at open, want %d", v, n)
	}
	next := fstest.MapFS{}
	for name, data := range real {
		next[name] = &fstest.MapFile{Data: data}
	}
	good := fmt.Sprintf("migrations/%04d_good.sql", n+1)
	broken := fmt.Sprintf("migrations/%04d_broken.sql", n+2)
	next[good] = &fstest.MapFile{Data: []byte(`CREATE TABLE migration_probe (id TEXT PRIMARY KEY);`)}
	next[broken] = &fstest.MapFile{Data: []byte(`ALTER TABLE calls ADD COLUMN x TEXT; CREATE TABLE oops (;`)}
	if err := s.migrate(ctx, next); !errors.Is(err, ErrMigrationFault) || !strings.Contains(err.Error(), filepath.Base(broken)) {
		t.Fatalf("broken migration: %v", err)
	}
	if v, _ := s.SchemaVersion(ctx); v != n {
		t.Fatalf("schema version %d after a failed migration, want %d", v, n)
	}
	var cnt int
	if err := s.w.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'migration_probe'`).Scan(&cnt); err != nil || cnt != 0 {
		t.Fatalf("%s applied although %s failed: %d %v", good, broken, cnt, err)
	}
	if _, err := s.w.Exec(`SELECT x FROM calls`); err == nil {
		t.Fatal("the broken migration's first statement survived the rollback")
	}
	// Fixed, both apply; reopening applies nothing more.
	next[broken] = &fstest.MapFile{Data: []byte(`ALTER TABLE calls ADD COLUMN x TEXT;`)}
	if err := s.migrate(ctx, next); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.SchemaVersion(ctx); v != n+2 {
		t.Fatalf("schema version %d, want %d", v, n+2)
	}
	if err := s.migrate(ctx, next); err != nil {
		t.Fatal(err)
	}
	v1 := real["migrations/0001_init.sql"]
	// A gap in the numbering is refused before anything runs.
	gap := fstest.MapFS{"migrations/0001_a.sql": {Data: v1}, "migrations/0003_c.sql": {Data: []byte(`SELECT 1;`)}}
	if _, err := migrations(gap); !errors.Is(err, ErrMigrationFault) {
		t.Fatalf("gap: %v", err)
	}
}

// realMigrations reads ponte's embedded migrations by path.
func realMigrations(t *testing.T) map[string][]byte {
	t.Helper()
	ents, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out["migrations/"+e.Name()] = b
	}
	return out
}
