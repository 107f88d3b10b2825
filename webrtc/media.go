package webrtc

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// ReadRTP reads the next RTP packet from Meta into p, using buf as its storage (p.Payload
// aliases buf; p's CSRC and extension slices are reused). Opus (PT 111) and telephone-event
// (PT 126) arrive on the same remote track. It blocks until the remote track exists, and
// returns ErrClosed once the leg is closed. Only one goroutine may call ReadRTP at a time.
// Steady state does not allocate.
func (l *Leg) ReadRTP(buf []byte, p *rtp.Packet) error {
	tr := l.remote.Load()
	if tr == nil {
		select {
		case <-l.trackReady:
			tr = l.remote.Load()
		case <-l.closing:
			return ErrClosed
		case <-l.done:
			return fmt.Errorf("%w: no remote track", ErrFailed)
		}
	}
	n, _, err := tr.Read(buf)
	if err != nil {
		select {
		case <-l.closing:
			return ErrClosed
		default:
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
		return fmt.Errorf("webrtc: read rtp: %w", err)
	}
	if err := p.Unmarshal(buf[:n]); err != nil {
		return fmt.Errorf("webrtc: bad rtp: %w", err)
	}
	opusPT, _, _ := l.PayloadTypes()
	l.st.onRTP(&p.Header, len(p.Payload), p.PayloadType == opusPT, time.Now())
	return nil
}

// SetReadDeadline sets a deadline on ReadRTP once the remote track exists (ErrState before).
func (l *Leg) SetReadDeadline(t time.Time) error {
	tr := l.remote.Load()
	if tr == nil {
		return fmt.Errorf("%w: no remote track yet", ErrState)
	}
	return tr.SetReadDeadline(t)
}

// EnableSend opens the send gate. Until then WriteRTP returns ErrSendGated and the leg emits no
// RTP and no RTCP: a WhatsApp client treats the first media packet as "accepted" (§3.2), so
// the gateway calls this only after Meta answered `accept` with 200. From then on the leg
// sends an RTCP report every Config.RTCPInterval (Meta drops a call after 30 s without media
// and asks for "at-least RTCP packets even when there is silence", §5.5).
func (l *Leg) EnableSend() {
	l.sendOnce.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		select {
		case <-l.closing:
			return
		default:
		}
		l.sendOn.Store(true)
		l.wg.Add(1)
		go l.rtcpLoop()
	})
}

// SendEnabled reports whether EnableSend was called.
func (l *Leg) SendEnabled() bool { return l.sendOn.Load() }

// WriteRTP sends one packet toward Meta. The payload type is kept as given (it must be the
// negotiated Opus or telephone-event PT; ErrPayloadType otherwise); the SSRC is forced to the
// leg's one SSRC; sequence number, timestamp and marker are the caller's, because Opus and
// RFC 4733 events share one sequence and timestamp space (§5.4). h is not modified. Before
// EnableSend it returns ErrSendGated and sends nothing. Packets written before DTLS is up
// are dropped by pion. Steady state does not allocate in this package.
func (l *Leg) WriteRTP(h *rtp.Header, payload []byte) error {
	if !l.sendOn.Load() {
		return ErrSendGated
	}
	if err := l.track.WriteRTP(h, payload); err != nil {
		select {
		case <-l.closing:
			return ErrClosed
		default:
		}
		return err
	}
	opusPT, _, _ := l.track.PayloadTypes()
	l.st.onSent(h.Timestamp, len(payload), h.PayloadType == opusPT, time.Now())
	return nil
}

// rtcpLoop sends our RTCP report every interval once the gate is open: an SR when we have sent
// RTP (RFC 3550 §6.4.1), otherwise an RR, each with a reception report about Meta's stream and
// an SDES CNAME, as RFC 3550 §6.1 wants in every compound packet.
func (l *Leg) rtcpLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.e.cfg.RTCPInterval)
	defer t.Stop()
	for {
		select {
		case <-l.closing:
			return
		case <-l.done:
			return
		case <-t.C:
			if err := l.sendReport(time.Now()); err != nil {
				l.log.Debug("rtcp report not sent", "err", err)
			}
		}
	}
}

func (l *Leg) sendReport(now time.Time) error {
	ssrc := l.SSRC()
	if ssrc == 0 {
		return fmt.Errorf("%w: no SSRC", ErrState)
	}
	pkts := l.st.report(ssrc, now)
	pkts = append(pkts, &rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{
		Source: ssrc,
		Items:  []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "ponte-" + l.callID}},
	}}})
	l.mu.Lock()
	pc := l.pc
	l.mu.Unlock()
	if err := pc.WriteRTCP(pkts); err != nil {
		return err
	}
	l.st.onRTCPSent()
	return nil
}

// readRTCP drains one of pion's RTCP read streams until the leg closes. pion's SRTCP session
// delivers each RTCP packet once per SSRC it concerns, so an SR from Meta that reports on our
// stream shows up on both streams: the sender stream handles reception reports about our
// SSRC, the receiver stream handles Meta's own SR, SDES and BYE.
func (l *Leg) readRTCP(read func() ([]rtcp.Packet, error), senderStream bool) {
	defer l.wg.Done()
	for {
		pkts, err := read()
		if err != nil {
			return
		}
		now := time.Now()
		ssrc := l.SSRC()
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.SenderReport:
				if senderStream {
					l.st.onReports(ssrc, p.Reports, now)
				} else {
					l.st.onSR(p, now)
				}
			case *rtcp.ReceiverReport:
				if senderStream {
					l.st.onReports(ssrc, p.Reports, now)
					l.st.onRTCPIn()
				}
			case *rtcp.Goodbye:
				if !senderStream {
					l.st.onBye()
				}
			default:
				if !senderStream {
					l.st.onRTCPIn()
				}
			}
		}
	}
}
