package sip

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// InboundTrunk is a PBX allowed to send ponte INVITEs (PBX-originated
// calls). It is identified by the transport source address of the INVITE
// (never by a header, which anyone can write), by digest credentials, or
// both.
type InboundTrunk struct {
	Name string
	// Allow lists the source addresses the trunk sends from. Empty: any
	// source, and then digest is required.
	Allow []netip.Prefix
	// Username and Password are the digest credentials the PBX must prove
	// (RFC 3261 §22.4). Empty: no digest, and then Allow is required.
	Username, Password string
	// Realm of the challenge; default the UA's advertised host.
	Realm string
}

// ServerConfig configures the SIP server for PBX-originated INVITEs.
type ServerConfig struct {
	Trunks []InboundTrunk
	// Unauthorized is what a request that matches no trunk or fails
	// authentication gets: "reject" (default: 403 Forbidden, no hint) or
	// "drop" (no response at all: scanners learn nothing). Sources a
	// digest trunk may call from still get their 401 challenge.
	Unauthorized string
	// NonceTTL is how long a digest nonce stays valid (default 5 min); an
	// older one gets a new 401 with stale=true (RFC 7616 §3.3).
	NonceTTL time.Duration
	// RateLimit is the INVITEs per second per source IP that may fail
	// authentication or match no trunk (default 5); RateBurst (default 10)
	// is the bucket size. Beyond it those requests are dropped silently.
	RateLimit float64
	RateBurst int
	// InviteRate is the new INVITEs per second any one source may send,
	// authenticated or not (default DefaultInviteRate); InviteBurst the
	// bucket size (default DefaultInviteBurst). Sources on a trunk's
	// address allow-list are exempt (see screen for why, and for the 480). H-SIPSEC.
	InviteRate  float64
	InviteBurst int
	// Ban bans sources after repeated failures (ban.go).
	Ban BanConfig
	// Peers are addresses of other trunks (those ponte calls, which may
	// qualify it with OPTIONS): known, so never banned nor judged as
	// scanners, but they gain no right to place calls.
	Peers []netip.Prefix
}

// Unauthorized policies.
const (
	UnauthorizedReject = "reject"
	UnauthorizedDrop   = "drop"
)

// Server defaults.
const (
	DefaultNonceTTL  = 5 * time.Minute
	DefaultRateLimit = 5
	DefaultRateBurst = 10

	DefaultInviteRate  = 20
	DefaultInviteBurst = 40
)

// IncomingHandler takes an authenticated PBX INVITE. It runs on the
// request's goroutine and should return quickly; the call may be answered
// or rejected later from any goroutine.
type IncomingHandler func(c *IncomingCall)

// ServerStats counts what the server did with out-of-dialog INVITEs.
type ServerStats struct {
	Accepted    uint64 // authenticated, well-formed and handed to the IncomingHandler
	Challenged  uint64 // answered 401 with a digest challenge
	AuthFailed  uint64 // credentials present but wrong (403 or dropped)
	Forbidden   uint64 // matched no trunk (403 or dropped)
	Dropped     uint64 // AuthFailed/Forbidden left unanswered (Unauthorized: drop)
	RateLimited uint64 // dropped because the source ran out of failures (counted in nothing else)

	// H-SIPSEC (issue 8):
	InviteLimited uint64 // INVITEs over the per-source rate (480, or dropped)
	Scanners      uint64 // requests dropped because their User-Agent names a scanner
	Strangers     uint64 // OPTIONS, REGISTER and other methods from unknown sources (counted as failures)
	Banned        uint64 // bans imposed
	BanDropped    uint64 // messages and connections dropped because their source was banned
	BannedNow     uint64 // sources banned at this moment (a gauge)

	Panics uint64 // request handler panics recovered with a 500 (guard.go; counted without SetServer too)
}

// inbound is the UA's SIP server: trunk matching, digest, rate limit, and
// the registry of PBX-originated calls by Call-ID and From tag.
type inbound struct {
	u *UA

	mu      sync.Mutex
	trunks  []InboundTrunk
	drop    bool
	handler IncomingHandler
	auth    *digestAuth
	limit   *ipLimiter
	invites *ipLimiter // H-SIPSEC: every new INVITE, per source
	ban     *banList   // H-SIPSEC
	recent  recentSet  // H-SIPSEC: sources that proved digest credentials
	calls   map[string]*IncomingCall
	closed  bool
	now     func() time.Time

	accepted, challenged, authFailed, forbidden, dropped, rateLimited, inviteLimited atomic.Uint64
}

