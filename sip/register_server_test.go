package sip_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sipgoua "github.com/emiago/sipgo"
	sipgo "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// regServer is an in-process registrar (a sipgo server on loopback UDP and
// TCP) that challenges every REGISTER without valid credentials with 401,
// grants short bindings and records what it got. Its sockets count the
// keep-alives (CRLF-only reads) ponte sends.
type regServer struct {
	t   *testing.T
	ua  *sipgoua.UserAgent
	srv *sipgoua.Server
	udp *kaPacketConn
	tcp *kaListener
	tls *kaListener // serveTLS
	pki *pbx.PKI
	wg  sync.WaitGroup

	user, pass, realm string

	mu         sync.Mutex
	alg        string     // challenge algorithm: "MD5" (default) or "SHA-256"
	noQOP      bool       // RFC 2069-style challenge without qop
	grant      int        // seconds granted to each binding
	minExpires int        // 423 below this (0: none)
	script     []scripted // answers to the next authenticated REGISTERs instead of 200
	received   string     // overrides Via received/rport in answers (fake NAT)
	rport      int
	rportStep  int // added to rport after each 200 (a NAT that keeps remapping)
	nonces     map[string]bool
	recs       []regRec
}

// scripted is a failure answer with an optional Retry-After.
type scripted struct {
	code       int
	retryAfter string
}

// regRec is one REGISTER as the registrar saw it, and its answer.
type regRec struct {
	at      time.Time
	req     *sipgo.Request
	authed  bool   // carried credentials that verified
	authErr string // why credentials did not verify
	code    int
}

func (r regRec) expires() int {
	if h := r.req.GetHeader("Expires"); h != nil {
		n, _ := strconv.Atoi(h.Value())
		return n
	}
	return -1
}

func newRegServer(t *testing.T) *regServer {
	t.Helper()
	s := &regServer{t: t, user: "ponte", pass: "s3cret", realm: "pbx.test", grant: 2, nonces: map[string]bool{}}
	ua, err := sipgoua.NewUA(sipgoua.WithUserAgent("test-registrar"))
	if err != nil {
		t.Fatal(err)
	}
	s.ua = ua
	srv, err := sipgoua.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	srv.OnRegister(s.handle)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.udp = &kaPacketConn{PacketConn: pc, n: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.tcp = &kaListener{Listener: ln}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); _ = srv.ServeUDP(s.udp) }()
	go func() { defer s.wg.Done(); _ = srv.ServeTCP(s.tcp) }()
	t.Cleanup(func() {
		s.udp.Close()
		s.tcp.Close()
		s.tcp.closeConns()
		if s.tls != nil {
			s.tls.Close()
			s.tls.closeConns()
		}
		ua.Close()
		s.wg.Wait()
	})
	return s
}

// serveTLS adds a TLS listener with a certificate from pki; keep-alives
// are counted above TLS, in the clear.
func (s *regServer) serveTLS(pki *pbx.PKI) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.ServerPair}}
	s.pki, s.tls = pki, &kaListener{Listener: tls.NewListener(ln, conf)}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.srv.ServeTLS(s.tls) }()
}

// set changes the registrar's behaviour (under its lock: its handler runs
// in sipgo's goroutines).
func (s *regServer) set(f func(*regServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *regServer) addr(transport string) string {
	switch transport {
	case "tcp":
		return s.tcp.Addr().String()
	case "tls":
		return s.tls.Addr().String()
	}
	return s.udp.LocalAddr().String()
}

func (s *regServer) records() []regRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]regRec(nil), s.recs...)
}

// authed is the REGISTERs that carried valid credentials.
func (s *regServer) authed() []regRec {
	var out []regRec
	for _, r := range s.records() {
		if r.authed {
			out = append(out, r)
		}
	}
	return out
}

func (s *regServer) handle(req *sipgo.Request, tx sipgo.ServerTransaction) {
	s.mu.Lock()
	rec := regRec{at: time.Now(), req: req.Clone()}
	var res *sipgo.Response
	if h := req.GetHeader("Authorization"); h != nil {
		rec.authErr = s.verifyLocked(req, h.Value())
		rec.authed = rec.authErr == ""
	}
	exp := -1
	if h := req.GetHeader("Expires"); h != nil {
		exp, _ = strconv.Atoi(h.Value())
	}
	switch {
	case !rec.authed:
		res = sipgo.NewResponseFromRequest(req, 401, "Unauthorized", nil)
		nonce := fmt.Sprintf("n%d-%d", len(s.nonces), time.Now().UnixNano())
		s.nonces[nonce] = true
		ch := fmt.Sprintf(`Digest realm="%s", nonce="%s"`, s.realm, nonce)
		if !s.noQOP {
			ch += `, qop="auth"`
		}
		if s.alg != "" {
			ch += ", algorithm=" + s.alg
		}
		res.AppendHeader(sipgo.NewHeader("WWW-Authenticate", ch))
	case len(s.script) > 0:
		sc := s.script[0]
		s.script = s.script[1:]
		res = sipgo.NewResponseFromRequest(req, sc.code, "Scripted", nil)
		if sc.retryAfter != "" {
			res.AppendHeader(sipgo.NewHeader("Retry-After", sc.retryAfter))
		}
	case exp > 0 && exp < s.minExpires:
		res = sipgo.NewResponseFromRequest(req, 423, "Interval Too Brief", nil)
		res.AppendHeader(sipgo.NewHeader("Min-Expires", strconv.Itoa(s.minExpires)))
	default:
		res = sipgo.NewResponseFromRequest(req, 200, "OK", nil)
		// Every current binding of the AOR, each with its own expires
		// (RFC 3261 §10.3 step 8); the Expires header differs on purpose:
		// the Contact's parameter is what counts.
		for _, h := range req.GetHeaders("Contact") {
			c := h.(*sipgo.ContactHeader)
			if v, _ := c.Params.Get("expires"); v == "0" || exp == 0 {
				continue
			}
			res.AppendHeader(sipgo.NewHeader("Contact", fmt.Sprintf("<%s>;expires=%d", c.Address.String(), min(exp, s.grant))))
		}
		res.AppendHeader(sipgo.NewHeader("Contact", "<sip:other@192.0.2.1:5060>;expires=3600"))
		res.AppendHeader(sipgo.NewHeader("Expires", "3600"))
	}
	if s.received != "" {
		res.Via().Params.Add("received", s.received)
		res.Via().Params.Add("rport", strconv.Itoa(s.rport))
	}
	if res.StatusCode == 200 {
		s.rport += s.rportStep
	}
	rec.code = res.StatusCode
	s.recs = append(s.recs, rec)
	s.mu.Unlock()
	if err := tx.Respond(res); err != nil {
		s.t.Logf("registrar: respond: %v", err)
	}
}

