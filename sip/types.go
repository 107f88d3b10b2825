package sip

import (
	"errors"
	"fmt"
	"net/netip"
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

	TLS  *TLSConfig // H-TLS: transport "tls" settings (tls.go); nil: system roots, SNI = host
	SRTP SRTPMode   // H-TLS: SDES-SRTP policy off|optional|required (srtp.go)

	NAT NAT // H-NAT: per-trunk Via/Contact/c= addresses, PBX behind NAT (advertise.go)
	// NoTelephoneEvent: offer no telephone-event (RFC 4733); the trunk
	// carries DTMF as SIP INFO or in-band tones.
	NoTelephoneEvent bool
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

// Errors a *StatusError may wrap, so the gateway can count and fail over on
// them with errors.Is.
var (
	// ErrExtensionRequired: the PBX answered 420 Bad Extension or 421
	// Extension Required (RFC 3261 §8.2.2.3, §21.4.15): it demands an
	// extension ponte does not implement, usually 100rel (RFC 3262), which
	// ponte never advertises. Another target may work.
	ErrExtensionRequired = errors.New("sip: PBX requires an unsupported SIP extension")
	// ErrIntervalTooSmall: the PBX answered 422 again after ponte retried
	// with the Min-SE it asked for (RFC 4028 §6, §7.4).
	ErrIntervalTooSmall = errors.New("sip: session interval too small")
)

// StatusError is a final non-2xx response to our INVITE (or to another
// request of the dialog).
type StatusError struct {
	Code   int
	Reason string
	Header string // the response's Reason header (RFC 3326), if any
	// Extensions lists the option tags of the response's Unsupported (420)
	// or Require (421) header.
	Extensions []string
	// Err is a sentinel classifying the code (ErrExtensionRequired,
	// ErrIntervalTooSmall), or nil.
	Err error
}

func (e *StatusError) Error() string { return fmt.Sprintf("sip: %d %s", e.Code, e.Reason) }

// Unwrap lets errors.Is match Err.
func (e *StatusError) Unwrap() error { return e.Err }

// MediaState is the PBX leg's media after an offer/answer exchange inside
// the dialog: a PBX re-INVITE or UPDATE with SDP (RFC 3264 §8, RFC 3311), an
// offerless re-INVITE whose answer came in the ACK, or the answer to ponte's
// own session refresh. The dialog has already re-pointed its RTPSession
// (SetRemote, SetCodec); the gateway uses it to re-point its decoder and to
// pause its RTP timeout while Held, feeding the WhatsApp side silence.
type MediaState struct {
	// Held: the PBX put the stream on hold (RFC 3264 §8.4): its SDP said
	// sendonly, recvonly or inactive, its c= was 0.0.0.0 (RFC 2543 hold), or
	// its m= port was 0. It may send music on hold (Recv) or nothing.
	Held bool
	// Send: ponte may send RTP to the PBX (our direction is sendrecv or
	// sendonly). False on hold by sendonly/inactive/c=0.0.0.0: RFC 3264 §6.1
	// and §8.4 forbid sending then; the gateway should stop writing RTP.
	Send bool
	// Recv: the PBX may send RTP to ponte (its direction is sendrecv or
	// sendonly). False means no media is expected: no RTP timeout.
	Recv bool
	// Remote is where RTP goes. A c=0.0.0.0 hold leaves it unchanged.
	Remote netip.AddrPort
	// Codec is the codec ponte sends; its PT is also the one to decode.
	Codec CodecDesc
	// DTMFPT is the PBX's telephone-event PT (-1: none), at DTMFRate.
	DTMFPT, DTMFRate int
	// Desc is the PBX's SDP as parsed (all its codecs, ptime), for a decoder
	// that accepts several payload types.
	Desc *MediaDesc
}
