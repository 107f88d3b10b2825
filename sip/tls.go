package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ErrTLS wraps TLS setup and handshake failures toward a trunk.
var ErrTLS = errors.New("sip: tls")

// TLSConfig is a trunk's client-side TLS (SIP over TLS, RFC 3261 §26.2.1).
// The zero value verifies the PBX against the system roots with the trunk
// host as server name.
type TLSConfig struct {
	CAFile     string // PEM bundle trusted for this trunk instead of the system roots
	CertFile   string // optional client certificate (PEM), for PBXs that demand mutual TLS
	KeyFile    string
	ServerName string // SNI and verified name; default the trunk host (an IP: no SNI, IP SAN verified)
	// InsecureSkipVerify accepts any certificate. Test setups only: the
	// call is then open to a man in the middle, and with it the SDES keys.
	InsecureSkipVerify bool
	// ALPN protocols; none by default, since some SIP servers abort the
	// handshake on an ALPN id they do not know (e.g. "sip").
	ALPN []string
}

// tlsDialTimeout bounds connect + handshake when the caller's context does not.
const tlsDialTimeout = 10 * time.Second

// ClientConfig builds the crypto/tls client configuration for host (the
// trunk's host, used when ServerName is empty). Files are read on each call
// so that rotated certificates are picked up on the next connection.
func (c *TLSConfig) ClientConfig(host string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c == nil {
		conf.ServerName = host
		return conf, nil
	}
	conf.ServerName = c.ServerName
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	conf.InsecureSkipVerify = c.InsecureSkipVerify
	if len(c.ALPN) > 0 {
		conf.NextProtos = append([]string(nil), c.ALPN...)
	}
	if c.CAFile != "" {
		pool, err := LoadCertPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("%w: cert_file and key_file go together", ErrTLS)
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrTLS, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// LoadCertPool reads a PEM bundle of CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: ca_file: %v", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: ca_file %s: no PEM certificate in it", ErrTLS, file)
	}
	return pool, nil
}

// serverTLSConfig is the configuration of tls: listeners (RFC 3261 §26.3.1:
// the server presents a certificate for its host). Client certificates are
// not requested: PBXs authenticate to ponte by digest or IP, as over TCP.
// The certificate comes from GetCertificate, which reloads the files when
// they change (H-SIPSEC, issue 8: renewal without restart, see certStore).
func (u *UA) serverTLSConfig() (*tls.Config, error) {
	if u.cfg.TLSCertFile == "" || u.cfg.TLSKeyFile == "" {
		return nil, fmt.Errorf("%w: a tls: listener needs TLSCertFile and TLSKeyFile", ErrConfig)
	}
	if err := u.sec.certs.open(u.cfg.TLSCertFile, u.cfg.TLSKeyFile, u.log); err != nil {
		return nil, fmt.Errorf("%w: tls certificate: %v", ErrConfig, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: u.sec.certs.get}, nil
}

// ReloadCertificates re-reads the tls: listeners' certificate and key now
// (for SIGHUP), whether or not the files look changed. On error the
// certificate in use stays and the error is returned; without a tls:
// listener there is nothing to reload and it returns nil.
func (u *UA) ReloadCertificates() error {
	return u.sec.certs.reload(true)
}

// listenTLS binds a tls: listener and serves it; Start calls it with u.mu
// held.
func (u *UA) listenTLS(spec string, ap netip.AddrPort) error {
	conf, err := u.serverTLSConfig()
	if err != nil {
		return err
	}
	c, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("sip: listen %s: %w", spec, err)
	}
	bound := c.Addr().(*net.TCPAddr).AddrPort()
	// H-SIPSEC: a banned source is turned away at accept, before the
	// handshake costs anything.
	ln := tls.NewListener(&banListener{Listener: c, sec: &u.sec}, conf)
	u.listeners = append(u.listeners, listener{"tls", unmapAP(bound), ln})
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		_ = u.srv.ServeTLS(ln)
	}()
	return nil
}

// tlsClient hands connections ponte dialed itself, with each trunk's own
// TLS settings, to sipgo. sipgo's TLS transport has one client tls.Config
// for the whole user agent; per-trunk CAs, client certificates, SNI and
// ALPN need a connection made here. sipgo then finds it in its pool by the
// remote address (connection reuse, RFC 5923's model) for the INVITE and
// every later request and response of the dialog.
type tlsClient struct {
	ln *dialListener

	mu    sync.Mutex
	dials map[string]*sync.Mutex // one dial at a time per destination
}

