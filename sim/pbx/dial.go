package pbx

// The simulator as a caller (UAC): an agent on the PBX dials a WhatsApp
// user through ponte. The placed Call has the same media and in-dialog
// features as an answered one (tone, analyzers, DTMF, Hangup, Request) and
// is tracked the same way, so Close stops it and ponte's in-dialog
// requests (BYE, re-INVITE, INFO, NOTIFY) find it by Call-ID and our tag,
// which for a placed call is the From tag of the INVITE.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"

	"github.com/ponte-gw/ponte/sim/audio"
	psip "github.com/ponte-gw/ponte/sip"
)

// Dial errors.
var (
	// ErrDialOptions reports DialOptions the simulator cannot place.
	ErrDialOptions = errors.New("pbx: bad dial options")
	// ErrNoMedia reports a 2xx without a usable SDP answer (or offer, with
	// NoSDP): the call was ACKed and then ended with a BYE.
	ErrNoMedia = errors.New("pbx: no usable media in the answer")
)

// DialOptions describe a call the simulator places.
type DialOptions struct {
	Target    string       // request URI, e.g. "sip:+5511987654321@127.0.0.1:5070" (ponte's listener); the INVITE goes to its host:port
	Transport string       // "udp" (default) | "tcp" | "tls" (needs Config.Secure.TLS for the Contact and ClientTLS trusting the peer)
	From      string       // caller user (agent extension), default "1001"
	ToUser    string       // user of the To URI (default the Request-URI's), e.g. the dialled number sent to a registrar
	Auth      *Auth        // digest credentials answered on 401/407 (MD5 and SHA-256 with qop=auth; RFC 7616, RFC 8760)
	NoSDP     bool         // INVITE without an offer: the 200 carries the offer, the ACK our answer (RFC 3261 §13.2.1)
	Codecs    []string     // offered codecs (default the PBX Config's codec list)
	Headers   []sip.Header // extra headers on the INVITE
	SRTP      bool         // offer RTP/SAVP with a=crypto (RFC 4568); an answer without a matching key ends the call
	// ExpectEarlyHz is the tone EarlyReceived expects (default
	// Config.ExpectToneHz), e.g. 425 for a Brazilian ringback.
	ExpectEarlyHz float64
	// OnProvisional is called, in the dialing goroutine, for each 18x (and
	// any 101-199) as it arrives: e.g. to cancel ctx once it rings. It must
	// not block.
	OnProvisional func(ProvisionalInfo)
}

// ProvisionalInfo is one provisional response to a placed call's INVITE.
type ProvisionalInfo struct {
	Code   int
	Reason string
	HadSDP bool // it carried SDP (early media; its audio goes to EarlyReceived)
	At     time.Time
}

// DialError is a final non-2xx answer to the INVITE. Headers such as
// Warning and Retry-After are read from Response.
type DialError struct {
	Code     int
	Reason   string
	Response *sip.Response
}

func (e *DialError) Error() string {
	return fmt.Sprintf("pbx: INVITE answered %d %s", e.Code, e.Reason)
}

// Placed reports whether the simulator placed the call (Dial).
func (c *Call) Placed() bool { return c.placed }

// Provisionals are the provisional responses (101-199) a placed call got.
func (c *Call) Provisionals() []ProvisionalInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ProvisionalInfo(nil), c.provisionals...)
}

// Response is the 2xx that answered a placed call (nil for answered calls).
func (c *Call) Response() *sip.Response { c.mu.Lock(); defer c.mu.Unlock(); return c.final }

// EarlyReceived is the analyzer fed with the audio a placed call heard
// before the 200 (early media after a 183 with SDP: ringback, the user's
// early audio); Received gets only what arrives after the 200. Nil for
// answered calls.
func (c *Call) EarlyReceived() *audio.Analyzer { return c.earlyRx }

// Dial places a call and returns once it is answered: the 200 arrived and
// was ACKed, and media runs both ways. Media also starts receiving on a 183
// with SDP (EarlyReceived). A final non-2xx gives a *DialError (after one
// retry with DialOptions.Auth on 401/407).
//
// Cancelling is done through ctx (there is no Call before the answer):
// when ctx ends first, a CANCEL is sent once a provisional response has
// arrived (RFC 3261 §9.1) and Dial returns after the INVITE's final
// response with an error matching ctx.Err() and, when that response was
// the 487, a *DialError for it; a 200 that crossed the CANCEL is ACKed and
// BYEd (RFC 3261 §15). Close during a Dial ends it with ErrClosed.
//
// Config applies to the placed call as to an answered one (tone, codecs
// for NoSDP, DTMF modes, Silent, HangupAfter counted from the 200).
func (p *PBX) Dial(ctx context.Context, o DialOptions) (*Call, error) {
	d, err := p.newDial(o)
	if err != nil {
		return nil, err
	}
	c := d.c
	if !p.track(c) {
		c.closeMedia()
		return nil, ErrClosed
	}
	call, err := d.run(ctx)
	if err != nil {
		c.end("local", "")
		return nil, err
	}
	return call, nil
}

