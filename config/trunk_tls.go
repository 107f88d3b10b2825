package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// TrunkTLS is sip.trunks[].tls: the client side of SIP over TLS toward one
// trunk (RFC 3261 §26.2). Every field is optional; without the block a
// transport: tls trunk is verified against the system roots with the trunk
// host as server name.
type TrunkTLS struct {
	CAFile     string `yaml:"ca_file"`     // PEM bundle trusted for this trunk instead of the system roots
	CertFile   string `yaml:"cert_file"`   // client certificate (PEM) for PBXs that demand mutual TLS
	KeyFile    string `yaml:"key_file"`    // its key
	ServerName string `yaml:"server_name"` // SNI and the name verified; default the host of address
	// InsecureSkipVerify accepts any server certificate: lab use only (a man
	// in the middle then reads the SRTP keys in the SDP). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ALPN protocol ids to offer; none by default, since some SIP servers
	// abort the handshake on one they do not know (e.g. "sip").
	ALPN []string `yaml:"alpn"`
}

// SRTP policies of sip.trunks[].srtp (RFC 4568 SDES).
const (
	SRTPOff      = "off"
	SRTPOptional = "optional"
	SRTPRequired = "required"
)

// validateTLS checks the TLS listener, each trunk's tls block and srtp
// policy. It loads the files named, so that a wrong path or a key that
// does not match its certificate is reported at startup with its line.
func (c *Config) validateTLS(add func(path, format string, a ...any)) {
	s := &c.SIP
	tlsListen := false
	for _, l := range s.Listen {
		if strings.HasPrefix(l, "tls:") {
			tlsListen = true
		}
	}
	switch {
	case (s.TLSCert == "") != (s.TLSKey == ""):
		add("sip.tls_cert", "tls_cert and tls_key go together")
	case tlsListen && s.TLSCert == "":
		add("sip.tls_cert", "a tls: listener needs sip.tls_cert and sip.tls_key (the certificate ponte presents)")
	case s.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey); err != nil {
			add("sip.tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
	for i := range s.Trunks {
		t := &s.Trunks[i]
		p := fmt.Sprintf("sip.trunks[%d]", i)
		if t.TLS != nil && t.Transport != "tls" {
			add(p+".tls", "tls settings on a trunk whose transport is %q (set transport: tls)", t.Transport)
		}
		if t.TLS != nil {
			validateTrunkTLS(p+".tls", t.TLS, add)
		}
		if t.Transport == "tls" && !tlsListen {
			// The PBX sends BYE and re-INVITE to ponte's Contact over TLS.
			add(p+".transport", "transport: tls needs a tls: entry in sip.listen (with sip.tls_cert and sip.tls_key)")
		}
		switch t.SRTP {
		case "", SRTPOff:
		case SRTPOptional, SRTPRequired:
			// RFC 4568 §8.3: SDES keys travel in the SDP, so the signalling
			// must be encrypted, or anyone on the path can decrypt the media.
			if t.Transport != "tls" {
				add(p+".srtp", "srtp: %s puts the SRTP keys in the SDP: it needs transport: tls (RFC 4568 §8.3)", t.SRTP)
			}
		default:
			add(p+".srtp", "%q is not one of off, optional, required", t.SRTP)
		}
	}
}

func validateTrunkTLS(p string, t *TrunkTLS, add func(path, format string, a ...any)) {
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			add(p+".ca_file", "%v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			add(p+".ca_file", "%s holds no PEM certificate", t.CAFile)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		add(p+".cert_file", "cert_file and key_file go together")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			add(p+".cert_file", "cannot load the client certificate and key: %v", err)
		}
	}
	if t.ServerName != "" && (len(t.ServerName) > 253 || strings.Trim(strings.ToLower(t.ServerName), "abcdefghijklmnopqrstuvwxyz0123456789.-") != "") {
		add(p+".server_name", "%q is not a host name", t.ServerName)
	}
	for j, a := range t.ALPN {
		if a == "" || len(a) > 255 {
			add(fmt.Sprintf("%s.alpn[%d]", p, j), "an ALPN id is 1..255 bytes")
		}
	}
}
