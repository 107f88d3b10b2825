package sip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Dialog errors.
var (
	ErrCanceled    = errors.New("sip: call canceled")
	ErrTimeout     = errors.New("sip: no response (timer B)")
	ErrTransport   = errors.New("sip: transport error")
	ErrNoAnswerSDP = errors.New("sip: 2xx without usable SDP answer")
)

type dialogState int

const (
	stateCalling dialogState = iota
	stateEarly
	stateConfirmed
	stateEnded
)

// Dialog is one INVITE dialog: one ponte placed (UAC, Dial) or one it
// answered (UAS, IncomingCall.Answer). Everything in the dialog works the
// same for both; the role decides From/To of ponte's requests (build.go).
type Dialog struct {
	ua        *UA
	role      dialogRole
	onEnd     func() // runs once when the dialog ends (UAS: leaves the server's registry)
	trunk     Trunk
	transport string // "UDP" | "TCP" | "TLS"
	dest      string // trunk address: next hop of the initial INVITE (UAS: the PBX's source)
	viaPort   uint16
	laddr     sip.Addr
	callID    string
	localTag  string
	reqURI    sip.Uri
	from      sip.FromHeader
	to        sip.ToHeader
	contact   sip.ContactHeader
	extra     []Header
	offer     []byte
	sessID    uint64
	media     *RTPSession
	onProv    func(int, string, *MediaDesc)

	mu              sync.Mutex
	state           dialogState
	invite          *sip.Request
	inviteCSeq      uint32
	cseq            uint32
	remoteTag       string
	remoteTarget    sip.Uri
	routes          []string
	early           *MediaDesc
	answer          *MediaDesc
	answerRes       *sip.Response // the 2xx that established the dialog
	onRefer         ReferHandler  // refer.go
	onReferAccepted func(Refer)
	referNoSub      bool // the accepted REFER asked for no NOTIFY (RFC 4488)
	ackedAt         time.Time
	gotProvisional  bool
	cancelRequested bool
	cancelReason    Reason
	cancelCh        chan struct{}
	resultSet       bool
	resErr          error
	result          chan struct{}
	byeSent         bool
	remoteBye       bool
	remoteReason    string
	endErr          error
	done            chan struct{}
	onInfo          func(contentType string, body []byte)
	sdpVersion      uint64

	// In-dialog offer/answer (reinvite.go).
	cur         MediaState // the PBX leg's media now
	lastSDP     []byte     // the last SDP body ponte sent (RFC 3264 §8 versioning)
	onMedia     func(MediaState)
	onDTMF      func(rune, time.Duration)
	oaPending   bool     // an offer of ponte's awaits its answer (RFC 3264 §4)
	ackWait     *ackWait // our 2xx to a PBX re-INVITE awaits its ACK
	remoteCSeq  uint32   // the PBX's last in-dialog CSeq (RFC 3261 §12.2.2)
	allowUpdate bool     // the PBX's Allow lists UPDATE (RFC 3311)
	forks       map[string]bool
	ack2xx      *sip.Request    // the ACK for the winning 2xx, once sent (late2xx)
	early2xx    []*sip.Response // later 2xx that came before it

	// Session timer (timers.go, RFC 4028).
	st     sessionTimer
	stKick chan struct{}
	minSE  int // Min-SE from a 422, in seconds (0: none)
}

