package wasim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// GraphRequest is one Graph API request as the simulator saw it: POST /calls (Action is the
// body's action; CallID is the created wacid for connect), GET /call_permissions (Action
// "call_permissions") or POST /messages (Action "messages").
type GraphRequest struct {
	Action, CallID, SDPType, SDP, BizOpaque, To string
	Recipient                                   string // `recipient` (BSUID) of connect or messages, or the GET's recipient
	Query                                       string // raw query of a GET
	MessageID                                   string // wamid answered to POST /messages
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
	Recipient        string `json:"recipient"`
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

// writeGraphError writes e in Graph's error shape.
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

// handleCalls implements POST /{version}/{phone_number_id}/calls with Meta's rules (§3.1, §3.2,
// §3.3).
func (m *Meta) handleCalls(w http.ResponseWriter, r *http.Request) {
	rec := GraphRequest{ReceivedAt: time.Now(), Auth: r.Header.Get("Authorization")}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec.Body = body
	var gb graphBody
	if err == nil {
		err = json.Unmarshal(body, &gb)
	}
	rec.Action, rec.CallID, rec.To, rec.Recipient, rec.BizOpaque = gb.Action, gb.CallID, gb.To, gb.Recipient, gb.BizOpaque
	if gb.Session != nil {
		rec.SDPType, rec.SDP = gb.Session.SDPType, gb.Session.SDP
	}

	var after func() // runs once the response is on the wire
	var resp any = success
	gerr := m.authorize(r, rec.Auth)
	switch {
	case gerr != nil:
	case err != nil:
		gerr = badParam("request body is not JSON: " + err.Error())
	default:
		if m.delayAndInject(w, &rec) {
			return
		}
		switch {
		case gb.MessagingProduct != "whatsapp":
			gerr = badParam("messaging_product must be whatsapp")
		case gb.Action == "connect":
			var c *Callee
			if c, gerr = m.connect(&gb); gerr == nil {
				// §3.1: {"messaging_product":"whatsapp","calls":[{"id":"wacid..."}]}
				rec.CallID = c.id
				resp = map[string]any{"messaging_product": "whatsapp", "calls": []any{map[string]any{"id": c.id}}}
				after = c.start
			}
		default:
			after, gerr = m.doAction(&gb)
		}
		m.holdResponse(r.Context(), gb.Action)
	}
	m.respond(w, &rec, resp, gerr)
	if after != nil {
		after()
	}
}

// authorize applies the checks every Graph request gets first: the bearer token (code 190) and
// the phone number id in the path.
func (m *Meta) authorize(r *http.Request, auth string) *graphError {
	switch {
	case auth != "Bearer "+m.cfg.AccessToken:
		return &graphError{status: http.StatusUnauthorized, code: 190, message: "Invalid OAuth access token - Cannot parse access token"}
	case r.PathValue("pnid") != m.cfg.PhoneNumberID:
		return &graphError{status: http.StatusBadRequest, code: 100,
			message: fmt.Sprintf("Unsupported post request. Object with ID '%s' does not exist", r.PathValue("pnid"))}
	}
	return nil
}

// delayAndInject applies DelayAction and InjectFailure for rec.Action. It reports true when an
// injected failure was answered. The delay happens before anything else, so a slow request
// still takes effect after the client gave up, as at Meta.
func (m *Meta) delayAndInject(w http.ResponseWriter, rec *GraphRequest) bool {
	m.mu.Lock()
	delay := m.delays[rec.Action]
	m.mu.Unlock()
	time.Sleep(delay)
	if inj, ok := m.takeFailure(rec.Action); ok {
		m.respondInjected(w, rec, inj)
		return true
	}
	return false
}

// holdResponse applies DelayResponse: the action has taken effect; its
// answer waits (or until the client gives up).
func (m *Meta) holdResponse(ctx context.Context, action string) {
	m.mu.Lock()
	d := m.respDelays[action]
	m.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// respond records the request, then writes resp (or gerr): once the client has the answer,
// Requests() shows the request. RespondedAt is filled in after the write.
func (m *Meta) respond(w http.ResponseWriter, rec *GraphRequest, resp any, gerr *graphError) {
	rec.Status = http.StatusOK
	if gerr != nil {
		rec.Status, rec.Err = gerr.status, gerr.Error()
	}
	m.recordAndWrite(rec, func() {
		if gerr != nil {
			writeGraphError(w, gerr)
		} else {
			writeJSON(w, rec.Status, resp)
		}
	})
}

func (m *Meta) respondInjected(w http.ResponseWriter, rec *GraphRequest, inj injected) {
	rec.Status, rec.Err = inj.status, "injected"
	if inj.body != "" {
		rec.Err = "injected: " + inj.body
	}
	m.recordAndWrite(rec, func() {
		if inj.body == "" {
			writeGraphError(w, &graphError{status: inj.status, code: 1, message: "An unknown error occurred"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(inj.status)
		_, _ = io.WriteString(w, inj.body)
	})
}

func (m *Meta) recordAndWrite(rec *GraphRequest, write func()) {
	m.mu.Lock()
	i := len(m.requests)
	m.requests = append(m.requests, *rec)
	m.mu.Unlock()
	write()
	rec.RespondedAt = time.Now()
	m.mu.Lock()
	m.requests[i].RespondedAt = rec.RespondedAt
	m.mu.Unlock()
}

func (m *Meta) doAction(gb *graphBody) (after func(), _ *graphError) {
	switch gb.Action {
	case "pre_accept", "accept", "reject", "terminate":
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
		if ce := m.Callee(gb.CallID); ce != nil {
			// A business-initiated call has no accept, pre_accept or reject (§3.3): the
			// business can only terminate it.
			if gb.Action != "terminate" {
				return nil, badParam(fmt.Sprintf("action %s is not supported on business-initiated call %s", gb.Action, gb.CallID))
			}
			return ce.terminate()
		}
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
