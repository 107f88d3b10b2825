package sip_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// hello records what a TLS server saw in the ClientHello.
type hello struct {
	mu   sync.Mutex
	sni  []string
	alpn [][]string
}

func (h *hello) get() ([]string, [][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.sni...), append([][]string(nil), h.alpn...)
}

// tlsPBX starts the PBX simulator speaking SIP over TLS with a certificate
// for 127.0.0.1 and pbx.test, demanding a client certificate from pki's CA.
func tlsPBX(t *testing.T, pki *pbx.PKI, policy string, mutual bool, mod ...func(*pbx.Config)) (*pbx.PBX, *hello) {
	t.Helper()
	h := &hello{}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.ServerPair}}
	if mutual {
		conf.ClientAuth, conf.ClientCAs = tls.RequireAndVerifyClientCert, pki.CA
	}
	conf.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		h.mu.Lock()
		h.sni, h.alpn = append(h.sni, chi.ServerName), append(h.alpn, chi.SupportedProtos)
		h.mu.Unlock()
		return nil, nil
	}
	cfg := pbx.Config{
		Listen: "127.0.0.1:0", Codecs: []string{"PCMU"}, ExpectToneHz: 440, Logger: testLogger(),
		Secure: pbx.Secure{TLS: conf, ClientTLS: &tls.Config{RootCAs: pki.CA}, SRTP: policy},
	}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := pbx.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, h
}

