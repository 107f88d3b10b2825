package pbx

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sim/audio"
	psip "github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/transcode"
)

// ReceivedDigit is one RFC 4733 digit the simulator received.
type ReceivedDigit struct {
	Rune     rune
	Duration time.Duration // from the event's duration field (8 kHz units)
	PT       uint8         // payload type it arrived with
	At       time.Time     // when it completed
}

type dtmfJob struct {
	digits    string
	each, gap time.Duration
	done      chan struct{}
}

// Call is one call of the simulator: an INVITE it answered (NextCall) or
// one it placed (Dial, dial.go).
type Call struct {
	sendMu    sync.Mutex // orders the 200 against media frames (see sendLoop)
	p         *PBX
	invite    *sip.Request // answered: as received; placed: as last sent (under mu)
	offer     *psip.MediaDesc
	peer      *psip.MediaDesc // the far end's SDP: the offer we answered, or the answer to ours (dial.go)
	codec     psip.CodecDesc
	callID    string
	localTag  string // our dialog tag: the To tag we gave an answered call, the From tag of a placed one
	transport string // "UDP", "TCP" or "TLS": the INVITE's
	placed    bool   // the simulator sent the INVITE (dial.go)
	user      string // the Contact's user part
	sessID    uint64
	rtp       rtpConn // the call's RTP socket, impaired when Config.Impair is set (impair.go)
	local     netip.AddrPort
	tsStep    uint32
	txDTMFPT  uint8 // PT of the RFC 4733 events it sends
	enc       transcode.Encoder
	dec       transcode.Decoder
	// every answered codec (codec first) with its encoder and decoder
	codecs   []psip.CodecDesc
	encs     []transcode.Encoder
	decs     []transcode.Decoder
	analyzer *audio.Analyzer
	earlyRx  *audio.Analyzer // placed calls: audio heard before the 200 (dial.go)
	srtp     *callSRTP       // H-TLS: nil for plain RTP (pbx_tls.go)
	det      *transcode.Detector

	ackCh    chan struct{}
	ackOnce  sync.Once
	ended    chan struct{}
	endOnce  sync.Once
	recvOnce sync.Once
	sendOnce sync.Once

	mu             sync.Mutex
	dlg            dialogPeer // how to reach the far end inside the dialog (dialog.go)
	remote         netip.AddrPort
	answeredAt     time.Time
	endedAt        time.Time
	ackedAt        time.Time
	firstRTPSentAt time.Time
	digits         []ReceivedDigit
	rxSizes        map[int]int // samples per received audio packet -> packets
	rxPTs          map[uint8]int
	jobs           []*dtmfJob
	endedBy        string
	inband         *transcode.InbandGenerator // Config.DTMFInband: digits being played (under mu)
	byeReason      string
	early          bool
	cseq           uint32
	sdpVersion     uint64            // in-dialog offers/answers (dialog.go)
	inDialog       []InDialogRequest // what ponte sent inside the call
	infoDigits     []ReceivedDigit   // digits ponte sent as SIP INFO
	provisionals   []ProvisionalInfo // placed calls: the 18x seen (dial.go)
	final          *sip.Response     // placed calls: the 2xx that answered (dial.go)
}

// newCallBase binds the call's RTP socket; codecs come with setCodecs.
func newCallBase(p *PBX, callID, transport string) (*Call, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: p.addr.Addr().AsSlice()})
	if err != nil {
		return nil, err
	}
	return &Call{
		p: p, callID: callID, localTag: randHex(8), transport: strings.ToUpper(transport), user: "pbx",
		sessID: rand.Uint64N(1 << 62), rtp: p.wrapRTP(conn), local: conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		txDTMFPT: p.cfg.DTMFPT,
		rxSizes:  map[int]int{}, rxPTs: map[uint8]int{},
		analyzer: audio.NewAnalyzer(8000, p.cfg.ExpectToneHz, p.cfg.ExpectDBFS),
		det:      transcode.NewDetector(time.Second),
		ackCh:    make(chan struct{}), ended: make(chan struct{}),
		cseq: 1,
	}, nil
}