// tlsClientLocked returns the UA's TLS client, starting it on first use;
// the caller holds u.mu.
func (u *UA) tlsClientLocked() (*tlsClient, error) {
	if u.tlsc != nil {
		return u.tlsc, nil
	}
	if u.closed {
		return nil, ErrClosed
	}
	ln := newDialListener()
	u.tlsc = &tlsClient{ln: ln, dials: map[string]*sync.Mutex{}}
	// Listed so Close closes it; "tls-dial" never matches ListenAddr("tls").
	u.listeners = append(u.listeners, listener{"tls-dial", netip.AddrPort{}, ln})
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		_ = u.srv.ServeTLS(ln)
	}()
	return u.tlsc, nil
}

// dialTLS makes sure a TLS connection to the trunk exists, made with the
// trunk's TLSConfig, and returns lap, the tls: listener advertised in Via
// and Contact. A tls: listener is required: PBXs send in-dialog requests
// (BYE, re-INVITE) to the Contact over a connection of their own as often
// as they reuse ponte's (RFC 3261 §18.2.2, RFC 5923), and an ephemeral
// port in the Contact would be unreachable.
func (u *UA) dialTLS(ctx context.Context, t *Trunk, lap netip.AddrPort) (netip.AddrPort, bool, error) {
	if !lap.IsValid() {
		return netip.AddrPort{}, false, fmt.Errorf("%w: no tls listener for trunk %q (add a tls: listen entry)", ErrConfig, t.Name)
	}
	host, port, err := splitHostPort(t.Address)
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	if port == 0 {
		port = sip.DefaultTlsPort
	}
	raddr, err := resolveIP(ctx, host)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: %s: %v", ErrTransport, host, err)
	}
	dest := net.JoinHostPort(raddr.String(), strconv.Itoa(port))
	u.mu.Lock()
	tc, err := u.tlsClientLocked()
	u.mu.Unlock()
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	tc.mu.Lock()
	dm := tc.dials[dest]
	if dm == nil {
		dm = &sync.Mutex{}
		tc.dials[dest] = dm
	}
	tc.mu.Unlock()
	dm.Lock()
	defer dm.Unlock()
	if c := u.ua.TransportLayer().Pool("tls").Get(dest); c != nil { // Get takes a reference
		_, _ = c.TryClose()
		return lap, true, nil
	}
	conf, err := t.TLS.ClientConfig(host)
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	if err := u.connectTLS(ctx, tc, dest, conf); err != nil {
		return netip.AddrPort{}, false, err
	}
	return lap, true, nil
}

// connectTLS dials, handshakes and hands the connection to sipgo.
func (u *UA) connectTLS(ctx context.Context, tc *tlsClient, dest string, conf *tls.Config) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tlsDialTimeout)
		defer cancel()
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", dest)
	if err != nil {
		return fmt.Errorf("%w: dial %s: %v", ErrTransport, dest, err)
	}
	conn := tls.Client(raw, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return fmt.Errorf("%w: handshake with %s: %v", ErrTLS, dest, err)
	}
	if err := tc.ln.handoff(ctx, conn); err != nil {
		conn.Close()
		return err
	}
	return nil
}

func resolveIP(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs { // IPv4 first, as sipgo's resolver prefers
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("no address for %s", host)
	}
	return addrs[0], nil
}

// secureContact adjusts the Contact for a TLS trunk. Choice (RFC 3261
// §8.1.1.8, §26.2.2; RFC 5630): a sips: Request-URI gets a sips: Contact,
// as §8.1.1.8 requires. Otherwise the Contact is sip: with transport=tls.
// RFC 5630 §3.1.3 deprecates transport=tls in favour of sips:, but sips:
// also demands TLS on every hop behind the PBX (§3.1.1), which many PBXs and
// carriers cannot honour and answer with 416/480; sip:;transport=tls is what
// Asterisk, FreeSWITCH and Kamailio send and accept on TLS trunks, and it
// tells the PBX to reach ponte over TLS. The Via says SIP/2.0/TLS either way
// (RFC 3261 §18.2.1/§20.42).
func secureContact(c *sip.ContactHeader, ruri sip.Uri, transport string) {
	if transport != "tls" {
		return
	}
	if ruri.Scheme == "sips" {
		c.Address.Scheme = "sips"
		c.Address.UriParams = nil
		return
	}
	c.Address.UriParams = sip.NewParams()
	c.Address.UriParams.Add("transport", "tls")
}