func tlsUA(t *testing.T, pki *pbx.PKI) *sip.UA {
	return newUA(t, func(c *sip.Config) {
		c.Listen = []string{"udp:127.0.0.1:0", "tls:127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = pki.ServerCert, pki.ServerKey
	})
}

// TestTLSTrunkCallWithSRTP: a call to a TLS trunk with the trunk's own CA,
// client certificate and server name, SRTP required: Via says TLS, the
// Contact asks for TLS on ponte's listener, SNI carries the server name,
// no ALPN is offered, audio crosses both ways encrypted, and the PBX's BYE
// reaches ponte over a TLS connection the PBX opened to ponte's listener.
func TestTLSTrunkCallWithSRTP(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1", "pbx.test")
	if err != nil {
		t.Fatal(err)
	}
	p, h := tlsPBX(t, pki, pbx.SRTPAccept, true)
	u := tlsUA(t, pki)
	media := newRTP(t, u)
	trunk := &sip.Trunk{
		Name: "secure", Address: p.Addr().String(), Transport: "tls", Codecs: []string{"PCMU"}, SRTP: sip.SRTPRequired,
		TLS: &sip.TLSConfig{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, ServerName: "pbx.test"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "+5511999", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	inv := pc.Invite()
	if v := inv.Via(); v == nil || v.Transport != "TLS" || v.Port != int(u.ListenAddr("tls").Port()) {
		t.Fatalf("Via %v, want SIP/2.0/TLS on the tls listener port %d", v, u.ListenAddr("tls").Port())
	}
	ct := inv.Contact()
	if tp, _ := ct.Address.UriParams.Get("transport"); ct == nil || tp != "tls" || ct.Address.Port != int(u.ListenAddr("tls").Port()) {
		t.Fatalf("Contact %v, want ;transport=tls on port %d", ct, u.ListenAddr("tls").Port())
	}
	if !strings.Contains(string(inv.Body()), "m=audio") || !strings.Contains(string(inv.Body()), "RTP/SAVP") {
		t.Fatalf("offer is not RTP/SAVP:\n%s", inv.Body())
	}
	if sni, alpn := h.get(); len(sni) == 0 || sni[0] != "pbx.test" || len(alpn[0]) != 0 {
		t.Fatalf("ClientHello SNI %q ALPN %q, want pbx.test and none", sni, alpn)
	}
	if on, suite := media.SRTP(); !on || suite != sip.SuiteAES128SHA1_80 {
		t.Fatalf("ponte SRTP %v %s", on, suite)
	}
	// The PBX plays 1000 Hz; ponte sends 440 Hz.
	got := make(chan []int16, 1)
	go func() { pcm, _ := receiveAudio(media, 40*160, 5*time.Second); got <- pcm }()
	start := time.Now()
	if err := sendTone(ctx, media, 440, 75, 0x44); err != nil {
		t.Fatal(err)
	}
	assertTone(t, <-got, 1000)
	rep := pc.Received().Report(start.Add(300*time.Millisecond), start.Add(1400*time.Millisecond))
	if rep.Windows < 40 || float64(rep.ToneWindows) < 0.95*float64(rep.Windows) {
		t.Fatalf("PBX heard 440 Hz in %d of %d windows", rep.ToneWindows, rep.Windows)
	}
	if on, suite, in, failed := pc.SRTP(); !on || suite != sip.SuiteAES128SHA1_80 || in < 60 || failed != 0 {
		t.Fatalf("PBX SRTP on=%v %s in=%d failed=%d", on, suite, in, failed)
	}
	if st := media.Stats(); st.SRTPDropped != 0 || st.PacketsIn < 40 {
		t.Fatalf("ponte stats %+v", st)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	if err := pc.Hangup(hctx); err != nil {
		t.Fatalf("PBX BYE over TLS: %v", err)
	}
	select {
	case <-d.Done():
	case <-hctx.Done():
		t.Fatal("the dialog did not end on the PBX's BYE")
	}
	if !d.RemoteBye() {
		t.Fatal("dialog ended, but not by the PBX's BYE")
	}
}

// TestTLSRequiredPlainAnswerRefused: the PBX answers plain RTP/AVP to a
// required trunk: ErrSRTPRequired, a BYE with Reason 488, and no RTP sent.
func TestTLSRequiredPlainAnswerRefused(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := tlsPBX(t, pki, pbx.SRTPPlain, false)
	u := tlsUA(t, pki)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Name: "secure", Address: p.Addr().String(), Transport: "tls", SRTP: sip.SRTPRequired,
		TLS: &sip.TLSConfig{CAFile: pki.CAFile}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "1000", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitAnswer(ctx); !errors.Is(err, sip.ErrSRTPRequired) {
		t.Fatalf("WaitAnswer: %v, want ErrSRTPRequired", err)
	}
	select {
	case <-pc.Ended():
	case <-ctx.Done():
		t.Fatal("the PBX leg was not ended")
	}
	if pc.EndedBy() != "bye" || !strings.Contains(pc.ByeReason(), "cause=488") {
		t.Fatalf("PBX leg ended by %q with Reason %q, want a BYE with cause=488", pc.EndedBy(), pc.ByeReason())
	}
	// The writer may still try: nothing leaves in clear.
	for i := 0; i < 5; i++ {
		_ = sendTone(ctx, media, 440, 1, 1)
	}
	time.Sleep(200 * time.Millisecond)
	if pts := pc.ReceivedPTs(); len(pts) != 0 {
		t.Fatalf("the PBX received RTP %v from a refused SRTP call", pts)
	}
	if st := media.Stats(); st.PacketsOut != 0 {
		t.Fatalf("ponte sent %d RTP packets", st.PacketsOut)
	}
}

// TestTLSTrunkVerification: a PBX certificate from another CA, or for
// another name, fails the handshake (ErrTLS) and no INVITE is sent;
// insecure_skip_verify connects anyway; ALPN is offered only when set.
func TestTLSTrunkVerification(t *testing.T) {
	dir := t.TempDir()
	pki, err := pbx.NewTestPKI(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p, h := tlsPBX(t, pki, pbx.SRTPAccept, false)
	u := tlsUA(t, pki)
	for _, tc := range []struct {
		name string
		tls  *sip.TLSConfig
		ok   bool
		alpn []string
	}{
		{"other CA", &sip.TLSConfig{CAFile: otherCA.CAFile}, false, nil},
		{"wrong name", &sip.TLSConfig{CAFile: pki.CAFile, ServerName: "not-the-pbx.test"}, false, nil},
		{"system roots", nil, false, nil},
		{"insecure skip verify", &sip.TLSConfig{InsecureSkipVerify: true, ALPN: []string{"sip"}}, true, []string{"sip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n := len(func() []string { s, _ := h.get(); return s }())
			trunk := &sip.Trunk{Name: tc.name, Address: p.Addr().String(), Transport: "tls", TLS: tc.tls}
			d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "1000", Media: newRTP(t, u)})
			if !tc.ok {
				if !errors.Is(err, sip.ErrTLS) {
					t.Fatalf("Dial: %v, want ErrTLS", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.WaitAnswer(ctx); err != nil {
				t.Fatal(err)
			}
			_, alpn := h.get()
			if len(alpn) <= n || strings.Join(alpn[n], ",") != strings.Join(tc.alpn, ",") {
				t.Fatalf("ALPN offered %q, want %q", alpn, tc.alpn)
			}
			if err := d.Bye(ctx, sip.Reason{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTLSPing: OPTIONS pings to a TLS trunk use the trunk's CA (a private
// CA the system roots do not know), and a PBX that fails verification is
// reported dead with ErrTLS.
func TestTLSPing(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := tlsPBX(t, pki, pbx.SRTPAccept, false)
	u := tlsUA(t, pki)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := u.Ping(ctx, &sip.Trunk{Address: p.Addr().String(), Transport: "tls", TLS: &sip.TLSConfig{CAFile: other.CAFile}}); !errors.Is(err, sip.ErrTLS) {
		t.Fatalf("ping with the wrong CA: %v, want ErrTLS", err)
	}
	code, err := u.Ping(ctx, &sip.Trunk{Address: p.Addr().String(), Transport: "tls", TLS: &sip.TLSConfig{CAFile: pki.CAFile}})
	if err != nil || code != 200 {
		t.Fatalf("ping: %d %v", code, err)
	}
}
