package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ErrRegister wraps a REGISTER that ended without a binding: a final
// non-2xx response (as *StatusError in the chain), or a 2xx that granted
// none.
var ErrRegister = errors.New("sip: registration failed")

// Registration defaults.
const (
	DefaultRegisterExpires = 300 * time.Second
	DefaultKeepAlive       = 25 * time.Second
	DefaultRetryMin        = 5 * time.Second
	DefaultRetryMax        = 5 * time.Minute

	// minRefresh is the floor of the refresh delay: a registrar that grants
	// 1 s (or 0 in a 2xx) must not turn the loop into a busy one.
	minRefresh = time.Second
	// maxRetryAfter bounds a registrar's Retry-After (RFC 3261 §20.33).
	maxRetryAfter = time.Hour
	// maxIntervalRetries bounds 423 round trips per attempt (§10.2.8).
	maxIntervalRetries = 3
	// maxDeltaSeconds is the largest delta-seconds RFC 3261 §10.2.1.1
	// lets a UA keep (2**32-1); larger values are taken as this.
	maxDeltaSeconds = 1<<32 - 1
)

// crlfPing is the keep-alive: a double CRLF. On TCP/TLS it is RFC 5626
// §4.4.1's ping, and a registrar without RFC 5626 ignores it anyway (RFC
// 3261 §7.5: CRLFs before a start line on a stream). On UDP it is not RFC
// 5626's mechanism (that is STUN, §4.4.2) but a plain NAT refresh that
// SIP stacks drop unparsed (sipgo, kamailio, Asterisk, FreeSWITCH).
var crlfPing = []byte("\r\n\r\n")

// Registration describes one binding ponte keeps at a trunk's registrar
// (RFC 3261 §10), so that PBXs that send calls only to registered
// endpoints (3CX, most cloud PBXs) send them to ponte.
type Registration struct {
	// Trunk is where REGISTERs go (its Address is the next hop, like an
	// outbound proxy), with its transport, digest credentials, TLS and NAT
	// settings. Username defaults to User for digest.
	Trunk *Trunk
	// User is the address-of-record user: sip:User@Domain in To and From.
	User string
	// Domain is the AOR domain and the REGISTER Request-URI (§10.2);
	// default the trunk host.
	Domain string
	// Contact is the Contact user; default User.
	Contact string
	// Expires is the binding lifetime asked for; default 300 s. A 423's
	// Min-Expires raises it (§10.2.8).
	Expires time.Duration
	// KeepAlive is the period of the NAT keep-alive sent to the registrar
	// while a binding exists; 0 (or negative): none. DefaultKeepAlive (25 s)
	// is the value to configure by default: under the 30 s many NATs keep an
	// idle UDP mapping. It is a double CRLF on every transport: on TCP/TLS
	// the RFC 5626 §4.4.1 ping on the registration's connection (a lost
	// connection makes ponte register again at once); on UDP one datagram
	// from the listening socket, which is all a NAT pinhole needs (any
	// outbound packet refreshes it). An OPTIONS would do the same at the cost
	// of a transaction each period, and STUN (RFC 5626 §4.4.2) needs a
	// registrar that answers it on its SIP port, which few PBXs do. The CRLF
	// datagram is what PJSIP and Asterisk send, and sipgo's and kamailio's
	// UDP readers drop it silently.
	KeepAlive time.Duration
	// RetryMin and RetryMax bound the backoff after a failed REGISTER: it
	// starts at RetryMin and doubles up to RetryMax, ±20 % jitter so that
	// many gateways behind one registrar do not retry in step. Defaults 5 s
	// and 5 min.
	RetryMin, RetryMax time.Duration
	// LearnContact re-registers with the address the registrar saw, the
	// top Via's received/rport of its response (RFC 3581 §4), when that
	// differs from the Contact: ponte is behind a NAT and its own address is
	// unreachable from the registrar. The REGISTER that changes the Contact
	// also removes the old one (expires=0, §10.2.1.1). UDP only, and only
	// when the trunk has no NAT.AdvertiseHost (an explicit address wins); in
	// other cases a difference is only logged. Over TCP/TLS the address seen
	// is the connection's ephemeral port, which the registrar reaches only
	// through that connection (kept open by KeepAlive).
	LearnContact bool
	// OnChange is called after every REGISTER outcome and state change
	// (metrics, status pages), from the registrar's goroutine or Close. It
	// must not block nor call Close.
	OnChange func(RegStatus)
}

