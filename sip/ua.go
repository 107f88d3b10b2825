// Package sip is ponte's SIP leg: a sipgo user agent that places outbound
// calls to PBX trunks (UAC dialogs with digest auth, CANCEL and BYE), takes
// PBX-originated calls (SetServer: trunk and digest checks, UAS dialogs),
// answers OPTIONS, and owns plain RTP/AVP sessions with RTCP. It knows
// nothing about WhatsApp.
package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// UA errors.
var (
	ErrNotStarted = errors.New("sip: user agent not started")
	ErrClosed     = errors.New("sip: user agent closed")
	ErrConfig     = errors.New("sip: invalid config")
)

// allowMethods is what we accept (RFC 3261 §20.5 Allow).
const allowMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER"

// Config configures a UA.
type Config struct {
	Listen        []string // "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060" (port 0 allowed)
	AdvertiseHost string   // host put in Via/Contact (and SDP c= when RTPHost is unspecified)
	RTPHost       string   // local IP to bind RTP sockets and put in SDP c=
	RTPPortMin    int
	RTPPortMax    int
	UserAgent     string
	Logger        *slog.Logger

	MaxHeaderValue int           // cap for untrusted header values, default 256
	RTCPInterval   time.Duration // default 5 s (RFC 3550 §6.2)

	// SessionExpires is the session interval ponte asks for on its INVITEs
	// (RFC 4028 §7.1); default DefaultSessionExpires, negative: ask none
	// (Supported: timer is sent either way, and a PBX may still impose one).
	SessionExpires time.Duration
	// MinSE is the smallest interval ponte accepts in a PBX's re-INVITE or
	// UPDATE (smaller gets 422, RFC 4028 §9); default DefaultMinSE (90 s,
	// RFC 4028 §4). Tests may lower it.
	MinSE time.Duration

	TLSCertFile, TLSKeyFile string // H-TLS: certificate for "tls:" listeners (tls.go)
}

// InviteHandler handles an out-of-dialog INVITE (PBX-originated calls).
type InviteHandler func(req *sip.Request, tx sip.ServerTransaction)

type listener struct {
	transport string // "udp" | "tcp"
	addr      netip.AddrPort
	closer    io.Closer
}

// UA is one SIP user agent: listeners, the dialogs it placed, RTP ports.
type UA struct {
	cfg       Config
	log       *slog.Logger
	rtpHost   netip.Addr // bind address for RTP
	sdpHost   netip.Addr // address advertised in SDP c=
	advertise string
	ports     *portPool
	ua        *sipgo.UserAgent
	srv       *sipgo.Server

	mu        sync.Mutex
	listeners []listener
	dialogs   map[string]*Dialog
	onInvite  InviteHandler
	inbound   *inbound // H-UAS: SetServer's SIP server (server.go)
	started   bool
	closed    bool
	closing   chan struct{}
	ctx       context.Context // cancelled by Close; parent of background signalling
	cancel    context.CancelFunc
	tlsc      *tlsClient                  // H-TLS: per-trunk TLS connections (tls.go)
	sec       security                    // H-SIPSEC: bans, scanner filter, TLS certificate reload (ban.go, scanner.go, tls.go)
	panics    atomic.Uint64               // request handler panics recovered (guard.go)
	recovered map[string]*recoveredInvite // INVITEs cancelled from a state, by branch (recover_cancel.go)
	wg        sync.WaitGroup
}

