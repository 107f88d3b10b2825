package gateway

import (
	"errors"
	"fmt"

	"github.com/ponte-gw/ponte/sip"
)

// Sentinel errors of the call. Each maps, in one table below, to what ponte
// tells Meta (reject before accept, terminate after) and to the Reason header
// (RFC 3326) it puts on the BYE or CANCEL toward the PBX, so the codes stay
// honest and in one place.
var (
	ErrBadOffer        = errors.New("gateway: unusable SDP offer from Meta")
	ErrNoRoute         = errors.New("gateway: no route for this business number")
	ErrClosed          = errors.New("gateway: outside business hours (route closed)")
	ErrTargetFailed    = errors.New("gateway: target refused the call")
	ErrRingTimeout     = errors.New("gateway: target did not answer in time")
	ErrNoProvisional   = errors.New("gateway: target sent no provisional response in time (dead target)")
	ErrTrunkDown       = errors.New("gateway: the target's trunk is down (OPTIONS unanswered)")
	ErrAcceptDeadline  = errors.New("gateway: Meta's accept window ran out")
	ErrMediaConnect    = errors.New("gateway: ICE/DTLS with Meta did not complete")
	ErrAcceptFailed    = errors.New("gateway: Graph API accept failed")
	ErrPreAcceptFailed = errors.New("gateway: Graph API pre_accept failed")
	ErrCallerHangup    = errors.New("gateway: the WhatsApp user hung up")
	ErrPBXHangup       = errors.New("gateway: the PBX hung up")
	ErrMediaLost       = errors.New("gateway: media leg toward Meta failed")
	ErrMediaPanic      = errors.New("gateway: media goroutine panicked")
	ErrShutdown        = errors.New("gateway: shutting down")
	ErrSIP             = errors.New("gateway: SIP leg failed")
)

// metaAction is what ponte does toward Meta when a call ends for a reason.
type metaAction int

const (
	metaNone      metaAction = iota // Meta already knows (the user hung up)
	metaReject                      // before accept: POST action=reject
	metaTerminate                   // after accept (or accept on 183): POST action=terminate
)

// endReason describes how a call ends on each side.
type endReason struct {
	outcome string     // for records and metrics
	reason  sip.Reason // Reason header toward the PBX (RFC 3326, Q.850 causes)
}

// classify maps an error to its outcome and Reason header.
func classify(err error) endReason {
	q := func(cause int, text string) sip.Reason {
		return sip.Reason{Protocol: "Q.850", Cause: cause, Text: text}
	}
	var se *sip.StatusError
	switch {
	case errors.Is(err, ErrCallerHangup):
		return endReason{"completed", q(16, "Normal call clearing")}
	case errors.Is(err, ErrPBXHangup):
		return endReason{"completed", q(16, "Normal call clearing")}
	case errors.As(err, &se):
		return endReason{fmt.Sprintf("target_%d", se.Code), q(21, "Call rejected")}
	case errors.Is(err, ErrRingTimeout):
		return endReason{"no_answer", q(19, "No answer from user")}
	case errors.Is(err, ErrTrunkDown):
		return endReason{"trunk_down", q(27, "Destination out of order")}
	case errors.Is(err, ErrNoProvisional):
		return endReason{"target_unreachable", q(18, "No user responding")}
	case errors.Is(err, ErrAcceptDeadline):
		return endReason{"no_answer", q(19, "No answer from user (WhatsApp accept window)")}
	case errors.Is(err, ErrAcceptFailed):
		return endReason{"accept_failed", sip.Reason{Protocol: "SIP", Cause: 500, Text: "WhatsApp accept failed"}}
	case errors.Is(err, ErrMediaConnect), errors.Is(err, ErrMediaLost):
		return endReason{"media_failed", q(41, "WhatsApp media failed")}
	case errors.Is(err, ErrShutdown):
		return endReason{"shutdown", q(41, "Gateway shutting down")}
	case errors.Is(err, ErrHookReject):
		return endReason{"rejected_by_hook", q(21, "Call rejected")}
	case errors.Is(err, sip.ErrSRTPRequired):
		return endReason{"srtp_required", sip.Reason{Protocol: "SIP", Cause: 488, Text: "SRTP required"}}
	case errors.Is(err, ErrPBXMediaTimeout):
		return endReason{"pbx_media_timeout", q(41, "No RTP from the PBX")}
	case errors.Is(err, ErrQueueTimeout):
		return endReason{"queue_timeout", q(19, "No answer from user (queue time)")}
	case errors.Is(err, ErrTransferGone):
		return endReason{"transfer_failed", q(31, "Normal, unspecified (transfer failed)")}
	case errors.Is(err, ErrClosed):
		return endReason{"closed", q(21, "Call rejected (closed)")}
	case errors.Is(err, ErrNoRoute):
		return endReason{"no_route", q(3, "No route")}
	case errors.Is(err, ErrBadOffer):
		return endReason{"bad_offer", q(88, "Incompatible destination")}
	default:
		return endReason{"failed", q(41, "Temporary failure")}
	}
}

// terminateReason maps Meta's terminate webhook to the Reason toward the PBX:
// COMPLETED, or FAILED without an error (the user gave up before the call was
// answered), is a normal clearing; FAILED with an error carries Meta's code so
// the PBX log shows why (138021 media receive timeout, 138019 setup failed, ...).
func terminateReason(status string, codes []int) sip.Reason {
	if status == "FAILED" && len(codes) > 0 {
		return sip.Reason{Protocol: "Q.850", Cause: 41, Text: fmt.Sprintf("WhatsApp call failed (Meta error %d)", codes[0])}
	}
	return sip.Reason{Protocol: "Q.850", Cause: 16, Text: "Normal call clearing"}
}