// RegStatus is a registration's state.
type RegStatus struct {
	Trunk      string
	Registered bool      // a binding granted by the registrar has not expired
	Expires    time.Time // when the current binding expires (granted value)
	LastCode   int       // last final response code (0: timeout or transport error)
	LastError  string
	// LastSuccess is the time of the last 2xx to a REGISTER that asked
	// for a binding.
	LastSuccess time.Time
	Refreshes   int // successful REGISTERs after the first
	Failures    int // failed attempts in all
	// NextAttempt is when the next REGISTER goes out: the refresh, or the
	// backoff retry after a failure.
	NextAttempt time.Time
	Contact     string // the Contact URI registered
	// PublicAddr is ponte's address as the registrar saw it (Via
	// received/rport of its last 2xx, RFC 3581).
	PublicAddr string
}

// Registrar keeps one Registration: REGISTER, refresh, keep-alive,
// unregister on Close. Its goroutine is owned by the UA too: UA.Close stops
// it (without unregistering).
type Registrar struct {
	ua        *UA
	trunk     Trunk
	cfg       Registration
	tr        string // "udp" | "tcp" | "tls"
	lap       netip.AddrPort
	log       *slog.Logger
	callID    string
	fromTag   string
	aor       sip.Uri
	ruri      sip.Uri
	authUser  string
	learn     bool
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error

	mu         sync.Mutex
	cseq       uint32
	expires    int      // seconds asked for
	contact    sip.Uri  // stable across refreshes; changes only when learned
	oldContact *sip.Uri // a replaced Contact, removed by the next REGISTER
	remote     string   // where the registrar answered from: keep-alive target
	successes  int
	fails      int    // consecutive failed attempts (backoff step)
	seenLogged string // the last mismatched address logged
	learned    bool   // the last success changed the Contact
	st         RegStatus
}

