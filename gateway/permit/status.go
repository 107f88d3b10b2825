package permit

import (
	"context"
	"fmt"
	"time"
)

// Status is what ponte knows about a pair, for GET /api/permissions/{user}.
// It is the ledger's view plus Meta's last answer; it never asks Meta.
type Status struct {
	Business string `json:"business"`
	User     string `json:"user"` // the ledger key: wa_id or BSUID
	BSUID    bool   `json:"bsuid,omitempty"`
	// State: none | temporary | permanent | revoked | expired.
	State   string    `json:"state"`
	Expires time.Time `json:"expires,omitzero"`
	Source  string    `json:"source,omitempty"`
	Updated time.Time `json:"updated,omitzero"`

	Requests RequestStatus `json:"requests"`

	ConnectedLast24h      int       `json:"connected_last_24h"`
	ConsecutiveUnanswered int       `json:"consecutive_unanswered"`
	LastConnected         time.Time `json:"last_connected,omitzero"`
	InProgress            bool      `json:"in_progress"`

	Window WindowStatus `json:"window"`
	Meta   *MetaView    `json:"meta,omitempty"` // Meta's last answer, if any since ponte started
}

// RequestStatus is the pair's permission requests.
type RequestStatus struct {
	Last24h     int       `json:"last_24h"`
	Last7d      int       `json:"last_7d"` // both counted after the last connected call
	Last        time.Time `json:"last,omitzero"`
	NextAllowed time.Time `json:"next_allowed,omitzero"` // zero: one may go now
	Limit       string    `json:"limit,omitempty"`       // the limit that holds it back
}

// WindowStatus is the 24 h customer-service window.
type WindowStatus struct {
	Open        bool      `json:"open"`
	LastInbound time.Time `json:"last_inbound,omitzero"`
	Until       time.Time `json:"until,omitzero"`
}

// MetaView is the last GET call_permissions answer.
type MetaView struct {
	At           time.Time `json:"at"`
	Fresh        bool      `json:"fresh"` // younger than CacheTTL: Check trusts it
	Status       string    `json:"status"`
	Expiration   time.Time `json:"expiration,omitzero"`
	CanStartCall bool      `json:"can_start_call"`
	CanRequest   bool      `json:"can_request"`
}

// Status returns the pair's state.
func (s *Service) Status(ctx context.Context, business, user string) (Status, error) {
	now := s.now()
	user = s.key(ctx, user)
	k := pairKey{business, user}
	p, err := s.l.Permission(ctx, business, user)
	if err != nil {
		return Status{}, fmt.Errorf("permit: ledger: %w", err)
	}
	c, err := s.l.PairCounters(ctx, business, user, now)
	if err != nil {
		return Status{}, fmt.Errorf("permit: ledger: %w", err)
	}
	last, err := s.l.WindowLastInbound(ctx, business, user)
	if err != nil {
		return Status{}, fmt.Errorf("permit: ledger: %w", err)
	}
	st := Status{
		Business: business, User: user, BSUID: IsBSUID(user),
		State: effective(p, now), Expires: p.Expires, Source: p.Source, Updated: p.Updated,
		Requests:         RequestStatus{Last24h: c.RequestsLast24h, Last7d: c.RequestsLast7d, Last: c.LastRequestAt},
		ConnectedLast24h: c.ConnectedLast24h, ConsecutiveUnanswered: c.ConsecutiveUnanswered,
		LastConnected: c.LastConnected,
		InProgress:    c.InProgress && now.Sub(c.InProgressSince) < staleInProgress,
	}
	mv, _ := s.freshView(k, now)
	if le := s.requestLimit(p, c, mv, now); le != nil {
		st.Requests.NextAllowed, st.Requests.Limit = le.Until, le.Limit
	}
	if !last.IsZero() {
		st.Window.LastInbound, st.Window.Until = last, last.Add(s.lim.Window)
		st.Window.Open = now.Before(st.Window.Until)
	}
	if v, ok := s.lastView(k); ok {
		m := &MetaView{At: v.at, Fresh: mv != nil, Status: v.p.Status, Expiration: v.p.Expiration, CanStartCall: v.p.CanStartCall()}
		if a, ok := v.p.Action("send_call_permission_request"); ok {
			m.CanRequest = a.CanPerform
		}
		st.Meta = m
	}
	return st, nil
}
