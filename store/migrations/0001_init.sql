-- ponte schema v1: call records, protocol sequence, event outbox.
-- Times are INTEGER Unix nanoseconds (UTC); NULL means "not happened".
CREATE TABLE calls (
	id              TEXT PRIMARY KEY,
	protocol        TEXT NOT NULL UNIQUE,
	wacid           TEXT NOT NULL DEFAULT '',
	sip_call_id     TEXT NOT NULL DEFAULT '',
	direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
	outcome         TEXT NOT NULL,
	caller_number   TEXT NOT NULL DEFAULT '',
	caller_bsuid    TEXT NOT NULL DEFAULT '',
	caller_name     TEXT NOT NULL DEFAULT '',
	caller_username TEXT NOT NULL DEFAULT '',
	business_number TEXT NOT NULL DEFAULT '',
	phone_number_id TEXT NOT NULL DEFAULT '',
	route           TEXT NOT NULL DEFAULT '',
	mode            TEXT NOT NULL DEFAULT '',
	route_hook      TEXT NOT NULL DEFAULT '',
	answered_by     TEXT NOT NULL DEFAULT '',
	offered         INTEGER NOT NULL,
	pre_accepted    INTEGER,
	accepted        INTEGER,
	answered        INTEGER,
	ended           INTEGER,
	end_reason      TEXT NOT NULL DEFAULT '',
	ended_by        TEXT NOT NULL DEFAULT '',
	duration_ms     INTEGER NOT NULL DEFAULT 0,
	meta_status     TEXT NOT NULL DEFAULT '',
	meta_errors     TEXT NOT NULL DEFAULT '[]', -- JSON array of Meta error codes
	attempts        TEXT NOT NULL DEFAULT '[]', -- JSON array of Attempt
	transfers       TEXT NOT NULL DEFAULT '[]', -- JSON array of Transfer
	media           TEXT NOT NULL DEFAULT '{}', -- JSON Media
	mos             REAL,                       -- copy of media.mos for queries
	updated         INTEGER NOT NULL
);
-- List: newest first, keyset on (offered, id).
CREATE INDEX calls_offered ON calls (offered, id);
-- Sticky agent and the caller filter: a user's calls by answer time.
CREATE INDEX calls_caller_number ON calls (caller_number, answered);
CREATE INDEX calls_caller_bsuid ON calls (caller_bsuid, answered);
-- CloseInterrupted at startup.
CREATE INDEX calls_open ON calls (offered) WHERE ended IS NULL;

-- One row per local day: the protocol sequence (see protocol.go).
CREATE TABLE protocol_seq (
	day TEXT PRIMARY KEY,
	n   INTEGER NOT NULL
);

-- Call events for the business's webhook, written in the same transaction
-- as the record change that caused them. Sent rows are deleted; dead rows
-- (given up after events.max_age) stay for inspection.
CREATE TABLE outbox (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id     TEXT NOT NULL UNIQUE,
	call_id      TEXT NOT NULL,
	type         TEXT NOT NULL,
	body         BLOB NOT NULL,
	created      INTEGER NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL,
	last_error   TEXT NOT NULL DEFAULT '',
	dead         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending_call ON outbox (call_id, seq) WHERE dead = 0;
CREATE INDEX outbox_pending_due ON outbox (next_attempt, seq) WHERE dead = 0;

-- /readyz writes here to prove the database is writable.
CREATE TABLE heartbeat (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	at INTEGER NOT NULL
);