// newCall is an INVITE the simulator answers (UAS).
func newCall(p *PBX, req *sip.Request, offer *psip.MediaDesc, codec psip.CodecDesc) (*Call, error) {
	codecs := []psip.CodecDesc{codec}
	if p.cfg.AnswerAllCodecs {
		for _, name := range p.cfg.Codecs {
			if cd, ok := offer.Codec(name); ok && cd.PT != codec.PT {
				codecs = append(codecs, cd)
			}
		}
	}
	c, err := newCallBase(p, req.CallID().Value(), req.Transport())
	if err != nil {
		return nil, err
	}
	if err := c.setCodecs(codecs); err != nil {
		c.rtp.Close()
		return nil, err
	}
	c.invite, c.offer, c.peer, c.remote = req, offer, offer, offer.Addr
	c.dlg = uasDialog(req, c.localTag)
	return c, nil
}

// setCodecs makes an encoder and a decoder for each codec; the first is
// the one it sends. Called before the media goroutines start.
func (c *Call) setCodecs(codecs []psip.CodecDesc) error {
	var encs []transcode.Encoder
	var decs []transcode.Decoder
	for _, cd := range codecs {
		enc, err := transcode.NewEncoder(cd.Name, 8000, transcode.EncoderOptions{})
		if err != nil {
			return err
		}
		dec, err := transcode.NewDecoder(cd.Name, 8000)
		if err != nil {
			return err
		}
		encs, decs = append(encs, enc), append(decs, dec)
	}
	if len(codecs) == 0 {
		return errors.New("pbx: no codec")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.codec, c.codecs, c.encs, c.decs = codecs[0], codecs, encs, decs
	c.enc, c.dec = encs[0], decs[0]
	c.tsStep = uint32(transcode.ClockRate(codecs[0].Name) * c.p.cfg.Ptime / 1000)
	return nil
}

// Invite is the INVITE as received (the authenticated one after a
// challenge); for a placed call, the INVITE as last sent (with credentials
// after a challenge).
func (c *Call) Invite() *sip.Request { c.mu.Lock(); defer c.mu.Unlock(); return c.invite }

// Offer is the parsed SDP offer: the INVITE's for an answered call; for a
// placed call, its own offer, or ponte's offer in the 200 (DialOptions.NoSDP).
func (c *Call) Offer() *psip.MediaDesc { c.mu.Lock(); defer c.mu.Unlock(); return c.offer }

// Remote is the far end's SDP: the offer of an answered call, the answer
// to a placed call's offer (its offer with DialOptions.NoSDP).
func (c *Call) Remote() *psip.MediaDesc { c.mu.Lock(); defer c.mu.Unlock(); return c.peer }

// Codec is the negotiated codec (with the offerer's PT).
func (c *Call) Codec() psip.CodecDesc { c.mu.Lock(); defer c.mu.Unlock(); return c.codec }

// Codecs are the codecs of the answer, the first one first.
func (c *Call) Codecs() []psip.CodecDesc { c.mu.Lock(); defer c.mu.Unlock(); return c.codecs }

// ReceivedPacketSizes counts the audio packets received by their sample
// count (a PBX with a=ptime:30 expects 240).
func (c *Call) ReceivedPacketSizes() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.rxSizes)
}

// ReceivedPTs counts the packets received by payload type.
func (c *Call) ReceivedPTs() map[uint8]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.rxPTs)
}

// AnsweredAt is when the 200 was sent (a placed call: when it arrived).
func (c *Call) AnsweredAt() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.answeredAt }

// AckedAt is when the ACK for the 200 arrived (a placed call: was sent).
func (c *Call) AckedAt() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.ackedAt }

// FirstRTPSentAt is when the first RTP packet left.
func (c *Call) FirstRTPSentAt() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.firstRTPSentAt }

// Received is the analyzer fed with the decoded audio heard (8 kHz).
func (c *Call) Received() *audio.Analyzer { return c.analyzer }

// Digits are the RFC 4733 digits received so far.
func (c *Call) Digits() []ReceivedDigit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ReceivedDigit(nil), c.digits...)
}

// EarlyMediaSent reports whether a 183 with SDP (and media) was sent.
func (c *Call) EarlyMediaSent() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.early }

// Ended is closed when the call is over.
func (c *Call) Ended() <-chan struct{} { return c.ended }