// Dial sends the INVITE and returns at once; WaitAnswer gives the outcome.
// A goroutine owned by the dialog (and the UA) handles responses, so the ACK
// of a 2xx is sent as soon as it arrives even if nobody waits.
func (u *UA) Dial(ctx context.Context, req DialRequest) (*Dialog, error) {
	if req.Trunk == nil {
		return nil, fmt.Errorf("%w: no trunk", ErrConfig)
	}
	u.mu.Lock()
	started, closed := u.started, u.closed
	u.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !started {
		return nil, ErrNotStarted
	}
	t := *req.Trunk
	tr := strings.ToLower(t.Transport)
	if tr == "" {
		tr = "udp"
	}
	lap, ok := u.listenerFor(tr)
	if tr == "tls" { // H-TLS (tls.go): connect with the trunk's own TLS settings first
		var err error
		if lap, ok, err = u.dialTLS(ctx, &t, lap); err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: no %s listener for trunk %q", ErrConfig, tr, t.Name)
	}
	if t.DTMFPT == 0 {
		t.DTMFPT = 101
	}
	if len(t.Codecs) == 0 {
		t.Codecs = []string{"PCMU", "PCMA"}
	}
	ruri, err := resolveTarget(req.Target, &t)
	if err != nil {
		return nil, err
	}
	d := &Dialog{
		ua: u, trunk: t, transport: strings.ToUpper(tr), dest: t.Address,
		viaPort: lap.Port(), callID: randToken(16), localTag: randToken(8),
		reqURI: ruri, media: req.Media, onProv: req.OnProvisional,
		inviteCSeq: 1 + rand.Uint32N(1<<15), sessID: rand.Uint64N(1 << 62),
		cancelCh: make(chan struct{}), result: make(chan struct{}), done: make(chan struct{}),
		stKick: make(chan struct{}, 1),
	}
	if _, _, err := splitHostPort(t.Address); err != nil {
		return nil, err
	}
	if tr == "udp" {
		// Send from the listening socket so that responses and in-dialog
		// requests reach the port in Via/Contact.
		d.laddr = sip.Addr{IP: net.IP(lap.Addr().AsSlice()), Port: int(lap.Port())}
	}
	d.cseq = d.inviteCSeq
	fromHost := t.FromDomain
	if fromHost == "" {
		fromHost = u.advertise
	}
	user := EscapeUser(req.FromUser)
	if user == "" {
		user = "anonymous"
	}
	d.from = sip.FromHeader{
		DisplayName: QuoteDisplayName(req.FromDisplay),
		Address:     sip.Uri{Scheme: "sip", User: user, Host: fromHost},
		Params:      sip.NewParams(),
	}
	d.from.Params.Add("tag", d.localTag)
	toURI := sip.Uri{Scheme: ruri.Scheme, User: ruri.User, Host: ruri.Host, Port: ruri.Port}
	if req.ToUser != "" {
		toURI.User = EscapeUser(req.ToUser)
	}
	d.to = sip.ToHeader{Address: toURI, Params: sip.NewParams()}
	d.contact = sip.ContactHeader{Address: t.contactURI(u, user, lap.Port())} // H-NAT: per-trunk address (advertise.go)
	if tr == "tcp" {
		d.contact.Address.UriParams = sip.NewParams()
		d.contact.Address.UriParams.Add("transport", "tcp")
	}
	secureContact(&d.contact, ruri, tr) // H-TLS (tls.go)
	for _, h := range req.Headers {
		if !validHeaderName(h.Name) || reservedHeader(h.Name) {
			u.log.Warn("sip: dropping extra header", "name", SanitizeHeaderValue(h.Name, 64))
			continue
		}
		d.extra = append(d.extra, Header{h.Name, SanitizeHeaderValue(h.Value, u.cfg.MaxHeaderValue)})
	}
	t.bindMedia(d.media) // H-NAT: per-trunk c= (advertise.go)
	if d.media != nil {
		if d.offer, err = u.offerSDP(d.media, &t, d.sessID); err != nil { // H-TLS: SDES (srtp.go)
			return nil, err
		}
	}
	d.invite = d.buildInvite(nil)
	if err := u.addDialog(d); err != nil {
		return nil, err
	}
	tx, err := u.ua.TransactionLayer().Request(ctx, d.invite)
	if err != nil {
		u.removeDialog(d)
		return nil, fmt.Errorf("%w: %v", ErrTransport, err)
	}
	d.watch2xx(tx)
	if !u.goTracked(func() { d.run(tx) }) {
		tx.Terminate()
		u.removeDialog(d)
		return nil, ErrClosed
	}
	return d, nil
}

// sdpAddr is the address we advertise for an RTP session.
func (u *UA) sdpAddr(s *RTPSession) netip.AddrPort {
	a := s.LocalAddr()
	if ip := s.mediaIP(); ip.IsValid() { // H-NAT: the trunk's c= (advertise.go)
		return netip.AddrPortFrom(ip, a.Port())
	}
	if a.Addr().IsUnspecified() {
		return netip.AddrPortFrom(u.sdpHost, a.Port())
	}
	return a
}

