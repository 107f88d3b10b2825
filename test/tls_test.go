package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// secureEnv starts ponte with a tls: listener and its trunk on SIP over TLS
// (the test's own CA, certificates for 127.0.0.1) with srtp: required, and
// the PBX simulator serving TLS and answering SDES with policy.
func secureEnv(t *testing.T, policy string) (*scenario.Env, *pbx.PKI) {
	t.Helper()
	return secureEnvWith(t, policy, nil)
}

// secureEnvWith is secureEnv with more configuration applied last.
func secureEnvWith(t *testing.T, policy string, more func(*config.Config)) (*scenario.Env, *pbx.PKI) {
	t.Helper()
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	env := startEnv(t, scenario.Options{
		Codecs: []string{"PCMU"},
		PBX: pbx.Config{Secure: pbx.Secure{
			TLS:       &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.ServerPair}},
			ClientTLS: &tls.Config{RootCAs: pki.CA}, // its BYE opens a TLS connection to ponte's listener
			SRTP:      policy,
		}},
		Configure: func(c *config.Config) {
			c.SIP.Listen = append(c.SIP.Listen, "tls:127.0.0.1:0")
			c.SIP.TLSCert, c.SIP.TLSKey = pki.ServerCert, pki.ServerKey
			tr := &c.SIP.Trunks[0]
			tr.Transport, tr.SRTP = "tls", config.SRTPRequired
			tr.TLS = &config.TrunkTLS{CAFile: pki.CAFile}
			if more != nil {
				more(c)
			}
		},
	})
	return env, pki
}

// TestTLSSRTPCall: a WhatsApp call to a TLS trunk with SRTP required. The
// INVITE travels over TLS (Via SIP/2.0/TLS, RTP/SAVP offer with a=crypto),
// the PBX answers SDES, and for 5 s each end hears the other's tone in
// >= 98 % of 20 ms windows with no gap over 40 ms, every PBX packet having
// been authenticated and decrypted. The PBX then hangs up over a TLS
// connection it opens to ponte's tls: listener, and ponte terminates the
// WhatsApp call.
func TestTLSSRTPCall(t *testing.T) {
	w := startStallWatch(t)
	env, _ := secureEnv(t, pbx.SRTPAccept)
	caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "Ana", ExpectHz: 1000})
	inv := pc.Invite()
	if v := inv.Via(); v == nil || v.Transport != "TLS" || !strings.EqualFold(inv.Transport(), "TLS") {
		t.Fatalf("INVITE arrived over %s with Via %v, want TLS", inv.Transport(), v)
	}
	if off := pc.Offer(); off.Proto != "RTP/SAVP" || len(off.Crypto) != 2 {
		t.Fatalf("offer %s with %d crypto lines, want RTP/SAVP with 2", off.Proto, len(off.Crypto))
	}
	acc := caller.AcceptRespondedAt()
	listen(t, w, acc.Add(500*time.Millisecond), 5*time.Second, bothWays(caller, pc, whole(240), whole(240)))
	on, suite, in, failed := pc.SRTP()
	if !on || suite != "AES_CM_128_HMAC_SHA1_80" || in < 250 || failed != 0 {
		t.Errorf("PBX side SRTP on=%v suite=%s decrypted=%d failed=%d", on, suite, in, failed)
	}
	if err := pc.Hangup(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("PBX BYE over TLS to ponte's listener: %v", err)
	}
	if r := callerEnded(t, caller, 10*time.Second); r != "gateway_terminate" {
		t.Errorf("caller end reason %q, want gateway_terminate", r)
	}
	if a := waitActions(env, caller.ID(), "pre_accept,accept,terminate"); a != "pre_accept,accept,terminate" {
		t.Errorf("Graph requests %q", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	if recs := env.Server.Gateway.Records(); len(recs) != 1 || recs[0].EndedBy != "pbx" || recs[0].Outcome != "completed" || recs[0].ToPBX.Out < 250 {
		t.Errorf("record %+v", recs)
	}
}

// TestTLSSRTPPlainAnswerRefused: the PBX answers plain RTP/AVP to the
// required trunk. ponte ACKs and BYEs it at once with Reason SIP 488,
// rejects the WhatsApp call, and not one RTP packet reaches the PBX.
func TestTLSSRTPPlainAnswerRefused(t *testing.T) {
	env, _ := secureEnv(t, pbx.SRTPPlain)
	ctx := ctxT(t, 20*time.Second)
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatalf("PBX never rung: %v", err)
	}
	if by := pbxEnded(t, pc, 10*time.Second); by != "bye" || !strings.Contains(pc.ByeReason(), "SIP;cause=488") {
		t.Errorf("PBX leg ended by %q with Reason %q, want a BYE with SIP cause 488", by, pc.ByeReason())
	}
	if r := callerEnded(t, caller, 10*time.Second); r == "" {
		t.Error("the WhatsApp call did not end")
	}
	if a := waitActions(env, caller.ID(), "pre_accept,reject"); a != "pre_accept,reject" {
		t.Errorf("Graph requests %q, want pre_accept,reject (never accepted)", a)
	}
	_ = env.WaitIdle(ctxT(t, 5*time.Second))
	time.Sleep(300 * time.Millisecond) // anything in flight would have arrived
	if pts := pc.ReceivedPTs(); len(pts) != 0 {
		t.Errorf("the PBX received RTP %v from a call that must not carry media in clear", pts)
	}
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 || recs[0].Outcome == "completed" || recs[0].ToPBX.Out != 0 || !recs[0].Accepted.IsZero() {
		t.Errorf("record %+v", recs)
	}
}

