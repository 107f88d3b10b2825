// Package whatsapp is ponte's side of the WhatsApp Business Calling API (Cloud API "Calling"):
// the webhook http.Handler (verification, HMAC signature, tolerant parsing, dedupe, tombstones,
// per-call serial delivery) and the Graph API client for POST /{phone-number-id}/calls,
// GET /{phone-number-id}/call_permissions and call permission requests on POST
// /{phone-number-id}/messages.
//
// It knows nothing about SIP or media: SDP is carried as an opaque string.
//
// Spec: /work/shared/reference/whatsapp-calling-api.md (§2 webhooks, §3 Graph API, §4.2 permission
// requests, §8 items 1–7 and 25).
package whatsapp

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// EventKind is what a webhook event means to the gateway.
type EventKind int

const (
	EventUnknown         EventKind = iota // anything not modelled below (call_created, recording, other fields...)
	EventConnect                          // calls[].event == "connect" (UIC offer or BIC answer)
	EventTerminate                        // calls[].event == "terminate"
	EventStatus                           // statuses[].type == "call" (BIC RINGING/ACCEPTED/REJECTED)
	EventPermissionReply                  // messages field, interactive.call_permission_reply
	// EventMessage is a message from the user on the messages field that is not a
	// call_permission_reply (text, media, button/list replies, ...). It opens or refreshes the
	// 24 h customer-service window (ref §7), inside which a free-form interactive permission
	// request may be sent (ref §4.2). Delivery statuses of our own messages are not this kind.
	EventMessage
)

func (k EventKind) String() string {
	switch k {
	case EventConnect:
		return "connect"
	case EventTerminate:
		return "terminate"
	case EventStatus:
		return "status"
	case EventPermissionReply:
		return "permission_reply"
	case EventMessage:
		return "message"
	default:
		return "unknown"
	}
}

// Direction of a call as seen from the business.
type Direction int

const (
	DirUnknown Direction = iota
	DirUserInitiated
	DirBusinessInitiated
)

func (d Direction) String() string {
	switch d {
	case DirUserInitiated:
		return "USER_INITIATED"
	case DirBusinessInitiated:
		return "BUSINESS_INITIATED"
	default:
		return "UNKNOWN"
	}
}

// CallError is one entry of value.errors[] / calls[].errors[] (ref §2.5, codes in §3.6).
type CallError struct {
	Code             int
	Message, Details string
}

// CallEvent is one normalised event from a webhook body. Field names follow Meta's payload;
// see the comments for the tolerance rules applied (ref §8 item 6).
type CallEvent struct {
	Kind               EventKind
	Field              string    // "calls", "messages", ...
	Event              string    // raw calls[].event lower-cased ("connect", "terminate", "call_recording_available", ...); "status" for statuses[]; interactive/message type for messages[]
	CallID             string    // wacid
	PhoneNumberID      string    // metadata.phone_number_id
	DisplayPhoneNumber string    // metadata.display_phone_number (the DID the user dialled)
	WABAID             string    // entry[].id
	From, To           string    // may be "" for BSUID-only users; for statuses To is recipient_id
	FromUserID         string    // BSUID (from_user_id / contacts[].user_id)
	ToUserID           string    // BSUID of the callee on BIC (to_user_id / statuses[].recipient_user_id)
	WaID               string    // contacts[].wa_id
	ContactName        string    // contacts[].profile.name
	Username           string    // contacts[].profile.username
	Direction          Direction // inferred from sdp_type when missing: offer => user-initiated, answer => business-initiated
	SDPType, SDP       string    // session.{sdp_type (lower-cased), sdp (verbatim)}; the legacy connection.webrtc.sdp is ignored (ref §2.3, [FAQ])
	Timestamp          time.Time // from string or number unix seconds; zero when absent or unparsable
	CTAPayload         string
	DeeplinkPayload    string
	BizOpaque          string
	Status             string // upper-cased: terminate status (first element if an array) or statuses[].status
	Duration           int    // seconds; int, float or numeric string
	StartTime, EndTime time.Time
	Errors             []CallError      // value.errors[] then the element's own errors[]
	Permission         *PermissionReply // for EventPermissionReply
	MessageID          string           // messages[].id (wamid) for messages-field events (EventPermissionReply, EventMessage)
	Raw                json.RawMessage  // EventUnknown only: the element (or change value) as received
}