// EndedBy is "bye" (remote BYE), "cancel" (CANCEL) or "local" (our BYE,
// our failure response, Close; for a placed call also a failed Dial).
func (c *Call) EndedBy() string { c.mu.Lock(); defer c.mu.Unlock(); return c.endedBy }

// ByeReason is the Reason header of the BYE or CANCEL that ended the call.
func (c *Call) ByeReason() string { c.mu.Lock(); defer c.mu.Unlock(); return c.byeReason }

// EndedAt is when the call ended (zero while it lasts): a test measures the
// gateway's reaction from it, not from when the test got round to looking.
func (c *Call) EndedAt() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.endedAt }

func (c *Call) end(by, reason string) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.endedBy, c.byeReason, c.endedAt = by, reason, time.Now()
		for _, j := range c.jobs {
			close(j.done)
		}
		c.jobs = nil
		c.mu.Unlock()
		close(c.ended)
		c.p.untrack(c)
		c.closeMedia()
	})
}

func (c *Call) closeMedia() { c.rtp.Close() }

func (c *Call) acked() {
	c.ackOnce.Do(func() {
		c.mu.Lock()
		c.ackedAt = time.Now()
		c.mu.Unlock()
		close(c.ackCh)
	})
}

func (c *Call) answerSDP() []byte {
	spec := psip.SDPSpec{
		Addr: c.local, Codecs: c.codecs, DTMFPT: c.dtmfPT(), Ptime: c.p.cfg.Ptime,
		Direction: psip.AnswerDirection(c.offer.Direction), SessID: c.sessID, Version: c.sessID,
	}
	c.srtp.applySDP(&spec) // H-TLS: RTP/SAVP + a=crypto (pbx_tls.go)
	return psip.BuildSDP(spec)
}

func (c *Call) contactHeader() *sip.ContactHeader {
	h := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: c.user, Host: c.p.addr.Addr().String(), Port: int(c.p.addr.Port())}}
	if c.placed && c.transport == "TCP" {
		// A placed call's in-dialog requests come back over TCP too
		// (RFC 3261 §19.1.4: the transport param of the remote target).
		h.Address.UriParams = sip.NewParams()
		h.Address.UriParams.Add("transport", "tcp")
	}
	return c.secureContact(h) // H-TLS: transport=tls
}

// response builds a response carrying our dialog tag.
func (c *Call) response(code int, reason string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(c.invite, code, reason, body)
	if code > 100 {
		res.To().Params.Add("tag", c.localTag)
	}
	if code > 100 && code < 300 {
		res.AppendHeader(c.contactHeader())
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
	}
	return res
}

var reasons = map[int]string{
	404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here",
	487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
	503: "Service Unavailable", 603: "Decline",
}

// ring runs the INVITE server transaction: provisional responses, the ring
// time, then the final response; a 200 is retransmitted until the ACK
// (RFC 3261 §13.3.1.4: the UAS core, not the transaction, does that).
func (c *Call) ring(tx sip.ServerTransaction) {
	cfg := c.p.cfg
	canceled := make(chan struct{})
	var cancelOnce sync.Once
	tx.OnCancel(func(r *sip.Request) {
		reason := ""
		if h := r.GetHeader("Reason"); h != nil {
			reason = h.Value()
		}
		cancelOnce.Do(func() {
			c.mu.Lock()
			c.byeReason = reason
			c.mu.Unlock()
			close(canceled)
		})
	})
	if !cfg.NoProvisional {
		_ = tx.Respond(c.response(100, "Trying", nil))
		if cfg.EarlyMedia {
			c.mu.Lock()
			c.early = true
			c.mu.Unlock()
			_ = tx.Respond(c.response(183, "Session Progress", c.answerSDP()))
			c.startMedia()
		} else {
			_ = tx.Respond(c.response(180, "Ringing", nil))
		}
	}
	t := time.NewTimer(cfg.AnswerDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-canceled:
		c.end("cancel", c.ByeReason())
		return
	case <-c.ended:
		return
	}
	if cfg.AnswerCode >= 300 {
		r := reasons[cfg.AnswerCode]
		if r == "" {
			r = "Failure"
		}
		_ = tx.Respond(c.response(cfg.AnswerCode, r, nil))
		c.end("local", "")
		return
	}
	ok := c.response(200, "OK", c.answerSDP())
	// Session-Expires and Allow (dialog.go).
	c.answerHeaders(ok)
	c.sendMu.Lock() // no early-media frame may be chosen before and sent after the 200
	c.mu.Lock()
	c.answeredAt = time.Now()
	c.mu.Unlock()
	err := tx.Respond(ok)
	c.sendMu.Unlock()
	if err != nil {
		c.end("local", "")
		return
	}
	c.startMedia()
	if cfg.HangupAfter > 0 {
		c.p.goTracked(func() {
			select {
			case <-time.After(cfg.HangupAfter):
				ctx, cancel := context.WithTimeout(c.p.ctx, 5*time.Second)
				defer cancel()
				_ = c.Hangup(ctx)
			case <-c.ended:
			}
		})
	}
	if sip.IsReliable(c.invite.Transport()) {
		return
	}
	iv := sip.T1
	deadline := time.After(64 * sip.T1)
	for {
		select {
		case <-c.ackCh:
			return
		case <-c.ended:
			return
		case <-deadline:
			// No ACK (RFC 3261 §13.3.1.4): the dialog is dead.
			ctx, cancel := context.WithTimeout(c.p.ctx, 5*time.Second)
			_ = c.Hangup(ctx)
			cancel()
			return
		case <-time.After(iv):
			_ = tx.Respond(ok)
			iv = min(2*iv, sip.T2)
		}
	}
}

