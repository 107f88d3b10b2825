// Package store keeps ponte's call records and the outbox of call events. One
// interface (Store) hides the database: SQLite is the embedded default
// (modernc.org/sqlite, pure Go), and a PostgreSQL implementation for clusters
// can sit behind the same interface (the SQL here avoids SQLite-only syntax
// where it can: ON CONFLICT ... RETURNING and row values exist in both).
//
// Records are written as whole snapshots: the gateway owns the call in one
// goroutine and writes the record at each step (Create on offer, Update
// after each change). A snapshot is idempotent, needs no fold on read, and
// keeps every filterable field in its own indexed column; the event history
// that an append-then-fold design would give is kept anyway, as outbox events
// written in the same transaction as the snapshot that caused them.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors; implementations wrap them with %w.
var (
	ErrNotFound       = errors.New("store: not found")
	ErrInvalid        = errors.New("store: invalid record")
	ErrExists         = errors.New("store: call already recorded")
	ErrBadCursor      = errors.New("store: bad cursor")
	ErrSchemaTooNew   = errors.New("store: database schema is newer than this ponte")
	ErrClosed         = errors.New("store: closed")
	ErrUnknownDriver  = errors.New("store: unknown driver")
	ErrMigrationFault = errors.New("store: migration failed")
)

// Store is what the gateway, the API and the event deliverer need.
type Store interface {
	Records
	Outbox
	Ledger // call permissions for business-initiated calls (ledger.go)
	// Ping writes to the database: /readyz uses it ("store writable").
	Ping(ctx context.Context) error
	Close() error
}

// Records is the call history.
type Records interface {
	// Create records a new call, gives it its protocol number (c.Protocol is
	// set on return) and enqueues events in the same transaction.
	Create(ctx context.Context, c *Call, events ...EventType) error
	// Update replaces the record of c.ID with c (the protocol never changes)
	// and enqueues events in the same transaction.
	Update(ctx context.Context, c *Call, events ...EventType) error
	// Get returns a call by ponte's id or by its protocol number.
	Get(ctx context.Context, idOrProtocol string) (*Call, error)
	// List returns calls newest first, a page at a time (keyset pagination).
	List(ctx context.Context, f Filter) (Page, error)
	// CloseInterrupted ends every call that has no end time (the process
	// stopped under it) with EndReason "interrupted". Run it at startup,
	// before any new call. It returns how many calls it closed.
	CloseInterrupted(ctx context.Context, now time.Time) (int, error)
	// LastAgent returns the agent who last answered (or placed) a call with
	// the WhatsApp user keyed by callerKey (wa_id digits or BSUID) at or after
	// since, or "" if none did, and when that call was answered.
	LastAgent(ctx context.Context, callerKey string, since time.Time) (agent string, answered time.Time, err error)
}

// Outbox is the durable queue of call events for the business's webhook.
type Outbox interface {
	// Due returns up to n pending events whose next attempt is at or before
	// now, at most one per call (the oldest pending one), so a deliverer
	// that sends each in turn keeps every call's events in order.
	Due(ctx context.Context, now time.Time, n int) ([]Event, error)
	MarkSent(ctx context.Context, seq int64) error
	// MarkFailed counts a failed attempt and schedules the next one.
	MarkFailed(ctx context.Context, seq int64, next time.Time, reason string) error
	// MarkDead gives an event up: it stays in the table, never due again,
	// and the call's later events are no longer held behind it.
	MarkDead(ctx context.Context, seq int64, reason string) error
}

// Direction of a call, seen from the business.
type Direction string

const (
	Inbound  Direction = "inbound"  // a WhatsApp user called the business
	Outbound Direction = "outbound" // an agent called a WhatsApp user
)

// Outcome is the coarse result of a call, the one supervisors filter on.
type Outcome string

const (
	OutcomeActive    Outcome = "active"    // not ended yet (set by the store)
	OutcomeAnswered  Outcome = "answered"  // an agent/callbot (or, outbound, the user) answered
	OutcomeMissed    Outcome = "missed"    // rang, nobody answered (ring timeouts, busy, accept window)
	OutcomeAbandoned Outcome = "abandoned" // the caller hung up before anyone answered
	OutcomeRejected  Outcome = "rejected"  // refused by policy: closed hours, no route, 603, admission
	OutcomeFailed    Outcome = "failed"    // technical failure (media, Graph API, SIP errors, interrupted)
)

// Outcomes lists the valid values, for parsers.
var Outcomes = []Outcome{OutcomeActive, OutcomeAnswered, OutcomeMissed, OutcomeAbandoned, OutcomeRejected, OutcomeFailed}

