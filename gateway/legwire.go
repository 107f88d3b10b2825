package gateway

import (
	"context"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/sip"
)

// infoDigit is a digit for the PBX as SIP INFO.
type infoDigit struct {
	digit rune
	dur   time.Duration
}

// wireLeg connects a PBX dialog's mid-call events to the call: hold and
// resume (RFC 3264 §8.4: ponte stops sending while the PBX says so, feeds
// Meta silence, and pauses the RTP timeout), a codec change the trunk allows,
// and DTMF the PBX sends as SIP INFO (relayed to Meta as RFC 4733 events).
func (c *call) wireLeg(l *pbxLeg) {
	c.curDlg.Store(l.dlg)
	l.dlg.OnMediaChange(func(st sip.MediaState) {
		c.held.Store(st.Held)
		c.bridge.SetPBXSend(st.Send)
		c.log.Info("PBX media changed", "held", st.Held, "send", st.Send, "recv", st.Recv, "remote", st.Remote.String(), "codec", st.Codec.Name)
		if st.Desc == nil || strings.EqualFold(st.Codec.Name, c.rec.Codec) {
			return
		}
		pm, ok := pbxMediaFor(st.Desc, l.trunk)
		if !ok {
			return // package sip answered 488 to a codec the trunk does not allow
		}
		if err := c.bridge.SetPBX(pm); err != nil {
			c.log.Error("codec change failed", "codec", pm.Codec, "err", err)
			return
		}
		c.rec.Codec = pm.Codec
		c.bridge.SetPBXSend(st.Send)
	})
	l.dlg.OnDTMF(func(d rune, dur time.Duration) { c.bridge.PBXDigit(d, dur) })
}

// startInfoSender sends the caller's digits to the PBX as SIP INFO, one at a
// time in order, on whichever dialog has the call; the playout clock only
// queues them (it must not wait on SIP).
func (c *call) startInfoSender(ctx context.Context) func(rune, time.Duration) {
	ch := make(chan infoDigit, 32)
	c.g.wg.Add(1)
	go func() {
		defer c.g.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-ch:
				dlg := c.curDlg.Load()
				if dlg == nil {
					continue
				}
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := dlg.SendDTMFInfo(sctx, d.digit, d.dur); err != nil {
					c.log.Warn("DTMF INFO failed", "err", err)
				}
				cancel()
			}
		}
	}()
	return func(d rune, dur time.Duration) {
		select {
		case ch <- infoDigit{d, dur}:
		default:
			c.log.Warn("DTMF INFO queue full: digit dropped")
		}
	}
}
