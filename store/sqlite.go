package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/config"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver (pure Go, no cgo)
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configures Open.
type Options struct {
	Driver string // "sqlite" (a file) or "memory" (an in-process database, for tests and demos)
	Path   string // the SQLite file, for driver "sqlite"
	// Location is the business's time zone: protocol numbers carry the local
	// date of the offer. Default time.Local.
	Location *time.Location
	// Events turns the outbox on: with no webhook configured, events passed
	// to Create/Update are dropped instead of piling up undelivered.
	Events bool
	Logger *slog.Logger
}

// OptionsFromConfig maps the config file onto Options.
func OptionsFromConfig(c *config.Config) (Options, error) {
	o := Options{Driver: c.Store.Driver, Path: c.Store.DSN, Events: c.Events.URL != "", Location: time.Local}
	if c.Store.Timezone != "" {
		loc, err := time.LoadLocation(c.Store.Timezone)
		if err != nil {
			return o, fmt.Errorf("store.timezone: %w", err)
		}
		o.Location = loc
	}
	return o, nil
}

// SQLite is the embedded Store. WAL lets the API read while the gateway
// writes; all writes go through one connection, so SQLite never returns
// SQLITE_BUSY between our own writers, and busy_timeout covers a backup tool
// or sqlite3 shell holding a lock for a moment.
type SQLite struct {
	w, r    *sql.DB // writer (one connection) and readers (the same pool for "memory")
	loc     *time.Location
	events  bool
	log     *slog.Logger
	pending chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

// Pragmas on every connection. synchronous=NORMAL in WAL mode survives a
// process crash (a committed transaction is in the WAL); an OS crash or power
// loss may roll back the last transactions but never corrupts the file
// (sqlite.org/wal.html §"Performance Considerations"). busy_timeout comes
// first so the others cannot fail on a lock held by another process.
const pragmas = "_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"

// Open opens (creating if needed) the database and applies pending
// migrations in one transaction.
func Open(ctx context.Context, o Options) (*SQLite, error) {
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &SQLite{loc: o.Location, events: o.Events, log: o.Logger, pending: make(chan struct{}, 1)}
	var err error
	switch o.Driver {
	case "sqlite", "":
		if o.Path == "" || strings.ContainsRune(o.Path, '?') {
			return nil, fmt.Errorf("%w: sqlite path %q (empty, or contains '?')", ErrInvalid, o.Path)
		}
		// _txlock=immediate: a write transaction takes the write lock at
		// BEGIN, so it never fails half-way on a lock upgrade.
		if s.w, err = sql.Open("sqlite", o.Path+"?"+pragmas+"&_pragma=journal_mode(WAL)&_txlock=immediate"); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", o.Path, err)
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		if err = s.migrate(ctx, migrationFS); err != nil {
			s.w.Close()
			return nil, err
		}
		if s.r, err = sql.Open("sqlite", o.Path+"?"+pragmas+"&_pragma=query_only(1)"); err != nil {
			s.w.Close()
			return nil, fmt.Errorf("store: open %s: %w", o.Path, err)
		}
		s.r.SetMaxOpenConns(4)
		if err = s.r.PingContext(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("store: open %s for reading: %w", o.Path, err)
		}
	case "memory":
		// One connection that is never closed: an in-memory database lives
		// and dies with its connection.
		if s.w, err = sql.Open("sqlite", ":memory:?"+pragmas); err != nil {
			return nil, fmt.Errorf("store: open memory: %w", err)
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		s.w.SetConnMaxLifetime(0)
		s.w.SetConnMaxIdleTime(0)
		if err = s.migrate(ctx, migrationFS); err != nil {
			s.w.Close()
			return nil, err
		}
		s.r = s.w
	default:
		return nil, fmt.Errorf("%w: %q (want sqlite or memory)", ErrUnknownDriver, o.Driver)
	}
	return s, nil
}

// migration is one embedded NNNN_name.sql file.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations(fsys fs.FS) ([]migration, error) {
	ents, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("%w: migration file %q is not NNNN_name.sql", ErrMigrationFault, e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{v, e.Name(), string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != i+1 {
			return nil, fmt.Errorf("%w: migrations must be numbered 1, 2, 3...; found %s", ErrMigrationFault, ms[i].name)
		}
	}
	return ms, nil
}

// migrate brings the schema to the latest version in one transaction: a
// failure leaves the file as it was (SQLite DDL is transactional).
func (s *SQLite) migrate(ctx context.Context, fsys fs.FS) error {
	ms, err := migrations(fsys)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin migration: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("%w: %v", ErrMigrationFault, err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
		return fmt.Errorf("%w: %v", ErrMigrationFault, err)
	}
	if cur > len(ms) {
		return fmt.Errorf("%w: database at version %d, this ponte knows up to %d", ErrSchemaTooNew, cur, len(ms))
	}
	for _, m := range ms[cur:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrMigrationFault, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`, m.version, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrMigrationFault, m.name, err)
		}
		s.log.Info("store: schema migrated", "version", m.version, "file", m.name)
	}
	return tx.Commit()
}

// SchemaVersion returns the applied schema version.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// Close closes the database. It is safe to call more than once.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		var errR error
		if s.r != nil && s.r != s.w {
			errR = s.r.Close()
		}
		s.closeErr = errors.Join(s.w.Close(), errR)
	})
	return s.closeErr
}

// Ping proves the database takes writes.
func (s *SQLite) Ping(ctx context.Context) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Pending is signalled after a transaction that enqueued events commits, so
// a deliverer can send at once instead of waiting for its next poll.
func (s *SQLite) Pending() <-chan struct{} { return s.pending }

func (s *SQLite) notify() {
	select {
	case s.pending <- struct{}{}:
	default:
	}
}

// queryer is what *sql.DB and *sql.Tx share.
type queryer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// Create records a new call.
func (s *SQLite) Create(ctx context.Context, c *Call, events ...EventType) error {
	if err := prepare(c); err != nil {
		return err
	}
	if err := checkEvents(events); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create %s: %w", c.ID, err)
	}
	defer tx.Rollback()
	var dup int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM calls WHERE id = ?`, c.ID).Scan(&dup); {
	case err == nil:
		return fmt.Errorf("%w: %s", ErrExists, c.ID)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("store: create %s: %w", c.ID, err)
	}
	day := protocolDay(c.Offered, s.loc)
	var n int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO protocol_seq (day, n) VALUES (?, 1)
		ON CONFLICT (day) DO UPDATE SET n = n + 1 RETURNING n`, day).Scan(&n); err != nil {
		return fmt.Errorf("store: protocol for %s: %w", c.ID, err)
	}
	rec := *c
	rec.Protocol = formatProtocol(day, n)
	rec.Updated = time.Now().UTC()
	args, err := rowArgs(&rec)
	if err != nil {
		return err
	}
	q := `INSERT INTO calls (id, protocol, ` + strings.Join(mutableCols, ", ") + `) VALUES (?, ?` + strings.Repeat(", ?", len(mutableCols)) + `)`
	if _, err := tx.ExecContext(ctx, q, append([]any{rec.ID, rec.Protocol}, args...)...); err != nil {
		return fmt.Errorf("store: create %s: %w", c.ID, err)
	}
	if err := s.enqueue(ctx, tx, &rec, events); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create %s: %w", c.ID, err)
	}
	*c = rec
	if s.events && len(events) > 0 {
		s.notify()
	}
	return nil
}

// Update writes the whole record of c.ID.
func (s *SQLite) Update(ctx context.Context, c *Call, events ...EventType) error {
	if err := prepare(c); err != nil {
		return err
	}
	if err := checkEvents(events); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: update %s: %w", c.ID, err)
	}
	defer tx.Rollback()
	rec := *c
	if err := updateRow(ctx, tx, &rec); err != nil {
		return err
	}
	if err := s.enqueue(ctx, tx, &rec, events); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: update %s: %w", c.ID, err)
	}
	*c = rec
	if s.events && len(events) > 0 {
		s.notify()
	}
	return nil
}

// updateRow writes rec over its row and reads back the protocol.
func updateRow(ctx context.Context, q queryer, rec *Call) error {
	rec.Updated = time.Now().UTC()
	args, err := rowArgs(rec)
	if err != nil {
		return err
	}
	set := make([]string, len(mutableCols))
	for i, col := range mutableCols {
		set[i] = col + " = ?"
	}
	err = q.QueryRowContext(ctx, `UPDATE calls SET `+strings.Join(set, ", ")+` WHERE id = ? RETURNING protocol`,
		append(args, rec.ID)...).Scan(&rec.Protocol)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: call %s", ErrNotFound, rec.ID)
	}
	if err != nil {
		return fmt.Errorf("store: update %s: %w", rec.ID, err)
	}
	return nil
}

func checkEvents(events []EventType) error {
	for _, e := range events {
		if !validEvent(e) {
			return fmt.Errorf("%w: event type %q", ErrInvalid, e)
		}
	}
	return nil
}

// enqueue writes events for rec inside the record's transaction.
func (s *SQLite) enqueue(ctx context.Context, tx queryer, rec *Call, events []EventType) error {
	if !s.events {
		return nil
	}
	now := time.Now().UTC()
	for _, t := range events {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id := "ev-" + hex.EncodeToString(b[:])
		body, err := json.Marshal(eventBody{ID: id, Type: t, Created: now, Call: rec})
		if err != nil {
			return fmt.Errorf("store: event %s for %s: %w", t, rec.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (event_id, call_id, type, body, created, next_attempt) VALUES (?, ?, ?, ?, ?, ?)`,
			id, rec.ID, string(t), body, now.UnixNano(), now.UnixNano()); err != nil {
			return fmt.Errorf("store: enqueue %s for %s: %w", t, rec.ID, err)
		}
	}
	return nil
}

// Get returns a call by id, or by protocol number as people type it.
func (s *SQLite) Get(ctx context.Context, idOrProtocol string) (*Call, error) {
	c, err := scanCall(s.r.QueryRowContext(ctx, `SELECT `+allCols+` FROM calls WHERE id = ?`, idOrProtocol))
	if errors.Is(err, sql.ErrNoRows) {
		if p, ok := ParseProtocol(idOrProtocol); ok {
			c, err = scanCall(s.r.QueryRowContext(ctx, `SELECT `+allCols+` FROM calls WHERE protocol = ?`, p))
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: call %q", ErrNotFound, idOrProtocol)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get %q: %w", idOrProtocol, err)
	}
	return c, nil
}