// PermissionReply is interactive.call_permission_reply (ref §2.8).
type PermissionReply struct {
	Response    string    // "accept" | "reject" (lower-cased)
	IsPermanent bool      // absent => false
	Expiration  time.Time // expiration_timestamp; zero when permanent or rejected
	Source      string    // response_source: "user_action" | "automatic"
	ContextID   string    // context.id: wamid of the request, or the wacid for automatic callback permission
}

// ErrMalformed is returned by ParseWebhook when the body is not a JSON object.
var ErrMalformed = errors.New("whatsapp: malformed webhook body")

// ParseWebhook parses one webhook body into events, in payload order.
//
// Only a body that is not syntactically valid JSON, or whose top level is not an object, is
// rejected (ErrMalformed). Everything else is tolerated (ref §2.1 "ignore unknown events
// without failing", §8 item 6): values of an unexpected JSON type are read as zero, unknown
// fields and events come back as EventUnknown, and the function never panics.
func ParseWebhook(body []byte) ([]CallEvent, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' || !json.Valid(body) {
		return nil, ErrMalformed
	}
	var env struct {
		Entry []struct {
			ID      flexString `json:"id"`
			Changes []struct {
				Field flexString      `json:"field"`
				Value json.RawMessage `json:"value"`
			} `json:"changes"`
		} `json:"entry"`
	}
	if err := looseUnmarshal(body, &env); err != nil {
		return nil, errors.Join(ErrMalformed, err)
	}
	var out []CallEvent
	for _, e := range env.Entry {
		for _, ch := range e.Changes {
			out = parseChange(out, string(e.ID), string(ch.Field), ch.Value)
		}
	}
	return out, nil
}

// looseUnmarshal decodes like json.Unmarshal but treats type mismatches as soft: encoding/json
// skips the mismatching value and fills in everything else, which is exactly the tolerance
// Meta's drifting samples need (string vs number vs array, see ref §2.5 DOC-CONFLICT).
func looseUnmarshal(b []byte, v any) error {
	err := json.Unmarshal(b, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return nil
	}
	return err
}

type rawValue struct {
	Metadata struct {
		DisplayPhoneNumber flexString `json:"display_phone_number"`
		PhoneNumberID      flexString `json:"phone_number_id"`
	} `json:"metadata"`
	Contacts []rawContact      `json:"contacts"`
	Calls    []json.RawMessage `json:"calls"`
	Statuses []json.RawMessage `json:"statuses"`
	Messages []json.RawMessage `json:"messages"`
	Errors   []rawError        `json:"errors"`
	Event    flexString        `json:"event"`
	Type     flexString        `json:"type"`
}

type rawContact struct {
	WaID    flexString `json:"wa_id"`
	UserID  flexString `json:"user_id"`
	Profile struct {
		Name     flexString `json:"name"`
		Username flexString `json:"username"`
	} `json:"profile"`
}

type rawError struct {
	Code      flexInt         `json:"code"`
	Message   flexString      `json:"message"`
	Title     flexString      `json:"title"`
	ErrorData json.RawMessage `json:"error_data"`
}

type rawCall struct {
	ID              flexString `json:"id"`
	From            flexString `json:"from"`
	To              flexString `json:"to"`
	FromUserID      flexString `json:"from_user_id"`
	ToUserID        flexString `json:"to_user_id"`
	Event           flexString `json:"event"`
	Timestamp       flexTime   `json:"timestamp"`
	Direction       flexString `json:"direction"`
	DeeplinkPayload flexString `json:"deeplink_payload"`
	CTAPayload      flexString `json:"cta_payload"`
	BizOpaque       flexString `json:"biz_opaque_callback_data"`
	Session         struct {
		SDPType flexString `json:"sdp_type"`
		SDP     flexString `json:"sdp"`
	} `json:"session"`
	Status    flexStatus `json:"status"`
	StartTime flexTime   `json:"start_time"`
	EndTime   flexTime   `json:"end_time"`
	Duration  flexInt    `json:"duration"`
	Errors    []rawError `json:"errors"`
	// Recipient fields of statuses[] (ref §2.4).
	Type            flexString `json:"type"`
	RecipientID     flexString `json:"recipient_id"`
	RecipientUserID flexString `json:"recipient_user_id"`
}

