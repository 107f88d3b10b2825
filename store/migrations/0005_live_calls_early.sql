-- ponte schema v5: a live call whose INVITE is still ringing (issue 8 item 5).
-- When ponte dies while the PBX rings, the next start CANCELs that INVITE
-- (RFC 3261 §9.1): the CANCEL must carry the INVITE's Request-URI and its top
-- Via (sent-by and branch, which the PBX matches to its transaction,
-- §17.2.3). Such a row has sip_role 'uac', an empty remote_tag and a branch;
-- local_cseq is then the INVITE's CSeq.
ALTER TABLE live_calls ADD COLUMN invite_uri  TEXT NOT NULL DEFAULT '';
ALTER TABLE live_calls ADD COLUMN via_sent_by TEXT NOT NULL DEFAULT ''; -- host:port
ALTER TABLE live_calls ADD COLUMN branch      TEXT NOT NULL DEFAULT '';