// NewUA validates cfg and builds the sipgo stack; nothing is bound until Start.
func NewUA(cfg Config) (*UA, error) {
	if len(cfg.Listen) == 0 {
		return nil, fmt.Errorf("%w: no listen address", ErrConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "ponte"
	}
	if cfg.MaxHeaderValue <= 0 {
		cfg.MaxHeaderValue = DefaultMaxHeaderValue
	}
	if cfg.RTCPInterval <= 0 {
		cfg.RTCPInterval = DefaultRTCPInterval
	}
	if cfg.SessionExpires == 0 {
		cfg.SessionExpires = DefaultSessionExpires
	}
	if cfg.MinSE <= 0 {
		cfg.MinSE = DefaultMinSE
	}
	u := &UA{
		cfg:     cfg,
		log:     log,
		dialogs: map[string]*Dialog{},
		closing: make(chan struct{}),
		ports:   newPortPool(cfg.RTPPortMin, cfg.RTPPortMax),
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	// Work out the advertised host and RTP addresses from the first listener
	// when they are not given.
	_, first, err := parseListen(cfg.Listen[0])
	if err != nil {
		return nil, err
	}
	u.advertise = cfg.AdvertiseHost
	if u.advertise == "" {
		if first.Addr().IsUnspecified() {
			return nil, fmt.Errorf("%w: AdvertiseHost required when listening on %s", ErrConfig, first)
		}
		u.advertise = first.Addr().String()
	}
	switch {
	case cfg.RTPHost != "":
		a, err := netip.ParseAddr(cfg.RTPHost)
		if err != nil {
			return nil, fmt.Errorf("%w: RTPHost %q: %v", ErrConfig, cfg.RTPHost, err)
		}
		u.rtpHost = a
	default:
		u.rtpHost = first.Addr()
	}
	u.sdpHost = u.rtpHost
	if u.sdpHost.IsUnspecified() {
		a, err := netip.ParseAddr(u.advertise)
		if err != nil {
			return nil, fmt.Errorf("%w: RTPHost is unspecified and AdvertiseHost %q is not an IP", ErrConfig, u.advertise)
		}
		u.sdpHost = a
	}
	u.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(cfg.UserAgent),
		sipgo.WithUserAgentHostname(u.advertise),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(log),
			sip.WithTransactionLayerUnhandledResponseHandler(u.unhandledResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(log),
			sip.WithTransportLayerReadFilter(u.sec.readFilter)), // H-SIPSEC: banned sources dropped before parsing (ban.go)
	)
	if err != nil {
		return nil, err
	}
	u.srv, err = sipgo.NewServer(u.ua, sipgo.WithServerLogger(log))
	if err != nil {
		u.ua.Close()
		return nil, err
	}
	routes, other := u.routes() // guard.go: every handler recovers its panics
	for m, h := range routes {
		u.srv.OnRequest(m, h)
	}
	u.srv.OnNoRoute(other)
	return u, nil
}

func parseListen(s string) (string, netip.AddrPort, error) {
	tr, hp, ok := strings.Cut(s, ":")
	if !ok || (tr != "udp" && tr != "tcp" && tr != "tls") { // H-TLS: tls
		tr, hp = "udp", s
	}
	ap, err := netip.ParseAddrPort(hp)
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("%w: listen %q: %v", ErrConfig, s, err)
	}
	return tr, ap, nil
}

// OnInvite sets the handler for out-of-dialog INVITEs; without one they get
// 501 Not Implemented. SetServer, once called, takes precedence.
func (u *UA) OnInvite(h InviteHandler) {
	u.mu.Lock()
	u.onInvite = h
	u.mu.Unlock()
}

// Start binds every listener and serves them; it returns once all are bound.
// Cancelling ctx closes the UA.
func (u *UA) Start(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	if u.started {
		return nil
	}
	for _, l := range u.cfg.Listen {
		tr, ap, err := parseListen(l)
		if err != nil {
			u.closeListenersLocked()
			return err
		}
		switch tr {
		case "udp":
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				u.closeListenersLocked()
				return fmt.Errorf("sip: listen %s: %w", l, err)
			}
			bound := c.LocalAddr().(*net.UDPAddr).AddrPort()
			u.listeners = append(u.listeners, listener{"udp", unmapAP(bound), c})
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				_ = u.srv.ServeUDP(c)
			}()
			u.waitUDPServing(c.LocalAddr().String())
		case "tls": // H-TLS (tls.go)
			if err := u.listenTLS(l, ap); err != nil {
				u.closeListenersLocked()
				return err
			}
		case "tcp":
			c, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
			if err != nil {
				u.closeListenersLocked()
				return fmt.Errorf("sip: listen %s: %w", l, err)
			}
			bound := c.Addr().(*net.TCPAddr).AddrPort()
			u.listeners = append(u.listeners, listener{"tcp", unmapAP(bound), c})
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				_ = u.srv.ServeTCP(c)
			}()
		}
	}
	u.started = true
	// Not in wg: it may call Close, which waits on wg.
	go func() {
		select {
		case <-ctx.Done():
			u.Close()
		case <-u.closing:
		}
	}()
	return nil
}