type rawMessage struct {
	ID         flexString `json:"id"`
	From       flexString `json:"from"`
	FromUserID flexString `json:"from_user_id"`
	Timestamp  flexTime   `json:"timestamp"`
	Type       flexString `json:"type"`
	Context    struct {
		ID flexString `json:"id"`
	} `json:"context"`
	Interactive struct {
		Type  flexString `json:"type"`
		Reply *struct {
			Response    flexString `json:"response"`
			IsPermanent flexBool   `json:"is_permanent"`
			Expiration  flexTime   `json:"expiration_timestamp"`
			Source      flexString `json:"response_source"`
		} `json:"call_permission_reply"`
	} `json:"interactive"`
	Errors []rawError `json:"errors"`
}

func parseChange(out []CallEvent, wabaID, field string, value json.RawMessage) []CallEvent {
	var v rawValue
	_ = looseUnmarshal(value, &v) // value was validated with the body; mismatches read as zero
	base := CallEvent{
		Field:              field,
		WABAID:             wabaID,
		PhoneNumberID:      string(v.Metadata.PhoneNumberID),
		DisplayPhoneNumber: string(v.Metadata.DisplayPhoneNumber),
		Errors:             convErrors(nil, v.Errors),
	}
	n := len(out)
	switch field {
	case "calls":
		for _, raw := range v.Calls {
			out = append(out, callEvent(base, v.Contacts, raw))
		}
		for _, raw := range v.Statuses {
			out = append(out, statusEvent(base, v.Contacts, raw))
		}
	case "messages":
		for _, raw := range v.Messages {
			out = append(out, messageEvent(base, v.Contacts, raw))
		}
		for _, raw := range v.Statuses {
			out = append(out, statusEvent(base, v.Contacts, raw))
		}
	}
	if len(out) == n {
		// Unknown field (account_update, account_settings_update, ...) or a change with no
		// elements we understand (e.g. a bare error webhook, ref §2.6): one unknown event.
		ev := base
		ev.Event = strings.ToLower(firstNonEmpty(string(v.Event), string(v.Type)))
		ev.Raw = value
		out = append(out, ev)
	}
	return out
}

func callEvent(ev CallEvent, contacts []rawContact, raw json.RawMessage) CallEvent {
	var c rawCall
	_ = looseUnmarshal(raw, &c)
	ev.Event = strings.ToLower(string(c.Event))
	switch ev.Event {
	case "connect":
		ev.Kind = EventConnect
	case "terminate":
		ev.Kind = EventTerminate
	default:
		ev.Raw = raw
	}
	ev.CallID = string(c.ID)
	ev.From, ev.To = string(c.From), string(c.To)
	ev.FromUserID, ev.ToUserID = string(c.FromUserID), string(c.ToUserID)
	ev.Timestamp = c.Timestamp.t
	ev.CTAPayload, ev.DeeplinkPayload = string(c.CTAPayload), string(c.DeeplinkPayload)
	ev.BizOpaque = string(c.BizOpaque)
	ev.SDPType, ev.SDP = strings.ToLower(string(c.Session.SDPType)), string(c.Session.SDP)
	ev.Direction = parseDirection(string(c.Direction), ev.SDPType)
	ev.Status = string(c.Status)
	ev.Duration = int(c.Duration)
	ev.StartTime, ev.EndTime = c.StartTime.t, c.EndTime.t
	ev.Errors = convErrors(ev.Errors, c.Errors)
	applyContact(&ev, contacts)
	return ev
}

func statusEvent(ev CallEvent, contacts []rawContact, raw json.RawMessage) CallEvent {
	var s rawCall
	_ = looseUnmarshal(raw, &s)
	ev.Event = "status"
	if strings.EqualFold(string(s.Type), "call") {
		ev.Kind = EventStatus
		// Call statuses exist only for business-initiated calls (ref §2.4).
		ev.Direction = DirBusinessInitiated
	} else {
		ev.Raw = raw // message delivery statuses (sent/delivered/read) and the like
	}
	ev.CallID = string(s.ID)
	ev.Status = string(s.Status)
	ev.Timestamp = s.Timestamp.t
	ev.To, ev.ToUserID = string(s.RecipientID), string(s.RecipientUserID)
	ev.BizOpaque = string(s.BizOpaque)
	ev.Errors = convErrors(ev.Errors, s.Errors)
	applyContact(&ev, contacts)
	return ev
}

