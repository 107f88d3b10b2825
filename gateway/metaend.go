package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ponte-gw/ponte/whatsapp"
)

// noteAcceptFailure remembers whether a failed accept may nonetheless have
// taken effect at Meta: any failure but a definite refusal (an API error
// with a 4xx other than 429) is unsure. A request the client gave up on
// (timeout, connection cut, 5xx from a proxy) can still reach Meta and be
// carried out there (whatsapp.RetryTable, ref §3.2).
func (c *call) noteAcceptFailure(err error) {
	var ae *whatsapp.APIError
	definite := errors.As(err, &ae) && ae.HTTPStatus < 500 && ae.HTTPStatus != http.StatusTooManyRequests
	c.acceptUnsure.Store(!definite)
}

// rejectAtMeta ends at Meta a call ponte never saw accepted: reject (ref
// §3.2). After an unsure accept Meta may hold the call as accepted and then
// refuses the reject ("already in progress", ref §3.2: reject is for calls
// not yet accepted, terminate for calls in progress); the call would stay up
// and billed, the user in a dead call, until Meta's own no-media timer
// (§5.5). Then terminate ends it (issue 8 item 5).
func (c *call) rejectAtMeta(ctx context.Context) error {
	err := c.g.graph.Reject(ctx, c.ev.PhoneNumberID, c.ev.CallID)
	var ae *whatsapp.APIError
	if err == nil || !c.acceptUnsure.Load() || !errors.As(err, &ae) || ae.HTTPStatus >= 500 || ae.HTTPStatus == http.StatusTooManyRequests {
		return err
	}
	c.log.Info("reject refused after an unanswered accept: Meta may have accepted the call; sending terminate", "err", err)
	if terr := c.g.graph.Terminate(ctx, c.ev.PhoneNumberID, c.ev.CallID); terr != nil {
		return fmt.Errorf("%w; then terminate: %w", err, terr)
	}
	return nil
}