// waitUDPServing waits until sipgo has registered the UDP listener in its
// connection pool: requests we send from the listening socket (Laddr) look
// it up there, and would otherwise try to bind the port a second time.
func (u *UA) waitUDPServing(addr string) {
	pool := u.ua.TransportLayer().Pool("udp")
	for i := 0; i < 2000; i++ {
		if c := pool.Get(addr); c != nil {
			_, _ = c.TryClose() // Get took a reference
			return
		}
		time.Sleep(time.Millisecond)
	}
	u.log.Warn("sip: UDP listener not registered in time", "addr", addr)
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (u *UA) closeListenersLocked() {
	for _, l := range u.listeners {
		l.closer.Close()
	}
}

// ListenAddr is the bound address of the first listener of transport
// ("udp"/"tcp"); zero if none.
func (u *UA) ListenAddr(transport string) netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, l := range u.listeners {
		if strings.EqualFold(l.transport, transport) {
			return l.addr
		}
	}
	return netip.AddrPort{}
}

// Close ends every dialog without signalling (the gateway BYEs first),
// closes the listeners and the sipgo stack, and waits for all goroutines.
func (u *UA) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	close(u.closing)
	dialogs := make([]*Dialog, 0, len(u.dialogs))
	for _, d := range u.dialogs {
		dialogs = append(dialogs, d)
	}
	in := u.inbound
	u.mu.Unlock()
	in.shutdown() // H-UAS: 503 to unanswered PBX INVITEs while the listeners can still send it
	u.mu.Lock()
	u.closeListenersLocked()
	u.mu.Unlock()
	u.cancel()
	for _, d := range dialogs {
		d.end(ErrClosed, false, "")
	}
	err := u.ua.Close()
	u.wg.Wait()
	reapLateConns(u.ua.TransportLayer())
	return err
}

// reapLateConns closes connections sipgo opens after Close: messages read
// just before the listeners closed are handled in untracked goroutines, and
// a response to one of them opens a fresh socket once the listener has left
// the pool. Those handlers take microseconds, so a short watch suffices.
func reapLateConns(tp *sip.TransportLayer) {
	for i := 0; i < 10; i++ {
		time.Sleep(5 * time.Millisecond)
		for _, n := range []string{"udp", "tcp", "tls"} { // H-TLS: tls
			if p := tp.Pool(n); p != nil && p.Size() > 0 {
				_ = p.Clear()
			}
		}
	}
}

func dialogKey(callID, localTag string) string { return callID + "\x00" + localTag }

func (u *UA) addDialog(d *Dialog) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	u.dialogs[dialogKey(d.callID, d.localTag)] = d
	return nil
}

func (u *UA) removeDialog(d *Dialog) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := dialogKey(d.callID, d.localTag)
	if u.dialogs[k] == d {
		delete(u.dialogs, k)
	}
}

// findDialog matches an in-dialog request from the PBX: its To tag is our
// local tag and its From tag the remote one (RFC 3261 §12.2.2).
func (u *UA) findDialog(req *sip.Request) *Dialog {
	cid, to, from := req.CallID(), req.To(), req.From()
	if cid == nil || to == nil || from == nil {
		return nil
	}
	lt, _ := to.Params.Get("tag")
	u.mu.Lock()
	d := u.dialogs[dialogKey(cid.Value(), lt)]
	u.mu.Unlock()
	if d == nil {
		return nil
	}
	rt, _ := from.Params.Get("tag")
	if !d.matchRemoteTag(rt) {
		return nil
	}
	return d
}

// listenerFor returns the listener used to send requests on transport.
func (u *UA) listenerFor(transport string) (netip.AddrPort, bool) {
	ap := u.ListenAddr(transport)
	return ap, ap.IsValid()
}

