-- ponte schema v3: what answered a business-initiated call (issue 5).
ALTER TABLE calls ADD COLUMN answer_signal TEXT NOT NULL DEFAULT '';
