-- ponte schema v2: the call-permission ledger for business-initiated calls
-- (issue 5; WhatsApp Calling reference §2.8, §3.5, §4.3, §7).
-- Keyed by (business phone_number_id, WhatsApp user). The user is the wa_id
-- (digits) or the BSUID; "wa_user" because USER is reserved in PostgreSQL.
-- Times are INTEGER Unix nanoseconds (UTC); NULL means "none".

-- The permission as ponte last learned it (reply webhook, GET
-- call_permissions, connect errors). One row per pair.
CREATE TABLE permissions (
	business      TEXT NOT NULL,
	wa_user       TEXT NOT NULL,
	state         TEXT NOT NULL CHECK (state IN ('none', 'temporary', 'permanent', 'revoked')),
	expires       INTEGER,                  -- temporary: end of the permission
	source        TEXT NOT NULL DEFAULT '', -- what set it: reply, reply_automatic, meta, connect_138006, ...
	updated       INTEGER NOT NULL,
	-- Meta answered 138009 (request limit): no request before this time,
	-- unless a connected call resets the counters (reference §4.3).
	requests_blocked_until INTEGER,
	PRIMARY KEY (business, wa_user)
);
CREATE INDEX permissions_updated ON permissions (state, updated);

-- Every permission request sent (interactive or template): 1/24 h and 2/7 d
-- per pair, counted after the pair's last connected call.
CREATE TABLE permission_requests (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	business TEXT NOT NULL,
	wa_user  TEXT NOT NULL,
	at       INTEGER NOT NULL,
	kind     TEXT NOT NULL CHECK (kind IN ('interactive', 'template')),
	wamid    TEXT NOT NULL DEFAULT '',
	outcome  TEXT NOT NULL DEFAULT 'sent' -- sent | accepted | rejected
);
CREATE INDEX permission_requests_pair ON permission_requests (business, wa_user, at);
CREATE INDEX permission_requests_at ON permission_requests (at);
CREATE INDEX permission_requests_wamid ON permission_requests (wamid) WHERE wamid <> '';

-- Every business-initiated connect: 10,000/24 h per business number,
-- 100 connected/24 h per pair, the run of unanswered or rejected calls, and
-- the call in progress.
CREATE TABLE bic_calls (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	business TEXT NOT NULL,
	wa_user  TEXT NOT NULL,
	at       INTEGER NOT NULL, -- connect time
	wacid    TEXT NOT NULL DEFAULT '',
	outcome  TEXT NOT NULL CHECK (outcome IN ('in_progress', 'connected', 'unanswered', 'rejected', 'failed')),
	ended    INTEGER
);
CREATE INDEX bic_calls_pair ON bic_calls (business, wa_user, outcome, at);
CREATE INDEX bic_calls_business ON bic_calls (business, at);
CREATE INDEX bic_calls_at ON bic_calls (at);
CREATE UNIQUE INDEX bic_calls_wacid ON bic_calls (wacid) WHERE wacid <> '';

-- The pair's last connected call, BIC or UIC: it resets the request
-- counters and the unanswered run.
CREATE TABLE pair_connected (
	business TEXT NOT NULL,
	wa_user  TEXT NOT NULL,
	at       INTEGER NOT NULL,
	PRIMARY KEY (business, wa_user)
);

-- Dialled number -> wa_id, learned from Meta's answers (Brazil's ninth
-- digit, Mexico's 52 vs 521).
CREATE TABLE aliases (
	input      TEXT PRIMARY KEY,
	wa_id      TEXT NOT NULL,
	learned_at INTEGER NOT NULL
);

-- The customer-service window: the user's last inbound message or call, or
-- acceptance of a business call (reference §7).
CREATE TABLE windows (
	business     TEXT NOT NULL,
	wa_user      TEXT NOT NULL,
	last_inbound INTEGER NOT NULL,
	PRIMARY KEY (business, wa_user)
);
