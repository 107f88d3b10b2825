package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultBaseURL is used when ClientConfig.BaseURL is empty. Graph v17.0 is the minimum for
// calling ([FAQ] via ref §1); use a current version.
const DefaultBaseURL = "https://graph.facebook.com/v23.0"

// MaxBizOpaqueLen is the limit on biz_opaque_callback_data, in characters (ref §3.1).
const MaxBizOpaqueLen = 512

// maxResponseBytes bounds how much of a Graph API response is read.
const maxResponseBytes = 1 << 20

// ClientConfig configures the Graph API client. Zero values take the documented defaults.
type ClientConfig struct {
	BaseURL     string        // e.g. https://graph.facebook.com/v23.0 (default DefaultBaseURL)
	AccessToken string        // sent as "Authorization: Bearer"; never logged
	Timeout     time.Duration // per request (each attempt), default 5s
	Retries     int           // extra attempts for retryable actions; default 2, negative for none
	Backoff     time.Duration // delay before the first retry, doubled for each further one; default 200ms
	HTTPClient  *http.Client  // default: a private client with a clone of http.DefaultTransport
	Logger      *slog.Logger
	// Observer, when set, is told about every request attempt (for metrics).
	Observer GraphObserver
}

// GraphObserver sees each Graph API request attempt: its action
// ("pre_accept", ..., "call_permissions"), its outcome ("ok"; "error" when
// Graph answered with an error, code then being its error code or 0;
// "timeout"; "network" for any other transport failure) and its latency.
type GraphObserver interface {
	GraphRequest(action, outcome string, code int, d time.Duration)
}

// Client calls POST /{phone-number-id}/calls (ref §3.1–3.2) with per-request timeouts and the
// retry policy of RetryTable. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig
	hc  *http.Client
	log *slog.Logger
}

var (
	// ErrTimeout: the request did not complete within ClientConfig.Timeout (after retries, for
	// retried actions) or the caller's deadline. For Connect the call may nonetheless exist:
	// its fate arrives by webhook (connect/terminate) and Connect must not be re-sent.
	ErrTimeout = errors.New("whatsapp: graph api request timed out")
	// ErrUnavailable: HTTP 5xx (after retries, for retried actions) or no connection to Graph.
	ErrUnavailable = errors.New("whatsapp: graph api unavailable")
	// ErrAuth: the access token was refused (Graph code 190, or HTTP 401 without a calling
	// 138xxx code such as 138000 "calling not enabled" or 138006 "no permission").
	ErrAuth = errors.New("whatsapp: graph api authentication failed")
	// ErrInvalidArgument: the request was refused locally before sending.
	ErrInvalidArgument = errors.New("whatsapp: invalid argument")
	// ErrBadResponse: Graph answered 2xx with a body that does not say what it should.
	ErrBadResponse = errors.New("whatsapp: unexpected graph api response")
)

// APIError is a Graph API error body (ref §3.6):
// {"error":{"message","type","code","error_subcode","error_data":{"details"},"fbtrace_id"}}.
// errors.Is(err, ErrAuth) and errors.Is(err, ErrUnavailable) work on it.
type APIError struct {
	HTTPStatus, Code, Subcode int
	Type, Message, Details    string
	FBTraceID                 string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "whatsapp: graph api error (HTTP %d", e.HTTPStatus)
	if e.Code != 0 {
		fmt.Fprintf(&b, ", code %d", e.Code)
	}
	if e.Subcode != 0 {
		fmt.Fprintf(&b, ", subcode %d", e.Subcode)
	}
	b.WriteString(")")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Details != "" {
		b.WriteString(": ")
		b.WriteString(e.Details)
	}
	if e.FBTraceID != "" {
		b.WriteString(" [fbtrace_id ")
		b.WriteString(e.FBTraceID)
		b.WriteString("]")
	}
	return b.String()
}

// Is maps Graph errors onto the package sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrAuth:
		// 190 is Graph's OAuthException "invalid/expired token". Calling answers some
		// business-rule errors with HTTP 401 too (138000, 138006, ref §3.6): those are not
		// credential problems.
		return e.Code == 190 || (e.HTTPStatus == http.StatusUnauthorized && e.Code/1000 != 138)
	case ErrUnavailable:
		return e.HTTPStatus >= 500
	}
	return false
}