// Register validates r and starts keeping the binding; it returns at once.
// Status reports progress; Close unregisters. ctx only gates the start: the
// binding lives until Close or UA.Close, not as long as a caller's request.
func (u *UA) Register(ctx context.Context, r Registration) (*Registrar, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.Trunk == nil {
		return nil, fmt.Errorf("%w: registration without a trunk", ErrConfig)
	}
	if strings.TrimSpace(r.User) == "" {
		return nil, fmt.Errorf("%w: registration to trunk %q without a user", ErrConfig, r.Trunk.Name)
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
	t := *r.Trunk
	tr := strings.ToLower(t.Transport)
	if tr == "" {
		tr = "udp"
	}
	lap, ok := u.listenerFor(tr)
	if !ok {
		return nil, fmt.Errorf("%w: no %s listener for registration to trunk %q", ErrConfig, tr, t.Name)
	}
	host, _, err := splitHostPort(t.Address)
	if err != nil {
		return nil, err
	}
	if r.Domain == "" {
		r.Domain = host
	}
	if strings.ContainsAny(r.Domain, " \t\r\n<>@;,?\"") {
		return nil, fmt.Errorf("%w: registration domain %q", ErrConfig, r.Domain)
	}
	if r.Contact == "" {
		r.Contact = r.User
	}
	if r.Expires <= 0 {
		r.Expires = DefaultRegisterExpires
	}
	if r.RetryMin <= 0 {
		r.RetryMin = DefaultRetryMin
	}
	if r.RetryMax < r.RetryMin {
		r.RetryMax = max(DefaultRetryMax, r.RetryMin)
	}
	reg := &Registrar{
		ua: u, trunk: t, cfg: r, tr: tr, lap: lap,
		log:    u.log.With("trunk", t.Name, "aor", r.User+"@"+r.Domain),
		callID: randToken(16), fromTag: randToken(8),
		aor:      sip.Uri{Scheme: "sip", User: EscapeUser(r.User), Host: r.Domain},
		ruri:     sip.Uri{Scheme: "sip", Host: r.Domain},
		authUser: t.Username,
		// An explicit advertised address is the operator's word (advertise.go).
		learn:   r.LearnContact && tr == "udp" && t.NAT.AdvertiseHost == "",
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
		cseq:    1,
		expires: max(1, secs(r.Expires)),
	}
	if reg.authUser == "" {
		reg.authUser = r.User
	}
	// The Contact is where this UA listens for the trunk's transport, as
	// the trunk must address it (RFC 3261 §10.2.1.1, advertise.go).
	c := sip.ContactHeader{Address: t.contactURI(u, EscapeUser(r.Contact), lap.Port())}
	if tr == "tcp" {
		c.Address.UriParams = sip.NewParams()
		c.Address.UriParams.Add("transport", "tcp")
	}
	secureContact(&c, reg.ruri, tr)
	reg.contact = c.Address
	reg.st = RegStatus{Trunk: t.Name, Contact: c.Address.String()}
	reg.ctx, reg.cancel = context.WithCancel(u.ctx)
	if !u.goTracked(reg.run) {
		reg.cancel()
		return nil, ErrClosed
	}
	return reg, nil
}

// Status returns a snapshot of the registration's state.
func (r *Registrar) Status() RegStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// CallID is the Call-ID of every REGISTER of this binding (RFC 3261
// §10.2), for matching the registrar's logs.
func (r *Registrar) CallID() string { return r.callID }

// Close stops the loop and removes the binding with a REGISTER Expires: 0
// (RFC 3261 §10.2.2), best effort and bounded by ctx. A later Close
// returns the first one's result.
func (r *Registrar) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		defer close(r.closed)
		r.cancel()
		select {
		case <-r.done:
		case <-ctx.Done():
			r.closeErr = ctx.Err()
			return
		}
		r.closeErr = r.unregister(ctx)
	})
	select {
	case <-r.closed:
		return r.closeErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Registrar) unregister(ctx context.Context) error {
	r.mu.Lock()
	bound := r.successes > 0 && time.Now().Before(r.st.Expires)
	r.mu.Unlock()
	if !bound {
		return nil
	}
	r.ua.mu.Lock()
	closed := r.ua.closed
	r.ua.mu.Unlock()
	if closed { // its sockets are gone: the binding lapses at the registrar
		return ErrClosed
	}
	res, err := r.exchange(ctx, true)
	if err == nil && !res.IsSuccess() {
		err = fmt.Errorf("%w: %w", ErrRegister, statusError(res))
	}
	r.mu.Lock()
	if res != nil {
		r.st.LastCode = res.StatusCode
	}
	if err == nil {
		r.st.Registered, r.st.Expires, r.st.LastError = false, time.Time{}, ""
	} else {
		r.st.LastError = err.Error()
	}
	r.st.NextAttempt = time.Time{}
	st := r.st
	r.mu.Unlock()
	r.notify(st)
	return err
}

func (r *Registrar) notify(st RegStatus) {
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(st)
	}
}

