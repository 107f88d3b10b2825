package wasim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The webhook bodies below are written field by field in the order of Meta's samples
// (whatsapp-calling-api.md §2.1–§2.5, §2.8), deliberately without the whatsapp package's
// types: the simulator tests our parser against Meta's format, not against itself.

type whEnvelope struct {
	Object string    `json:"object"`
	Entry  []whEntry `json:"entry"`
}

type whEntry struct {
	ID      string     `json:"id"`
	Changes []whChange `json:"changes"`
}

type whChange struct {
	Field string  `json:"field"`
	Value whValue `json:"value"`
}

type whValue struct {
	MessagingProduct string     `json:"messaging_product"`
	Metadata         whMetadata `json:"metadata"`
	Contacts         []any      `json:"contacts,omitempty"`
	Calls            []any      `json:"calls,omitempty"`
	Statuses         []any      `json:"statuses,omitempty"`
	Messages         []any      `json:"messages,omitempty"`
	Errors           []whError  `json:"errors,omitempty"`
}

type whMetadata struct {
	DisplayPhoneNumber string `json:"display_phone_number"`
	PhoneNumberID      string `json:"phone_number_id"`
}

type whContact struct {
	Profile whProfile `json:"profile"`
	WaID    string    `json:"wa_id"`
	UserID  string    `json:"user_id,omitempty"` // BSUID (2026)
}

type whProfile struct {
	Name string `json:"name"`
}

// whConnect is calls[0] of a user-initiated connect (§2.2). from/wa_id stay present even when
// empty: Meta sends "" for username-only users (BSUID rules).
type whConnect struct {
	ID              string    `json:"id"`
	To              string    `json:"to"`
	From            string    `json:"from"`
	FromUserID      string    `json:"from_user_id,omitempty"`
	Event           string    `json:"event"`
	Timestamp       string    `json:"timestamp"`
	Direction       string    `json:"direction"`
	DeeplinkPayload string    `json:"deeplink_payload,omitempty"`
	CTAPayload      string    `json:"cta_payload,omitempty"`
	Session         whSession `json:"session"`
}

type whSession struct {
	SDPType string `json:"sdp_type"`
	SDP     string `json:"sdp"`
}

// whTerminate is calls[0] of a terminate (§2.5). start_time, end_time and duration are present
// only if the call was picked up. Status is a string ("COMPLETED") or, in Meta's other
// documented variant, an array (["Completed"]).
type whTerminate struct {
	ID              string `json:"id"`
	To              string `json:"to"`
	From            string `json:"from"`
	FromUserID      string `json:"from_user_id,omitempty"`
	ToUserID        string `json:"to_user_id,omitempty"`
	Event           string `json:"event"`
	Direction       string `json:"direction"`
	BizOpaque       string `json:"biz_opaque_callback_data,omitempty"`
	DeeplinkPayload string `json:"deeplink_payload,omitempty"`
	CTAPayload      string `json:"cta_payload,omitempty"`
	Timestamp       string `json:"timestamp"`
	Status          any    `json:"status"`
	StartTime       string `json:"start_time,omitempty"`
	EndTime         string `json:"end_time,omitempty"`
	Duration        *int64 `json:"duration,omitempty"`
}

type whError struct {
	Code      int         `json:"code"`
	Message   string      `json:"message"`
	Href      string      `json:"href"`
	ErrorData whErrorData `json:"error_data"`
}

type whErrorData struct {
	Details string `json:"details"`
}

// Calling error codes carried by terminate webhooks (§3.6).
const (
	CodeMediaReceiveTimeout  = 138021
	CodeMediaTransmitTimeout = 138022
)

var errorTitles = map[int]string{
	CodeMediaReceiveTimeout:  "Media receive timeout",
	CodeMediaTransmitTimeout: "Media transmit timeout",
}