// CallID is the dialog's Call-ID.
func (d *Dialog) CallID() string { return d.callID }

// Invite returns the INVITE as last sent (after a digest retry, the retried
// one); for a dialog ponte answered, the PBX's INVITE.
func (d *Dialog) Invite() *sip.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.invite
}

// AckedAt is when the ACK for the 2xx was sent, or for a dialog ponte
// answered, received (zero before).
func (d *Dialog) AckedAt() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ackedAt
}

// Done is closed when the dialog ends (remote BYE, our BYE, failure, close).
func (d *Dialog) Done() <-chan struct{} { return d.done }

// RemoteBye reports whether the PBX ended the dialog with a BYE.
func (d *Dialog) RemoteBye() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remoteBye
}

// RemoteReason is the Reason header of the PBX's BYE, if any.
func (d *Dialog) RemoteReason() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remoteReason
}

// Err is why the dialog ended: nil for a normal BYE either way.
func (d *Dialog) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.endErr
}

// Answer is the SDP answer once answered.
func (d *Dialog) Answer() *MediaDesc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.answer
}

// OnInfo sets a handler for in-dialog INFO bodies (e.g. application/dtmf-relay).
func (d *Dialog) OnInfo(f func(contentType string, body []byte)) {
	d.mu.Lock()
	d.onInfo = f
	d.mu.Unlock()
}

func (d *Dialog) deliverInfo(ct string, body []byte) {
	d.mu.Lock()
	f := d.onInfo
	d.mu.Unlock()
	if f != nil {
		f(ct, body)
	}
}

func (d *Dialog) matchRemoteTag(tag string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remoteTag != "" && d.remoteTag == tag
}

// WaitAnswer blocks until the INVITE has a final outcome. On 2xx the ACK has
// already been sent (RFC 3261 §13.2.2.4: at once, never waiting for anything
// else) and the answer is returned. 401/407 were retried once with digest.
// A final >= 300 gives a *StatusError. If ctx ends first the call is
// cancelled: CANCEL once a provisional response has arrived (RFC 3261 §9.1;
// before one, it waits for it, up to Timer B), and an error matching
// ErrCanceled is returned at once while the cancel completes in the
// background; a 200 crossing the CANCEL is ACKed and then BYEd. Use
// context.WithCancelCause with a CancelCause to put a Reason on the CANCEL.
func (d *Dialog) WaitAnswer(ctx context.Context) (*MediaDesc, error) {
	select {
	case <-d.result:
		return d.outcome()
	case <-ctx.Done():
	}
	select {
	case <-d.result: // an outcome that raced in wins
		return d.outcome()
	default:
	}
	var r Reason
	var cc CancelCause
	if errors.As(context.Cause(ctx), &cc) {
		r = cc.Reason
	}
	d.requestCancel(r)
	return nil, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
}

func (d *Dialog) outcome() (*MediaDesc, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.answer, d.resErr
}

// requestCancel asks the run goroutine to cancel; if the call was already
// answered it is BYEd instead.
func (d *Dialog) requestCancel(r Reason) {
	d.mu.Lock()
	if d.resultSet {
		answered := d.resErr == nil && d.state == stateConfirmed
		d.mu.Unlock()
		if answered {
			d.byeAsync(r)
		}
		return
	}
	if d.cancelRequested {
		d.mu.Unlock()
		return
	}
	d.cancelRequested, d.cancelReason = true, r
	close(d.cancelCh)
	d.mu.Unlock()
}

