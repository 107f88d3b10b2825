package wasim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// GraphRequest is one request to POST /{phone_number_id}/calls as the simulator saw it.
type GraphRequest struct {
	Action, CallID, SDPType, SDP, BizOpaque, To string
	Body                                        []byte
	Auth                                        string // Authorization header
	ReceivedAt, RespondedAt                     time.Time
	Status                                      int
	Err                                         string // error message returned, if any
}

type graphBody struct {
	MessagingProduct string `json:"messaging_product"`
	CallID           string `json:"call_id"`
	To               string `json:"to"`
	Action           string `json:"action"`
	Session          *struct {
		SDPType string `json:"sdp_type"`
		SDP     string `json:"sdp"`
	} `json:"session"`
	BizOpaque string `json:"biz_opaque_callback_data"`
}

// graphError is a Graph API error response (§3.6): {"error":{message,type,code,error_data,fbtrace_id}}.
type graphError struct {
	status  int
	code    int
	message string
	details string
}

func (e *graphError) Error() string {
	if e.details != "" {
		return fmt.Sprintf("(#%d) %s: %s", e.code, e.message, e.details)
	}
	return fmt.Sprintf("(#%d) %s", e.code, e.message)
}

func badParam(details string) *graphError {
	return &graphError{status: http.StatusBadRequest, code: 100, message: "Invalid parameter", details: details}
}

func writeGraphError(w http.ResponseWriter, e *graphError) {
	body := map[string]any{"error": map[string]any{
		"message":    e.Error(),
		"type":       "OAuthException",
		"code":       e.code,
		"error_data": map[string]any{"messaging_product": "whatsapp", "details": e.details},
		"fbtrace_id": newID("A", 12),
	}}
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

var success = map[string]any{"messaging_product": "whatsapp", "success": true}

// handleCalls implements POST /{version}/{phone_number_id}/calls with Meta's rules (§3.1, §3.2).
func (m *Meta) handleCalls(w http.ResponseWriter, r *http.Request) {
	rec := GraphRequest{ReceivedAt: time.Now(), Auth: r.Header.Get("Authorization")}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec.Body = body
	var gb graphBody
	if err == nil {
		err = json.Unmarshal(body, &gb)
	}
	rec.Action, rec.CallID, rec.To, rec.BizOpaque = gb.Action, gb.CallID, gb.To, gb.BizOpaque
	if gb.Session != nil {
		rec.SDPType, rec.SDP = gb.Session.SDPType, gb.Session.SDP
	}

	var after func() // runs once the response is on the wire
	status, gerr := http.StatusOK, (*graphError)(nil)
	switch {
	case rec.Auth != "Bearer "+m.cfg.AccessToken:
		gerr = &graphError{status: http.StatusUnauthorized, code: 190, message: "Invalid OAuth access token - Cannot parse access token"}
	case r.PathValue("pnid") != m.cfg.PhoneNumberID:
		gerr = &graphError{status: http.StatusBadRequest, code: 100,
			message: fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist", r.PathValue("pnid"))}
	case err != nil:
		gerr = badParam("request body is not JSON: " + err.Error())
	default:
		m.mu.Lock()
		delay := m.delays[gb.Action]
		m.mu.Unlock()
		time.Sleep(delay) // a slow Graph API: the request is recorded even if the client gave up
		if inj, ok := m.takeFailure(gb.Action); ok {
			m.respondInjected(w, &rec, inj)
			return
		}
		switch {
		case gb.MessagingProduct != "whatsapp":
			gerr = badParam("messaging_product must be whatsapp")
		default:
			after, gerr = m.doAction(&gb)
		}
	}
	if gerr != nil {
		status = gerr.status
		rec.Err = gerr.Error()
		writeGraphError(w, gerr)
	} else {
		writeJSON(w, status, success)
	}
	rec.Status, rec.RespondedAt = status, time.Now()
	m.mu.Lock()
	m.requests = append(m.requests, rec)
	m.mu.Unlock()
	if after != nil {
		after()
	}
}

func (m *Meta) respondInjected(w http.ResponseWriter, rec *GraphRequest, inj injected) {
	if inj.body == "" {
		writeGraphError(w, &graphError{status: inj.status, code: 1, message: "An unknown error occurred"})
		rec.Err = "injected"
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(inj.status)
		_, _ = io.WriteString(w, inj.body)
		rec.Err = "injected: " + inj.body
	}
	rec.Status, rec.RespondedAt = inj.status, time.Now()
	m.mu.Lock()
	m.requests = append(m.requests, *rec)
	m.mu.Unlock()
}

func (m *Meta) doAction(gb *graphBody) (after func(), _ *graphError) {
	switch gb.Action {
	case "pre_accept", "accept", "reject", "terminate":
	case "connect":
		return nil, badParam("the simulator does not implement business-initiated calls")
	case "":
		return nil, badParam("action is required")
	default:
		return nil, badParam(fmt.Sprintf("unknown action %q", gb.Action))
	}
	if gb.CallID == "" {
		return nil, badParam("call_id is required")
	}
	c := m.call(gb.CallID)
	if c == nil {
		return nil, badParam("Invalid call id " + gb.CallID)
	}
	switch gb.Action {
	case "pre_accept":
		return nil, c.preAccept(gb)
	case "accept":
		return c.accept(gb)
	case "reject":
		return c.reject()
	default:
		return c.terminate()
	}
}

// validateAnswerSDP applies Meta's documented SDP checks to a pre_accept/accept session
// (§3.1, §5.3): sdp_type "answer" (the only value that works, whatsapp-api-js#522), a DTLS
// fingerprint ("No fingerprint found in SDP"), exactly one m-line, and a=setup:active.
func validateAnswerSDP(gb *graphBody) *graphError {
	if gb.Session == nil || gb.Session.SDP == "" {
		return badParam("session with sdp is required")
	}
	if gb.Session.SDPType != "answer" {
		return badParam(fmt.Sprintf("Invalid sdp_type %q for %s", gb.Session.SDPType, gb.Action))
	}
	sdp := gb.Session.SDP
	if !strings.HasPrefix(sdp, "v=0\r\n") {
		return badParam("SDP must start with v=0 and use CRLF line endings")
	}
	if !strings.Contains(sdp, "\r\na=fingerprint:") {
		return badParam("No fingerprint found in SDP")
	}
	if n := strings.Count(sdp, "\r\nm="); n != 1 {
		return badParam(fmt.Sprintf("SDP must have exactly one media section, got %d", n))
	}
	if !strings.Contains(sdp, "\r\na=setup:active\r\n") {
		return badParam("DTLS role must be active (a=setup:active)")
	}
	return nil
}