func messageEvent(ev CallEvent, contacts []rawContact, raw json.RawMessage) CallEvent {
	var m rawMessage
	_ = looseUnmarshal(raw, &m)
	ev.MessageID = string(m.ID)
	ev.From, ev.FromUserID = string(m.From), string(m.FromUserID)
	ev.Timestamp = m.Timestamp.t
	ev.Event = strings.ToLower(firstNonEmpty(string(m.Interactive.Type), string(m.Type)))
	ev.Errors = convErrors(ev.Errors, m.Errors)
	if r := m.Interactive.Reply; ev.Event == "call_permission_reply" && r != nil {
		ev.Kind = EventPermissionReply
		ev.Permission = &PermissionReply{
			Response:    strings.ToLower(string(r.Response)),
			IsPermanent: bool(r.IsPermanent),
			Expiration:  r.Expiration.t,
			Source:      strings.ToLower(string(r.Source)),
			ContextID:   string(m.Context.ID),
		}
		applyContact(&ev, contacts)
		return ev
	}
	// contacts[] may carry the only identity of a BSUID-only sender (ref §2.2), so it is
	// applied before deciding whether the element names its sender. For messages the contact
	// is always the sender's side, whatever the kind.
	applyContact(&ev, contacts)
	if userMessage(ev) {
		ev.Kind = EventMessage
	} else {
		ev.Raw = raw
	}
	return ev
}

// userMessage reports whether a messages[] element that is not a permission reply is
// something the user sent, which opens the customer-service window (ref §7). Excluded:
// "system" notices (number or identity changed), which WhatsApp generates and the user
// did not send; an element naming no sender or no wamid, which identifies nothing; and a
// call_permission_reply without its reply object, which is malformed rather than a message.
func userMessage(ev CallEvent) bool {
	switch {
	case ev.MessageID == "" || (ev.From == "" && ev.FromUserID == "" && ev.WaID == ""):
		return false
	case ev.Event == "system" || ev.Event == "call_permission_reply":
		return false
	}
	return true
}

// applyContact copies caller-ID fields from the contacts[] entry that belongs to the event's
// user (ref §8 item 7). It matches on wa_id or user_id against both ends of the call; with a
// single unmatched contact, the user is the caller on UIC and permission replies, and the
// callee on BIC and call statuses. contacts[].user_id fills the BSUID of that end when the
// call element itself carries none (ref §2.2 BSUID changes).
func applyContact(ev *CallEvent, contacts []rawContact) {
	pick, toSide := -1, false
	for i, c := range contacts {
		wa, uid := string(c.WaID), string(c.UserID)
		if (wa != "" && wa == ev.From) || (uid != "" && uid == ev.FromUserID) {
			pick = i
			break
		}
		if (wa != "" && wa == ev.To) || (uid != "" && uid == ev.ToUserID) {
			pick, toSide = i, true
			break
		}
	}
	if pick < 0 {
		if len(contacts) != 1 {
			return
		}
		pick = 0
		toSide = ev.Kind == EventStatus ||
			(ev.Kind != EventPermissionReply && ev.Direction == DirBusinessInitiated)
	}
	c := contacts[pick]
	ev.WaID = string(c.WaID)
	ev.ContactName = string(c.Profile.Name)
	ev.Username = string(c.Profile.Username)
	switch {
	case toSide && ev.ToUserID == "":
		ev.ToUserID = string(c.UserID)
	case !toSide && ev.FromUserID == "":
		ev.FromUserID = string(c.UserID)
	}
}

func parseDirection(dir, sdpType string) Direction {
	switch strings.ToUpper(dir) {
	case "USER_INITIATED":
		return DirUserInitiated
	case "BUSINESS_INITIATED":
		return DirBusinessInitiated
	}
	// direction is optional in Meta's own samples (ref §2.2): Meta offers on UIC and answers
	// our offer on BIC.
	switch sdpType {
	case "offer":
		return DirUserInitiated
	case "answer":
		return DirBusinessInitiated
	}
	return DirUnknown
}

