-- ponte schema v6: the trunk of a live call's SIP dialog, by its config name.
-- A PBX may challenge the recovery BYE with 401/407 (RFC 3261 §22.2); the
-- next process answers with that trunk's credentials, read from its config,
-- never from this table ('' for rows written before v6: no credentials).
ALTER TABLE live_calls ADD COLUMN trunk TEXT NOT NULL DEFAULT '';
