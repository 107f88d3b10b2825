package pbx

import (
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// sendLoop sends one packet of Config.Ptime (default 20 ms) per tick from
// the answer (or 183): tone, marker, RFC 4733 events while a digit is being
// sent, or RFC 3389 comfort noise during the configured stretch.
func (c *Call) sendLoop() {
	cfg := c.p.cfg
	gen := transcode.NewToneGen(cfg.ToneHz, 8000, transcode.AmpForDBFS(cfg.ToneDBFS))
	earlyGen := transcode.NewToneGen(cfg.EarlyToneHz, 8000, transcode.AmpForDBFS(cfg.ToneDBFS))
	greetGen := transcode.NewToneGen(cfg.GreetingHz, 8000, transcode.AmpForDBFS(cfg.ToneDBFS))
	ptime := time.Duration(cfg.Ptime) * time.Millisecond
	pcm := make([]int16, cfg.Ptime*8)
	payload := make([]byte, 1500)
	pkt := make([]byte, 1500)
	h := rtp.Header{Version: 2, SSRC: rand.Uint32(), SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32(), Marker: true}
	start := time.Now()
	changed := false
	var (
		ev       transcode.Generator
		evTS     uint32
		job      *dtmfJob
		idx      int
		nextAt   time.Time
		dtmfStep = uint16(cfg.Ptime * 8) // one packet in the 8 kHz event clock (RFC 4733, Meta: never scaled)
		lastCN   time.Time
	)
	tick := time.NewTicker(ptime)
	defer tick.Stop()
	locked := false // sendMu held for the frame being built
	replayed := 0   // Config.Replay frames sent so far
	for {
		select {
		case <-c.ended:
			return
		case <-tick.C:
		}
		now := time.Now()
		if cfg.SilentAfter > 0 && now.Sub(start) >= cfg.SilentAfter {
			continue
		}
		if cfg.ChangeSSRCAfter > 0 && !changed && now.Sub(start) >= cfg.ChangeSSRCAfter {
			changed = true
			h.SSRC, h.SequenceNumber, h.Timestamp = rand.Uint32(), uint16(rand.Uint32()), rand.Uint32()
			h.Marker = true
		}
		if job == nil {
			c.mu.Lock()
			if len(c.jobs) > 0 {
				job, c.jobs = c.jobs[0], c.jobs[1:]
				idx, nextAt = 0, now
			}
			c.mu.Unlock()
		}
		if job != nil && !ev.Active() && idx < len(job.digits) && !now.Before(nextAt) {
			if code, ok := transcode.DigitCode(rune(job.digits[idx])); ok {
				ev.Start(code, uint16(job.each/(time.Second/8000)), 10)
				evTS = h.Timestamp // constant for the whole event (RFC 4733 §2.5.1.2)
			}
			idx++
		}
		var n int
		isReplay := false
		k := 0
		if cfg.SwitchCodecEvery > 0 {
			k = int(now.Sub(start)/cfg.SwitchCodecEvery) % len(c.codecs)
		}
		pt := c.codecs[k].PT
		ts := h.Timestamp
		marker := h.Marker
		inCN := cfg.CNFor > 0 && now.Sub(start) >= cfg.CNAfter && now.Sub(start) < cfg.CNAfter+cfg.CNFor
		if inCN && !ev.Active() {
			if now.Sub(lastCN) < cfg.CNInterval {
				// RFC 3389 §4: between CN updates nothing is sent; the
				// timestamp runs on, the sequence number does not.
				h.Timestamp += c.tsStep
				continue
			}
			lastCN = now
			// RFC 3389 §3: one byte, the noise level in -dBov.
			payload[0], n, pt = 70, 1, 13
			h.Marker = true // the next audio packet starts a talkspurt (RFC 3551 §4.1)
		} else if ev.Active() {
			e, first := ev.Next(dtmfStep)
			n = e.Put(payload)
			pt, ts, marker = c.txDTMFPT, evTS, first
			if !ev.Active() {
				nextAt = now.Add(job.gap)
				if idx >= len(job.digits) {
					close(job.done)
					job = nil
				}
			}
		} else {
			// Hold sendMu from choosing the tone to the write, so a frame
			// chosen as early media never leaves after the 200 (the answer
			// path holds it around answeredAt and the 200).
			c.sendMu.Lock()
			locked = true
			answered := c.AnsweredAt()
			switch {
			case cfg.Marker != nil:
				cfg.Marker.Fill(pcm, now)
			case cfg.EarlyToneHz > 0 && answered.IsZero():
				earlyGen.Fill(pcm) // early media (183) has its own tone, so tests can tell it apart
			case cfg.GreetingHz > 0 && !answered.IsZero() && now.Sub(answered) < cfg.GreetingDur:
				greetGen.Fill(pcm) // the callee's first words after the 200
			default:
				gen.Fill(pcm)
			}
			c.mu.Lock()
			if c.inband != nil {
				c.inband.Mix(pcm) // DTMFInband: the digit replaces the tone while it sounds
			}
			c.mu.Unlock()
			if loop := cfg.Replay[c.codecs[k].Name]; len(loop) > 0 && cfg.Ptime == 20 {
				n, isReplay = copy(payload, loop[replayed%len(loop)]), true
			} else {
				var err error
				if n, err = c.encs[k].Encode(pcm, payload); err != nil {
					c.sendMu.Unlock()
					locked = false
					continue
				}
			}
			h.Marker = false
		}
		if job != nil && idx >= len(job.digits) && !ev.Active() {
			close(job.done) // last code was not a valid digit
			job = nil
		}
		out := rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: h.SequenceNumber, Timestamp: ts, SSRC: h.SSRC, Marker: marker}
		m, err := out.MarshalTo(pkt)
		if err != nil {
			if locked {
				c.sendMu.Unlock()
				locked = false
			}
			continue
		}
		m += copy(pkt[m:], payload[:n])
		c.mu.Lock()
		dst := c.remote
		c.mu.Unlock()
		sentAt := time.Now()
		_, werr := c.rtp.WriteToUDPAddrPort(c.srtp.protect(pkt[:m]), dst) // H-TLS: SRTP (pbx_tls.go)
		if isReplay {
			if werr == nil && cfg.OnSent != nil {
				cfg.OnSent(c, replayed, sentAt)
			}
			replayed++
		}
		if locked {
			c.sendMu.Unlock()
			locked = false
		}
		if werr != nil && errors.Is(werr, net.ErrClosed) {
			return
		}
		c.mu.Lock()
		if c.firstRTPSentAt.IsZero() {
			c.firstRTPSentAt = now
		}
		c.mu.Unlock()
		h.SequenceNumber++
		h.Timestamp += c.tsStep
	}
}

