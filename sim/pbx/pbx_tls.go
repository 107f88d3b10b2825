package pbx

// TLS and SDES-SRTP for the PBX simulator (H-TLS). The hooks that call into
// this file are marked "H-TLS" in pbx.go, call.go and media.go.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"

	psip "github.com/ponte-gw/ponte/sip"
)

// SRTP answer policies of the simulator.
const (
	// SRTPAccept answers a usable a=crypto offer with SRTP (the offer's
	// m= transport, one crypto line with the simulator's own key) and any
	// other offer with plain RTP.
	SRTPAccept = "accept"
	// SRTPPlain ignores a=crypto and answers plain RTP/AVP, as a PBX
	// without SRTP does (RFC 3264 §5.1: unknown attributes are ignored).
	SRTPPlain = "plain"
	// SRTPRequire answers an offer without a usable crypto line with 488.
	SRTPRequire = "require"
)

// Secure configures the simulator's TLS listener and SDES answers.
type Secure struct {
	// TLS, when set, makes the stream listener (the TCP port, same number
	// as UDP) speak SIP over TLS instead of plain TCP.
	TLS *tls.Config
	// ClientTLS is used when the simulator opens a TLS connection itself
	// (a BYE to ponte's Contact): its RootCAs must trust ponte's listener.
	ClientTLS *tls.Config
	// SRTP is the answer policy: "" (SRTPAccept), SRTPPlain or SRTPRequire.
	SRTP string
}

// serveStream serves the TCP port as TLS or plain TCP.
func (p *PBX) serveStream() error {
	if p.cfg.Secure.TLS != nil {
		return p.srv.ServeTLS(tls.NewListener(p.tcp, p.cfg.Secure.TLS))
	}
	return p.srv.ServeTCP(p.tcp)
}

// callSRTP is one call's SRTP state; nil for a plain call. sendLoop owns
// tx and ebuf, recvLoop owns rx.
type callSRTP struct {
	proto  string
	ours   psip.Crypto
	theirs psip.Crypto
	tx, rx *srtp.Context
	ebuf   []byte

	mu     sync.Mutex
	in     int // packets authenticated and decrypted
	failed int // packets that failed authentication (or arrived in clear)
}

// setupSRTP applies the simulator's policy to the call's offer; it returns
// the SIP code to refuse the INVITE with, or 0.
func (c *Call) setupSRTP() int {
	var theirs *psip.Crypto
	for i := range c.offer.Crypto {
		if c.offer.Crypto[i].Usable() {
			theirs = &c.offer.Crypto[i]
			break
		}
	}
	policy := c.p.cfg.Secure.SRTP
	switch {
	case policy == SRTPPlain:
		return 0
	case theirs == nil && (policy == SRTPRequire || strings.Contains(c.offer.Proto, "SAVP")):
		return 488 // RFC 3264 §6: a transport it cannot do
	case theirs == nil:
		return 0
	}
	key := make([]byte, 30)
	if _, err := rand.Read(key); err != nil {
		return 500
	}
	s := &callSRTP{
		proto:  c.offer.Proto,
		ours:   psip.Crypto{Tag: theirs.Tag, Suite: theirs.Suite, Keys: []psip.CryptoKey{{KeySalt: key}}},
		theirs: *theirs,
		ebuf:   make([]byte, 1600),
	}
	var err error
	if s.tx, err = srtpContext(s.ours); err != nil {
		return 500
	}
	if s.rx, err = srtpContext(s.theirs, srtp.SRTPReplayProtection(128)); err != nil {
		return 500
	}
	c.srtp = s
	return 0
}

func srtpContext(c psip.Crypto, opts ...srtp.ContextOption) (*srtp.Context, error) {
	prof := srtp.ProtectionProfileAes128CmHmacSha1_80
	if c.Suite == psip.SuiteAES128SHA1_32 {
		prof = srtp.ProtectionProfileAes128CmHmacSha1_32
	}
	k := c.Keys[0]
	if k.MKILen > 0 {
		mki := make([]byte, k.MKILen)
		for i, v := k.MKILen-1, k.MKI; i >= 0 && v > 0; i, v = i-1, v>>8 {
			mki[i] = byte(v)
		}
		opts = append(opts, srtp.MasterKeyIndicator(mki))
	}
	return srtp.CreateContext(k.KeySalt[:16], k.KeySalt[16:], prof, opts...)
}

