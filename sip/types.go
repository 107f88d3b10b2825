package sip

import (
	"fmt"
	"strconv"
)

// Trunk is a PBX the UA places calls to.
type Trunk struct {
	Name               string
	Address            string // host:port of the PBX
	Transport          string // "udp" | "tcp"
	Username, Password string // digest credentials for 401/407 (RFC 3261 §22)
	Codecs             []string
	DTMFPT             uint8  // telephone-event PT we offer, default 101
	FromDomain         string // host for From URIs (default: our advertised host)
}

// Header is one extra header for the INVITE (untrusted value).
type Header struct{ Name, Value string }

// DialRequest describes an outbound call.
type DialRequest struct {
	Trunk         *Trunk
	Target        string // "sip:sales@pbx.example.com" or a bare user ("1000") -> sip:user@trunk.Address
	FromUser      string // caller id
	FromDisplay   string // display name (untrusted)
	ToUser        string // optional To user (else from Target)
	Headers       []Header
	Media         *RTPSession
	OnProvisional func(code int, reason string, media *MediaDesc)
}

// Reason is an RFC 3326 Reason header value.
type Reason struct {
	Protocol string // "Q.850" or "SIP"
	Cause    int
	Text     string
}

// IsZero reports an empty Reason (no header sent).
func (r Reason) IsZero() bool { return r.Protocol == "" && r.Cause == 0 && r.Text == "" }

// String renders the header value, e.g. `Q.850;cause=16;text="Normal call clearing"`.
func (r Reason) String() string {
	p := r.Protocol
	if p == "" {
		p = "SIP"
	}
	s := SanitizeHeaderValue(p, 16) + ";cause=" + strconv.Itoa(r.Cause)
	if t := quoteReasonText(r.Text); t != "" {
		s += `;text="` + t + `"`
	}
	return s
}

// CancelCause carries a Reason for the CANCEL when used as the cause of the
// context given to WaitAnswer (context.WithCancelCause).
type CancelCause struct{ Reason Reason }

func (c CancelCause) Error() string { return "sip: canceled: " + c.Reason.String() }

// StatusError is a final non-2xx response to our INVITE.
type StatusError struct {
	Code   int
	Reason string
	Header string // the response's Reason header (RFC 3326), if any
}

func (e *StatusError) Error() string { return fmt.Sprintf("sip: %d %s", e.Code, e.Reason) }
