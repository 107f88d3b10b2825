package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// MaxInteractiveBodyLen is Meta's limit on an interactive message's body.text, in characters
// (Cloud API interactive messages; not repeated in the calling reference, §4.2 only says the
// body is the one customisable part).
const MaxInteractiveBodyLen = 1024

// Template names an approved call-permission-request template (ref §4.2): a MARKETING or
// UTILITY template created with a {"type":"call_permission_request"} component.
type Template struct {
	Name       string   // template name as approved, e.g. "sample_cpr_template"
	Language   string   // language code the template was approved in, e.g. "en" or "pt_BR"
	BodyParams []string // values for the body's {{1}}, {{2}}, ... in order; may be empty
}

// PermissionRequest is a call permission request to one user (ref §4.2).
type PermissionRequest struct {
	// Body is the interactive request's body text (optional, ≤ MaxInteractiveBodyLen); used
	// when Template is nil. A free-form interactive message may only be sent inside the
	// user's open customer-service window.
	Body string
	// Template, when set, sends a "template" message instead: the only kind allowed outside
	// the customer-service window (ref §4.2).
	Template *Template
}

// MessageResult is what Graph says about a sent message.
type MessageResult struct {
	MessageID string // messages[0].id: the wamid, later the context.id of the user's reply (ref §2.8)
	Input     string // contacts[0].input: the `to`/`recipient` as we sent it
	WaID      string // contacts[0].wa_id: the user Meta resolved it to; "" when absent
	UserID    string // contacts[0].user_id: the user's BSUID, when Meta returns one
}

// SendPermissionRequest sends a call permission request (ref §4.2) to `to`, which is a phone
// number (digits with country code, optionally with a leading '+') or a BSUID; a BSUID goes
// out as "recipient", like Client.Connect's (ref §3.1, §2.2 BSUID changes).
//
// It is never retried (RetryTable "messages"): every send is a billable message that also
// counts toward the 1/24 h and 2/7 d request limits (ref §4.3), so a lost answer must not
// produce a second request. Meta's refusals come back as *APIError, e.g. 138009 (request
// limit hit), 138017 (a permanent permission already exists), 131026 (client too old,
// usually reported later by webhook) (ref §3.6, §2.6).
func (c *Client) SendPermissionRequest(ctx context.Context, phoneNumberID, to string, r PermissionRequest) (MessageResult, error) {
	body, err := permissionRequestBody(to, r)
	if err != nil {
		return MessageResult{}, err
	}
	if phoneNumberID == "" {
		return MessageResult{}, fmt.Errorf("%w: empty phone number id", ErrInvalidArgument)
	}
	endpoint := c.cfg.BaseURL + "/" + url.PathEscape(phoneNumberID) + "/messages"
	data, err := c.send(ctx, http.MethodPost, endpoint, body, "messages", "")
	if err != nil {
		return MessageResult{}, err
	}
	res, err := parseMessageResult(data)
	if err != nil {
		return MessageResult{}, err
	}
	kind := "interactive"
	if r.Template != nil {
		kind = "template"
	}
	c.log.Info("whatsapp: call permission request sent", "kind", kind, "to", maskNumber(to), "wamid", res.MessageID)
	return res, nil
}

// isPhoneNumber reports whether s is a phone number as Graph's `to` takes it: digits, with an
// optional leading '+'. Anything else (e.g. "US.13491208655302741918") is taken for a BSUID.
func isPhoneNumber(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Message bodies: field order reproduces the samples of ref §4.2 exactly.
type (
	messageRequest struct {
		MessagingProduct string              `json:"messaging_product"`
		RecipientType    string              `json:"recipient_type"`
		To               string              `json:"to,omitempty"`
		Recipient        string              `json:"recipient,omitempty"`
		Type             string              `json:"type"`
		Interactive      *interactiveMessage `json:"interactive,omitempty"`
		Template         *templateMessage    `json:"template,omitempty"`
	}
	interactiveMessage struct {
		Type   string `json:"type"`
		Action struct {
			Name string `json:"name"`
		} `json:"action"`
		Body *textBody `json:"body,omitempty"`
	}
	textBody struct {
		Text string `json:"text"`
	}
	templateMessage struct {
		Name     string `json:"name"`
		Language struct {
			Code string `json:"code"`
		} `json:"language"`
		Components []templateComponent `json:"components,omitempty"`
	}
	templateComponent struct {
		Type       string          `json:"type"`
		Parameters []templateParam `json:"parameters"`
	}
	templateParam struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
)

// permissionRequestBody validates r and encodes the POST /messages body.
func permissionRequestBody(to string, r PermissionRequest) ([]byte, error) {
	to = strings.TrimSpace(to)
	if to == "" {
		return nil, fmt.Errorf("%w: permission request needs a recipient", ErrInvalidArgument)
	}
	req := messageRequest{MessagingProduct: "whatsapp", RecipientType: "individual"}
	if isPhoneNumber(to) {
		req.To = to
	} else {
		req.Recipient = to
	}
	if t := r.Template; t != nil {
		if t.Name == "" || t.Language == "" {
			return nil, fmt.Errorf("%w: template needs a name and a language", ErrInvalidArgument)
		}
		tm := &templateMessage{Name: t.Name}
		tm.Language.Code = t.Language
		if len(t.BodyParams) > 0 {
			comp := templateComponent{Type: "body"}
			for i, p := range t.BodyParams {
				if p == "" {
					// Meta refuses an empty text parameter; say which one here.
					return nil, fmt.Errorf("%w: template body parameter {{%d}} is empty", ErrInvalidArgument, i+1)
				}
				comp.Parameters = append(comp.Parameters, templateParam{Type: "text", Text: p})
			}
			tm.Components = []templateComponent{comp}
		}
		req.Type, req.Template = "template", tm
	} else {
		if n := utf8.RuneCountInString(r.Body); n > MaxInteractiveBodyLen {
			return nil, fmt.Errorf("%w: body is %d chars, max %d", ErrInvalidArgument, n, MaxInteractiveBodyLen)
		}
		im := &interactiveMessage{Type: "call_permission_request"}
		im.Action.Name = "call_permission_request"
		if r.Body != "" {
			im.Body = &textBody{Text: r.Body}
		}
		req.Type, req.Interactive = "interactive", im
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the user reads this text: keep <, > and & as written
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// parseMessageResult reads a messages response tolerantly: contacts[] may be absent (it is for
// BSUID recipients in some samples) and odd value types read as empty. Only a response without
// messages[0].id fails, because without the wamid the user's reply cannot be matched.
func parseMessageResult(data []byte) (MessageResult, error) {
	var raw struct {
		Contacts []struct {
			Input  flexString `json:"input"`
			WaID   flexString `json:"wa_id"`
			UserID flexString `json:"user_id"`
		} `json:"contacts"`
		Messages []struct {
			ID flexString `json:"id"`
		} `json:"messages"`
	}
	if !json.Valid(data) || looseUnmarshal(data, &raw) != nil || len(raw.Messages) == 0 || raw.Messages[0].ID == "" {
		return MessageResult{}, fmt.Errorf("%w: messages response without messages[0].id", ErrBadResponse)
	}
	res := MessageResult{MessageID: string(raw.Messages[0].ID)}
	if len(raw.Contacts) > 0 {
		c := raw.Contacts[0]
		res.Input, res.WaID, res.UserID = string(c.Input), string(c.WaID), string(c.UserID)
	}
	return res, nil
}
