package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ponte-gw/ponte/whatsapp"
)

// endGraph records Reject/Terminate and answers Reject with rejectErr.
type endGraph struct {
	GraphAPI
	rejectErr error
	calls     []string
}

func (g *endGraph) Reject(context.Context, string, string) error {
	g.calls = append(g.calls, "reject")
	return g.rejectErr
}

func (g *endGraph) Terminate(context.Context, string, string) error {
	g.calls = append(g.calls, "terminate")
	return nil
}

// TestRejectAtMeta: after an accept whose outcome ponte does not know
// (timeout, 5xx), a reject Meta refuses with a 4xx ("already in progress")
// is followed by terminate; after a definite refusal of accept, or when the
// reject itself failed for want of Graph, nothing more is sent.
func TestRejectAtMeta(t *testing.T) {
	inProgress := &whatsapp.APIError{HTTPStatus: 400, Code: 100, Message: "call is already in progress; use terminate"}
	cases := []struct {
		name      string
		acceptErr error // what accept failed with
		rejectErr error
		want      string
	}{
		{"timeout_then_reject_ok", fmt.Errorf("x: %w", whatsapp.ErrTimeout), nil, "reject"},
		{"timeout_then_reject_refused", fmt.Errorf("x: %w", whatsapp.ErrTimeout), fmt.Errorf("r: %w", inProgress), "reject,terminate"},
		{"5xx_then_reject_refused", &whatsapp.APIError{HTTPStatus: 503}, inProgress, "reject,terminate"},
		{"429_then_reject_refused", &whatsapp.APIError{HTTPStatus: 429}, inProgress, "reject,terminate"},
		{"definite_4xx_then_reject_refused", &whatsapp.APIError{HTTPStatus: 400, Code: 100}, inProgress, "reject"},
		{"timeout_then_reject_5xx", fmt.Errorf("x: %w", whatsapp.ErrTimeout), &whatsapp.APIError{HTTPStatus: 502}, "reject"},
		{"no_accept_then_reject_refused", nil, inProgress, "reject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := &endGraph{rejectErr: tc.rejectErr}
			c := &call{g: &Gateway{graph: g}, log: slog.New(slog.DiscardHandler), ev: whatsapp.CallEvent{PhoneNumberID: "1", CallID: "wacid.x"}}
			if tc.acceptErr != nil {
				c.noteAcceptFailure(tc.acceptErr)
			}
			err := c.rejectAtMeta(context.Background())
			if got := strings.Join(g.calls, ","); got != tc.want {
				t.Errorf("Graph calls %q, want %q", got, tc.want)
			}
			if tc.want == "reject,terminate" && err != nil {
				t.Errorf("err %v after a successful terminate", err)
			}
			if tc.want == "reject" && !errors.Is(err, tc.rejectErr) {
				t.Errorf("err %v, want the reject's %v", err, tc.rejectErr)
			}
		})
	}
}
