// Package pbx is a PBX simulator for tests and the demo: a sipgo UAS that
// answers INVITEs after a configurable ring (100/180 or 183 early media,
// digest challenge, failure codes), plays a tone (or a delay marker) as
// 20 ms G.711/Opus RTP, measures the audio and RFC 4733 digits it receives,
// and can send digits and hang up. It must not be imported by production code.
package pbx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/internal/impair"
	"github.com/ponte-gw/ponte/sim/audio"
	psip "github.com/ponte-gw/ponte/sip"
)

// Auth holds the digest credentials the simulator demands. It is an alias so
// that Config.Auth also accepts &struct{ Username, Password string }{...}.
type Auth = struct{ Username, Password string }

// Config configures the simulator.
type Config struct {
	Listen        string        // "127.0.0.1:0": UDP, and TCP on the same port
	Codecs        []string      // accepted codecs in preference order (default PCMU)
	DTMFPT        uint8         // its telephone-event PT (default 101)
	AnswerDelay   time.Duration // ring time before the final response
	AnswerCode    int           // 200 (default) or a failure such as 486/603
	EarlyMedia    bool          // 183 with SDP and tone before the 200
	NoProvisional bool          // no 180/183 (sipgo's transaction layer still sends 100 Trying after 200 ms, RFC 3261 §17.2.1)
	ToneHz        float64       // tone it plays (default 1000)
	ToneDBFS      float64       // tone level (default -12)
	EarlyToneHz   float64       // tone during early media (183), if set; else ToneHz
	GreetingHz    float64       // tone for the first GreetingDur after the 200 (the callee's "hello"), if set
	GreetingDur   time.Duration
	Marker        *audio.MarkerSender
	// AnswerAllCodecs answers with every codec of Codecs the offer has (in
	// Codecs order) instead of the first only; the first is sent unless
	// SwitchCodecEvery rotates through them (RFC 3264 §5.1 allows either).
	AnswerAllCodecs  bool
	SwitchCodecEvery time.Duration
	// Ptime is the answer's a=ptime and the duration of the packets it sends
	// (ms; default 20).
	Ptime int
	// From CNAfter for CNFor, it sends RFC 3389 comfort noise (PT 13)
	// instead of audio: one CN packet at the start and then one every
	// CNInterval (default 200 ms), nothing in between (RFC 3389 §4).
	CNAfter, CNFor  time.Duration
	CNInterval      time.Duration
	Silent          bool                                     // send no RTP at all
	SilentAfter     time.Duration                            // stop sending RTP after this long (0 = never)
	ChangeSSRCAfter time.Duration                            // switch to a new SSRC/seq/ts base mid-call (0 = never)
	HangupAfter     time.Duration                            // BYE this long after the answer (0 = never)
	Auth            *Auth                                    // challenge INVITEs with 401 digest
	AuthAlgorithms  []string                                 // challenge algorithms, one header each in preference order (RFC 8760 §2.3; default MD5)
	AuthProxy       bool                                     // challenge with 407 Proxy-Authenticate instead of 401
	ExpectToneHz    float64                                  // tone the Received analyzer expects (default 1000)
	ExpectDBFS      float64                                  // its level (default -12)
	OnAudio         func(c *Call, pcm []int16, at time.Time) // every decoded frame, e.g. for a MarkerReceiver
	Logger          *slog.Logger
	// Load generation (media.go). Replay maps a codec name as the answer has it (PCMU, PCMA,
	// opus) to pre-encoded 20 ms payloads sent round and round instead of encoding the tone
	// live, so the simulator's own CPU stays small (Ptime 20 only). OnSent runs after each
	// replayed frame was written (n counts from 0 over the call; at is the instant just
	// before the write); OnRTP sees every RTP packet received with its socket arrival time.
	Replay map[string][][]byte
	OnSent func(c *Call, n int, at time.Time)
	OnRTP  func(c *Call, h *rtp.Header, at time.Time)

	Secure Secure // H-TLS: TLS listener and SDES-SRTP answers (pbx_tls.go)

	// In-dialog behaviour (dialog.go, H-SIP):
	// SessionExpires (seconds) puts Session-Expires with Refresher ("uac",
	// the default: ponte refreshes; "uas": the simulator would) on the 200
	// (RFC 4028 §9). The simulator never refreshes on its own.
	SessionExpires int
	Refresher      string
	AllowUpdate    bool // the 200's Allow lists UPDATE (ponte then refreshes by UPDATE)
	// DTMFInfo makes SendDTMF send SIP INFO (application/dtmf-relay)
	// instead of RFC 4733 events; NoTelephoneEvent leaves telephone-event
	// out of its SDP, as a PBX without RFC 4733 does.
	DTMFInfo, NoTelephoneEvent bool
	// DTMFInband makes SendDTMF play the digits as ITU-T Q.23 tones in the
	// audio (a PBX without telephone-event or INFO).
	DTMFInband bool
	// Impair degrades each call's RTP socket (both directions unless its
	// Dir says otherwise; impair.go).
	Impair *impair.Model
}

