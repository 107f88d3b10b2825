package bare

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The parent drives the child over its stdin and stdout with one JSON object per line.
//
//	child  -> {"op":"ready","ice":"127.0.0.1:41234"}                   once, at start
//	parent -> {"op":"call","id":3,"offer":"v=0...","pbx":"127.0.0.1:5004","codec":"PCMU"}
//	child  -> {"op":"answer","id":3,"answer":"v=0...","rtp":"127.0.0.1:39000"}
//	child  -> {"op":"connected","id":3}                                 DTLS-SRTP is up
//	child  -> {"op":"error","id":3,"error":"..."}                       the call failed
//	parent -> {"op":"stats"}
//	child  -> {"op":"stats","stats":{...}}
//	parent closes stdin: the child closes every call and exits 0.

// Protocol operations.
const (
	opReady     = "ready"
	opCall      = "call"
	opAnswer    = "answer"
	opConnected = "connected"
	opError     = "error"
	opStats     = "stats"
)

// ErrProtocol wraps a line of the control protocol that cannot be used.
var ErrProtocol = errors.New("bare: bad control line")

// maxLine bounds one control line: an SDP offer is a few KiB.
const maxLine = 64 << 10

// request is a line from the parent.
type request struct {
	Op    string `json:"op"`
	ID    int    `json:"id,omitempty"`
	Offer string `json:"offer,omitempty"`
	PBX   string `json:"pbx,omitempty"`   // where the child sends plain RTP
	Codec string `json:"codec,omitempty"` // the plain RTP side's codec: PCMU, PCMA or opus
}

// response is a line from the child.
type response struct {
	Op     string      `json:"op"`
	ID     int         `json:"id,omitempty"`
	ICE    string      `json:"ice,omitempty"`    // ready: the single ICE UDP port
	Answer string      `json:"answer,omitempty"` // answer: the SDP answer
	RTP    string      `json:"rtp,omitempty"`    // answer: the child's plain RTP socket
	Err    string      `json:"error,omitempty"`
	Stats  *ChildStats `json:"stats,omitempty"`
}

// ChildStats are the child's own counters, summed over its calls.
type ChildStats struct {
	Calls      int   `json:"calls"`
	ToPBXIn    int64 `json:"to_pbx_in"`  // RTP read from the WebRTC legs
	ToPBXOut   int64 `json:"to_pbx_out"` // RTP written to the plain sockets
	ToWAIn     int64 `json:"to_wa_in"`   // RTP read from the plain sockets
	ToWAOut    int64 `json:"to_wa_out"`  // RTP written to the WebRTC legs
	Errors     int64 `json:"errors"`     // packets dropped: bad RTP, codec or write errors
	Goroutines int   `json:"goroutines"` // runtime.NumGoroutine when asked
	// Mallocs is runtime.MemStats.Mallocs: heap objects allocated so far, pion's included.
	Mallocs uint64 `json:"mallocs"`
}

// normCodec maps the codec names the child accepts (RFC 4855 §3: case-insensitive).
func normCodec(c string) (string, error) {
	switch strings.ToLower(c) {
	case "pcmu":
		return "PCMU", nil
	case "pcma":
		return "PCMA", nil
	case "opus":
		return "opus", nil
	}
	return "", fmt.Errorf("%w: codec %q is not one of PCMU, PCMA, opus", ErrProtocol, c)
}

// parseRequest decodes and checks one line from the parent. A call needs an offer, a
// loopback-or-any unicast PBX address and a known codec.
func parseRequest(line []byte) (request, error) {
	var r request
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch r.Op {
	case opStats:
		return r, nil
	case opCall:
	default:
		return r, fmt.Errorf("%w: op %q", ErrProtocol, r.Op)
	}
	if r.ID <= 0 {
		return r, fmt.Errorf("%w: call id %d", ErrProtocol, r.ID)
	}
	if !strings.HasPrefix(r.Offer, "v=0") {
		return r, fmt.Errorf("%w: call %d: offer is not SDP", ErrProtocol, r.ID)
	}
	ap, err := netip.ParseAddrPort(r.PBX)
	if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
		return r, fmt.Errorf("%w: call %d: pbx address %q", ErrProtocol, r.ID, r.PBX)
	}
	if r.Codec, err = normCodec(r.Codec); err != nil {
		return r, err
	}
	return r, nil
}