// recvLoop decodes what arrives into the analyzer and reassembles digits.
func (c *Call) recvLoop() {
	buf := make([]byte, 1500)
	pcm := make([]int16, 8000)
	var p rtp.Packet
	sigHost := c.peer.Addr.Addr()
	for {
		_ = c.rtp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, from, err := c.rtp.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if d, ok := c.det.Expire(now); ok {
				c.addDigit(d, 0, now)
			}
			continue
		}
		data, ok := c.srtp.unprotect(buf[:n]) // H-TLS: SRTP (pbx_tls.go)
		if !ok || p.Unmarshal(data) != nil || p.Version != 2 || (p.PayloadType >= 72 && p.PayloadType <= 76) {
			continue
		}
		if f := c.p.cfg.OnRTP; f != nil {
			f(c, &p.Header, now)
		}
		if from.Addr().Unmap() == sigHost.Unmap() {
			c.mu.Lock()
			c.remote = from // symmetric RTP
			c.mu.Unlock()
		}
		dec := c.decoderFor(p.PayloadType)
		c.mu.Lock()
		c.rxPTs[p.PayloadType]++
		an := c.analyzer
		if c.earlyRx != nil && c.answeredAt.IsZero() {
			an = c.earlyRx // a placed call's early media (dial.go)
		}
		c.mu.Unlock()
		switch {
		case dec != nil:
			k, err := dec.Decode(p.Payload, pcm)
			if err != nil || k == 0 {
				continue
			}
			c.mu.Lock()
			c.rxSizes[k]++
			c.mu.Unlock()
			an.Add(pcm[:k], now)
			if f := c.p.cfg.OnAudio; f != nil {
				f(c, pcm[:k], now)
			}
		case p.PayloadType == c.p.cfg.DTMFPT || int(p.PayloadType) == c.peer.DTMFPT:
			e, err := transcode.ParseEvent(p.Payload)
			if err != nil {
				continue
			}
			if d, ok := c.det.Push(p.Timestamp, e, now); ok {
				c.addDigit(d, p.PayloadType, now)
			}
		}
		if d, ok := c.det.Expire(now); ok {
			c.addDigit(d, p.PayloadType, now)
		}
	}
}

// decoderFor returns the decoder of an answered codec's PT, nil otherwise.
func (c *Call) decoderFor(pt uint8) transcode.Decoder {
	for i, cd := range c.codecs {
		if cd.PT == pt {
			return c.decs[i]
		}
	}
	return nil
}

func (c *Call) addDigit(d transcode.Digit, pt uint8, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt == 0 {
		pt = c.p.cfg.DTMFPT
	}
	c.digits = append(c.digits, ReceivedDigit{
		Rune: transcode.DigitRune(d.Code), Duration: time.Duration(d.Duration) * (time.Second / 8000), PT: pt, At: at,
	})
}
