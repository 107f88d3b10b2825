-- ponte schema v4: calls in progress, for crash recovery (issue 8 item 5).
-- One row per call while it runs, deleted when it ends normally. A row that
-- survives a restart is a call the last process left behind: at startup
-- ponte sends BYE to the PBX from the persisted dialog state (RFC 3261
-- §12.2.1.1) and terminate (or reject) to Meta for its wacid, then deletes
-- it. Times are INTEGER Unix nanoseconds (UTC).
CREATE TABLE live_calls (
	id              TEXT PRIMARY KEY,   -- ponte's call id (calls.id)
	wacid           TEXT NOT NULL DEFAULT '',
	direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
	phone_number_id TEXT NOT NULL DEFAULT '',
	accepted        INTEGER NOT NULL DEFAULT 0, -- Meta accepted/connected: terminate, not reject
	started         INTEGER NOT NULL,
	-- The SIP dialog once confirmed ('' role: none yet).
	sip_role        TEXT NOT NULL DEFAULT '' CHECK (sip_role IN ('', 'uac', 'uas')),
	sip_call_id     TEXT NOT NULL DEFAULT '',
	local_tag       TEXT NOT NULL DEFAULT '',
	remote_tag      TEXT NOT NULL DEFAULT '',
	local_uri       TEXT NOT NULL DEFAULT '', -- From of ponte's requests, without tag
	remote_uri      TEXT NOT NULL DEFAULT '', -- To of ponte's requests, without tag
	remote_target   TEXT NOT NULL DEFAULT '', -- the peer's Contact
	route_set       TEXT NOT NULL DEFAULT '[]', -- JSON array, in the order ponte's Route headers carry it
	local_cseq      INTEGER NOT NULL DEFAULT 0, -- ponte's last local CSeq when written
	transport       TEXT NOT NULL DEFAULT '',
	dest            TEXT NOT NULL DEFAULT '',   -- next hop host:port when there is no route set
	via_host        TEXT NOT NULL DEFAULT '',   -- Via sent-by host[:port] ponte used toward the peer
	rewrite_contact INTEGER NOT NULL DEFAULT 0, -- send to dest rather than to the remote target
	updated         INTEGER NOT NULL
);
