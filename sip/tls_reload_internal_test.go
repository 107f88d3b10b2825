package sip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate with serial and its key, and
// dates both files at mod (so a change is visible within one second).
func writeCert(t *testing.T, certFile, keyFile string, serial int64, mod time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "ponte.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(f, typ string, b []byte) {
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "EC PRIVATE KEY", kder)
}

// servedSerial connects to the tls: listener and returns the serial of the
// certificate it presents.
func servedSerial(t *testing.T, u *UA) int64 {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} // the test reads the serial, nothing is trusted
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", u.ListenAddr("tls").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSCertificateReload: a renewed certificate is served without a
// restart, found by its files' modification time or by ReloadCertificates
// (SIGHUP); a broken renewal keeps the old certificate and is reported.
func TestTLSCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	writeCert(t, certFile, keyFile, 1, base)
	u, err := NewUA(Config{Listen: []string{"tls:127.0.0.1:0"}, RTPHost: "127.0.0.1", RTPPortMin: 42000, RTPPortMax: 42099,
		TLSCertFile: certFile, TLSKeyFile: keyFile, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	u.sec.certs.every = time.Nanosecond // every handshake looks at the files
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if s := servedSerial(t, u); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	// Renewed in place: the next connection gets it.
	writeCert(t, certFile, keyFile, 2, base.Add(time.Minute))
	if s := servedSerial(t, u); s != 2 {
		t.Fatalf("after renewal: serial %d, want 2", s)
	}
	// A broken renewal (not PEM): the old certificate stays.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certFile, base.Add(2*time.Minute), base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if s := servedSerial(t, u); s != 2 {
		t.Fatalf("after a broken renewal: serial %d, want 2 kept", s)
	}
	if err := u.ReloadCertificates(); err == nil {
		t.Fatal("ReloadCertificates of a broken file: no error")
	}
	// SIGHUP path: with checks far apart, only ReloadCertificates sees it.
	u.sec.certs.mu.Lock()
	u.sec.certs.every = time.Hour
	u.sec.certs.mu.Unlock()
	writeCert(t, certFile, keyFile, 3, base.Add(3*time.Minute))
	if s := servedSerial(t, u); s != 2 {
		t.Fatalf("before ReloadCertificates: serial %d, want 2", s)
	}
	if err := u.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	if s := servedSerial(t, u); s != 3 {
		t.Fatalf("after ReloadCertificates: serial %d, want 3", s)
	}
}

// TestReloadWithoutTLS: nothing to reload is no error.
func TestReloadWithoutTLS(t *testing.T) {
	u, err := NewUA(Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
}