// alreadyInState reports Meta's "call already accepted/terminated/rejected/completed" family
// of refusals (ref §3.2 "accept or reject on a call already in progress, completed or
// failed"). Meta gives no dedicated code, so the message is matched.
func (e *APIError) alreadyInState() bool {
	return e.HTTPStatus < 500 && e.HTTPStatus != http.StatusTooManyRequests &&
		(containsFold(e.Message, "already") || containsFold(e.Details, "already"))
}

func containsFold(s, sub string) bool { return strings.Contains(strings.ToLower(s), sub) }

// NewClient returns a Graph API client.
func NewClient(cfg ClientConfig) *Client {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = 2
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, hc: hc, log: cfg.Logger}
}

// CloseIdleConnections releases pooled connections (for shutdown and tests).
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

type callSession struct {
	SDPType string `json:"sdp_type"`
	SDP     string `json:"sdp"`
}

// callRequest's field order reproduces the bodies of ref §3.1 exactly.
type callRequest struct {
	MessagingProduct string       `json:"messaging_product"`
	To               string       `json:"to,omitempty"`
	Recipient        string       `json:"recipient,omitempty"`
	CallID           string       `json:"call_id,omitempty"`
	Action           string       `json:"action"`
	Session          *callSession `json:"session,omitempty"`
	BizOpaque        string       `json:"biz_opaque_callback_data,omitempty"`
}

// PreAccept sends pre_accept with our SDP answer so ICE/DTLS converge while the PBX rings
// (ref §3.2). sdp_type is "answer": Meta's parameter table says "offer" but only "answer"
// works (ref §3.1 DOC-CONFLICT, whatsapp-api-js#522).
func (c *Client) PreAccept(ctx context.Context, phoneNumberID, callID, sdp string) error {
	if err := checkCall(phoneNumberID, callID); err != nil {
		return err
	}
	if sdp == "" {
		return fmt.Errorf("%w: empty sdp", ErrInvalidArgument)
	}
	return c.callAction(ctx, phoneNumberID, callRequest{CallID: callID, Action: "pre_accept",
		Session: &callSession{SDPType: "answer", SDP: sdp}})
}

// Accept answers a user-initiated call. sdp must be identical to the pre_accept SDP (ref
// §3.1); sdp_type is "answer" (see PreAccept). bizOpaque (≤ 512 chars) is echoed on later
// webhooks. Start media toward Meta only after this returns nil (ref §3.2).
func (c *Client) Accept(ctx context.Context, phoneNumberID, callID, sdp, bizOpaque string) error {
	if err := checkCall(phoneNumberID, callID); err != nil {
		return err
	}
	if sdp == "" {
		return fmt.Errorf("%w: empty sdp", ErrInvalidArgument)
	}
	if err := checkBizOpaque(bizOpaque); err != nil {
		return err
	}
	return c.callAction(ctx, phoneNumberID, callRequest{CallID: callID, Action: "accept",
		Session: &callSession{SDPType: "answer", SDP: sdp}, BizOpaque: bizOpaque})
}

// Reject declines a user-initiated call before accept.
func (c *Client) Reject(ctx context.Context, phoneNumberID, callID string) error {
	if err := checkCall(phoneNumberID, callID); err != nil {
		return err
	}
	return c.callAction(ctx, phoneNumberID, callRequest{CallID: callID, Action: "reject"})
}

// Terminate ends a call from the business side. Call it on every business hang-up, even after
// an RTCP BYE: pricing depends on it (ref §3.2).
func (c *Client) Terminate(ctx context.Context, phoneNumberID, callID string) error {
	if err := checkCall(phoneNumberID, callID); err != nil {
		return err
	}
	return c.callAction(ctx, phoneNumberID, callRequest{CallID: callID, Action: "terminate"})
}