func (p *PBX) goTracked(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); f() }()
}

func (c *Call) startMedia() {
	c.startRecv()
	c.sendOnce.Do(func() {
		if !c.p.cfg.Silent {
			c.p.goTracked(c.sendLoop)
		}
	})
}

// startRecv starts only the receiver: a placed call's early media (183)
// is heard before the 200, and nothing is sent until it (dial.go).
func (c *Call) startRecv() { c.recvOnce.Do(func() { c.p.goTracked(c.recvLoop) }) }

// Hangup sends a BYE with a Q.850 normal-clearing Reason and waits for its answer.
func (c *Call) Hangup(ctx context.Context) error {
	select {
	case <-c.ended:
		return nil
	default:
	}
	req := c.newRequest(sip.BYE) // through the route set (dialog.go)
	req.AppendHeader(sip.NewHeader("Reason", `Q.850;cause=16;text="Normal call clearing"`))
	c.end("local", "")
	tx, err := c.p.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		return err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if res.StatusCode >= 300 {
				return fmt.Errorf("pbx: BYE answered %d", res.StatusCode)
			}
			return nil
		case <-tx.Done():
			return errors.Join(errors.New("pbx: BYE transaction ended"), tx.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SendDTMF sends RFC 4733 digits at the simulator's DTMFPT, each lasting
// `each` with `gap` of audio between them, and returns when they are sent
// (or the call ends). All packets of a digit carry the stream timestamp of
// its start, with three End packets (RFC 4733 §2.5.1).
func (c *Call) SendDTMF(digits string, each, gap time.Duration) {
	if c.p.cfg.DTMFInfo {
		c.sendInfoDigits(digits, each, gap)
		return
	}
	if c.p.cfg.DTMFInband {
		c.sendInbandDigits(digits, each, gap)
		return
	}
	j := &dtmfJob{digits: digits, each: each, gap: gap, done: make(chan struct{})}
	c.mu.Lock()
	if c.endedBy != "" {
		c.mu.Unlock()
		return
	}
	c.jobs = append(c.jobs, j)
	c.mu.Unlock()
	select {
	case <-j.done:
	case <-c.ended:
	}
}

// sendInbandDigits plays digits as tones mixed into the outgoing audio
// (Config.DTMFInband), each for each, gap apart.
func (c *Call) sendInbandDigits(digits string, each, gap time.Duration) {
	for _, r := range digits {
		c.mu.Lock()
		if c.inband == nil {
			c.inband = transcode.NewInbandGenerator(8000)
		}
		err := c.inband.Play(r, each)
		c.mu.Unlock()
		if err != nil {
			continue
		}
		select {
		case <-time.After(each + gap):
		case <-c.ended:
			return
		}
	}
}
