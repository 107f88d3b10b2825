package wasim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"
)

// msgBody is a POST /messages body; the simulator accepts the two call permission request
// shapes of §4.2.
type msgBody struct {
	MessagingProduct string `json:"messaging_product"`
	RecipientType    string `json:"recipient_type"`
	To               string `json:"to"`
	Recipient        string `json:"recipient"`
	Type             string `json:"type"`
	Interactive      *struct {
		Type   string `json:"type"`
		Action *struct {
			Name string `json:"name"`
		} `json:"action"`
		Body *struct {
			Text string `json:"text"`
		} `json:"body"`
	} `json:"interactive"`
	Template *struct {
		Name     string `json:"name"`
		Language *struct {
			Code string `json:"code"`
		} `json:"language"`
	} `json:"template"`
}

// Message error codes (§2.6, §3.6; 131047 is Cloud API's "re-engagement message": a
// free-form message outside the customer-service window).
const (
	CodeMessageUndeliverable = 131026
	CodeReengagement         = 131047
	CodeRequestLimit         = 138009
	CodePermanentExists      = 138017
)

// handleMessages implements POST /{version}/{phone_number_id}/messages for call permission
// requests (§4.2): an interactive call_permission_request (only inside the customer-service
// window, §7) or a template. The pair's limits apply (§4.3): 1 per 24 h and 2 per 7 days
// (138009), none while a permanent permission exists (138017). As at Meta, a message that
// cannot be delivered is still answered 200 and fails later by a status webhook: an unknown
// user (131026) or an interactive message outside the window (131047); those do not count.
func (m *Meta) handleMessages(w http.ResponseWriter, r *http.Request) {
	rec := GraphRequest{Action: "messages", ReceivedAt: time.Now(), Auth: r.Header.Get("Authorization")}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec.Body = body
	var mb msgBody
	if err == nil {
		err = json.Unmarshal(body, &mb)
	}
	rec.To, rec.Recipient = mb.To, mb.Recipient
	if gerr := m.authorize(r, rec.Auth); gerr != nil {
		m.respond(w, &rec, nil, gerr)
		return
	}
	if err != nil {
		m.respond(w, &rec, nil, badParam("request body is not JSON: "+err.Error()))
		return
	}
	if m.delayAndInject(w, &rec) {
		return
	}
	if gerr := validateMessage(&mb); gerr != nil {
		m.respond(w, &rec, nil, gerr)
		return
	}
	input := firstNonEmpty(mb.To, mb.Recipient) // with both, to wins (as for connect, §3.1)
	now := m.now()
	wamid := newID("wamid.", 24)
	var failCode int
	contact := map[string]any{"input": input}

	m.umu.Lock()
	u := m.resolveLocked(input)
	var gerr *graphError
	switch {
	case u == nil:
		failCode = CodeMessageUndeliverable
		if n := normNumber(input); n != "" && isDigits(n) {
			contact["wa_id"] = n
		}
	case u.permission == PermissionPermanent:
		gerr = &graphError{status: http.StatusBadRequest, code: CodePermanentExists,
			message: "Permanent call permission already exists for this user"}
	default:
		contact["wa_id"] = u.o.WaID
		if u.o.BSUID != "" {
			contact["user_id"] = u.o.BSUID
		}
		if blocked, next := u.requestBlocked(now); blocked {
			gerr = &graphError{status: http.StatusBadRequest, code: CodeRequestLimit,
				message: "Call permission request limit reached",
				details: fmt.Sprintf("next request allowed at %s (%d)", next.UTC().Format(time.RFC3339), next.Unix())}
		} else if mb.Type == "interactive" && !now.Before(u.windowUntil) {
			failCode = CodeReengagement
		} else {
			u.requests = append(within(u.requests, now, week), now)
			u.lastRequest = wamid
		}
	}
	var uo UserOptions
	if u != nil {
		uo = u.o
	}
	m.umu.Unlock()
	if gerr != nil {
		m.respond(w, &rec, nil, gerr)
		return
	}
	rec.MessageID = wamid
	m.respond(w, &rec, map[string]any{
		"messaging_product": "whatsapp",
		"contacts":          []any{contact},
		"messages":          []any{map[string]any{"id": wamid}},
	}, nil)
	recipient := firstNonEmpty(uo.WaID, normNumber(input))
	if failCode != 0 {
		m.goWebhooks(m.messageStatusBody(wamid, recipient, uo.BSUID, "failed", failCode))
		return
	}
	m.goWebhooks(m.messageStatusBody(wamid, recipient, uo.BSUID, "sent", 0),
		m.messageStatusBody(wamid, recipient, uo.BSUID, "delivered", 0))
}