// Connect starts a business-initiated call with our SDP offer to `to` (digits with country
// code) or `recipient` (BSUID); with both, Meta uses `to` (ref §3.1). It returns the wacid.
// Connect is never retried: a lost response may still have created a call, which webhooks
// will then report, and a second connect would be refused as a duplicate (138003).
func (c *Client) Connect(ctx context.Context, phoneNumberID, to, recipient, sdp, bizOpaque string) (string, error) {
	switch {
	case phoneNumberID == "":
		return "", fmt.Errorf("%w: empty phone number id", ErrInvalidArgument)
	case to == "" && recipient == "":
		return "", fmt.Errorf("%w: connect needs to or recipient", ErrInvalidArgument)
	case sdp == "":
		return "", fmt.Errorf("%w: empty sdp", ErrInvalidArgument)
	}
	if err := checkBizOpaque(bizOpaque); err != nil {
		return "", err
	}
	req := callRequest{To: to, Recipient: recipient, Action: "connect",
		Session: &callSession{SDPType: "offer", SDP: sdp}, BizOpaque: bizOpaque}
	data, err := c.post(ctx, phoneNumberID, req)
	if err != nil {
		return "", err
	}
	var resp struct {
		Calls []struct {
			ID flexString `json:"id"`
		} `json:"calls"`
	}
	_ = looseUnmarshal(data, &resp)
	if len(resp.Calls) == 0 || resp.Calls[0].ID == "" {
		return "", fmt.Errorf("%w: connect response without calls[0].id", ErrBadResponse)
	}
	wacid := string(resp.Calls[0].ID)
	c.log.Info("whatsapp: call connect accepted by graph", "wacid", wacid, "to", maskNumber(to))
	return wacid, nil
}

func checkCall(phoneNumberID, callID string) error {
	if phoneNumberID == "" || callID == "" {
		return fmt.Errorf("%w: empty phone number id or call id", ErrInvalidArgument)
	}
	return nil
}

func checkBizOpaque(s string) error {
	if n := utf8.RuneCountInString(s); n > MaxBizOpaqueLen {
		return fmt.Errorf("%w: biz_opaque_callback_data is %d chars, max %d", ErrInvalidArgument, n, MaxBizOpaqueLen)
	}
	return nil
}

// callAction posts a retried UIC action and checks the {"success":true} reply.
func (c *Client) callAction(ctx context.Context, phoneNumberID string, req callRequest) error {
	data, err := c.post(ctx, phoneNumberID, req)
	if err != nil {
		return err
	}
	var resp struct {
		Success *flexBool `json:"success"`
	}
	if looseUnmarshal(data, &resp) == nil && resp.Success != nil && !*resp.Success {
		return fmt.Errorf("whatsapp: %s %s: %w: success=false", req.Action, req.CallID, ErrBadResponse)
	}
	return nil
}

func encodeRequest(req callRequest) []byte {
	req.MessagingProduct = "whatsapp"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep SDP and opaque data byte-identical, not \u003c-escaped
	_ = enc.Encode(req)      // only strings: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// post sends a POST /calls action and returns the 2xx body.
func (c *Client) post(ctx context.Context, phoneNumberID string, req callRequest) ([]byte, error) {
	endpoint := c.cfg.BaseURL + "/" + url.PathEscape(phoneNumberID) + "/calls"
	return c.send(ctx, http.MethodPost, endpoint, encodeRequest(req), req.Action, req.CallID)
}

// send performs one Graph request, retrying as RetryTable says for action, and returns the 2xx
// body. wacid (may be "") is for logs and error text.
func (c *Client) send(ctx context.Context, method, endpoint string, body []byte, action, wacid string) ([]byte, error) {
	rule := retryRule(action)
	log := c.log.With("action", action)
	if wacid != "" {
		log = log.With("wacid", wacid)
	}
	attempts := 1
	if rule.Retried {
		attempts += c.cfg.Retries
	}
	delay := c.cfg.Backoff
	var last attemptResult
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			wait := max(delay, last.retryAfter)
			delay *= 2
			if !sleepCtx(ctx, wait) {
				break
			}
		}
		began := time.Now()
		last = c.attempt(ctx, method, endpoint, body)
		if c.cfg.Observer != nil {
			outcome, code := attemptOutcome(last.err)
			c.cfg.Observer.GraphRequest(action, outcome, code, time.Since(began))
		}
		if last.err == nil {
			return last.data, nil
		}
		var apiErr *APIError
		if errors.As(last.err, &apiErr) {
			log.Warn("whatsapp: graph api error", "attempt", attempt+1, "http_status", apiErr.HTTPStatus,
				"code", apiErr.Code, "subcode", apiErr.Subcode, "message", apiErr.Message, "fbtrace_id", apiErr.FBTraceID)
			// The previous attempt may have reached Meta before it failed on our side; then
			// the call is already in the state we asked for (ref §3.2).
			if attempt > 0 && rule.AlreadyIsSuccess && apiErr.alreadyInState() {
				log.Info("whatsapp: call already in requested state on retry; treating as success", "fbtrace_id", apiErr.FBTraceID)
				return nil, nil
			}
		} else {
			log.Warn("whatsapp: graph api request failed", "attempt", attempt+1, "err", last.err)
		}
		if !last.retryable || ctx.Err() != nil {
			break
		}
	}
	what := action
	if wacid != "" {
		what += " " + wacid
	}
	return nil, finalError(ctx, what, last)
}