// applySDP puts the answer's transport and crypto line into spec.
func (s *callSRTP) applySDP(spec *psip.SDPSpec) {
	if s == nil {
		return
	}
	spec.Proto = s.proto
	spec.Crypto = []psip.Crypto{s.ours}
}

// protect encrypts an outgoing RTP packet (sendLoop only).
func (s *callSRTP) protect(pkt []byte) []byte {
	if s == nil {
		return pkt
	}
	out, err := s.tx.EncryptRTP(s.ebuf[:0], pkt, nil)
	if err != nil {
		return nil
	}
	return out
}

// unprotect authenticates and decrypts an incoming packet in place
// (recvLoop only); false drops it.
func (s *callSRTP) unprotect(pkt []byte) ([]byte, bool) {
	if s == nil {
		return pkt, true
	}
	if len(pkt) >= 2 && pkt[1] >= 192 && pkt[1] <= 223 {
		return nil, false // SRTCP multiplexed on the RTP port: not simulated
	}
	out, err := s.rx.DecryptRTP(pkt, pkt, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed++
		return nil, false
	}
	s.in++
	return out, true
}

// SRTP reports whether the call runs SRTP, with the suite, the packets it
// decrypted and the packets that failed authentication.
func (c *Call) SRTP() (on bool, suite psip.CryptoSuite, in, failed int) {
	s := c.srtp
	if s == nil {
		return false, "", 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return true, s.ours.Suite, s.in, s.failed
}

// secureContact makes the Contact of a call that came over TLS point at
// the TLS listener with transport=tls.
func (c *Call) secureContact(h *sip.ContactHeader) *sip.ContactHeader {
	if c.transport == "TLS" {
		h.Address.UriParams = sip.NewParams()
		h.Address.UriParams.Add("transport", "tls")
	}
	return h
}

// PKI is a throwaway certificate authority with one server and one client
// certificate, written as PEM files, for TLS tests.
type PKI struct {
	Dir                    string
	CAFile                 string
	ServerCert, ServerKey  string // for the hosts given to NewTestPKI
	ClientCert, ClientKey  string // for mutual TLS (extended key usage client auth)
	CA                     *x509.CertPool
	ServerPair, ClientPair tls.Certificate
	caCert                 *x509.Certificate
	caKey                  *ecdsa.PrivateKey
	notBefore, notAfter    time.Time
	serial                 int64
}

// NewTestPKI creates a CA and a server certificate valid for hosts (IP
// addresses and DNS names) plus a client certificate, in dir.
func NewTestPKI(dir string, hosts ...string) (*PKI, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pbx: NewTestPKI needs at least one host")
	}
	p := &PKI{Dir: dir, notBefore: time.Now().Add(-time.Hour), notAfter: time.Now().Add(24 * time.Hour)}
	var err error
	if p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ponte test CA"},
		NotBefore: p.notBefore, NotAfter: p.notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.CAFile = filepath.Join(dir, "ca.pem")
	if err := writePEM(p.CAFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	p.CA = x509.NewCertPool()
	p.CA.AddCert(p.caCert)
	p.serial = 1
	if p.ServerPair, p.ServerCert, p.ServerKey, err = p.issue("server", hosts, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.ClientPair, p.ClientCert, p.ClientKey, err = p.issue("client", nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue signs one more certificate (e.g. for a second host) in the PKI's dir.
func (p *PKI) Issue(name string, hosts []string, usage x509.ExtKeyUsage) (tls.Certificate, string, string, error) {
	return p.issue(name, hosts, usage)
}

func (p *PKI) issue(name string, hosts []string, usage x509.ExtKeyUsage) (tls.Certificate, string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", "", err
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: "ponte test " + name},
		NotBefore: p.notBefore, NotAfter: p.notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return tls.Certificate{}, "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, "", "", err
	}
	cf, kf := filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
	if err := writePEM(cf, "CERTIFICATE", der); err != nil {
		return tls.Certificate{}, "", "", err
	}
	if err := writePEM(kf, "EC PRIVATE KEY", kb); err != nil {
		return tls.Certificate{}, "", "", err
	}
	pair, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		return tls.Certificate{}, "", "", fmt.Errorf("pbx: load %s: %w", name, err)
	}
	return pair, cf, kf, nil
}

func writePEM(file, typ string, der []byte) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
