package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate and its key, returning the
// file names.
func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pbx.test"},
		DNSNames: []string{"pbx.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

// tlsExample is example.yaml with a TLS listener and a TLS + SRTP trunk.
func tlsExample(t *testing.T, cert, key string) string {
	t.Helper()
	base, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(base), `listen: [ "udp:0.0.0.0:5060", "tcp:0.0.0.0:5060" ]`,
		`listen: [ "udp:0.0.0.0:5060", "tls:0.0.0.0:5061" ]
  tls_cert: `+cert+`
  tls_key: `+key, 1)
	return strings.Replace(s, "      transport: udp\n", `      transport: tls
      srtp: required
      tls:
        ca_file: `+cert+`
        server_name: pbx.test
        cert_file: `+cert+`
        key_file: `+key+`
        alpn: [ sip ]
`, 1)
}

func TestTLSConfigLoads(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	c, err := Parse("tls.yaml", []byte(tlsExample(t, cert, key)), fullEnv)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.SIP.Trunks[0]
	if tr.Transport != "tls" || tr.SRTP != SRTPRequired || tr.TLS == nil || tr.TLS.CAFile != cert ||
		tr.TLS.ServerName != "pbx.test" || tr.TLS.InsecureSkipVerify || len(tr.TLS.ALPN) != 1 || tr.TLS.ALPN[0] != "sip" {
		t.Fatalf("trunk %+v tls %+v", tr, tr.TLS)
	}
	if c.SIP.TLSCert != cert || c.SIP.TLSKey != key || c.SIP.Listen[1] != "tls:0.0.0.0:5061" {
		t.Fatalf("sip %+v", c.SIP)
	}
}

// TestTLSConfigErrors: each mistake is reported with its key and line.
func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := tlsExample(t, cert, key)
	cases := []struct {
		name, from, to string
		want           string
	}{
		{"missing ca file", "ca_file: " + cert, "ca_file: " + filepath.Join(dir, "nope.pem"), "line 30: sip.trunks[0].tls.ca_file: open"},
		{"ca file without PEM", "ca_file: " + cert, "ca_file: " + other, "line 30: sip.trunks[0].tls.ca_file: " + other + " holds no PEM certificate"},
		{"client cert without key", "        key_file: " + key + "\n", "", "line 32: sip.trunks[0].tls.cert_file: cert_file and key_file go together"},
		{"client key mismatch", "        key_file: " + key, "        key_file: " + other, "line 32: sip.trunks[0].tls.cert_file: cannot load"},
		{"bad server name", "server_name: pbx.test", "server_name: pbx_test/x", "line 31: sip.trunks[0].tls.server_name: \"pbx_test/x\" is not a host name"},
		{"empty alpn", "alpn: [ sip ]", "alpn: [ \"\" ]", "line 34: sip.trunks[0].tls.alpn[0]: an ALPN id is 1..255 bytes"},
		{"bad srtp", "srtp: required", "srtp: always", "line 28: sip.trunks[0].srtp: \"always\" is not one of off, optional, required"},
		{"srtp without tls", "transport: tls", "transport: tcp", "line 28: sip.trunks[0].srtp: srtp: required puts the SRTP keys in the SDP: it needs transport: tls"},
		{"tls block on tcp", "transport: tls", "transport: tcp", "line 29: sip.trunks[0].tls: tls settings on a trunk whose transport is \"tcp\""},
		{"unknown tls key", "server_name: pbx.test", "server_nam: pbx.test", "line 31: sip.trunks[0].tls.server_nam: unknown key"},
		{"listener without cert", "  tls_cert: " + cert + "\n  tls_key: " + key + "\n", "", "sip.tls_cert: a tls: listener needs sip.tls_cert and sip.tls_key"},
		{"listener cert without key", "  tls_key: " + key + "\n", "", "line 22: sip.tls_cert: tls_cert and tls_key go together"},
		{"listener key mismatch", "  tls_key: " + key, "  tls_key: " + other, "line 22: sip.tls_cert: cannot load"},
		{"bad listen transport", `"tls:0.0.0.0:5061"`, `"dtls:0.0.0.0:5061"`, "line 21: sip.listen[1]: \"dtls:0.0.0.0:5061\": want udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT"},
		{"bad transport", "transport: tls", "transport: sctp", "line 27: sip.trunks[0].transport: \"sctp\" is not one of udp, tcp, tls"},
		{"tls trunk without tls listener", `"tls:0.0.0.0:5061"`, `"tcp:0.0.0.0:5061"`, "line 27: sip.trunks[0].transport: transport: tls needs a tls: entry in sip.listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.from) {
				t.Fatalf("fixture lacks %q", tc.from)
			}
			_, err := Parse("tls.yaml", []byte(strings.Replace(good, tc.from, tc.to, 1)), fullEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