func convErrors(dst []CallError, src []rawError) []CallError {
	for _, e := range src {
		ce := CallError{Code: int(e.Code), Message: firstNonEmpty(string(e.Message), string(e.Title))}
		ce.Details = errorDetails(e.ErrorData)
		dst = append(dst, ce)
	}
	return dst
}

// errorDetails reads error_data.details; Graph sometimes sends error_data as a bare string.
func errorDetails(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var d struct {
		Details flexString `json:"details"`
	}
	if looseUnmarshal(raw, &d) == nil && d.Details != "" {
		return string(d.Details)
	}
	var s flexString
	_ = s.UnmarshalJSON(raw)
	return string(s)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// flexString accepts a JSON string, number or boolean (kept as written); anything else is "".
// It never returns an error so one odd value cannot discard its whole element.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	*s = ""
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case '"':
		var v string
		if json.Unmarshal(b, &v) == nil {
			*s = flexString(v)
		}
	case '{', '[', 'n':
	default:
		*s = flexString(b)
	}
	return nil
}

// flexInt accepts an integer, a float (truncated) or a numeric string; anything else is 0.
// Meta documents duration as an int but samples differ (ref §2.5).
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	*n = 0
	var s flexString
	_ = s.UnmarshalJSON(b)
	str := strings.TrimSpace(string(s))
	if v, err := strconv.ParseInt(str, 10, 64); err == nil {
		*n = flexInt(clampInt(v))
	} else if f, err := strconv.ParseFloat(str, 64); err == nil && f == f && f < 1<<53 && f > -(1<<53) {
		*n = flexInt(clampInt(int64(f)))
	}
	return nil
}

func clampInt(v int64) int {
	const maxInt = int64(^uint(0) >> 1)
	if v > maxInt {
		return int(maxInt)
	}
	if v < -maxInt-1 {
		return int(-maxInt - 1)
	}
	return int(v)
}

// flexBool accepts true/false, "true"/"false" (any case) and 1/0.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	var s flexString
	_ = s.UnmarshalJSON(b)
	x, err := strconv.ParseBool(strings.TrimSpace(string(s)))
	*v = flexBool(err == nil && x)
	return nil
}

// flexTime accepts unix seconds as a string or a number (Meta sends strings, ref §2.5), and as a
// courtesy RFC 3339. Unparsable, non-positive or absurd (> year 9999) values give the zero time.
type flexTime struct{ t time.Time }

const maxUnix = 253402300799 // 9999-12-31T23:59:59Z

func (ft *flexTime) UnmarshalJSON(b []byte) error {
	ft.t = time.Time{}
	var s flexString
	_ = s.UnmarshalJSON(b)
	str := strings.TrimSpace(string(s))
	if str == "" {
		return nil
	}
	if v, err := strconv.ParseInt(str, 10, 64); err == nil {
		if v > 0 && v <= maxUnix {
			ft.t = time.Unix(v, 0).UTC()
		}
		return nil
	}
	if f, err := strconv.ParseFloat(str, 64); err == nil {
		if f > 0 && f <= maxUnix {
			sec := int64(f)
			ft.t = time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()
		}
		return nil
	}
	if t, err := time.Parse(time.RFC3339, str); err == nil && t.Unix() > 0 && t.Unix() <= maxUnix {
		ft.t = t.UTC()
	}
	return nil
}

// flexStatus is the terminate status: a string or an array of strings (ref §2.5 DOC-CONFLICT:
// `[FAILED | COMPLETED]`, `["Failed","Completed"]`, `"COMPLETED"`). It keeps the first
// non-empty element, upper-cased.
type flexStatus string

func (st *flexStatus) UnmarshalJSON(b []byte) error {
	*st = ""
	if len(b) > 0 && b[0] == '[' {
		var arr []flexString
		_ = looseUnmarshal(b, &arr)
		for _, s := range arr {
			if v := strings.TrimSpace(string(s)); v != "" {
				*st = flexStatus(strings.ToUpper(v))
				return nil
			}
		}
		return nil
	}
	var s flexString
	_ = s.UnmarshalJSON(b)
	*st = flexStatus(strings.ToUpper(strings.TrimSpace(string(s))))
	return nil
}