// TestInteropBaresipTLSSRTP: baresip 1.0.0 as the PBX, reached over SIP/TLS
// (its certificate from the test's CA) with mediaenc=srtp-mand, against a
// trunk with srtp: required: the caller hears baresip's 1000 Hz wav, and
// baresip's recording of what it decrypted holds the caller's 440 Hz.
//
// sipp is not used for TLS: Debian's sip-tester 3.6.1 is built without
// OpenSSL ("To use a TLS transport you must compile SIPp with OpenSSL").
func TestInteropBaresipTLSSRTP(t *testing.T) {
	bin := needBin(t, "baresip", "baresip")
	noLeaks(t)
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// SIP (UDP/TCP) on base, TLS on base+1 (baresip's rule), RTP pairs after.
	base := freePorts(t, 12)
	sipPort, tlsPort := base, base+1
	dir := t.TempDir()
	cfgDir, recDir := filepath.Join(dir, "cfg"), filepath.Join(dir, "rec")
	for _, d := range []string{cfgDir, recDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wav := filepath.Join(cfgDir, "tone1000.wav")
	toneWAV(t, wav, 1000, toneDBFS, 60)
	writeBaresipConfig(t, cfgDir, baresipConfig{SIPPort: sipPort, RTPLo: base + 2, RTPHi: base + 11, Source: wav, RecDir: recDir})
	// TLS and SRTP on top of the interop configuration: the certificate
	// file holds the chain and the key (libre's tls_alloc), srtp.so does
	// SDES, and the account demands SRTP (mediaenc=srtp-mand).
	certKey := filepath.Join(cfgDir, "cert.pem")
	var pem []byte
	for _, f := range []string{pki.ServerCert, pki.ServerKey} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(certKey, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(cfgDir, "config"), "module\t\t\tsrtp.so\nsip_certificate\t\t"+certKey+"\nsip_cafile\t\t"+pki.CAFile+"\n")
	if err := os.WriteFile(filepath.Join(cfgDir, "accounts"),
		[]byte("<sip:bob@127.0.0.1;transport=tls>;regint=0;answermode=auto;audio_codecs=PCMU;mediaenc=srtp-mand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bs := startPeer(t, "baresip", dir, bin, "-f", cfgDir, "-v", "-t", "80")
	sctx, scancel := context.WithTimeout(context.Background(), setupTimeout)
	defer scancel()
	if err := bs.waitOutput(sctx, "baresip is ready."); err != nil {
		t.Fatalf("%v\n%s", err, bs.out.String())
	}
	bs.waitListening(t, sipPort, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := scenario.Start(ctx, scenario.Options{
		PBXAddr: fmt.Sprintf("127.0.0.1:%d", tlsPort), Codecs: []string{"PCMU"}, TargetUser: "bob", Logger: testLogger(),
		Configure: func(c *config.Config) {
			c.SIP.Listen = append(c.SIP.Listen, "tls:127.0.0.1:0")
			c.SIP.TLSCert, c.SIP.TLSKey = pki.ServerCert, pki.ServerKey
			tr := &c.SIP.Trunks[0]
			tr.Transport, tr.SRTP = "tls", config.SRTPRequired
			tr.TLS = &config.TrunkTLS{CAFile: pki.CAFile}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	watch := startStallWatch(t)
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{ToneHz: 440, ToneDBFS: toneDBFS, ExpectHz: 1000, ExpectDBFS: toneDBFS})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, setupTimeout)
	defer wcancel()
	if err := caller.WaitAccepted(wctx); err != nil {
		t.Fatalf("call not accepted: %v (caller end reason %q)", err, caller.EndReason())
	}
	wins := talk(t, caller, watch, "baresip's 1000 Hz wav over SRTP")
	if err := caller.Hangup(ctx); err != nil {
		t.Fatalf("hangup: %v", err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := bs.waitOutput(cctx, "session closed"); err != nil {
		t.Errorf("baresip did not close the call after the caller hung up: %v", err)
	}
	rec := finishedRecord(ctx, t, env)
	if err := bs.stop(10 * time.Second); err != nil && !isSignalExit(err) {
		t.Errorf("stopping baresip: %v", err)
	}
	// baresip's own account of the call: the INVITE came over TLS and the
	// audio stream is SRTP with the suite of ponte's tag 1.
	out := bs.out.String()
	for _, want := range []string{"sipsess connect via TLS", "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)", "mediaenc event 'Secure'"} {
		if !strings.Contains(out, want) {
			t.Errorf("baresip's log lacks %q", want)
		}
	}
	if rec.EndedBy != "caller" || rec.Codec != "PCMU" {
		t.Errorf("record: ended_by=%q codec=%q, want caller and PCMU", rec.EndedBy, rec.Codec)
	}
	checkGraph(t, env, caller.ID())
	checkBaresipRecording(t, recDir, rec, wins)
}

func appendFile(t *testing.T, name, s string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