// dial is the state of one Dial until the answer.
type dial struct {
	p          *PBX
	c          *Call
	o          DialOptions
	ruri       sip.Uri
	dest       string
	from       sip.FromHeader
	to         sip.ToHeader
	offer      []byte
	ours       *psip.Crypto // our SRTP key (DialOptions.SRTP)
	codecs     []string
	cseq       uint32
	haveAnswer bool // an SDP answer was applied (183 or 200)
	gotProv    bool
	authTried  bool
}

func (p *PBX) newDial(o DialOptions) (*dial, error) {
	var ruri sip.Uri
	if err := sip.ParseUri(o.Target, &ruri); err != nil || ruri.Host == "" {
		return nil, fmt.Errorf("%w: target %q: %v", ErrDialOptions, o.Target, err)
	}
	tr := strings.ToLower(o.Transport)
	switch tr {
	case "":
		tr = "udp"
	case "udp", "tcp":
	case "tls":
		// The Contact of a TLS call is the TLS listener: the far end sends
		// its BYE over a connection of its own as often as it reuses ours
		// (RFC 3261 §18.2.2).
		if p.cfg.Secure.TLS == nil {
			return nil, fmt.Errorf("%w: tls needs Config.Secure.TLS (the Contact's listener)", ErrDialOptions)
		}
	default:
		return nil, fmt.Errorf("%w: transport %q", ErrDialOptions, o.Transport)
	}
	codecs := o.Codecs
	if len(codecs) == 0 {
		codecs = p.cfg.Codecs
	}
	for _, n := range codecs {
		if _, ok := psip.KnownCodec(n); !ok {
			return nil, fmt.Errorf("%w: codec %q", ErrDialOptions, n)
		}
	}
	if o.From == "" {
		o.From = "1001"
	}
	port := ruri.Port
	if port == 0 {
		port = sip.DefaultPort(tr)
	}
	c, err := newCallBase(p, randHex(16), tr)
	if err != nil {
		return nil, err
	}
	c.placed, c.user = true, psip.EscapeUser(o.From)
	early := o.ExpectEarlyHz
	if early == 0 {
		early = p.cfg.ExpectToneHz
	}
	c.earlyRx = audio.NewAnalyzer(8000, early, p.cfg.ExpectDBFS)
	d := &dial{p: p, c: c, o: o, ruri: ruri, codecs: codecs, cseq: 1,
		dest: net.JoinHostPort(strings.Trim(ruri.Host, "[]"), strconv.Itoa(port))}
	d.from = sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: c.user, Host: p.addr.Addr().String()}, Params: sip.NewParams()}
	d.from.Params.Add("tag", c.localTag)
	d.to = sip.ToHeader{Address: sip.Uri{Scheme: ruri.Scheme, User: ruri.User, Host: ruri.Host, Port: ruri.Port}, Params: sip.NewParams()}
	if o.ToUser != "" {
		d.to.Address.User = o.ToUser // the dialled number, when the Request-URI is a registered contact
	}
	if !o.NoSDP {
		if err := d.makeOffer(); err != nil {
			c.closeMedia()
			return nil, err
		}
	}
	return d, nil
}

// makeOffer builds the INVITE's SDP: the codecs in order, telephone-event,
// and with SRTP the RTP/SAVP transport and one a=crypto line with a fresh
// key (RFC 4568 §6.1).
func (d *dial) makeOffer() error {
	c := d.c
	spec := psip.SDPSpec{Addr: c.local, DTMFPT: c.dtmfPT(), Ptime: d.p.cfg.Ptime, SessID: c.sessID, Version: c.sessID}
	for _, n := range d.codecs {
		cd, _ := psip.KnownCodec(n)
		spec.Codecs = append(spec.Codecs, cd)
	}
	if d.o.SRTP {
		key := make([]byte, 30)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		d.ours = &psip.Crypto{Tag: 1, Suite: psip.SuiteAES128SHA1_80, Keys: []psip.CryptoKey{{KeySalt: key}}}
		spec.Proto, spec.Crypto = "RTP/SAVP", []psip.Crypto{*d.ours}
	}
	d.offer = psip.BuildSDP(spec)
	md, err := psip.ParseSDP(d.offer)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.offer = md
	c.mu.Unlock()
	return nil
}