func (u *UA) unhandledResponse(res *sip.Response) {
	if u.ackRecovered(res) {
		return
	}
	// A 2xx for our INVITE that no transaction matches (after Timer M, or
	// from a UAS that changed the Via) is still ACKed, and BYEd if it is
	// another fork's (RFC 3261 §13.2.2.4); one that overtakes the first
	// 2xx's handling waits for it (late2xx).
	if res.IsSuccess() && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE && res.From() != nil && res.To() != nil {
		lt, _ := res.From().Params.Get("tag")
		u.mu.Lock()
		d := u.dialogs[dialogKey(callIDOf(res), lt)]
		u.mu.Unlock()
		if d != nil {
			d.mu.Lock()
			ours := d.role == roleUAC && res.CSeq().SeqNo == d.inviteCSeq
			d.mu.Unlock()
			if ours {
				d.late2xx(res)
				return
			}
		}
	}
	u.log.Debug("sip: unmatched response", "status", res.StatusCode, "call_id", callIDOf(res))
}

func callIDOf(m sip.Message) string {
	if c := m.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

// respond sends a response built from req with optional extra headers.
func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, body []byte, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		sip.DefaultLogger().Debug("sip: respond failed", "code", code, "err", err)
	}
}

// handleOptions answers OPTIONS with our capabilities (RFC 3261 §11.2):
// trunks use it as a keepalive / health probe.
func (u *UA) handleOptions(req *sip.Request, tx sip.ServerTransaction) {
	respond(tx, req, 200, "OK", nil,
		sip.NewHeader("Allow", allowMethods),
		sip.NewHeader("Accept", "application/sdp"),
		sip.NewHeader("Supported", supportedHeader),
		sip.NewHeader("Server", u.cfg.UserAgent),
	)
}

func (u *UA) handleInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		d := u.findDialog(req)
		if d == nil {
			respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
			return
		}
		d.handleReinvite(req, tx)
		return
	}
	u.mu.Lock()
	h, in := u.onInvite, u.inbound
	u.mu.Unlock()
	if in != nil { // H-UAS: PBX-originated calls (server.go)
		in.serveInvite(req, tx)
		return
	}
	if h == nil {
		respond(tx, req, 501, "Not Implemented", nil)
		return
	}
	h(req, tx)
}

func (u *UA) handleBye(req *sip.Request, tx sip.ServerTransaction) {
	d := u.findDialog(req)
	if d == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	if bad := unsupportedTags(req); len(bad) > 0 { // RFC 3261 §8.2.2.3
		respond(tx, req, 420, "Bad Extension", nil, sip.NewHeader("Unsupported", strings.Join(bad, ", ")))
		return
	}
	respond(tx, req, 200, "OK", nil)
	reason := ""
	if h := req.GetHeader("Reason"); h != nil {
		reason = h.Value()
	}
	d.end(nil, true, reason)
}

// inDialogHandler routes an in-dialog request to its dialog, 481 if none.
func (u *UA) inDialogHandler(f func(*Dialog, *sip.Request, sip.ServerTransaction)) func(*sip.Request, sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		d := u.findDialog(req)
		if d == nil {
			respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
			return
		}
		f(d, req, tx)
	}
}

func (u *UA) handleInfo(req *sip.Request, tx sip.ServerTransaction) {
	u.inDialogHandler((*Dialog).handleInfo)(req, tx)
}

func (u *UA) handleRefer(req *sip.Request, tx sip.ServerTransaction) {
	u.inDialogHandler((*Dialog).handleRefer)(req, tx)
}

func (u *UA) handleUpdate(req *sip.Request, tx sip.ServerTransaction) {
	u.inDialogHandler((*Dialog).handleUpdate)(req, tx)
}

// handleAck passes the ACK of our 2xx to a PBX re-INVITE to its dialog.
// ACKs need no response.
func (u *UA) handleAck(req *sip.Request, _ sip.ServerTransaction) {
	if d := u.findDialog(req); d != nil {
		d.handleAck(req)
	}
}