func finalError(ctx context.Context, what string, last attemptResult) error {
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("whatsapp: %s: %w: %w (last attempt: %v)", what, ErrTimeout, ctx.Err(), last.err)
	case ctx.Err() != nil:
		return fmt.Errorf("whatsapp: %s: %w (last attempt: %v)", what, ctx.Err(), last.err)
	}
	return fmt.Errorf("whatsapp: %s: %w", what, last.err)
}

// attemptOutcome classifies one attempt for GraphObserver.
func attemptOutcome(err error) (outcome string, code int) {
	var apiErr *APIError
	switch {
	case err == nil:
		return "ok", 0
	case errors.As(err, &apiErr):
		return "error", apiErr.Code
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout", 0
	}
	return "network", 0
}

type attemptResult struct {
	data       []byte
	err        error
	retryable  bool
	retryAfter time.Duration
}

// attempt performs one HTTP exchange bounded by the per-request timeout.
func (c *Client) attempt(ctx context.Context, method, endpoint string, body []byte) attemptResult {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, endpoint, rd)
	if err != nil {
		return attemptResult{err: fmt.Errorf("%w: %w", ErrInvalidArgument, err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AccessToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportFailure(ctx, actx, err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if err != nil {
		return transportFailure(ctx, actx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return attemptResult{data: data}
	}
	apiErr := parseAPIError(resp.StatusCode, data)
	return attemptResult{
		err:        apiErr,
		retryable:  resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After")),
	}
}

// transportFailure classifies a failed exchange: our per-request timeout -> ErrTimeout, the
// caller's context -> not retryable, anything else (refused, reset, DNS) -> ErrUnavailable.
// All but the caller's context are retryable.
func transportFailure(ctx, actx context.Context, err error) attemptResult {
	switch {
	case ctx.Err() != nil:
		return attemptResult{err: err}
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return attemptResult{err: fmt.Errorf("%w: %w", ErrTimeout, err), retryable: true}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return attemptResult{err: fmt.Errorf("%w: %w", ErrTimeout, err), retryable: true}
	}
	return attemptResult{err: fmt.Errorf("%w: %w", ErrUnavailable, err), retryable: true}
}

// parseAPIError reads a Graph error body tolerantly; a body that is not one still yields an
// *APIError carrying the HTTP status and a short excerpt.
func parseAPIError(status int, body []byte) *APIError {
	var env struct {
		Error *struct {
			Message   flexString      `json:"message"`
			Type      flexString      `json:"type"`
			Code      flexInt         `json:"code"`
			Subcode   flexInt         `json:"error_subcode"`
			ErrorData json.RawMessage `json:"error_data"`
			FBTraceID flexString      `json:"fbtrace_id"`
		} `json:"error"`
	}
	e := &APIError{HTTPStatus: status}
	if looseUnmarshal(body, &env) == nil && env.Error != nil {
		e.Message, e.Type = string(env.Error.Message), string(env.Error.Type)
		e.Code, e.Subcode = int(env.Error.Code), int(env.Error.Subcode)
		e.Details = errorDetails(env.Error.ErrorData)
		e.FBTraceID = string(env.Error.FBTraceID)
		return e
	}
	e.Message = http.StatusText(status)
	if ex := excerpt(body, 200); ex != "" {
		e.Details = ex
	}
	return e
}

// excerpt returns up to n bytes of b as printable, valid UTF-8 for error messages.
func excerpt(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), "")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
}

// parseRetryAfter reads a delay-seconds Retry-After (RFC 9110 §10.2.3); dates are ignored.
func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || secs <= 0 {
		return 0
	}
	return time.Duration(min(secs, 3600)) * time.Second
}

// sleepCtx waits d unless ctx ends first, or would end before d elapses (no point waiting to
// fail): then it returns false at once.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// maskNumber keeps the last 4 digits of a phone number for info-level logs (design.md: no full
// phone numbers at info level).
func maskNumber(s string) string {
	if len(s) <= 4 {
		return s
	}
	return strings.Repeat("*", len(s)-4) + s[len(s)-4:]
}