func validateMessage(mb *msgBody) *graphError {
	switch {
	case mb.MessagingProduct != "whatsapp":
		return badParam("messaging_product must be whatsapp")
	case mb.To == "" && mb.Recipient == "":
		return badParam("to or recipient is required")
	case mb.RecipientType != "" && mb.RecipientType != "individual":
		return badParam("recipient_type must be individual")
	}
	switch mb.Type {
	case "interactive":
		i := mb.Interactive
		switch {
		case i == nil || i.Type != "call_permission_request":
			return badParam("interactive.type must be call_permission_request")
		case i.Action == nil || i.Action.Name != "call_permission_request":
			return badParam("interactive.action.name must be call_permission_request")
		case i.Body != nil && (i.Body.Text == "" || utf8.RuneCountInString(i.Body.Text) > 1024):
			return badParam("interactive.body.text must have 1 to 1024 characters")
		}
	case "template":
		t := mb.Template
		if t == nil || t.Name == "" || t.Language == nil || t.Language.Code == "" {
			return badParam("template.name and template.language.code are required")
		}
	default:
		return badParam(fmt.Sprintf("message type %q: the simulator accepts only call permission requests (interactive or template)", mb.Type))
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Messages returns the POST /messages requests received so far (bodies in Body).
func (m *Meta) Messages() []GraphRequest {
	var out []GraphRequest
	for _, r := range m.Requests() {
		if r.Action == "messages" {
			out = append(out, r)
		}
	}
	return out
}

// goWebhooks delivers message webhooks one after the other in the background; Close waits.
func (m *Meta) goWebhooks(bodies ...[]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for _, b := range bodies {
			if b != nil {
				_, _ = m.post(m.ctx, "message_status", "", b, true)
			}
		}
	}()
}

// whMessageStatus is a statuses[] element about a message the business sent (Cloud API
// sent/delivered/read/failed), on the messages field.
type whMessageStatus struct {
	ID              string    `json:"id"`
	Status          string    `json:"status"`
	Timestamp       string    `json:"timestamp"`
	RecipientID     string    `json:"recipient_id"`
	RecipientUserID string    `json:"recipient_user_id,omitempty"`
	Errors          []whError `json:"errors,omitempty"`
}

var messageErrorTitles = map[int]string{
	CodeMessageUndeliverable: "Message undeliverable",
	CodeReengagement:         "Re-engagement message",
}

func (m *Meta) messageStatusBody(wamid, recipient, bsuid, status string, code int) []byte {
	st := whMessageStatus{ID: wamid, Status: status, Timestamp: unixString(m.now()), RecipientID: recipient, RecipientUserID: bsuid}
	if code != 0 {
		st.Errors = []whError{{Code: code, Message: messageErrorTitles[code],
			Href:      "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
			ErrorData: whErrorData{Details: messageErrorTitles[code]}}}
	}
	b, err := m.envelopeField("messages", whValue{Statuses: []any{st}})
	if err != nil {
		m.log.Error("message status body", "err", err)
		return nil
	}
	return b
}

// PermissionReplyOptions describe a call_permission_reply (§2.8). The scenarios of Meta's
// table:
//
//	temporary accept from a request   {}                                    (context: the last request)
//	permanent accept from a request   {Permanent: true}
//	permanent accept from the profile {Permanent: true, NoContext: true}
//	reject                            {Response: "reject"}
//	automatic callback permission     {Source: "automatic", Context: wacid}
//	auto-revoke                       {Response: "reject", Source: "automatic"}
type PermissionReplyOptions struct {
	Response   string    // "accept" (default) or "reject"
	Permanent  bool      // accept only
	Expiration time.Time // temporary accept: default Config.Now + 7 days (§4.3)
	Source     string    // "user_action" (default) or "automatic"
	// Context is context.id. Default for a user_action reply: the wamid of the last permission
	// request sent to the user (none if there was none); for an automatic one: absent.
	Context   string
	NoContext bool // no context even if a request was sent
}

// SendPermissionReply is the user answering a permission request (or Meta acting for the
// user): the user's permission changes and a messages-field webhook in the shape of §2.8 is
// delivered before it returns. user is a wa_id, dialled number or BSUID set with SetUser.
func (m *Meta) SendPermissionReply(ctx context.Context, user string, r PermissionReplyOptions) error {
	if r.Response == "" {
		r.Response = "accept"
	}
	if r.Source == "" {
		r.Source = "user_action"
	}
	if r.Response != "accept" && r.Response != "reject" {
		return fmt.Errorf("wasim: permission reply response %q", r.Response)
	}
	now := m.now()
	m.umu.Lock()
	u := m.resolveLocked(user)
	if u == nil {
		m.umu.Unlock()
		return fmt.Errorf("wasim: unknown user %q", user)
	}
	if r.Context == "" && !r.NoContext && r.Source == "user_action" {
		r.Context = u.lastRequest
	}
	if r.Response == "accept" && !r.Permanent && r.Expiration.IsZero() {
		r.Expiration = now.Add(temporaryLifetime)
	}
	switch {
	case r.Response == "reject":
		u.permission, u.expires = PermissionNone, time.Time{}
	case r.Permanent:
		u.permission, u.expires = PermissionPermanent, time.Time{}
	default:
		u.permission, u.expires = PermissionTemporary, r.Expiration
	}
	if r.Response == "accept" {
		u.unanswered = 0
	}
	if r.Source == "user_action" {
		u.windowUntil = now.Add(serviceWindow) // the user wrote to the business (§7)
	}
	uo := u.o
	m.umu.Unlock()
	if r.NoContext {
		r.Context = ""
	}
	body, err := m.permissionReplyBody(uo, r, r.Context)
	if err != nil {
		return err
	}
	_, err = m.post(ctx, "permission_reply", "", body, true)
	return err
}

type whMsgContext struct {
	From string `json:"from"`
	ID   string `json:"id"`
}

type whPermissionReply struct {
	Response    string `json:"response"`
	IsPermanent *bool  `json:"is_permanent,omitempty"`
	Expiration  string `json:"expiration_timestamp,omitempty"`
	Source      string `json:"response_source"`
}

// whUserMessage is a messages[] element from the user (§2.8 and Cloud API text messages).
type whUserMessage struct {
	From        string        `json:"from"`
	FromUserID  string        `json:"from_user_id,omitempty"`
	ID          string        `json:"id"`
	Timestamp   string        `json:"timestamp"`
	Context     *whMsgContext `json:"context,omitempty"`
	Type        string        `json:"type"`
	Text        *whText       `json:"text,omitempty"`
	Interactive *struct {
		Type  string            `json:"type"`
		Reply whPermissionReply `json:"call_permission_reply"`
	} `json:"interactive,omitempty"`
}

type whText struct {
	Body string `json:"body"`
}

func (m *Meta) userMessageEnvelope(uo UserOptions, msg whUserMessage) ([]byte, error) {
	return m.envelopeField("messages", whValue{
		Contacts: []any{whContact{Profile: whProfile{Name: uo.Name}, WaID: uo.WaID, UserID: uo.BSUID}},
		Messages: []any{msg},
	})
}

// permissionReplyBody builds the §2.8 webhook: is_permanent only on accepts,
// expiration_timestamp only on temporary accepts, context only when given.
func (m *Meta) permissionReplyBody(uo UserOptions, r PermissionReplyOptions, contextID string) ([]byte, error) {
	msg := whUserMessage{From: uo.WaID, FromUserID: uo.BSUID, ID: newID("wamid.", 24),
		Timestamp: unixString(m.now()), Type: "interactive"}
	if contextID != "" {
		msg.Context = &whMsgContext{From: uo.WaID, ID: contextID}
	}
	reply := whPermissionReply{Response: r.Response, Source: r.Source}
	if r.Response == "accept" {
		perm := r.Permanent
		reply.IsPermanent = &perm
		if !perm {
			reply.Expiration = unixString(r.Expiration)
		}
	}
	msg.Interactive = &struct {
		Type  string            `json:"type"`
		Reply whPermissionReply `json:"call_permission_reply"`
	}{Type: "call_permission_reply", Reply: reply}
	return m.userMessageEnvelope(uo, msg)
}

// SendUserMessage is the user writing text to the business: a messages-field webhook,
// delivered before it returns. It opens the customer-service window (§7), inside which an
// interactive permission request may be sent (§4.2).
func (m *Meta) SendUserMessage(ctx context.Context, user, text string) error {
	now := m.now()
	m.umu.Lock()
	u := m.resolveLocked(user)
	if u == nil {
		m.umu.Unlock()
		return fmt.Errorf("wasim: unknown user %q", user)
	}
	u.windowUntil = now.Add(serviceWindow)
	uo := u.o
	m.umu.Unlock()
	body, err := m.userMessageEnvelope(uo, whUserMessage{From: uo.WaID, FromUserID: uo.BSUID,
		ID: newID("wamid.", 24), Timestamp: unixString(now), Type: "text", Text: &whText{Body: text}})
	if err != nil {
		return err
	}
	_, err = m.post(ctx, "message", "", body, true)
	return err
}