// run owns the INVITE client transaction(s) until a final outcome.
func (d *Dialog) run(tx sip.ClientTransaction) {
	authTried, seRetried := false, false
	cancelCh := d.cancelCh
	canceling, cancelSent := false, false
	var cancelTimeout <-chan time.Time
	sendCancel := func() {
		d.mu.Lock()
		inv, r := d.invite, d.cancelReason
		d.mu.Unlock()
		c := d.buildCancel(inv, r)
		cancelSent = true
		cancelTimeout = time.After(64 * sip.T1)
		cancelTx, err := d.ua.ua.TransactionLayer().Request(context.Background(), c)
		if err != nil {
			d.ua.log.Warn("sip: CANCEL failed", "call_id", d.callID, "err", err)
			return
		}
		d.ua.drainAsync(cancelTx)
	}
	for {
		select {
		case res := <-tx.Responses():
			code := res.StatusCode
			switch {
			case code < 200:
				d.provisional(res)
				if canceling && !cancelSent {
					sendCancel()
				}
			case code < 300:
				d.answered(res)
				return
			case (code == 401 || code == 407) && !authTried && !canceling && d.trunk.Password != "":
				authTried = true
				ntx, err := d.retryAuth(res)
				if err != nil {
					d.fail(err)
					return
				}
				tx = ntx
			case code == 422 && !seRetried && !canceling:
				// RFC 4028 §7.4: retry once with the Min-SE the PBX asks for.
				seRetried = true
				v, _ := headerValue(res, "Min-SE")
				n, ok := parseMinSE(v)
				if !ok {
					d.fail(statusError(res))
					return
				}
				ntx, err := d.retryMinSE(n)
				if err != nil {
					d.fail(err)
					return
				}
				tx = ntx
			default:
				if canceling {
					d.fail(ErrCanceled)
				} else {
					d.fail(statusError(res))
				}
				return
			}
		case <-tx.Done():
			err := tx.Err()
			switch {
			case canceling:
				d.fail(ErrCanceled)
			case errors.Is(err, sip.ErrTransactionTimeout):
				d.fail(ErrTimeout)
			default:
				d.fail(fmt.Errorf("%w: %v", ErrTransport, err))
			}
			return
		case <-cancelCh:
			cancelCh, canceling = nil, true
			d.mu.Lock()
			prov := d.gotProvisional
			d.mu.Unlock()
			if prov {
				sendCancel()
			}
		case <-cancelTimeout:
			// RFC 3261 §9.1: no final response 64*T1 after the CANCEL.
			tx.Terminate()
			d.fail(ErrCanceled)
			return
		case <-d.ua.closing:
			tx.Terminate()
			d.fail(ErrClosed)
			return
		}
	}
}

// provisional records a 1xx and hands 18x SDP (early media) to the caller.
func (d *Dialog) provisional(res *sip.Response) {
	var md *MediaDesc
	if body := res.Body(); len(body) > 0 && isSDP(res) {
		if m, err := ParseSDP(body); err == nil {
			md = m
		}
	}
	d.mu.Lock()
	d.gotProvisional = true
	if res.To() != nil && res.To().Params.Has("tag") && res.StatusCode > 100 && d.state == stateCalling {
		d.state = stateEarly
	}
	if md != nil {
		d.early = md
	}
	canceling := d.cancelRequested
	d.mu.Unlock()
	if md != nil && d.media != nil && md.Addr.Port() != 0 {
		_ = d.media.AcceptSRTP(md) // H-TLS: early media keys; a required session stays silent without them
		d.media.SetRemote(md.Addr)
		if len(md.Codecs) > 0 {
			d.media.SetCodec(md.Codecs[0].PT, md.Codecs[0].Rate)
		}
	}
	if d.onProv != nil && !canceling {
		d.onProv(res.StatusCode, res.Reason, md)
	}
}

func isSDP(m *sip.Response) bool {
	ct := m.ContentType()
	return ct == nil || strings.HasPrefix(strings.ToLower(ct.Value()), "application/sdp")
}

// watch2xx hooks an INVITE client transaction's later 2xx responses from
// the moment it exists. After the first 2xx the transaction is in RFC 6026's
// Accepted state, where sipgo hands every further 2xx only to this hook and
// drops it when none is set: a fork's 200 arriving before answered() ran
// would be lost, leaving that fork unACKed and unBYEd (RFC 3261 §13.2.2.4).
func (d *Dialog) watch2xx(tx sip.ClientTransaction) {
	tx.OnRetransmission(d.late2xx)
}