// PBX is a running simulator.
type PBX struct {
	cfg   Config
	log   *slog.Logger
	addr  netip.AddrPort
	ua    *sipgo.UserAgent
	srv   *sipgo.Server
	udp   *net.UDPConn
	tcp   *net.TCPListener
	calls chan *Call
	ctx   context.Context
	stop  context.CancelFunc

	mu     sync.Mutex
	active map[string]*Call // Call-ID + local tag
	nonces map[string]bool
	closed bool
	wg     sync.WaitGroup
}

// ErrClosed is returned by NextCall after Close.
var ErrClosed = errors.New("pbx: closed")

// Start binds UDP and TCP on the same port and serves until Close or ctx ends.
func Start(ctx context.Context, cfg Config) (*PBX, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if len(cfg.Codecs) == 0 {
		cfg.Codecs = []string{"PCMU"}
	}
	if cfg.DTMFPT == 0 {
		cfg.DTMFPT = 101
	}
	if cfg.AnswerCode == 0 {
		cfg.AnswerCode = 200
	}
	if cfg.ToneHz == 0 {
		cfg.ToneHz = 1000
	}
	if cfg.Ptime <= 0 {
		cfg.Ptime = 20
	}
	if cfg.CNInterval <= 0 {
		cfg.CNInterval = 200 * time.Millisecond
	}
	if cfg.ToneDBFS == 0 {
		cfg.ToneDBFS = -12
	}
	if cfg.ExpectToneHz == 0 {
		cfg.ExpectToneHz = 1000
	}
	if cfg.ExpectDBFS == 0 {
		cfg.ExpectDBFS = -12
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &PBX{cfg: cfg, log: log, calls: make(chan *Call, 64), active: map[string]*Call{}, nonces: map[string]bool{}}
	if err := p.bind(); err != nil {
		return nil, err
	}
	var err error
	p.ua, err = sipgo.NewUA(sipgo.WithUserAgent("ponte-pbx-sim"),
		sipgo.WithUserAgenTLSConfig(cfg.Secure.ClientTLS), // H-TLS: for requests it opens over TLS
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(log)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(log)))
	if err != nil {
		p.udp.Close()
		p.tcp.Close()
		return nil, err
	}
	p.srv, _ = sipgo.NewServer(p.ua, sipgo.WithServerLogger(log))
	p.srv.OnInvite(p.onInvite)
	p.srv.OnAck(p.onAck)
	p.srv.OnBye(p.onBye)
	p.srv.OnUpdate(p.onUpdate) // dialog.go
	p.srv.OnInfo(p.onInfo)
	p.srv.OnNotify(p.onNotify) // dialog.go: transfer progress (RFC 3515)
	p.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) { respond(tx, req, 200, "OK", nil) })
	p.srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
	})
	p.ctx, p.stop = context.WithCancel(context.Background())
	p.wg.Add(2)
	go func() { defer p.wg.Done(); _ = p.srv.ServeUDP(p.udp) }()
	go func() { defer p.wg.Done(); _ = p.serveStream() }() // H-TLS: TCP or TLS (pbx_tls.go)
	// Requests we send from the listening socket need it in sipgo's pool.
	pool := p.ua.TransportLayer().Pool("udp")
	for i := 0; i < 2000; i++ {
		if c := pool.Get(p.udp.LocalAddr().String()); c != nil {
			c.TryClose()
			break
		}
		time.Sleep(time.Millisecond)
	}
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-p.ctx.Done():
		}
	}()
	return p, nil
}

func (p *PBX) bind() error {
	ap, err := netip.ParseAddrPort(p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("pbx: listen %q: %w", p.cfg.Listen, err)
	}
	for i := 0; i < 20; i++ {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: port})
		if err != nil {
			u.Close()
			if ap.Port() != 0 {
				return err
			}
			continue // ephemeral UDP port taken on TCP: try another
		}
		p.udp, p.tcp = u, t
		p.addr = netip.AddrPortFrom(ap.Addr(), uint16(port))
		return nil
	}
	return errors.New("pbx: no port free on both UDP and TCP")
}

// Addr is the SIP address (UDP and TCP).
func (p *PBX) Addr() netip.AddrPort { return p.addr }

// Close ends every call (no signalling), stops serving and waits.
func (p *PBX) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	calls := make([]*Call, 0, len(p.active))
	for _, c := range p.active {
		calls = append(calls, c)
	}
	p.mu.Unlock()
	p.stop()
	for _, c := range calls {
		c.end("local", "")
	}
	p.udp.Close()
	p.tcp.Close()
	err := p.ua.Close()
	p.wg.Wait()
	// sipgo may open a socket after Close to answer a message that was read
	// just before (its handler goroutines are untracked): close those too.
	for i := 0; i < 10; i++ {
		time.Sleep(5 * time.Millisecond)
		for _, n := range []string{"udp", "tcp", "tls"} { // H-TLS: tls
			if pool := p.ua.TransportLayer().Pool(n); pool != nil && pool.Size() > 0 {
				_ = pool.Clear()
			}
		}
	}
	return err
}