// Who ended the call.
const (
	EndedByCaller   = "caller"   // the WhatsApp user (inbound caller or outbound callee)
	EndedByBusiness = "business" // the PBX, agent or callbot
	EndedBySystem   = "system"   // ponte or Meta (timeouts, errors, shutdown, restart)
)

// EndReasonInterrupted marks calls that a restart cut.
const EndReasonInterrupted = "interrupted"

// Party is the WhatsApp user of the call: the caller on inbound calls, the
// called user on outbound ones. Meta may send an empty number for users known
// only by their business-scoped user id (BSUID, reference §2 "BSUID changes").
type Party struct {
	Number   string `json:"number,omitempty"` // wa_id digits; the store keeps digits only
	BSUID    string `json:"bsuid,omitempty"`
	Name     string `json:"name,omitempty"` // profile name
	Username string `json:"username,omitempty"`
}

// Key is the identity used for sticky-agent lookups: the number when there is
// one, else the BSUID.
func (p Party) Key() string {
	if p.Number != "" {
		return p.Number
	}
	return p.BSUID
}

// Attempt is one target tried while hunting.
type Attempt struct {
	Target    string    `json:"target"` // SIP URI
	Trunk     string    `json:"trunk,omitempty"`
	SIPCallID string    `json:"sip_call_id,omitempty"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended,omitzero"`
	// Result is the final SIP status code ("200", "486", ...) or an event:
	// "ring_timeout", "no_provisional", "trunk_down", "cancelled", "error".
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"` // Reason header or error text
	Agent  string `json:"agent,omitempty"`  // who answered, when Result is 200
}

// Transfer is one REFER handled during the call (RFC 3515).
type Transfer struct {
	At      time.Time `json:"at"`
	By      string    `json:"by,omitempty"` // the transferring agent
	ReferTo string    `json:"refer_to"`
	Target  string    `json:"target,omitempty"` // the URI ponte dialled for it
	Trunk   string    `json:"trunk,omitempty"`
	Result  string    `json:"result"` // SIP code or "denied", "failed"
	Reason  string    `json:"reason,omitempty"`
}

// LegMedia summarises one media leg. Packet counts are what ponte received
// from that leg; lost, jitter and RTT come from RTP sequence numbers and RTCP
// (RFC 3550 §6.4) where the leg sends it.
type LegMedia struct {
	Codec           string  `json:"codec,omitempty"`
	PacketsSent     uint64  `json:"packets_sent"`
	PacketsReceived uint64  `json:"packets_received"`
	PacketsLost     uint64  `json:"packets_lost"`
	JitterMs        float64 `json:"jitter_ms"`
	RTTMs           float64 `json:"rtt_ms"`
	MOS             float64 `json:"mos,omitempty"` // metrics.EstimateMOS for this leg
}

// Media is the call's media summary.
type Media struct {
	WhatsApp LegMedia `json:"whatsapp"`
	SIP      LegMedia `json:"sip"`
	MOS      float64  `json:"mos,omitempty"` // the call's estimate: the worse of the two legs
}

// Call is the record of one call.
type Call struct {
	ID        string    `json:"id"`       // ponte's id (X-Ponte-Call-Id, biz_opaque_callback_data)
	Protocol  string    `json:"protocol"` // set by Create; see NewProtocol
	WACID     string    `json:"wacid,omitempty"`
	SIPCallID string    `json:"sip_call_id,omitempty"` // of the leg that answered
	Direction Direction `json:"direction"`
	Caller    Party     `json:"caller"`

	BusinessNumber string `json:"business_number,omitempty"` // display number
	PhoneNumberID  string `json:"phone_number_id,omitempty"`
	Route          string `json:"route,omitempty"`
	Mode           string `json:"mode,omitempty"`       // ring_then_answer | answer_then_hunt
	RouteHook      string `json:"route_hook,omitempty"` // routing hook outcome: ok, timeout, http_500, bad_json, ...

	Attempts   []Attempt  `json:"attempts"`
	Transfers  []Transfer `json:"transfers"`
	AnsweredBy string     `json:"answered_by,omitempty"` // agent; on outbound calls the agent who placed it
	// AnswerSignal: on outbound calls, what made ponte answer the PBX:
	// "accepted" (Meta's ACCEPTED status) or "media" (the user's media,
	// when outbound.early_media_answers is on).
	AnswerSignal string `json:"answer_signal,omitempty"`

	Offered     time.Time `json:"offered"`
	PreAccepted time.Time `json:"pre_accepted,omitzero"`
	Accepted    time.Time `json:"accepted,omitzero"`
	Answered    time.Time `json:"answered,omitzero"`
	Ended       time.Time `json:"ended,omitzero"`

	Outcome   Outcome `json:"outcome"`
	EndReason string  `json:"end_reason,omitempty"` // detailed: no_answer, target_486, closed, interrupted, ...
	EndedBy   string  `json:"ended_by,omitempty"`   // caller | business | system
	// Duration is the talk time, Ended minus Answered; the store computes it.
	Duration time.Duration `json:"-"`

	MetaStatus string `json:"meta_status,omitempty"` // terminate webhook status (COMPLETED, FAILED)
	MetaErrors []int  `json:"meta_errors"`
	Media      Media  `json:"media"`

	Updated time.Time `json:"updated"` // set by the store on each write
}

