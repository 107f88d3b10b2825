package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// SIP INFO DTMF errors.
var (
	ErrBadDigit = errors.New("sip: not a DTMF digit")
	ErrNotDTMF  = errors.New("sip: INFO body is not DTMF")
)

// DefaultInfoDTMFDuration is the duration reported for an INFO digit that
// gives none (application/dtmf bodies, a dtmf-relay body without Duration).
const DefaultInfoDTMFDuration = 250 * time.Millisecond

// maxInfoBody bounds the INFO bodies parsed as DTMF.
const maxInfoBody = 512

// maxInfoDuration bounds a digit's duration either way.
const maxInfoDuration = 10 * time.Second

// OnDTMF sets a handler for DTMF digits the PBX sends as SIP INFO
// (application/dtmf-relay or application/dtmf; the legacy INFO usage of
// RFC 6086 §2). It runs on a SIP goroutine and must not block. OnInfo still
// sees every INFO body.
func (d *Dialog) OnDTMF(f func(digit rune, dur time.Duration)) {
	d.mu.Lock()
	d.onDTMF = f
	d.mu.Unlock()
}

// SendDTMFInfo sends one digit (0-9, *, #, A-D) to the PBX as an INFO with
// an application/dtmf-relay body ("Signal=5\r\nDuration=160\r\n", duration
// in ms), for PBXs without telephone-event (RFC 4733). It returns once the
// PBX answered: a non-2xx is a *StatusError. Call it from one goroutine so
// the digits arrive in order.
func (d *Dialog) SendDTMFInfo(ctx context.Context, digit rune, dur time.Duration) error {
	body, err := DTMFRelayBody(digit, dur)
	if err != nil {
		return err
	}
	res, _, _, err := d.inDialog(ctx, sip.INFO, body, "application/dtmf-relay")
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &StatusError{Code: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

// DTMFRelayBody renders an application/dtmf-relay body for digit; a
// duration <= 0 becomes DefaultInfoDTMFDuration.
func DTMFRelayBody(digit rune, dur time.Duration) ([]byte, error) {
	r, ok := normDigit(digit)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrBadDigit, digit)
	}
	if dur <= 0 {
		dur = DefaultInfoDTMFDuration
	}
	dur = min(dur, maxInfoDuration)
	return fmt.Appendf(nil, "Signal=%c\r\nDuration=%d\r\n", r, dur.Milliseconds()), nil
}

// normDigit maps a DTMF character to its canonical form (A-D upper case).
func normDigit(r rune) (rune, bool) {
	switch {
	case r >= '0' && r <= '9', r == '*', r == '#':
		return r, true
	case r >= 'A' && r <= 'D':
		return r, true
	case r >= 'a' && r <= 'd':
		return r - 'a' + 'A', true
	}
	return 0, false
}

// signalDigit reads a Signal value: the digit itself, or its RFC 4733 event
// code (10 = *, 11 = #, 12-15 = A-D) as some PBXs send.
func signalDigit(s string) (rune, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 1 {
		return normDigit(rune(s[0]))
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 || n > 15 {
		return 0, false
	}
	return rune("*#ABCD"[n-10]), true
}

// ParseDTMFInfo reads a DTMF digit from an INFO body: application/dtmf-relay
// ("Signal=5" and optional "Duration=160" in ms, one per line, any case and
// spacing, LF or CRLF) or application/dtmf (the digit alone). Another
// content type gives ErrNotDTMF; a body without a valid digit ErrBadDigit.
// A missing or invalid duration gives DefaultInfoDTMFDuration.
func ParseDTMFInfo(contentType string, body []byte) (rune, time.Duration, error) {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	if ct != "application/dtmf-relay" && ct != "application/dtmf" {
		return 0, 0, ErrNotDTMF
	}
	if len(body) > maxInfoBody {
		return 0, 0, fmt.Errorf("%w: body of %d bytes", ErrBadDigit, len(body))
	}
	if ct == "application/dtmf" && !bytes.Contains(body, []byte("=")) {
		if r, ok := signalDigit(string(body)); ok {
			return r, DefaultInfoDTMFDuration, nil
		}
		return 0, 0, ErrBadDigit
	}
	var digit rune
	dur := DefaultInfoDTMFDuration
	for _, line := range strings.Split(string(body), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "signal":
			r, ok := signalDigit(strings.TrimRight(v, "\r"))
			if !ok {
				return 0, 0, ErrBadDigit
			}
			digit = r
		case "duration":
			ms, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil && ms > 0 && time.Duration(ms)*time.Millisecond <= maxInfoDuration {
				dur = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if digit == 0 {
		return 0, 0, ErrBadDigit
	}
	return digit, dur, nil
}

// handleInfo hands an in-dialog INFO's body to OnInfo and, when it is a
// DTMF digit, to OnDTMF, then answers 200: once the PBX has its 200 the
// digit has been delivered.
func (d *Dialog) handleInfo(req *sip.Request, tx sip.ServerTransaction) {
	if !d.checkRequest(req, tx) {
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	d.deliverInfo(ct, req.Body())
	digit, dur, err := ParseDTMFInfo(ct, req.Body())
	switch {
	case err == nil:
		d.mu.Lock()
		f := d.onDTMF
		d.mu.Unlock()
		if f != nil {
			f(digit, dur)
		}
	case !errors.Is(err, ErrNotDTMF):
		d.ua.log.Debug("sip: INFO DTMF body ignored", "call_id", d.callID, "err", err)
	}
	respond(tx, req, 200, "OK", nil)
}