// NextCall waits for the next accepted INVITE (after any digest challenge).
func (p *PBX) NextCall(ctx context.Context) (*Call, error) {
	select {
	case c := <-p.calls:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.ctx.Done():
		return nil, ErrClosed
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, body []byte, hdrs ...sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
	return res
}

func (p *PBX) track(c *Call) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.active[c.callID+"\x00"+c.localTag] = c
	return true
}

func (p *PBX) untrack(c *Call) {
	p.mu.Lock()
	delete(p.active, c.callID+"\x00"+c.localTag)
	p.mu.Unlock()
}

// find matches an in-dialog request: its To tag is our local tag (the To
// tag we gave an answered call, the From tag of a call we placed).
func (p *PBX) find(req *sip.Request) *Call {
	if req.CallID() == nil || req.To() == nil {
		return nil
	}
	tag, _ := req.To().Params.Get("tag")
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active[req.CallID().Value()+"\x00"+tag]
}

// authorized checks the INVITE's digest credentials (RFC 3261 §22.2) and
// challenges with a fresh nonce if they are missing or wrong.
func (p *PBX) authorized(req *sip.Request, tx sip.ServerTransaction) bool {
	a := p.cfg.Auth
	if a == nil {
		return true
	}
	algs := p.cfg.AuthAlgorithms
	if len(algs) == 0 {
		algs = []string{"MD5"}
	}
	chName, crName, code, reason := "WWW-Authenticate", "Authorization", 401, "Unauthorized"
	if p.cfg.AuthProxy {
		chName, crName, code, reason = "Proxy-Authenticate", "Proxy-Authorization", 407, "Proxy Authentication Required"
	}
	if h := req.GetHeader(crName); h != nil {
		cred, err := digest.ParseCredentials(h.Value())
		p.mu.Lock()
		known := err == nil && p.nonces[cred.Nonce]
		p.mu.Unlock()
		offered := false
		for _, alg := range algs {
			got := "MD5" // no algorithm parameter means MD5 (RFC 7616 §3.3)
			if err == nil && cred.Algorithm != "" {
				got = cred.Algorithm
			}
			offered = offered || (err == nil && strings.EqualFold(alg, got))
		}
		if known && offered && cred.Username == a.Username && cred.URI == req.Recipient.String() {
			chal := &digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Algorithm: cred.Algorithm, Opaque: cred.Opaque}
			if cred.QOP != "" {
				chal.QOP = []string{cred.QOP}
			}
			want, err := digest.Digest(chal, digest.Options{
				Method: string(req.Method), URI: cred.URI, Username: a.Username, Password: a.Password,
				Cnonce: cred.Cnonce, Count: cred.Nc,
			})
			if err == nil && want.Response == cred.Response {
				return true
			}
		}
	}
	nonce := randHex(16)
	p.mu.Lock()
	p.nonces[nonce] = true
	p.mu.Unlock()
	var hdrs []sip.Header
	for _, alg := range algs {
		chal := &digest.Challenge{Realm: "ponte-sim", Nonce: nonce, Algorithm: alg, QOP: []string{"auth"}}
		hdrs = append(hdrs, sip.NewHeader(chName, chal.String()))
	}
	respond(tx, req, code, reason, nil, hdrs...)
	return false
}

func (p *PBX) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To() != nil && req.To().Params.Has("tag") {
		// Re-INVITE from ponte (a session refresh): answered from the
		// call's codecs, nothing else changes (dialog.go).
		if c := p.find(req); c != nil {
			c.answerInDialog(req, tx)
			return
		}
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	if !p.authorized(req, tx) {
		return
	}
	c, code := p.newCall(req)
	if c == nil {
		respond(tx, req, code, "Not Acceptable Here", nil)
		return
	}
	if !p.track(c) {
		c.closeMedia()
		respond(tx, req, 503, "Service Unavailable", nil)
		return
	}
	select {
	case p.calls <- c:
	default:
		p.log.Warn("pbx: NextCall queue full, call not delivered", "call_id", c.callID)
	}
	c.ring(tx)
}

func (p *PBX) onAck(req *sip.Request, _ sip.ServerTransaction) {
	if c := p.find(req); c != nil {
		c.acked()
	}
}

func (p *PBX) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := p.find(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		return
	}
	respond(tx, req, 200, "OK", nil)
	reason := ""
	if h := req.GetHeader("Reason"); h != nil {
		reason = h.Value()
	}
	c.end("bye", reason)
}

// newCall negotiates the offer and binds the call's RTP socket; on failure
// it returns the SIP code to answer.
func (p *PBX) newCall(req *sip.Request) (*Call, int) {
	offer, err := psip.ParseSDP(req.Body())
	if err != nil {
		return nil, 488
	}
	codec, ok := offer.Negotiate(p.cfg.Codecs)
	if !ok {
		return nil, 488
	}
	c, err := newCall(p, req, offer, codec)
	if err != nil {
		p.log.Warn("pbx: call setup", "err", err)
		return nil, 500
	}
	if code := c.setupSRTP(); code != 0 { // H-TLS: SDES answer policy (pbx_tls.go)
		c.closeMedia()
		return nil, code
	}
	return c, 0
}
