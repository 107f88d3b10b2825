package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Outbound is what the API asks of the gateway for business-initiated calls:
// permission requests and status, and click-to-call. The gateway enforces
// WhatsApp's rules; the API only translates HTTP.
type Outbound interface {
	RequestPermission(ctx context.Context, r PermissionRequest) (PermissionRequestResult, error)
	Permission(ctx context.Context, business, user string) (any, error)
	ClickToCall(ctx context.Context, r ClickToCall) (ClickToCallResult, error)
}

// PermissionRequest is the body of POST /api/permission-requests.
type PermissionRequest struct {
	User     string `json:"user"`     // E.164 number (any punctuation) or BSUID
	Business string `json:"business"` // phone_number_id or display number; optional with one number
	Body     string `json:"body"`     // interactive message text (optional)
}

// PermissionRequestResult says how the request went out.
type PermissionRequestResult struct {
	Kind      string `json:"kind"` // interactive | template
	MessageID string `json:"message_id"`
	User      string `json:"user"`
}

// ClickToCall is the body of POST /api/calls: ring the agent, then call the
// WhatsApp user when the agent answers, and bridge both.
type ClickToCall struct {
	Agent    string `json:"agent"`    // SIP URI or extension of the agent
	Trunk    string `json:"trunk"`    // trunk the agent is reached on
	User     string `json:"user"`     // the WhatsApp user to call
	Business string `json:"business"` // optional with one number
}

// ClickToCallResult names the call; GET /api/calls/{id} follows it.
type ClickToCallResult struct {
	ID   string `json:"id"`
	User string `json:"user"`
}

// RefusedError is a refusal with an HTTP status, a reason and, for limits,
// when to try again.
type RefusedError struct {
	Status     int
	Reason     string
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string { return e.Reason }

const maxAPIBody = 64 << 10

func (h *handler) outboundRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/api/permission-requests", h.post(h.permissionRequest))
	mux.HandleFunc("/api/permissions/{user}", h.get(h.permission))
}

// post allows POST only, with a JSON body of at most maxAPIBody bytes.
func (h *handler) post(fn func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		if h.out == nil {
			writeError(w, http.StatusNotImplemented, "business-initiated calls are not configured")
			return
		}
		// A declared length over the limit is refused unread; a chunked or
		// lying body is cut at the limit by MaxBytesReader, which also has
		// net/http close the connection rather than drain the rest
		// (RFC 9110 §15.5.14: 413 Content Too Large).
		if r.ContentLength > maxAPIBody {
			writeError(w, http.StatusRequestEntityTooLarge, "body over 64 KiB")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				writeError(w, http.StatusRequestEntityTooLarge, "body over 64 KiB")
				return
			}
			writeError(w, http.StatusBadRequest, "unreadable body")
			return
		}
		fn(w, r, body)
	}
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (h *handler) permissionRequest(w http.ResponseWriter, r *http.Request, body []byte) {
	var req PermissionRequest
	if err := decodeStrict(body, &req); err != nil || req.User == "" {
		writeError(w, http.StatusBadRequest, `want {"user": "+5511...", "business": "...", "body": "..."}`)
		return
	}
	res, err := h.out.RequestPermission(r.Context(), req)
	if err != nil {
		h.refused(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (h *handler) permission(w http.ResponseWriter, r *http.Request) {
	if h.out == nil {
		writeError(w, http.StatusNotImplemented, "business-initiated calls are not configured")
		return
	}
	st, err := h.out.Permission(r.Context(), r.URL.Query().Get("business"), r.PathValue("user"))
	if err != nil {
		h.refused(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) clickToCall(w http.ResponseWriter, r *http.Request, body []byte) {
	var req ClickToCall
	if err := decodeStrict(body, &req); err != nil || req.User == "" || req.Agent == "" {
		writeError(w, http.StatusBadRequest, `want {"agent": "sip:1001@pbx", "trunk": "...", "user": "+5511...", "business": "..."}`)
		return
	}
	res, err := h.out.ClickToCall(r.Context(), req)
	if err != nil {
		h.refused(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

// refused answers a RefusedError with its status (and Retry-After), anything
// else with 500 and the detail in the log only.
func (h *handler) refused(w http.ResponseWriter, r *http.Request, err error) {
	var re *RefusedError
	if errors.As(err, &re) {
		if re.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((re.RetryAfter+time.Second-1)/time.Second)))
		}
		writeError(w, re.Status, re.Reason)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	h.log.Error("api: outbound request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