// SetServer makes the UA accept PBX-originated INVITEs from cfg's trunks
// and hand them to h. It replaces the OnInvite path for new INVITEs and may
// be called again to change the configuration; calls in progress go on.
func (u *UA) SetServer(cfg ServerConfig, h IncomingHandler) error {
	if h == nil {
		return fmt.Errorf("%w: nil IncomingHandler", ErrConfig)
	}
	switch cfg.Unauthorized {
	case "", UnauthorizedReject, UnauthorizedDrop:
	default:
		return fmt.Errorf("%w: unauthorized %q is not reject or drop", ErrConfig, cfg.Unauthorized)
	}
	if cfg.NonceTTL < 0 || cfg.RateLimit < 0 || cfg.RateBurst < 0 || cfg.InviteRate < 0 || cfg.InviteBurst < 0 || cfg.Ban.After < 0 || cfg.Ban.Within < 0 {
		return fmt.Errorf("%w: negative nonce TTL, rate limit or ban setting", ErrConfig)
	}
	if cfg.InviteRate == 0 {
		cfg.InviteRate = DefaultInviteRate
	}
	if cfg.InviteBurst == 0 {
		cfg.InviteBurst = DefaultInviteBurst
	}
	if cfg.Ban.After == 0 {
		cfg.Ban.After = DefaultBanAfter
	}
	if cfg.Ban.Within == 0 {
		cfg.Ban.Within = DefaultBanWithin
	}
	if cfg.Ban.For == 0 {
		cfg.Ban.For = DefaultBanFor
	}
	var known []netip.Prefix // H-SIPSEC: never banned, never judged as scanners
	for _, p := range cfg.Peers {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid peer prefix %v", ErrConfig, p)
		}
		known = append(known, unmapPrefix(p))
	}
	if cfg.NonceTTL == 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	if cfg.RateBurst == 0 {
		cfg.RateBurst = DefaultRateBurst
	}
	trunks := make([]InboundTrunk, 0, len(cfg.Trunks))
	for _, t := range cfg.Trunks {
		if t.Name == "" {
			return fmt.Errorf("%w: inbound trunk without a name", ErrConfig)
		}
		if (t.Username == "") != (t.Password == "") {
			return fmt.Errorf("%w: inbound trunk %q: username and password go together", ErrConfig, t.Name)
		}
		if len(t.Allow) == 0 && t.Username == "" {
			return fmt.Errorf("%w: inbound trunk %q needs allowed addresses or digest credentials", ErrConfig, t.Name)
		}
		allow := make([]netip.Prefix, 0, len(t.Allow))
		for _, p := range t.Allow {
			if !p.IsValid() {
				return fmt.Errorf("%w: inbound trunk %q: invalid prefix %v", ErrConfig, t.Name, p)
			}
			allow = append(allow, unmapPrefix(p))
		}
		t.Allow = allow
		known = append(known, allow...)
		if t.Realm == "" {
			t.Realm = u.advertise
		}
		trunks = append(trunks, t)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	in := u.inbound
	if in == nil {
		in = &inbound{u: u, calls: map[string]*IncomingCall{}, now: time.Now, recent: recentSet{max: maxLimiterEntries}}
		u.inbound = in
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.auth == nil {
		in.auth = newDigestAuth(cfg.NonceTTL)
	}
	in.auth.ttl = cfg.NonceTTL
	in.trunks, in.handler = trunks, h
	in.drop = cfg.Unauthorized == UnauthorizedDrop
	in.limit = newIPLimiter(cfg.RateLimit, cfg.RateBurst, maxLimiterEntries)
	in.invites = newIPLimiter(cfg.InviteRate, cfg.InviteBurst, maxLimiterEntries)
	if in.ban == nil {
		in.ban = newBanList(u.log, maxLimiterEntries)
	}
	in.ban.configure(cfg.Ban, known)
	u.sec.pol.Store(&secPolicy{ban: in.ban, known: known, now: in.now})
	return nil
}

// unmapPrefix: sources are unmapped, so are the prefixes they are matched
// against.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// ServerStats reports the server's counters (zero without SetServer).
func (u *UA) ServerStats() ServerStats {
	u.mu.Lock()
	in := u.inbound
	u.mu.Unlock()
	if in == nil {
		return ServerStats{Panics: u.panics.Load()}
	}
	in.mu.Lock()
	ban, now := in.ban, in.now()
	in.mu.Unlock()
	return ServerStats{
		Accepted: in.accepted.Load(), Challenged: in.challenged.Load(), AuthFailed: in.authFailed.Load(),
		Forbidden: in.forbidden.Load(), Dropped: in.dropped.Load(), RateLimited: in.rateLimited.Load(),
		InviteLimited: in.inviteLimited.Load(), Scanners: u.sec.scanners.Load(), Strangers: u.sec.strangers.Load(),
		Banned: ban.bans.Load(), BanDropped: u.sec.banDropped.Load(), BannedNow: uint64(ban.current(now)),
		Panics: u.panics.Load(),
	}
}

// inboundServer returns the server, nil without SetServer.
func (u *UA) inboundServer() *inbound {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.inbound
}

// snapshot is the configuration one request is judged by.
type snapshot struct {
	trunks  []InboundTrunk
	drop    bool
	handler IncomingHandler
	auth    *digestAuth
	limit   *ipLimiter
	now     time.Time
	invites *ipLimiter
	ban     *banList
}

func (in *inbound) snapshot() snapshot {
	in.mu.Lock()
	defer in.mu.Unlock()
	return snapshot{in.trunks, in.drop, in.handler, in.auth, in.limit, in.now(), in.invites, in.ban}
}

// transportSource is the address the request came from on the wire:
// sipgo records it from the socket. Via (received/rport) is written by the
// sender and never trusted for authorization.
func transportSource(req *sip.Request) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(req.MessageData.Source())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func allowed(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// authenticate matches the INVITE to a trunk (see InboundTrunk). It answers
// every request it does not accept (401, 403, or nothing) and returns nil
// for those.
func (in *inbound) authenticate(req *sip.Request, tx sip.ServerTransaction, src netip.AddrPort, s snapshot) *InboundTrunk {
	ip := src.Addr()
	// A source listed on an address-only trunk is trusted as such.
	for i := range s.trunks {
		if t := &s.trunks[i]; t.Username == "" && allowed(t.Allow, ip) {
			return t
		}
	}
	// Digest from here. A source that has used up its failures is not
	// even checked: a password guesser gets RateLimit tries per second.
	if s.limit.exhausted(ip, s.now) {
		in.rateLimited.Add(1)
		s.ban.fail(ip, s.now, "INVITE") // H-SIPSEC
		return nil
	}
	var creds []digestCreds
	malformed := false
	for i, h := range req.GetHeaders("Authorization") {
		if i == maxAuthHeads {
			break
		}
		c, err := parseDigestAuthorization(h.Value())
		if err != nil {
			malformed = true
			continue
		}
		creds = append(creds, c)
	}
	var realms []string
	stale, failed, used := false, malformed, false
	for i := range s.trunks {
		t := &s.trunks[i]
		if t.Username == "" || (len(t.Allow) > 0 && !allowed(t.Allow, ip)) {
			continue
		}
		var cred *digestCreds
		for j := range creds {
			if creds[j].Username == t.Username && creds[j].Realm == t.Realm {
				cred = &creds[j]
				break
			}
		}
		if cred == nil {
			if !containsStr(realms, t.Realm) {
				realms = append(realms, t.Realm)
			}
			continue
		}
		used = true
		switch s.auth.verify(*cred, string(req.Method), req.Recipient, t.Password, ip, s.now) {
		case authOK:
			in.recent.add(ip, s.now) // H-SIPSEC: its OPTIONS are a trunk's now
			return t
		case authStale:
			stale = true
			if !containsStr(realms, t.Realm) {
				realms = append(realms, t.Realm)
			}
		default:
			failed = true
		}
	}
	switch {
	case failed || (len(creds) > 0 && !used && !stale):
		// Wrong password, or credentials for no trunk this source may use.
		in.refuse(req, tx, ip, s, &in.authFailed)
	case len(realms) > 0:
		var hs []sip.Header
		for _, r := range realms {
			hs = append(hs, s.auth.challenges(r, stale, ip, s.now)...)
		}
		in.challenged.Add(1)
		respond(tx, req, 401, "Unauthorized", nil, hs...)
	default:
		in.refuse(req, tx, ip, s, &in.forbidden)
	}
	return nil
}

// refuse answers a request that failed: 403 Forbidden without a hint, or
// nothing under Unauthorized=drop, or nothing once ip has no failures left.
func (in *inbound) refuse(req *sip.Request, tx sip.ServerTransaction, ip netip.Addr, s snapshot, counter *atomic.Uint64) {
	s.ban.fail(ip, s.now, "INVITE") // H-SIPSEC: repeated failures ban the source
	if !s.limit.take(ip, s.now) {
		in.rateLimited.Add(1)
		return
	}
	counter.Add(1)
	if s.drop {
		in.dropped.Add(1)
		return
	}
	respond(tx, req, 403, "Forbidden", nil)
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// callKey identifies a PBX-originated call: Call-ID and From tag (RFC 3261
// §8.2.2.2 merged-request detection; the To tag is ours).
func callKey(req *sip.Request) string {
	tag := ""
	if f := req.From(); f != nil {
		tag, _ = f.Params.Get("tag")
	}
	return callIDOf(req) + "\x00" + tag
}

// serveInvite handles an out-of-dialog INVITE when the server is set: it
// authenticates it, checks what ponte can answer at all, and hands the call
// to the handler. The goroutine (sipgo's, one per request) stays until the
// INVITE has a final response: sipgo ends a server transaction whose
// handler returned without one.
func (in *inbound) serveInvite(req *sip.Request, tx sip.ServerTransaction) {
	u := in.u
	select {
	case <-u.closing:
		respond(tx, req, 503, "Service Unavailable", nil)
		return
	default:
	}
	src, ok := transportSource(req)
	if !ok {
		return
	}
	s := in.snapshot()
	if !in.screen(req, tx, src.Addr(), s) { // H-SIPSEC: scanners and the per-source INVITE rate
		return
	}
	trunk := in.authenticate(req, tx, src, s)
	if trunk == nil {
		return
	}
	c, ok := in.admit(req, tx, src, trunk.Name)
	if !ok {
		return
	}
	in.accepted.Add(1)
	if !u.trackHandler() {
		c.rejectFinal(503, "Service Unavailable")
		in.forget(c)
		return
	}
	defer u.wg.Done()
	s.handler(c)
	var expiry <-chan time.Time
	if v, ok := headerValue(req, "Expires"); ok {
		// RFC 3261 §13.3.1: an INVITE unanswered when its Expires runs out
		// gets 487.
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n < 1<<20 {
			t := time.NewTimer(time.Duration(n) * time.Second)
			defer t.Stop()
			expiry = t.C
		}
	}
	select {
	case <-c.final:
	case <-expiry:
		c.expire()
	case <-u.closing:
		c.rejectFinal(503, "Service Unavailable")
	}
}

// trackHandler counts a request goroutine in the UA's wait group, so that
// Close waits for it; false once closed.
func (u *UA) trackHandler() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.wg.Add(1)
	return true
}

// admit runs the checks an authenticated INVITE gets before the gateway
// sees it, answering the ones that fail, and registers the call.
func (in *inbound) admit(req *sip.Request, tx sip.ServerTransaction, src netip.AddrPort, trunk string) (*IncomingCall, bool) {
	key := callKey(req)
	in.mu.Lock()
	prev := in.calls[key]
	in.mu.Unlock()
	if prev != nil {
		// sipgo absorbs retransmissions while the transaction lives. A copy
		// that outlived it is a retransmission again and needs nothing (the
		// 2xx is retransmitted until the ACK); the same Call-ID, From tag
		// and CSeq on another branch is a merged request (RFC 3261
		// §8.2.2.2): 482.
		if sameTransaction(prev.req, req) {
			return nil, false
		}
		respond(tx, req, 482, "Loop Detected", nil)
		return nil, false
	}
	if bad := unsupportedTags(req); len(bad) > 0 { // RFC 3261 §8.2.2.3
		respond(tx, req, 420, "Bad Extension", nil, sip.NewHeader("Unsupported", strings.Join(bad, ", ")))
		return nil, false
	}
	if f, t := req.From(), req.To(); f == nil || t == nil || f.Params.GetOr("tag", "") == "" {
		// RFC 3261 §8.1.1.3: the From tag identifies the PBX's side of
		// the dialog; without it in-dialog requests could not be matched.
		respond(tx, req, 400, "Bad Request (From tag required)", nil)
		return nil, false
	}
	if c := req.Contact(); c == nil || c.Address.Host == "" {
		// RFC 3261 §8.1.1.8: an INVITE must carry a Contact, the remote
		// target of the dialog.
		respond(tx, req, 400, "Bad Request (Contact required)", nil)
		return nil, false
	}
	var offer *MediaDesc
	if body := req.Body(); len(body) > 0 {
		if ct := req.ContentType(); ct == nil || !isSDPType(ct.Value()) {
			// RFC 3261 §21.4.13: 415 with Accept naming what we take.
			respond(tx, req, 415, "Unsupported Media Type", nil, sip.NewHeader("Accept", "application/sdp"))
			return nil, false
		}
		md, err := ParseSDP(body)
		if err != nil {
			// RFC 3261 §20.43: warn-code 399, miscellaneous.
			respond(tx, req, 488, "Not Acceptable Here", nil, warning(in.u, 399, "unparsable SDP offer"))
			return nil, false
		}
		offer = md
	}
	probe := &Dialog{ua: in.u} // sessionFromRequest reads the UA's Min-SE only
	se, ok := probe.sessionFromRequest(req, tx)
	if !ok {
		return nil, false
	}
	c := newIncomingCall(in, req, tx, src, trunk, offer, se)
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		respond(tx, req, 503, "Service Unavailable", nil)
		return nil, false
	}
	if in.calls[key] != nil { // a copy raced us here
		in.mu.Unlock()
		respond(tx, req, 482, "Loop Detected", nil)
		return nil, false
	}
	in.calls[key] = c
	in.mu.Unlock()
	c.start()
	return c, true
}

// sameTransaction: same CSeq and top Via branch (RFC 3261 §17.2.3).
func sameTransaction(a, b *sip.Request) bool {
	if a.CSeq() == nil || b.CSeq() == nil || a.CSeq().SeqNo != b.CSeq().SeqNo {
		return false
	}
	va, vb := a.Via(), b.Via()
	if va == nil || vb == nil {
		return false
	}
	ba, _ := va.Params.Get("branch")
	bb, _ := vb.Params.Get("branch")
	return ba == bb
}

func isSDPType(v string) bool {
	t, _, _ := strings.Cut(v, ";")
	return strings.EqualFold(strings.TrimSpace(t), "application/sdp")
}

// warning builds a Warning header (RFC 3261 §20.43): code, our host, text.
func warning(u *UA, code int, text string) sip.Header {
	return sip.NewHeader("Warning", fmt.Sprintf(`%d %s "%s"`, code, u.advertise, quoteParam(text)))
}

// forget drops a call from the registry.
func (in *inbound) forget(c *IncomingCall) {
	in.mu.Lock()
	if in.calls[c.key] == c {
		delete(in.calls, c.key)
	}
	in.mu.Unlock()
}

// shutdown answers 503 to every INVITE still waiting for its final
// response, while the listeners can still send it; Close calls it.
func (in *inbound) shutdown() {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.closed = true
	calls := make([]*IncomingCall, 0, len(in.calls))
	for _, c := range in.calls {
		calls = append(calls, c)
	}
	in.mu.Unlock()
	for _, c := range calls {
		c.rejectFinal(503, "Service Unavailable")
	}
}

// cancelAnswered answers a CANCEL that matched no INVITE transaction but
// belongs to a call ponte already answered (over TCP or TLS, where the
// transaction ends with the 2xx): 200, and no effect (RFC 3261 §9.2).
func (in *inbound) cancelAnswered(req *sip.Request) bool {
	if in == nil {
		return false
	}
	in.mu.Lock()
	c := in.calls[callKey(req)]
	in.mu.Unlock()
	if c == nil || !sameTransaction(c.req, req) {
		return false
	}
	c.mu.Lock()
	answered := c.state == csAnswered
	c.mu.Unlock()
	return answered
}