// late2xx handles a 2xx after the first: a retransmission of the winning
// 2xx gets the ACK again (§13.3.1.4); one with another To tag is a second
// fork answering, which is ACKed and then BYEd (§13.2.2.4). Before the
// first 2xx has been ACKed, it waits for answered().
func (d *Dialog) late2xx(r *sip.Response) {
	if r.To() == nil || !r.IsSuccess() {
		return
	}
	d.mu.Lock()
	ack, tag := d.ack2xx, d.remoteTag
	if ack == nil {
		if len(d.early2xx) < maxEarly2xx {
			d.early2xx = append(d.early2xx, r)
		}
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	if t, _ := r.To().Params.Get("tag"); t != tag {
		d.forked(r)
		return
	}
	_ = d.ua.ua.TransportLayer().WriteMsg(ack.Clone())
}

// maxEarly2xx bounds the 2xx kept for answered(): forks answer a handful
// of times; a peer repeating itself beyond that gets no more queue.
const maxEarly2xx = 16

// answered handles the 2xx: ACK first, then everything else.
func (d *Dialog) answered(res *sip.Response) {
	d.mu.Lock()
	d.answerRes = res
	d.setPeerLocked(res)
	ack := d.ackFor2xxLocked()
	d.ack2xx = ack
	d.mu.Unlock()

	err := d.ua.ua.TransportLayer().WriteMsg(ack)
	now := time.Now()

	// 2xx copies that reached the transaction before this ran (late2xx).
	d.mu.Lock()
	early := d.early2xx
	d.early2xx = nil
	d.mu.Unlock()
	for _, r := range early {
		d.late2xx(r)
	}

	d.mu.Lock()
	d.ackedAt = now
	d.state = stateConfirmed
	canceled := d.cancelRequested
	reason := d.cancelReason
	var md *MediaDesc
	if body := res.Body(); len(body) > 0 && isSDP(res) {
		md, _ = ParseSDP(body)
	}
	if md == nil {
		md = d.early
	}
	d.mu.Unlock()
	if err != nil {
		d.ua.log.Warn("sip: ACK send failed", "call_id", d.callID, "err", err)
	}

	switch {
	case canceled:
		// A 200 crossed our CANCEL: the call is not wanted, end it.
		if reason.IsZero() {
			reason = Reason{Protocol: "SIP", Cause: 487, Text: "Request Terminated"}
		}
		d.byeSync(reason)
		d.fail(ErrCanceled)
	case md == nil || md.Addr.Port() == 0 || len(md.Codecs) == 0:
		d.byeSync(Reason{Protocol: "SIP", Cause: 488, Text: "Not Acceptable Here"})
		d.fail(ErrNoAnswerSDP)
	default:
		if err := d.acceptSRTP(md); err != nil { // H-TLS (srtp.go): never media in clear on a required trunk
			d.byeSync(Reason{Protocol: "SIP", Cause: 488, Text: "SRTP required"})
			d.fail(err)
			return
		}
		d.mu.Lock()
		d.cur = MediaState{DTMFPT: -1}
		st, ok := d.stateFromAnswerLocked(md)
		if !ok { // no codec the trunk allows: the gateway refuses it itself
			st = d.remoteFlowLocked(md, true, true)
			st.Codec = md.Codecs[0]
		}
		d.cur = st
		d.sessionFromAnswerLocked(res)
		d.answer = md
		d.setResultLocked(nil)
		d.mu.Unlock()
		if d.media != nil {
			d.media.SetRemote(md.Addr)
			d.media.SetCodec(st.Codec.PT, st.Codec.Rate)
		}
		if !d.ua.goTracked(d.timerLoop) {
			d.end(ErrClosed, false, "")
		}
	}
}

func (d *Dialog) setResultLocked(err error) {
	if d.resultSet {
		return
	}
	d.resultSet, d.resErr = true, err
	close(d.result)
}

// fail records a failed outcome and ends the dialog.
func (d *Dialog) fail(err error) {
	d.mu.Lock()
	d.setResultLocked(err)
	d.mu.Unlock()
	d.end(err, false, "")
}

// end marks the dialog ended once and unregisters it.
func (d *Dialog) end(err error, remote bool, reason string) {
	d.mu.Lock()
	if d.state == stateEnded {
		d.mu.Unlock()
		return
	}
	d.state = stateEnded
	d.endErr, d.remoteBye, d.remoteReason = err, remote, reason
	d.setResultLocked(errOr(err, ErrClosed))
	close(d.done)
	onEnd := d.onEnd
	d.mu.Unlock()
	d.ua.removeDialog(d)
	if onEnd != nil {
		onEnd()
	}
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}