// callJSON has Call's fields without its methods (no MarshalJSON recursion).
type callJSON Call

// MarshalJSON adds duration_ms: time.Duration would otherwise be nanoseconds.
func (c Call) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		callJSON
		DurationMs int64 `json:"duration_ms"`
	}{callJSON(c), c.Duration.Milliseconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *Call) UnmarshalJSON(b []byte) error {
	var v struct {
		callJSON
		DurationMs int64 `json:"duration_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*c = Call(v.callJSON)
	c.Duration = time.Duration(v.DurationMs) * time.Millisecond
	return nil
}

// Filter selects calls for List. Zero fields do not filter.
type Filter struct {
	From, To  time.Time // on Offered: From <= offered < To
	Direction Direction
	Outcome   Outcome
	Caller    string // number (any punctuation) or BSUID
	Route     string
	Limit     int    // page size; <= 0 means DefaultLimit
	Cursor    string // Page.Next of the previous page
}

// DefaultLimit is the page size when Filter.Limit is not set.
const DefaultLimit = 50

// Page is one page of List.
type Page struct {
	Calls []Call
	Next  string // cursor for the next page; "" on the last page
}

// EventType names a call event sent to the business's webhook.
type EventType string

const (
	EventOffered     EventType = "call.offered"
	EventAnswered    EventType = "call.answered"
	EventTransferred EventType = "call.transferred"
	EventEnded       EventType = "call.ended"
)

// Event is one outbox row.
type Event struct {
	Seq       int64 // outbox order
	ID        string
	CallID    string
	Type      EventType
	Body      []byte // the JSON posted, fixed at enqueue time (receivers dedupe on ID)
	Created   time.Time
	Attempts  int
	LastError string
}

// eventBody is what the business receives: the event and the call record as
// it was written in the same transaction.
type eventBody struct {
	ID      string    `json:"id"`
	Type    EventType `json:"type"`
	Created time.Time `json:"created"`
	Call    *Call     `json:"call"`
}

// digits keeps the digits of a phone number: wa_id is digits only, people
// type "+55 (11) 9...".
func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// phoneLike reports whether s looks like a typed phone number.
func phoneLike(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789+-() .", r) {
			return false
		}
	}
	return digits(s) != ""
}

// prepare validates c and fills what the store derives.
func prepare(c *Call) error {
	if c.ID == "" || len(c.ID) > 128 {
		return fmt.Errorf("%w: id must be 1..128 bytes", ErrInvalid)
	}
	if c.Direction != Inbound && c.Direction != Outbound {
		return fmt.Errorf("%w: direction %q is not inbound or outbound", ErrInvalid, c.Direction)
	}
	if c.Offered.IsZero() {
		return fmt.Errorf("%w: offered time is required", ErrInvalid)
	}
	if c.Caller.Number != "" {
		c.Caller.Number = digits(c.Caller.Number)
	}
	switch {
	case c.Ended.IsZero():
		c.Outcome = OutcomeActive
	case c.Outcome == "" || c.Outcome == OutcomeActive:
		// An ended call must say how it ended; derive the coarse outcome
		// rather than lose the record.
		c.Outcome = OutcomeFailed
		if !c.Answered.IsZero() {
			c.Outcome = OutcomeAnswered
		}
	default:
		if !validOutcome(c.Outcome) {
			return fmt.Errorf("%w: outcome %q is not one of %v", ErrInvalid, c.Outcome, Outcomes)
		}
	}
	c.Duration = 0
	if !c.Answered.IsZero() && !c.Ended.IsZero() && c.Ended.After(c.Answered) {
		c.Duration = c.Ended.Sub(c.Answered).Truncate(time.Millisecond) // the column keeps milliseconds
	}
	return nil
}

func validOutcome(o Outcome) bool {
	for _, v := range Outcomes {
		if v == o {
			return true
		}
	}
	return false
}

func validEvent(t EventType) bool {
	switch t {
	case EventOffered, EventAnswered, EventTransferred, EventEnded:
		return true
	}
	return false
}