// invite builds the INVITE for the current CSeq (a retry keeps Call-ID and
// From tag, RFC 3261 §8.1.3.5 / §22.2).
func (d *dial) invite(auth sip.Header) *sip.Request {
	c := d.c
	req := sip.NewRequest(sip.INVITE, *d.ruri.Clone())
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: c.transport,
		Host: d.p.addr.Addr().String(), Port: int(d.p.addr.Port()), Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranchN(16))
	via.Params.Add("rport", "") // RFC 3581
	req.AppendHeader(via)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.HeaderClone(&d.from))
	req.AppendHeader(sip.HeaderClone(&d.to))
	cid := sip.CallIDHeader(c.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: d.cseq, MethodName: sip.INVITE})
	req.AppendHeader(c.contactHeader())
	req.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY"))
	req.AppendHeader(sip.NewHeader("User-Agent", "ponte-pbx-sim"))
	for _, h := range d.o.Headers {
		req.AppendHeader(sip.HeaderClone(h))
	}
	if auth != nil {
		req.AppendHeader(auth)
	}
	if d.offer != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		req.AppendHeader(&ct)
	}
	req.SetBody(d.offer)
	req.SetTransport(c.transport)
	req.SetDestination(d.dest)
	if c.transport == "UDP" {
		// From the listening socket, so responses and in-dialog requests
		// reach the port in Via and Contact.
		la := d.p.udp.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
	}
	c.mu.Lock()
	c.invite, c.cseq = req, d.cseq
	c.mu.Unlock()
	return req
}

// cancel builds the CANCEL of inv (RFC 3261 §9.1): same Request-URI, top
// Via, From, To, Call-ID and CSeq number, and the same Route.
func (d *dial) cancel(inv *sip.Request) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	for _, h := range inv.GetHeaders("Route") {
		req.AppendHeader(sip.HeaderClone(h))
	}
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.SetBody(nil)
	req.SetTransport(inv.Transport())
	req.SetDestination(inv.Destination())
	req.Laddr = inv.Laddr
	return req
}

// run sends the INVITE and handles its responses until the answer.
func (d *dial) run(ctx context.Context) (*Call, error) {
	tl := d.p.ua.TransactionLayer()
	inv := d.invite(nil)
	tx, err := tl.Request(ctx, inv)
	if err != nil {
		return nil, err
	}
	var (
		ctxDone       = ctx.Done()
		canceling     bool
		cancelTx      sip.ClientTransaction
		cancelRes     <-chan *sip.Response
		cancelTimeout <-chan time.Time
	)
	defer func() {
		if cancelTx != nil {
			cancelTx.Terminate()
		}
	}()
	sendCancel := func() {
		if t, err := tl.Request(d.p.ctx, d.cancel(inv)); err == nil {
			cancelTx, cancelRes = t, t.Responses()
		} else {
			d.p.log.Warn("pbx: CANCEL", "call_id", d.c.callID, "err", err)
		}
		// RFC 3261 §9.1: the INVITE's final response is awaited 64*T1.
		cancelTimeout = time.After(64 * sip.T1)
	}
	canceled := func(final *sip.Response) error {
		if final != nil && final.StatusCode == 487 {
			return fmt.Errorf("pbx: dial canceled: %w (%w)", ctx.Err(), &DialError{final.StatusCode, final.Reason, final})
		}
		return fmt.Errorf("pbx: dial canceled: %w", ctx.Err())
	}
	for {
		select {
		case res := <-tx.Responses():
			switch code := res.StatusCode; {
			case code < 200:
				d.provisional(res)
				if canceling && cancelTx == nil && cancelTimeout == nil {
					sendCancel()
				}
			case code < 300:
				if err := d.onAnswer(tx, inv, res); err != nil {
					return nil, err
				}
				if canceling {
					d.bye(`SIP;cause=487;text="Request Terminated"`)
					return nil, canceled(nil)
				}
				return d.c, nil
			case (code == 401 || code == 407) && d.o.Auth != nil && !d.authTried && !canceling:
				d.authTried = true
				auth, err := credentials(inv, res, d.o.Auth)
				if err != nil {
					return nil, fmt.Errorf("%w (%w)", err, &DialError{code, res.Reason, res})
				}
				// The challenged transaction ACKs the 401/407 and ends on
				// its own (Timer D); the retry is a new one, CSeq+1.
				d.cseq++
				inv = d.invite(auth)
				if tx, err = tl.Request(ctx, inv); err != nil {
					if canceling = ctx.Err() != nil; canceling {
						return nil, canceled(nil)
					}
					return nil, err
				}
			default:
				if canceling {
					return nil, canceled(res)
				}
				return nil, &DialError{code, res.Reason, res}
			}
		case <-tx.Done():
			if canceling {
				return nil, canceled(nil)
			}
			return nil, fmt.Errorf("pbx: INVITE: %w", tx.Err())
		case res := <-cancelRes:
			if !res.IsProvisional() {
				cancelTx.Terminate()
				cancelTx, cancelRes = nil, nil
			}
		case <-ctxDone:
			ctxDone, canceling = nil, true
			if d.gotProv {
				sendCancel()
			}
		case <-cancelTimeout:
			tx.Terminate()
			return nil, canceled(nil)
		case <-d.p.ctx.Done():
			tx.Terminate()
			return nil, ErrClosed
		}
	}
}