func unixString(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func (m *Meta) envelope(v whValue) ([]byte, error) { return m.envelopeField("calls", v) }

// envelopeField wraps a change value for field ("calls" or "messages", §2.1, §2.8).
func (m *Meta) envelopeField(field string, v whValue) ([]byte, error) {
	v.MessagingProduct = "whatsapp"
	v.Metadata = whMetadata{DisplayPhoneNumber: m.cfg.DisplayNumber, PhoneNumberID: m.cfg.PhoneNumberID}
	return json.Marshal(whEnvelope{
		Object: "whatsapp_business_account",
		Entry:  []whEntry{{ID: m.cfg.WABAID, Changes: []whChange{{Field: field, Value: v}}}},
	})
}

func (m *Meta) connectBody(c *Caller) ([]byte, error) {
	o := c.opts
	return m.envelope(whValue{
		Contacts: []any{whContact{Profile: whProfile{Name: o.Name}, WaID: o.From, UserID: o.BSUID}},
		Calls: []any{whConnect{
			ID: c.id, To: m.cfg.DisplayNumber, From: o.From, FromUserID: o.BSUID,
			Event: "connect", Timestamp: unixString(o.Timestamp), Direction: "USER_INITIATED",
			DeeplinkPayload: o.DeeplinkPayload, CTAPayload: o.CTAPayload,
			Session: whSession{SDPType: "offer", SDP: c.offer},
		}},
	})
}

// terminateBody builds the terminate for an ended call. acceptedAt is zero for a call that was
// never picked up; errCode 0 means no errors[].
func (m *Meta) terminateBody(c *Caller, status string, acceptedAt, endedAt time.Time, errCode int) ([]byte, error) {
	o := c.opts
	t := whTerminate{
		ID: c.id, To: m.cfg.DisplayNumber, From: o.From, FromUserID: o.BSUID,
		Event: "terminate", Direction: "USER_INITIATED", BizOpaque: c.bizOpaque(),
		DeeplinkPayload: o.DeeplinkPayload, CTAPayload: o.CTAPayload,
		Timestamp: unixString(endedAt), Status: status,
	}
	if m.cfg.StatusAsArray {
		// [UIC] sample: ["Failed", "Completed"] style (DOC-CONFLICT, §2.5).
		t.Status = []string{status[:1] + strings.ToLower(status[1:])}
	}
	if !acceptedAt.IsZero() {
		d := int64(endedAt.Sub(acceptedAt).Round(time.Second) / time.Second)
		t.StartTime, t.EndTime, t.Duration = unixString(acceptedAt), unixString(endedAt), &d
	}
	v := whValue{Calls: []any{t}}
	if errCode != 0 {
		v.Errors = []whError{{
			Code: errCode, Message: errorTitles[errCode],
			Href:      "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
			ErrorData: whErrorData{Details: errorTitles[errCode]},
		}}
	}
	return m.envelope(v)
}

// whBICConnect is calls[0] of a business-initiated connect (§2.3): Meta's SDP answer. from is
// the business and to the user: the 2026 fields name the callee to_user_id (§2.3), although
// Meta's older sample copies the user-initiated numbers (DOC-CONFLICT).
type whBICConnect struct {
	ID        string    `json:"id"`
	To        string    `json:"to"`
	From      string    `json:"from"`
	ToUserID  string    `json:"to_user_id,omitempty"`
	Event     string    `json:"event"`
	Timestamp string    `json:"timestamp"`
	Direction string    `json:"direction"`
	BizOpaque string    `json:"biz_opaque_callback_data,omitempty"`
	Session   whSession `json:"session"`
}

// whCallContact is a contacts[] entry of a business-initiated call webhook: wa_id, and the
// BSUID since 2026 (§2.3).
type whCallContact struct {
	WaID   string `json:"wa_id"`
	UserID string `json:"user_id,omitempty"`
}

// whCallStatus is a statuses[] element of a business-initiated call (§2.4).
type whCallStatus struct {
	ID              string `json:"id"`
	Timestamp       string `json:"timestamp"`
	Type            string `json:"type"`
	Status          string `json:"status"`
	RecipientID     string `json:"recipient_id"`
	RecipientUserID string `json:"recipient_user_id,omitempty"`
	BizOpaque       string `json:"biz_opaque_callback_data,omitempty"`
}

func (c *Callee) mustBody(b []byte, err error) []byte {
	if err != nil {
		c.m.log.Error("webhook body", "wacid", c.id, "err", err)
	}
	return b
}

func (c *Callee) connectBody() []byte {
	return c.mustBody(c.m.envelope(whValue{
		Contacts: []any{whCallContact{WaID: c.uo.WaID, UserID: c.uo.BSUID}},
		Calls: []any{whBICConnect{
			ID: c.id, To: c.uo.WaID, From: c.m.cfg.DisplayNumber, ToUserID: c.uo.BSUID,
			Event: "connect", Timestamp: unixString(c.m.now()), Direction: "BUSINESS_INITIATED",
			BizOpaque: c.opaque, Session: whSession{SDPType: "answer", SDP: c.answer},
		}},
	}))
}

func (c *Callee) statusBody(status string) []byte {
	return c.mustBody(c.m.envelope(whValue{Statuses: []any{whCallStatus{
		ID: c.id, Timestamp: unixString(c.m.now()), Type: "call", Status: status,
		RecipientID: c.uo.WaID, RecipientUserID: c.uo.BSUID, BizOpaque: c.opaque,
	}}}))
}

// terminateBody: times on Config.Now; c.mu is held.
func (c *Callee) terminateBody(wasAccepted bool, errCode int) []byte {
	now := c.m.now()
	status := "FAILED"
	if wasAccepted && errCode == 0 {
		status = "COMPLETED"
	}
	t := whTerminate{
		ID: c.id, To: c.uo.WaID, From: c.m.cfg.DisplayNumber, ToUserID: c.uo.BSUID,
		Event: "terminate", Direction: "BUSINESS_INITIATED", BizOpaque: c.opaque,
		Timestamp: unixString(now), Status: status,
	}
	if c.m.cfg.StatusAsArray {
		t.Status = []string{status[:1] + strings.ToLower(status[1:])}
	}
	if wasAccepted {
		d := int64(now.Sub(c.acceptedSim).Round(time.Second) / time.Second)
		t.StartTime, t.EndTime, t.Duration = unixString(c.acceptedSim), unixString(now), &d
	}
	v := whValue{Calls: []any{t}}
	if errCode != 0 {
		v.Errors = []whError{{
			Code: errCode, Message: errorTitles[errCode],
			Href:      "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
			ErrorData: whErrorData{Details: errorTitles[errCode]},
		}}
	}
	return c.mustBody(c.m.envelope(v))
}

// Sign returns the X-Hub-Signature-256 value for body: "sha256=" + hex(HMAC-SHA256(body,
// secret)) (§2.1).
func Sign(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookDelivery is one webhook POST the simulator made.
type WebhookDelivery struct {
	// Event: "connect", "terminate", "status" (call status), "permission_reply", "message"
	// (from the user), "message_status" (of a message the business sent) or "raw".
	Event  string
	CallID string
	Body   []byte
	At     time.Time
	Status int
	Err    string
}

// SendWebhook POSTs body to the gateway as Meta would, signed when sign is true. It is for
// tests of the webhook endpoint (bad signatures, duplicates, out-of-order events).
func (m *Meta) SendWebhook(ctx context.Context, body []byte, sign bool) (int, error) {
	return m.post(ctx, "raw", "", body, sign)
}

// post delivers one webhook. Meta's request times out after about 20 s (§2.1, [FAQ]); the
// simulator does not retry, so tests see exactly what they caused.
func (m *Meta) post(ctx context.Context, event, callID string, body []byte, sign bool) (int, error) {
	d := WebhookDelivery{Event: event, CallID: callID, Body: body, At: time.Now()}
	status, err := m.doPost(ctx, body, sign)
	d.Status = status
	if err != nil {
		d.Err = err.Error()
	}
	m.mu.Lock()
	m.webhooks = append(m.webhooks, d)
	m.mu.Unlock()
	m.log.Debug("webhook", "event", event, "wacid", callID, "status", status, "err", err)
	return status, err
}

func (m *Meta) doPost(ctx context.Context, body []byte, sign bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "facebookexternalua")
	if sign {
		req.Header.Set("X-Hub-Signature-256", Sign(body, m.cfg.AppSecret))
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%w: HTTP %d", ErrWebhookRejected, resp.StatusCode)
	}
	return resp.StatusCode, nil
}