// verifyLocked checks an Authorization value against RFC 2617/7616 digest,
// computed here independently of the client's library.
func (s *regServer) verifyLocked(req *sipgo.Request, v string) string {
	c, err := digest.ParseCredentials(v)
	if err != nil {
		return err.Error()
	}
	switch {
	case c.Username != s.user:
		return "username " + c.Username
	case c.Realm != s.realm:
		return "realm " + c.Realm
	case !s.nonces[c.Nonce]:
		return "unknown nonce " + c.Nonce
	case c.URI != req.Recipient.String():
		return fmt.Sprintf("uri %q, Request-URI %q", c.URI, req.Recipient.String())
	case !strings.EqualFold(c.Algorithm, s.alg) && !(s.alg == "" && (c.Algorithm == "" || strings.EqualFold(c.Algorithm, "MD5"))):
		return "algorithm " + c.Algorithm
	}
	qop, nc := "", ""
	if !s.noQOP {
		if c.QOP != "auth" || c.Cnonce == "" || c.Nc < 1 {
			return fmt.Sprintf("qop %q cnonce %q nc %d", c.QOP, c.Cnonce, c.Nc)
		}
		qop, nc = c.QOP, fmt.Sprintf("%08x", c.Nc)
	}
	want := digestResponse(s.alg, s.user, s.realm, s.pass, string(req.Method), c.URI, c.Nonce, nc, c.Cnonce, qop)
	if c.Response != want {
		return fmt.Sprintf("response %s, want %s", c.Response, want)
	}
	delete(s.nonces, c.Nonce) // one use: a replay is refused
	return ""
}

// digestResponse is RFC 7616 §3.4.1 (RFC 2617 §3.2.2 for MD5; no qop:
// RFC 2069).
func digestResponse(alg, user, realm, pass, method, uri, nonce, nc, cnonce, qop string) string {
	h := func(s string) string {
		if strings.EqualFold(alg, "SHA-256") {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		}
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	ha1, ha2 := h(user+":"+realm+":"+pass), h(method+":"+uri)
	if qop == "" {
		return h(ha1 + ":" + nonce + ":" + ha2)
	}
	return h(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":" + qop + ":" + ha2)
}

func isCRLF(b []byte) bool { return len(b) > 0 && len(bytes.Trim(b, "\r\n")) == 0 }

// kaPacketConn counts CRLF-only datagrams per source.
type kaPacketConn struct {
	net.PacketConn
	mu sync.Mutex
	n  map[string]int
}

func (c *kaPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil && isCRLF(b[:n]) {
		c.mu.Lock()
		c.n[a.String()]++
		c.mu.Unlock()
	}
	return n, a, err
}

func (c *kaPacketConn) count(from string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[from]
}

// kaListener counts CRLF-only reads on accepted connections and can drop
// them all (a registrar restart, a NAT losing the mapping).
type kaListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int
}

func (l *kaListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	return &kaConn{Conn: c, l: l}, nil
}

func (l *kaListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *kaListener) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

type kaConn struct {
	net.Conn
	l *kaListener
}

func (c *kaConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && isCRLF(b[:n]) {
		c.l.mu.Lock()
		c.l.n++
		c.l.mu.Unlock()
	}
	return n, err
}

// waitStatus polls the registrar's status until cond holds.
func waitStatus(t *testing.T, r *sip.Registrar, d time.Duration, what string, cond func(sip.RegStatus) bool) sip.RegStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := r.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; status %+v", what, d, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func regTrunk(s *regServer, transport string) *sip.Trunk {
	t := &sip.Trunk{Name: "cloud", Address: s.addr(transport), Transport: transport, Username: s.user, Password: s.pass}
	if transport == "tls" {
		t.TLS = &sip.TLSConfig{CAFile: s.pki.CAFile}
	}
	return t
}

func closeReg(t *testing.T, r *sip.Registrar) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// statusLog records OnChange calls.
type statusLog struct {
	mu  sync.Mutex
	all []sip.RegStatus
}

func (l *statusLog) add(st sip.RegStatus) {
	l.mu.Lock()
	l.all = append(l.all, st)
	l.mu.Unlock()
}

func (l *statusLog) list() []sip.RegStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sip.RegStatus(nil), l.all...)
}

// contactsOf renders a REGISTER's Contacts as "uri[;expires=N]".
func contactsOf(req *sipgo.Request) []string {
	var out []string
	for _, h := range req.GetHeaders("Contact") {
		c := h.(*sipgo.ContactHeader)
		v := c.Address.String()
		if e, ok := c.Params.Get("expires"); ok {
			v += ";expires=" + e
		}
		out = append(out, v)
	}
	return out
}
