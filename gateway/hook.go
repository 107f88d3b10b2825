package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/internal/signing"
)

// The routing hook: before ringing anyone, ponte may ask the business's CRM
// where a call should go. It runs while the caller already hears WhatsApp's
// ringing (after pre_accept), within a short timeout; whatever goes wrong, the
// static route is used and the reason is recorded, so a CRM outage never
// costs a call.

// Errors of the routing hook; each falls back to the static route.
var (
	ErrHookTimeout = errors.New("gateway: routing hook timed out")
	ErrHookStatus  = errors.New("gateway: routing hook answered an error status")
	ErrHookReply   = errors.New("gateway: routing hook reply unusable")
)

// HookRequest is what ponte POSTs to the routing hook.
type HookRequest struct {
	CallID          string    `json:"call_id"`
	WACID           string    `json:"wacid"`
	Route           string    `json:"route"`
	CallerNumber    string    `json:"caller_number,omitempty"` // E.164 without "+", empty for username-only users
	CallerBSUID     string    `json:"caller_bsuid,omitempty"`
	CallerName      string    `json:"caller_name,omitempty"`
	PhoneNumberID   string    `json:"phone_number_id"`
	BusinessNumber  string    `json:"business_number,omitempty"`
	CTAPayload      string    `json:"cta_payload,omitempty"`
	DeeplinkPayload string    `json:"deeplink_payload,omitempty"`
	LocalTime       time.Time `json:"local_time"` // in the route's timezone
	Open            bool      `json:"open"`       // inside business hours
	LastAgent       string    `json:"last_agent,omitempty"`
}

// HookReply is what the hook may answer. Every field is optional: an empty
// reply means "use the static route".
type HookReply struct {
	// Action: "" or "route" (ring Targets, or the static route when empty),
	// "reject" (the call is declined; Reason goes in the record).
	Action  string       `json:"action"`
	Reason  string       `json:"reason"`
	Targets []HookTarget `json:"targets"`
	// Headers are added to the INVITE (X- headers only; values sanitised by
	// package sip like every caller-supplied value).
	Headers map[string]string `json:"headers"`
	// Announcement is a configured announcement's name for queue mode.
	Announcement string `json:"announcement"`
}

// HookTarget is one target named by the hook. Its trunk must be configured:
// the hook chooses among trunks, it cannot invent one.
type HookTarget struct {
	URI         string  `json:"uri"`
	Trunk       string  `json:"trunk"`
	RingTimeout float64 `json:"ring_timeout"` // seconds; 0 = the route's first target's
}

// hookClient calls one hook URL.
type hookClient struct {
	url     string
	secret  []byte
	timeout time.Duration
	http    *http.Client
}

// maxHookReply bounds what ponte reads from the hook.
const maxHookReply = 64 << 10

// VerifyHookSignature is the receiver's check, for CRM developers and tests:
// the signature must match and the timestamp be within skew of now. The
// scheme is the one of ponte's event webhooks (package signing).
func VerifyHookSignature(secret []byte, sig, ts string, body []byte, now time.Time, skew time.Duration) bool {
	return signing.Fresh(ts, now, skew) && signing.Valid(string(secret), sig, ts, body)
}

// ask POSTs the request and decodes the reply. Any error means: use the
// static route.
func (h *hookClient) ask(ctx context.Context, req HookRequest, now time.Time) (*HookReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	signing.SetHeaders(hr.Header, string(h.secret), body, now)
	res, err := h.http.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w after %v", ErrHookTimeout, h.timeout)
		}
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxHookReply))
		return nil, fmt.Errorf("%w: %d", ErrHookStatus, res.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxHookReply+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w after %v", ErrHookTimeout, h.timeout)
		}
		return nil, err
	}
	return parseHookReply(raw)
}

// parseHookReply decodes and checks a reply; an empty body is an empty reply.
func parseHookReply(raw []byte) (*HookReply, error) {
	if len(raw) > maxHookReply {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrHookReply, maxHookReply)
	}
	var r HookReply
	if len(bytes.TrimSpace(raw)) == 0 {
		return &r, nil
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHookReply, err)
	}
	switch r.Action {
	case "", "route", "reject":
	default:
		return nil, fmt.Errorf("%w: action %q (want route or reject)", ErrHookReply, r.Action)
	}
	if len(r.Targets) > 10 {
		return nil, fmt.Errorf("%w: %d targets (at most 10)", ErrHookReply, len(r.Targets))
	}
	for i, t := range r.Targets {
		scheme, _, _ := strings.Cut(t.URI, ":")
		if s := strings.ToLower(scheme); s != "sip" && s != "sips" || t.Trunk == "" {
			return nil, fmt.Errorf("%w: targets[%d]: want a sip: URI and a trunk", ErrHookReply, i)
		}
		if t.RingTimeout < 0 || t.RingTimeout > 300 {
			return nil, fmt.Errorf("%w: targets[%d].ring_timeout %v s", ErrHookReply, i, t.RingTimeout)
		}
	}
	for name := range r.Headers {
		if len(name) < 3 || !strings.EqualFold(name[:2], "X-") {
			return nil, fmt.Errorf("%w: header %q: only X- headers may be added", ErrHookReply, name)
		}
	}
	return &r, nil
}