// provisional records a 1xx; the first SDP answer in one (a 183) starts
// the receiver, so early media is heard (RFC 3261 §13.2.1: that answer is
// the answer, a later copy in the 2xx changes nothing).
func (d *dial) provisional(res *sip.Response) {
	d.gotProv = true
	if res.StatusCode == 100 {
		return // hop by hop (RFC 3261 §8.1.3.2)
	}
	body := res.Body()
	info := ProvisionalInfo{Code: res.StatusCode, Reason: res.Reason, HadSDP: len(body) > 0 && isSDP(res), At: time.Now()}
	d.c.mu.Lock()
	d.c.provisionals = append(d.c.provisionals, info)
	d.c.mu.Unlock()
	if info.HadSDP && !d.o.NoSDP && !d.haveAnswer {
		if md, err := psip.ParseSDP(body); err == nil && d.applyAnswer(md) == nil {
			d.haveAnswer = true
			d.c.startRecv()
		}
	}
	if d.o.OnProvisional != nil {
		d.o.OnProvisional(info)
	}
}

func isSDP(m *sip.Response) bool {
	ct := m.ContentType()
	return ct == nil || strings.HasPrefix(strings.ToLower(ct.Value()), "application/sdp")
}

// applyAnswer takes the far end's answer to our offer: the codecs it kept
// (its order and PTs, RFC 3264 §6.1) that we offered, its address and
// telephone-event PT, and with SRTP its key for our crypto tag (RFC 4568
// §7.1.2: never media in clear when SRTP was asked for).
func (d *dial) applyAnswer(md *psip.MediaDesc) error {
	c := d.c
	if md.Addr.Port() == 0 {
		return fmt.Errorf("%w: stream rejected (port 0)", ErrNoMedia)
	}
	var codecs []psip.CodecDesc
	for _, cd := range md.Codecs {
		for _, n := range d.codecs {
			if strings.EqualFold(cd.Name, n) {
				codecs = append(codecs, cd)
				break
			}
		}
	}
	if len(codecs) == 0 {
		return fmt.Errorf("%w: no offered codec in the answer", ErrNoMedia)
	}
	var s *callSRTP
	if d.ours != nil {
		var theirs *psip.Crypto
		for i := range md.Crypto {
			if k := md.Crypto[i]; k.Tag == d.ours.Tag && k.Suite == d.ours.Suite && k.Usable() {
				theirs = &md.Crypto[i]
				break
			}
		}
		if theirs == nil {
			return fmt.Errorf("%w: no SRTP key for crypto tag %d", ErrNoMedia, d.ours.Tag)
		}
		s = &callSRTP{proto: md.Proto, ours: *d.ours, theirs: *theirs, ebuf: make([]byte, 1600)}
		var err error
		if s.tx, err = srtpContext(s.ours); err != nil {
			return err
		}
		if s.rx, err = srtpContext(s.theirs, srtp.SRTPReplayProtection(128)); err != nil {
			return err
		}
	}
	if err := c.setCodecs(codecs); err != nil {
		return err
	}
	c.mu.Lock()
	c.peer, c.remote, c.srtp = md, md.Addr, s
	if md.DTMFPT >= 0 {
		c.txDTMFPT = uint8(md.DTMFPT) // RFC 4733 §2.1: the receiver's PT
	}
	c.mu.Unlock()
	return nil
}