// dialListener is a net.Listener whose Accept returns connections handed to
// it by handoff, so that sipgo's TLS transport serves client connections
// ponte dialed (sipgo pools them by local and remote address and reads
// them, exactly as it does for accepted ones).
type dialListener struct {
	in   chan handed
	done chan struct{}
	once sync.Once

	// Accept goroutine only:
	last chan struct{}
}

type handed struct {
	conn net.Conn
	done chan struct{} // closed once sipgo has taken the connection in
}

func newDialListener() *dialListener {
	return &dialListener{in: make(chan handed), done: make(chan struct{})}
}

// Accept returns the next handed connection. sipgo registers a connection
// in its pool before it calls Accept again, so entering Accept confirms the
// previous handoff.
func (l *dialListener) Accept() (net.Conn, error) {
	if l.last != nil {
		close(l.last)
		l.last = nil
	}
	select {
	case h := <-l.in:
		l.last = h.done
		return h.conn, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// handoff gives conn to sipgo and waits until it is in sipgo's pool.
func (l *dialListener) handoff(ctx context.Context, conn net.Conn) error {
	h := handed{conn: conn, done: make(chan struct{})}
	select {
	case l.in <- h:
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrTLS, ctx.Err())
	}
	select {
	case <-h.done:
		return nil
	case <-l.done:
		return ErrClosed
	}
}

func (l *dialListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *dialListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// certCheckEvery is how often a handshake may look at the certificate
// files' modification times (two stat calls): renewals (certbot, cert-
// manager) are picked up within this time without any signal.
const certCheckEvery = 10 * time.Second

// certStore serves the tls: listeners' certificate. It is loaded when the
// first listener starts; a handshake at least every seconds later checks
// the files' size and modification time, and reloads them when either
// changed. A reload that fails (a half-written file, a key that does not
// match) keeps the certificate in use, logs an error and is retried at the
// next check, so renewing the two files one after the other is safe.
type certStore struct {
	mu                sync.Mutex
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration // 0: certCheckEvery; tests shorten it
	cert              *tls.Certificate
	certStamp         fileStamp
	keyStamp          fileStamp
	checked           time.Time
	failed            fileStamp // the cert file's stamp of the last failed load, logged once
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(file string) (fileStamp, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// open loads the files the first time; later listeners share the store.
func (c *certStore) open(certFile, keyFile string, log *slog.Logger) error {
	c.mu.Lock()
	if c.cert != nil && c.certFile == certFile && c.keyFile == keyFile {
		c.mu.Unlock()
		return nil
	}
	c.certFile, c.keyFile, c.log = certFile, keyFile, log
	if c.every == 0 {
		c.every = certCheckEvery
	}
	c.mu.Unlock()
	return c.reload(true)
}

// get is tls.Config.GetCertificate.
func (c *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	due := time.Since(c.checked) >= c.every
	c.mu.Unlock()
	if due {
		_ = c.reload(false) // logged; the old certificate stays
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return nil, fmt.Errorf("%w: no server certificate", ErrTLS)
	}
	return c.cert, nil
}

// reload loads the files when forced or when their stamps changed.
func (c *certStore) reload(force bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certFile == "" {
		return nil
	}
	c.checked = time.Now()
	cs, err1 := stampOf(c.certFile)
	ks, err2 := stampOf(c.keyFile)
	if !force && err1 == nil && err2 == nil && cs == c.certStamp && ks == c.keyStamp {
		return nil
	}
	err := errors.Join(err1, err2)
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile)
	}
	if err != nil {
		if c.cert != nil && !force && cs == c.failed {
			return err // this state of the files was reported already
		}
		c.failed = cs
		if c.cert != nil {
			c.log.Error("sip: tls certificate reload failed; keeping the current one", "cert_file", c.certFile, "err", err)
		}
		return err
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	old := c.cert
	c.cert, c.certStamp, c.keyStamp, c.failed = &cert, cs, ks, fileStamp{}
	if old != nil && c.log != nil {
		attrs := []any{"cert_file", c.certFile}
		if cert.Leaf != nil {
			attrs = append(attrs, "serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
		}
		c.log.Info("sip: tls certificate reloaded", attrs...)
	}
	return nil
}

// banListener closes connections from banned sources as they are accepted.
type banListener struct {
	net.Listener
	sec *security
}

func (l *banListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		pol := l.sec.pol.Load()
		if pol == nil || !pol.ban.banned(addrIP(c.RemoteAddr()), pol.now()) {
			return c, nil
		}
		l.sec.banDropped.Add(1)
		c.Close()
	}
}