// run is the registration loop: REGISTER, then wait for the refresh (or
// the backoff retry), sending keep-alives meanwhile.
func (r *Registrar) run() {
	defer close(r.done)
	var ka <-chan time.Time
	if r.cfg.KeepAlive > 0 {
		t := time.NewTicker(r.cfg.KeepAlive)
		defer t.Stop()
		ka = t.C
	}
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	for {
		delay := r.attempt()
		if r.ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.st.NextAttempt = time.Now().Add(delay)
		st := r.st
		r.mu.Unlock()
		r.notify(st)
		expiry.Stop()
		if st.Registered {
			expiry.Reset(time.Until(st.Expires))
		}
		wait := time.NewTimer(delay)
	waiting:
		for {
			select {
			case <-r.ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
				break waiting
			case <-ka:
				if !r.keepAlive() {
					// The flow to the registrar is gone (RFC 5626
					// §4.4.1): register again over a new one.
					r.log.Info("sip: registration flow lost; registering again")
					wait.Stop()
					break waiting
				}
			case <-expiry.C:
				r.mu.Lock()
				r.st.Registered = false
				st := r.st
				r.mu.Unlock()
				r.log.Warn("sip: registration expired", "last_error", st.LastError)
				r.notify(st)
			}
		}
	}
}

// attempt runs one REGISTER (with its digest and 423 retries), records the
// outcome and returns the delay until the next one.
func (r *Registrar) attempt() time.Duration {
	res, err := r.exchange(r.ctx, false)
	if r.ctx.Err() != nil {
		return 0
	}
	now := time.Now()
	var granted time.Duration
	if err == nil {
		if !res.IsSuccess() {
			err = fmt.Errorf("%w: %w", ErrRegister, statusError(res))
		} else {
			r.mu.Lock()
			granted = grantedExpires(res, r.contact, r.expires)
			r.mu.Unlock()
			if granted <= 0 {
				err = fmt.Errorf("%w: %d granted no binding", ErrRegister, res.StatusCode)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.LastCode = 0
	if res != nil {
		r.st.LastCode = res.StatusCode
	}
	if err != nil {
		r.fails++
		r.st.Failures++
		r.st.LastError = err.Error()
		r.st.Registered = now.Before(r.st.Expires)
		delay := r.backoffLocked(res)
		r.log.Warn("sip: REGISTER failed", "code", r.st.LastCode, "err", err, "retry_in", delay.Round(time.Millisecond))
		return delay
	}
	r.fails = 0
	if r.successes > 0 {
		r.st.Refreshes++
	}
	r.successes++
	r.oldContact = nil
	r.remote = res.Source()
	r.st.Registered, r.st.Expires, r.st.LastSuccess, r.st.LastError = true, now.Add(granted), now, ""
	changed := r.learnLocked(res)
	r.st.Contact = r.contact.String()
	r.log.Debug("sip: registered", "granted", granted, "contact", r.st.Contact)
	// Register a learned Contact at once, but not twice running: a
	// registrar that sees a new address in every answer would otherwise
	// get a REGISTER storm. The next refresh carries it then.
	immediate := changed && !r.learned
	r.learned = changed
	if immediate {
		return 0
	}
	return refreshDelay(granted)
}

// refreshDelay is when to refresh a binding granted for g: halfway, so a
// refresh that fails leaves half the binding's life for the backoff retries
// to succeed before it lapses (RFC 3261 §10.2.4 leaves the time to the UA);
// never sooner than minRefresh.
func refreshDelay(g time.Duration) time.Duration {
	return max(g/2, minRefresh)
}

// backoffLocked is the delay before retrying after r.fails consecutive
// failures: RetryMin doubling to RetryMax, ±20 % jitter, and at least a
// 503's or 500's Retry-After (RFC 3261 §21.5.4, §20.33).
func (r *Registrar) backoffLocked(res *sip.Response) time.Duration {
	d := r.cfg.RetryMin
	for i := 1; i < r.fails && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMax)
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	if res != nil {
		if ra, ok := retryAfter(res); ok {
			d = max(d, ra)
		}
	}
	return d
}

// exchange sends one REGISTER (unregister: Expires 0) and answers a
// 401/407 digest challenge (RFC 3261 §22.2, once, or again when the
// registrar says the nonce was stale) and a 423 Interval Too Brief with the
// Min-Expires it demands (§10.2.8). Every retry keeps the Call-ID and
// increments the CSeq (§10.2.4). It returns the final response.
func (r *Registrar) exchange(ctx context.Context, unregister bool) (*sip.Response, error) {
	var auth sip.Header
	authTries, intervalTries := 0, 0
	for {
		if r.tr == "tls" { // the trunk's own TLS settings (tls.go)
			if _, _, err := r.ua.dialTLS(ctx, &r.trunk, r.lap); err != nil {
				return nil, err
			}
		}
		req := r.build(unregister, auth)
		res, err := r.ua.do(ctx, req)
		if err != nil {
			return nil, err
		}
		switch res.StatusCode {
		case 401, 407:
			if r.trunk.Password == "" || authTries >= 2 || (authTries == 1 && !challengeStale(res)) {
				return res, nil // no credentials, or they were refused
			}
			if auth, err = digestHeader(req, res, r.authUser, r.trunk.Password); err != nil {
				return res, err
			}
			authTries++
			continue
		case 423:
			me, ok := minExpires(res)
			r.mu.Lock()
			raise := !unregister && ok && me > r.expires && intervalTries < maxIntervalRetries
			if raise {
				r.log.Info("sip: registrar wants a longer binding", "min_expires", me)
				r.expires = me
			}
			r.mu.Unlock()
			if !raise {
				return res, nil
			}
			intervalTries++
			// The nonce answered is spent (nc=1): a fresh challenge follows.
			auth, authTries = nil, 0
			continue
		}
		return res, nil
	}
}

// build makes the next REGISTER (RFC 3261 §10.2): Request-URI the domain,
// To and From the AOR, the binding's Call-ID, the next CSeq, our Contact
// and the lifetime asked for.
func (r *Registrar) build(unregister bool, auth sip.Header) *sip.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	req := sip.NewRequest(sip.REGISTER, *r.ruri.Clone())
	via := &sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(r.tr),
		Host: r.trunk.viaHost(r.ua), Port: r.trunk.viaPort(r.lap.Port()), Params: sip.NewParams(),
	}
	via.Params.Add("branch", sip.GenerateBranchN(16))
	via.Params.Add("rport", "") // RFC 3581: answers come back through NAT, and say what it mapped us to
	req.AppendHeader(via)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := &sip.FromHeader{Address: *r.aor.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", r.fromTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: *r.aor.Clone(), Params: sip.NewParams()})
	cid := sip.CallIDHeader(r.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: r.cseq, MethodName: sip.REGISTER})
	r.cseq++
	if r.oldContact != nil { // a learned address replaces this one (§10.2.1.1)
		old := &sip.ContactHeader{Address: *r.oldContact.Clone(), Params: sip.NewParams()}
		old.Params.Add("expires", "0")
		req.AppendHeader(old)
	}
	req.AppendHeader(&sip.ContactHeader{Address: *r.contact.Clone()})
	exp := r.expires
	if unregister {
		exp = 0
	}
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(exp)))
	req.AppendHeader(sip.NewHeader("Allow", allowMethods))
	req.AppendHeader(sip.NewHeader("User-Agent", r.ua.cfg.UserAgent))
	if auth != nil {
		req.AppendHeader(auth)
	}
	req.SetBody(nil) // Content-Length: 0, mandatory over TCP/TLS (§18.3)
	req.SetTransport(strings.ToUpper(r.tr))
	req.SetDestination(r.trunk.Address)
	if r.tr == "udp" {
		// From the listening socket: the binding's address, the NAT
		// pinhole and the keep-alives are all that socket's.
		req.Laddr = sip.Addr{IP: net.IP(r.lap.Addr().AsSlice()), Port: int(r.lap.Port())}
	}
	return req
}