// answerOffer handles a 2xx carrying ponte's offer (NoSDP): negotiate as an
// answered call does, apply the SRTP policy, and return the answer for the
// ACK (RFC 3261 §13.2.1).
func (d *dial) answerOffer(md *psip.MediaDesc) ([]byte, error) {
	c := d.c
	codec, ok := md.Negotiate(d.codecs)
	if !ok || md.Addr.Port() == 0 {
		return nil, fmt.Errorf("%w: no codec of %v in the offer", ErrNoMedia, d.codecs)
	}
	codecs := []psip.CodecDesc{codec}
	if d.p.cfg.AnswerAllCodecs {
		for _, n := range d.codecs {
			if cd, ok := md.Codec(n); ok && cd.PT != codec.PT {
				codecs = append(codecs, cd)
			}
		}
	}
	if err := c.setCodecs(codecs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.offer, c.peer, c.remote = md, md, md.Addr
	c.mu.Unlock()
	if code := c.setupSRTP(); code != 0 || (d.o.SRTP && c.srtp == nil) {
		return nil, fmt.Errorf("%w: SRTP offer not acceptable", ErrNoMedia)
	}
	return c.answerSDP(), nil
}

// onAnswer handles the 2xx: the dialog (RFC 3261 §12.1.2: remote tag,
// Contact as remote target, Record-Route reversed as route set), the ACK at
// once (§13.2.2.4, again for each retransmitted 2xx), then media. A 2xx
// without usable media is ACKed and BYEd (§13.2.1).
func (d *dial) onAnswer(tx sip.ClientTransaction, inv *sip.Request, res *sip.Response) error {
	c := d.c
	dlg := dialogPeer{target: *d.ruri.Clone(), local: *sip.HeaderClone(&d.from).(*sip.FromHeader)}
	if ct := res.Contact(); ct != nil {
		dlg.target = *ct.Address.Clone()
	}
	rr := res.GetHeaders("Record-Route")
	for i := len(rr) - 1; i >= 0; i-- {
		dlg.routes = append(dlg.routes, rr[i].Value())
	}
	tag := ""
	if to := res.To(); to != nil {
		dlg.remote = sip.ToHeader{DisplayName: to.DisplayName, Address: *to.Address.Clone(), Params: to.Params.Clone()}
		tag, _ = to.Params.Get("tag")
	}
	c.mu.Lock()
	c.dlg, c.final, c.answeredAt = dlg, res, time.Now()
	c.mu.Unlock()

	var answer []byte
	var mediaErr error
	body := res.Body()
	switch {
	case d.o.NoSDP:
		md, err := psip.ParseSDP(body)
		if err == nil && isSDP(res) {
			answer, mediaErr = d.answerOffer(md)
		} else {
			mediaErr = fmt.Errorf("%w: no offer in the 2xx", ErrNoMedia)
		}
	case !d.haveAnswer:
		md, err := psip.ParseSDP(body)
		if err != nil || !isSDP(res) {
			mediaErr = fmt.Errorf("%w: no answer in the 2xx", ErrNoMedia)
		} else {
			mediaErr = d.applyAnswer(md)
		}
	}
	ack := c.buildRequest(sip.ACK, inv.CSeq().SeqNo)
	for _, n := range []string{"Authorization", "Proxy-Authorization"} {
		if h := inv.GetHeader(n); h != nil { // §13.2.2.4: the INVITE's credentials
			ack.AppendHeader(sip.HeaderClone(h))
		}
	}
	if answer != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		ack.AppendHeader(&ct)
		ack.SetBody(answer)
	}
	tp := d.p.ua.TransportLayer()
	if err := tp.WriteMsg(ack); err != nil {
		d.p.log.Warn("pbx: ACK", "call_id", c.callID, "err", err)
	}
	c.acked()
	tx.OnRetransmission(func(r *sip.Response) {
		if r.To() == nil || !r.IsSuccess() {
			return
		}
		if t, _ := r.To().Params.Get("tag"); t == tag {
			_ = tp.WriteMsg(ack.Clone())
		}
	})
	if mediaErr != nil {
		d.bye(`SIP;cause=488;text="Not Acceptable Here"`)
		return mediaErr
	}
	d.haveAnswer = true
	c.startMedia()
	if h := d.p.cfg.HangupAfter; h > 0 {
		d.p.goTracked(func() {
			select {
			case <-time.After(h):
				ctx, cancel := context.WithTimeout(d.p.ctx, 5*time.Second)
				defer cancel()
				_ = c.Hangup(ctx)
			case <-c.ended:
			}
		})
	}
	return nil
}

// bye ends an answered call we do not want, with a Reason (RFC 3326).
func (d *dial) bye(reason string) {
	ctx, cancel := context.WithTimeout(d.p.ctx, 5*time.Second)
	defer cancel()
	req := d.c.newRequest(sip.BYE)
	req.AppendHeader(sip.NewHeader("Reason", reason))
	d.c.end("local", "")
	tx, err := d.p.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		return
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if !res.IsProvisional() {
				return
			}
		case <-tx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}
