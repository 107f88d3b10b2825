package whatsapp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CallPermission is the answer of GET /{phone-number-id}/call_permissions (ref §3.5).
type CallPermission struct {
	Status     string    // "no_permission" | "temporary" | "permanent" (lower-cased)
	Expiration time.Time // zero when permanent or absent
	Actions    []PermissionAction
}

// PermissionAction is one actions[] entry, e.g. "start_call" or "send_call_permission_request".
type PermissionAction struct {
	Name       string
	CanPerform bool
	Limits     []ActionLimit
}

// ActionLimit is one limits[] entry. Expiration (limit_expiration_time) is set only when the
// limit has been reached (ref §3.5).
type ActionLimit struct {
	TimePeriod   string // ISO 8601 duration, e.g. "PT24H", "P7D"
	MaxAllowed   int
	CurrentUsage int
	Expiration   time.Time
}

// Action returns the named action.
func (p *CallPermission) Action(name string) (PermissionAction, bool) {
	for _, a := range p.Actions {
		if a.Name == name {
			return a, true
		}
	}
	return PermissionAction{}, false
}

// CanStartCall is start_call.can_perform_action, the gate for business-initiated calls
// (ref §3.5 "Gate BIC dialling on start_call.can_perform_action"). A missing action is false.
func (p *CallPermission) CanStartCall() bool {
	a, ok := p.Action("start_call")
	return ok && a.CanPerform
}

// CallPermissions asks whether the business may call a user, identified by phone number
// (user_wa_id) or, for BSUID-only users, by recipient; with both, the phone number is sent.
// The endpoint is rate limited (5 or 100 req/s, ref §3.5 DOC-CONFLICT); error 613 / HTTP 429
// means the limit was hit.
func (c *Client) CallPermissions(ctx context.Context, phoneNumberID, userWaID, recipient string) (*CallPermission, error) {
	if phoneNumberID == "" || (userWaID == "" && recipient == "") {
		return nil, fmt.Errorf("%w: call_permissions needs a phone number id and a user", ErrInvalidArgument)
	}
	q := url.Values{}
	if userWaID != "" {
		q.Set("user_wa_id", userWaID)
	} else {
		q.Set("recipient", recipient)
	}
	endpoint := c.cfg.BaseURL + "/" + url.PathEscape(phoneNumberID) + "/call_permissions?" + q.Encode()
	data, err := c.send(ctx, http.MethodGet, endpoint, nil, "call_permissions", "")
	if err != nil {
		return nil, err
	}
	p, err := parseCallPermission(data)
	if err != nil {
		return nil, err
	}
	c.log.Debug("whatsapp: call permission", "user", maskNumber(firstNonEmpty(userWaID, recipient)),
		"status", p.Status, "can_start_call", p.CanStartCall())
	return p, nil
}

// parseCallPermission reads the response tolerantly; it fails only when permission.status is
// missing, because then nothing can be concluded.
func parseCallPermission(data []byte) (*CallPermission, error) {
	var raw struct {
		Permission struct {
			Status         flexString `json:"status"`
			ExpirationTime flexTime   `json:"expiration_time"`
			Expiration     flexTime   `json:"expiration"` // the table's name for it (ref §3.5 DOC-CONFLICT)
		} `json:"permission"`
		Actions []struct {
			Name       flexString `json:"action_name"`
			CanPerform flexBool   `json:"can_perform_action"`
			Limits     []struct {
				TimePeriod   flexString `json:"time_period"`
				MaxAllowed   flexInt    `json:"max_allowed"`
				CurrentUsage flexInt    `json:"current_usage"`
				Expiration   flexTime   `json:"limit_expiration_time"`
			} `json:"limits"`
		} `json:"actions"`
	}
	if !json.Valid(data) || looseUnmarshal(data, &raw) != nil || raw.Permission.Status == "" {
		return nil, fmt.Errorf("%w: call_permissions response without permission.status", ErrBadResponse)
	}
	p := &CallPermission{
		Status:     strings.ToLower(string(raw.Permission.Status)),
		Expiration: raw.Permission.ExpirationTime.t,
	}
	if p.Expiration.IsZero() {
		p.Expiration = raw.Permission.Expiration.t
	}
	for _, a := range raw.Actions {
		pa := PermissionAction{Name: strings.ToLower(string(a.Name)), CanPerform: bool(a.CanPerform)}
		for _, l := range a.Limits {
			pa.Limits = append(pa.Limits, ActionLimit{TimePeriod: string(l.TimePeriod),
				MaxAllowed: int(l.MaxAllowed), CurrentUsage: int(l.CurrentUsage), Expiration: l.Expiration.t})
		}
		p.Actions = append(p.Actions, pa)
	}
	return p, nil
}
