package gateway

import (
	"context"
	"errors"
	"time"
)

// ErrPBXMediaTimeout: the PBX sent no RTP for media.rtp_timeout while not on
// hold: a PBX that crashed or lost its network without a BYE.
var ErrPBXMediaTimeout = errors.New("gateway: no RTP from the PBX (media timeout)")

// watchPBXMedia ends the call when the PBX has sent no packet for timeout.
// While the PBX holds the call (sendonly/inactive, c=0.0.0.0: RFC 3264 §8.4)
// it sends nothing by right, so the clock stops (issue 3: "the media timeout
// pauses while the PBX holds"), and starts afresh when it resumes.
func (c *call) watchPBXMedia(ctx context.Context, timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	c.g.wg.Add(1)
	go func() {
		defer c.g.wg.Done()
		t := time.NewTicker(min(timeout/4, time.Second))
		defer t.Stop()
		since := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if c.held.Load() {
					since = now
					continue
				}
				last := c.bridge.LastPBXPacket()
				if last.Before(since) {
					last = since
				}
				if now.Sub(last) > timeout {
					c.log.Warn("no RTP from the PBX: ending the call", "silent_for", now.Sub(last).Round(time.Millisecond))
					c.end(ErrPBXMediaTimeout)
					return
				}
			}
		}
	}()
}
