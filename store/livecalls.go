package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// LiveCalls persists the calls in progress so that a process that crashed
// or was killed can be cleaned up after by the next one (issue 8 item 5):
// the gateway writes a row as a call progresses and deletes it when the call
// ends; at startup every row left is an interrupted call. Writes are small
// and synchronous; the gateway logs a failure and goes on with the call, so
// recovery is promised only while the disk is healthy.
type LiveCalls interface {
	// PutLive inserts or replaces the row of lc.ID.
	PutLive(ctx context.Context, lc LiveCall) error
	// DeleteLive removes the row of a call; a missing row is not an error.
	DeleteLive(ctx context.Context, id string) error
	// ListLive returns every row, oldest first.
	ListLive(ctx context.Context) ([]LiveCall, error)
}

var _ LiveCalls = (*SQLite)(nil)

// LiveCall is one call in progress.
type LiveCall struct {
	ID            string // ponte's call id (the record's ID)
	WACID         string // "" until Meta gave one (outbound calls)
	Direction     Direction
	PhoneNumberID string
	// Accepted: Meta accepted the call (inbound) or the user is connected
	// (outbound). An interrupted inbound call that was not accepted gets
	// "reject" rather than "terminate" (reference §3: reject is the answer
	// to an unaccepted offer).
	Accepted bool
	Started  time.Time
	Dialog   *LiveDialog // the confirmed SIP dialog; nil before one
	Updated  time.Time   // set by the store
}

// LiveDialog is the state of a confirmed SIP dialog that ponte needs to end
// it from another process (RFC 3261 §12.1, §12.2.1.1). It mirrors
// sip.DialogState; the store does not import package sip.
type LiveDialog struct {
	Role         string // "uac": ponte sent the INVITE; "uas": the PBX did
	CallID       string
	LocalTag     string
	RemoteTag    string
	LocalURI     string   // From of ponte's requests (name-addr, no tag)
	RemoteURI    string   // To of ponte's requests (name-addr, no tag)
	RemoteTarget string   // the peer's Contact URI
	RouteSet     []string // Route header values in the order ponte sends them
	CSeq         uint32   // ponte's last local CSeq when the row was written
	Transport    string   // UDP | TCP | TLS
	Dest         string   // host:port next hop without a route set
	ViaHost      string   // Via sent-by host[:port]
	// RewriteContact: in-dialog requests go to Dest, not to the remote
	// target (a PBX behind NAT, sip.NAT.RewriteContact).
	RewriteContact bool
	// An INVITE still ringing (RemoteTag empty): its Request-URI and top
	// Via, to CANCEL it (RFC 3261 §9.1); CSeq is the INVITE's.
	InviteURI string
	ViaSentBy string // host:port
	Branch    string
	// Trunk is the dialog's trunk by config name, whose credentials answer a
	// challenge to the recovery BYE; the row holds no secret.
	Trunk string
}

const liveCols = `id, wacid, direction, phone_number_id, accepted, started, sip_role, sip_call_id,
	local_tag, remote_tag, local_uri, remote_uri, remote_target, route_set, local_cseq,
	transport, dest, via_host, rewrite_contact, updated, invite_uri, via_sent_by, branch, trunk`

// PutLive writes the row of lc.ID.
func (s *SQLite) PutLive(ctx context.Context, lc LiveCall) error {
	if lc.ID == "" || len(lc.ID) > 128 {
		return fmt.Errorf("%w: live call id must be 1..128 bytes", ErrInvalid)
	}
	if lc.Direction != Inbound && lc.Direction != Outbound {
		return fmt.Errorf("%w: live call direction %q", ErrInvalid, lc.Direction)
	}
	if lc.Started.IsZero() {
		return fmt.Errorf("%w: live call start time is required", ErrInvalid)
	}
	d := LiveDialog{}
	if lc.Dialog != nil {
		d = *lc.Dialog
		if d.Role != "uac" && d.Role != "uas" {
			return fmt.Errorf("%w: dialog role %q (want uac or uas)", ErrInvalid, d.Role)
		}
		if d.CallID == "" {
			return fmt.Errorf("%w: dialog without Call-ID", ErrInvalid)
		}
	}
	routes := d.RouteSet
	if routes == nil {
		routes = []string{}
	}
	rs, err := json.Marshal(routes)
	if err != nil {
		return fmt.Errorf("store: live call %s: %w", lc.ID, err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT OR REPLACE INTO live_calls (`+liveCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		lc.ID, lc.WACID, string(lc.Direction), lc.PhoneNumberID, boolInt(lc.Accepted), lc.Started.UnixNano(),
		d.Role, d.CallID, d.LocalTag, d.RemoteTag, d.LocalURI, d.RemoteURI, d.RemoteTarget, string(rs),
		int64(d.CSeq), d.Transport, d.Dest, d.ViaHost, boolInt(d.RewriteContact), time.Now().UnixNano(),
		d.InviteURI, d.ViaSentBy, d.Branch, d.Trunk)
	if err != nil {
		return fmt.Errorf("store: live call %s: %w", lc.ID, err)
	}
	return nil
}

// DeleteLive removes the row of id.
func (s *SQLite) DeleteLive(ctx context.Context, id string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM live_calls WHERE id = ?`, id); err != nil {
		return fmt.Errorf("store: delete live call %s: %w", id, err)
	}
	return nil
}

// ListLive returns every live row, oldest first. It reads through the
// writer so that it sees the writer's latest commits.
func (s *SQLite) ListLive(ctx context.Context) ([]LiveCall, error) {
	rows, err := s.w.QueryContext(ctx, `SELECT `+liveCols+` FROM live_calls ORDER BY started, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list live calls: %w", err)
	}
	defer rows.Close()
	var out []LiveCall
	for rows.Next() {
		lc, err := scanLive(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, lc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list live calls: %w", err)
	}
	return out, nil
}

func scanLive(rows *sql.Rows) (LiveCall, error) {
	var (
		lc                LiveCall
		d                 LiveDialog
		dir, rs           string
		accepted, rewrite int
		started, updated  int64
		cseq              int64
	)
	if err := rows.Scan(&lc.ID, &lc.WACID, &dir, &lc.PhoneNumberID, &accepted, &started, &d.Role, &d.CallID,
		&d.LocalTag, &d.RemoteTag, &d.LocalURI, &d.RemoteURI, &d.RemoteTarget, &rs, &cseq,
		&d.Transport, &d.Dest, &d.ViaHost, &rewrite, &updated, &d.InviteURI, &d.ViaSentBy, &d.Branch, &d.Trunk); err != nil {
		return LiveCall{}, fmt.Errorf("store: list live calls: %w", err)
	}
	if err := json.Unmarshal([]byte(rs), &d.RouteSet); err != nil {
		return LiveCall{}, fmt.Errorf("store: live call %s route set: %w", lc.ID, err)
	}
	if len(d.RouteSet) == 0 {
		d.RouteSet = nil
	}
	lc.Direction = Direction(dir)
	lc.Accepted, d.RewriteContact = accepted != 0, rewrite != 0
	lc.Started, lc.Updated = time.Unix(0, started).UTC(), time.Unix(0, updated).UTC()
	d.CSeq = uint32(cseq)
	if d.Role != "" {
		lc.Dialog = &d
	}
	return lc, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
