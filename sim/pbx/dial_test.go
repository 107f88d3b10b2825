package pbx_test

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// startPBX starts a simulator that Close stops at the end of the test.
func startPBX(t *testing.T, cfg pbx.Config) *pbx.PBX {
	t.Helper()
	cfg.Logger = quiet
	p, err := pbx.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func targetOf(p *pbx.PBX, user string) string { return "sip:" + user + "@" + p.Addr().String() }

// eventually polls cond for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// placeCall makes a dial b and returns both ends of the call.
func placeCall(t *testing.T, a, b *pbx.PBX, o pbx.DialOptions) (caller, callee *pbx.Call) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o.Target == "" {
		o.Target = targetOf(b, "+5511987654321")
	}
	caller, err := a.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if callee, err = b.NextCall(ctx); err != nil {
		t.Fatal(err)
	}
	return caller, callee
}

// heardTone checks that an analyzer's windows since from carry its tone.
func heardTone(t *testing.T, who string, an *audio.Analyzer, from time.Time) {
	t.Helper()
	// Enough windows first (a starved machine delivers them late), then
	// the tone in them.
	eventually(5*time.Second, func() bool { return an.Report(from, time.Now()).Windows >= 20 })
	r := an.Report(from, time.Now())
	if r.Windows < 20 || r.ToneRatio < 0.9 {
		t.Errorf("%s: %d windows, tone ratio %.2f (mean %.1f dBFS)", who, r.Windows, r.ToneRatio, r.MeanDBFS)
	}
}

// TestDialTonesBothWays: PBX A places a call to PBX B (UDP and TCP, G.711
// and Opus); each hears the other's tone, the dialog is one (Call-ID, tags)
// and a BYE from A ends it at B.
func TestDialTonesBothWays(t *testing.T) {
	for _, tc := range []struct {
		transport, codec string
	}{{"udp", "PCMU"}, {"tcp", "PCMA"}, {"udp", "opus"}} {
		t.Run(tc.transport+"/"+tc.codec, func(t *testing.T) {
			b := startPBX(t, pbx.Config{Codecs: []string{tc.codec}, ToneHz: 1200, ExpectToneHz: 700})
			a := startPBX(t, pbx.Config{Codecs: []string{"PCMU", "PCMA", "opus"}, ToneHz: 700, ExpectToneHz: 1200})
			ca, cb := placeCall(t, a, b, pbx.DialOptions{Transport: tc.transport, From: "2002"})
			if !ca.Placed() || cb.Placed() {
				t.Fatalf("Placed: caller %v callee %v", ca.Placed(), cb.Placed())
			}
			if ca.Codec().Name != tc.codec || cb.Codec().Name != tc.codec {
				t.Fatalf("codecs: caller %s callee %s, want %s", ca.Codec().Name, cb.Codec().Name, tc.codec)
			}
			inv := cb.Invite()
			if got := inv.Transport(); !strings.EqualFold(got, tc.transport) {
				t.Fatalf("INVITE arrived over %s", got)
			}
			if inv.CallID().Value() != ca.Invite().CallID().Value() || inv.From().Address.User != "2002" {
				t.Fatalf("callee saw Call-ID %s From %s", inv.CallID().Value(), inv.From().Address.String())
			}
			if ca.Response() == nil || ca.Response().StatusCode != 200 || ca.AckedAt().IsZero() {
				t.Fatalf("caller: response %v acked %v", ca.Response(), ca.AckedAt())
			}
			if !eventually(3*time.Second, func() bool { return !cb.AckedAt().IsZero() }) {
				t.Fatal("callee never got the ACK")
			}
			time.Sleep(time.Second)
			from := ca.AnsweredAt().Add(300 * time.Millisecond)
			heardTone(t, "caller hears 1200 Hz", ca.Received(), from)
			heardTone(t, "callee hears 700 Hz", cb.Received(), from)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := ca.Hangup(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-cb.Ended():
			case <-ctx.Done():
				t.Fatal("callee still up after the BYE")
			}
			if cb.EndedBy() != "bye" || !strings.Contains(cb.ByeReason(), "cause=16") || ca.EndedBy() != "local" {
				t.Fatalf("ended by: callee %q (%q), caller %q", cb.EndedBy(), cb.ByeReason(), ca.EndedBy())
			}
		})
	}
}

// hexHash is H(parts joined by ":") in lowercase hex (RFC 7616 §3.4.1).
func hexHash(h func() hash.Hash, parts ...string) string {
	w := h()
	w.Write([]byte(strings.Join(parts, ":")))
	return hex.EncodeToString(w.Sum(nil))
}

// TestDialDigest: a 401/407 is answered once with the topmost supported
// challenge (RFC 8760 §2.4); the response is recomputed here from RFC 7616
// §3.4.1 (qop=auth); the retry is CSeq+1 in the same Call-ID; a wrong
// password or no credentials end in a DialError with the challenge code.
func TestDialDigest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		algs     []string
		proxy    bool
		password string
		noAuth   bool
		wantAlg  string // "" → DialError
		wantCode int
	}{
		{"401 MD5", nil, false, "secret", false, "MD5", 0},
		{"407 SHA-256", []string{"SHA-256"}, true, "secret", false, "SHA-256", 0},
		{"SHA-256 listed first", []string{"SHA-256", "MD5"}, false, "secret", false, "SHA-256", 0},
		{"MD5 listed first", []string{"MD5", "SHA-256"}, false, "secret", false, "MD5", 0},
		{"unsupported first", []string{"SHA-512-256", "SHA-256"}, false, "secret", false, "SHA-256", 0},
		{"wrong password", nil, false, "guess", false, "", 401},
		{"no credentials", nil, true, "", true, "", 407},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startPBX(t, pbx.Config{Auth: &pbx.Auth{Username: "agent", Password: "secret"}, AuthAlgorithms: tc.algs, AuthProxy: tc.proxy})
			a := startPBX(t, pbx.Config{})
			o := pbx.DialOptions{Target: targetOf(b, "+5511987654321"), Auth: &pbx.Auth{Username: "agent", Password: tc.password}}
			if tc.noAuth {
				o.Auth = nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ca, err := a.Dial(ctx, o)
			if tc.wantAlg == "" {
				var de *pbx.DialError
				if !errors.As(err, &de) || de.Code != tc.wantCode {
					t.Fatalf("want DialError %d, got %v", tc.wantCode, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cb, err := b.NextCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			inv := cb.Invite()
			name := "Authorization"
			if tc.proxy {
				name = "Proxy-Authorization"
			}
			h := inv.GetHeader(name)
			if h == nil {
				t.Fatalf("no %s in %s", name, inv.String())
			}
			cred, err := digest.ParseCredentials(h.Value())
			if err != nil {
				t.Fatal(err)
			}
			hf := md5.New
			if tc.wantAlg == "SHA-256" {
				hf = sha256.New
			}
			uri := inv.Recipient.String()
			ha1 := hexHash(hf, "agent", "ponte-sim", "secret")
			ha2 := hexHash(hf, "INVITE", uri)
			want := hexHash(hf, ha1, cred.Nonce, fmt.Sprintf("%08x", cred.Nc), cred.Cnonce, "auth", ha2)
			if !strings.EqualFold(cred.Algorithm, tc.wantAlg) || cred.QOP != "auth" || cred.URI != uri ||
				cred.Realm != "ponte-sim" || cred.Username != "agent" || cred.Nc != 1 || cred.Cnonce == "" || cred.Response != want {
				t.Fatalf("credentials %+v, want algorithm %s response %s", cred, tc.wantAlg, want)
			}
			if s := inv.CSeq().SeqNo; s != 2 || ca.Invite().CSeq().SeqNo != 2 {
				t.Fatalf("retry CSeq %d (caller %d), want 2", s, ca.Invite().CSeq().SeqNo)
			}
			if inv.CallID().Value() != ca.Invite().CallID().Value() {
				t.Fatal("retry changed the Call-ID")
			}
		})
	}
}

// TestDialCancel: ctx ending before the answer sends a CANCEL once a
// provisional arrived (after the 180; or, before any, after sipgo's 100
// Trying) and Dial returns the ctx error with the 487.
func TestDialCancel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       pbx.Config
		onRinging bool          // cancel once the 180 arrived, else from the start
		after     time.Duration // this long after
	}{
		{"on the 180", pbx.Config{AnswerDelay: 10 * time.Second}, true, 0},
		{"while ringing", pbx.Config{AnswerDelay: 10 * time.Second}, true, 300 * time.Millisecond},
		{"before any provisional", pbx.Config{AnswerDelay: 10 * time.Second, NoProvisional: true}, false, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startPBX(t, tc.cfg)
			a := startPBX(t, pbx.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var seen []pbx.ProvisionalInfo
			cancelAfter := func() {
				if tc.after == 0 {
					cancel()
					return
				}
				go func() { time.Sleep(tc.after); cancel() }()
			}
			o := pbx.DialOptions{Target: targetOf(b, "+5511987654321"), OnProvisional: func(p pbx.ProvisionalInfo) {
				seen = append(seen, p)
				if p.Code == 180 && tc.onRinging {
					cancelAfter()
				}
			}}
			if !tc.onRinging {
				cancelAfter()
			}
			start := time.Now()
			_, err := a.Dial(ctx, o)
			var de *pbx.DialError
			if !errors.Is(err, context.Canceled) || !errors.As(err, &de) || de.Code != 487 {
				t.Fatalf("want context.Canceled with a 487, got %v", err)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("Dial took %v to cancel", time.Since(start))
			}
			if tc.onRinging && (len(seen) != 1 || seen[0].Code != 180 || seen[0].HadSDP) {
				t.Fatalf("provisionals %+v", seen)
			}
			nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ncancel()
			cb, err := b.NextCall(nctx)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-cb.Ended():
			case <-nctx.Done():
				t.Fatal("callee still ringing")
			}
			if cb.EndedBy() != "cancel" {
				t.Fatalf("callee ended by %q", cb.EndedBy())
			}
		})
	}
}

// TestDialEarlyMedia: a 183 with SDP starts the receiver; its audio goes to
// EarlyReceived, the answer's to Received; the caller sends only after the
// 200.
func TestDialEarlyMedia(t *testing.T) {
	b := startPBX(t, pbx.Config{EarlyMedia: true, EarlyToneHz: 425, ToneHz: 1200, AnswerDelay: 800 * time.Millisecond, ExpectToneHz: 700})
	a := startPBX(t, pbx.Config{ToneHz: 700, ExpectToneHz: 1200})
	var got []pbx.ProvisionalInfo
	ca, cb := placeCall(t, a, b, pbx.DialOptions{ExpectEarlyHz: 425, OnProvisional: func(p pbx.ProvisionalInfo) { got = append(got, p) }})
	ps := ca.Provisionals()
	if len(ps) != 1 || ps[0].Code != 183 || !ps[0].HadSDP || len(got) != 1 || got[0] != ps[0] {
		t.Fatalf("provisionals %+v (callback %+v)", ps, got)
	}
	answered := ca.AnsweredAt()
	if d := answered.Sub(ps[0].At); d < 600*time.Millisecond {
		t.Fatalf("answer %v after the 183", d)
	}
	early := ca.EarlyReceived().Report(ps[0].At, answered)
	if early.Windows < 25 || early.ToneRatio < 0.8 {
		t.Fatalf("early media: %d windows, 425 Hz ratio %.2f", early.Windows, early.ToneRatio)
	}
	if r := ca.Received().Report(time.Time{}, answered); r.Windows != 0 {
		t.Fatalf("Received has %d windows before the answer", r.Windows)
	}
	if s := cb.Received().Report(time.Time{}, cb.AnsweredAt()); s.Windows != 0 {
		t.Fatalf("the caller sent %d frames before the 200", s.Windows)
	}
	time.Sleep(800 * time.Millisecond)
	heardTone(t, "caller after the answer", ca.Received(), answered.Add(200*time.Millisecond))
	heardTone(t, "callee", cb.Received(), answered.Add(300*time.Millisecond))
}

// TestDialHangupByCallee: B's BYE (HangupAfter) ends the placed call with
// its Reason.
func TestDialHangupByCallee(t *testing.T) {
	b := startPBX(t, pbx.Config{HangupAfter: 400 * time.Millisecond})
	a := startPBX(t, pbx.Config{})
	ca, cb := placeCall(t, a, b, pbx.DialOptions{})
	select {
	case <-ca.Ended():
	case <-time.After(5 * time.Second):
		t.Fatal("caller still up")
	}
	if ca.EndedBy() != "bye" || !strings.Contains(ca.ByeReason(), "cause=16") || cb.EndedBy() != "local" {
		t.Fatalf("caller ended by %q (%q), callee by %q", ca.EndedBy(), ca.ByeReason(), cb.EndedBy())
	}
}

// TestDialDTMFBothWays: RFC 4733 at the receiver's PT (RFC 4733 §2.1: the
// callee answered 96, the caller offered 101) and SIP INFO, both ways.
func TestDialDTMFBothWays(t *testing.T) {
	t.Run("rfc4733", func(t *testing.T) {
		b := startPBX(t, pbx.Config{DTMFPT: 96})
		a := startPBX(t, pbx.Config{DTMFPT: 101})
		ca, cb := placeCall(t, a, b, pbx.DialOptions{})
		if ca.Offer().DTMFPT != 101 || ca.Remote().DTMFPT != 96 {
			t.Fatalf("offer PT %d, answer PT %d", ca.Offer().DTMFPT, ca.Remote().DTMFPT)
		}
		done := make(chan struct{})
		go func() { defer close(done); cb.SendDTMF("#9", 80*time.Millisecond, 60*time.Millisecond) }()
		ca.SendDTMF("123", 100*time.Millisecond, 60*time.Millisecond)
		<-done
		if !eventually(2*time.Second, func() bool { return len(cb.Digits()) == 3 && len(ca.Digits()) == 2 }) {
			t.Fatalf("callee got %+v, caller got %+v", cb.Digits(), ca.Digits())
		}
		for i, d := range cb.Digits() {
			if d.Rune != rune("123"[i]) || d.PT != 96 || d.Duration != 100*time.Millisecond {
				t.Fatalf("callee digit %d: %+v", i, d)
			}
		}
		for i, d := range ca.Digits() {
			if d.Rune != rune("#9"[i]) || d.PT != 96 || d.Duration != 80*time.Millisecond {
				t.Fatalf("caller digit %d: %+v", i, d)
			}
		}
	})
	t.Run("info", func(t *testing.T) {
		b := startPBX(t, pbx.Config{DTMFInfo: true})
		a := startPBX(t, pbx.Config{DTMFInfo: true})
		ca, cb := placeCall(t, a, b, pbx.DialOptions{})
		ca.SendDTMF("47", 90*time.Millisecond, 10*time.Millisecond)
		cb.SendDTMF("*", 70*time.Millisecond, 10*time.Millisecond)
		if d := cb.InfoDigits(); len(d) != 2 || d[0].Rune != '4' || d[1].Rune != '7' || d[0].Duration != 90*time.Millisecond {
			t.Fatalf("callee INFO digits %+v", d)
		}
		if d := ca.InfoDigits(); len(d) != 1 || d[0].Rune != '*' || d[0].Duration != 70*time.Millisecond {
			t.Fatalf("caller INFO digits %+v", d)
		}
	})
}

// TestDialInDialog: re-INVITEs both ways inside a placed call; the
// callee's request reaches the caller's call (our tag in its To).
func TestDialInDialog(t *testing.T) {
	b := startPBX(t, pbx.Config{})
	a := startPBX(t, pbx.Config{})
	ca, cb := placeCall(t, a, b, pbx.DialOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := ca.Reinvite(ctx, ca.OfferSDP(pbx.SDPOptions{Direction: "sendonly"}))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller re-INVITE: %v %v", res, err)
	}
	if md, err := sip.ParseSDP(res.Body()); err != nil || md.Direction != "recvonly" {
		t.Fatalf("callee answered %+v %v", md, err)
	}
	if r := cb.InDialog(); len(r) != 1 || r[0].Method != "INVITE" {
		t.Fatalf("callee saw %+v", r)
	}
	res, err = cb.Reinvite(ctx, cb.OfferSDP(pbx.SDPOptions{Direction: "inactive"}))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("callee re-INVITE: %v %v", res, err)
	}
	if md, err := sip.ParseSDP(res.Body()); err != nil || md.Direction != "inactive" {
		t.Fatalf("caller answered %+v %v", md, err)
	}
	if r := ca.InDialog(); len(r) != 1 || r[0].Method != "INVITE" {
		t.Fatalf("caller saw %+v", r)
	}
	if res, err := cb.Request(ctx, "NOTIFY", []byte("SIP/2.0 200 OK\r\n"), "message/sipfrag", gosip.NewHeader("Event", "refer")); err != nil || res.StatusCode != 200 {
		t.Fatalf("NOTIFY to the caller: %v %v", res, err)
	}
	if r := ca.InDialog(); len(r) != 2 || r[1].Method != "NOTIFY" {
		t.Fatalf("caller saw %+v", r)
	}
}

// TestDialRejected: a final failure gives a DialError with the response.
func TestDialRejected(t *testing.T) {
	b := startPBX(t, pbx.Config{AnswerCode: 486})
	a := startPBX(t, pbx.Config{})
	_, err := a.Dial(context.Background(), pbx.DialOptions{Target: targetOf(b, "1000")})
	var de *pbx.DialError
	if !errors.As(err, &de) || de.Code != 486 || de.Reason != "Busy Here" || de.Response == nil || de.Response.StatusCode != 486 {
		t.Fatalf("want 486, got %v", err)
	}
}

// TestDialBadOptions: what Dial refuses before sending anything.
func TestDialBadOptions(t *testing.T) {
	a := startPBX(t, pbx.Config{})
	for _, o := range []pbx.DialOptions{
		{Target: "not a uri"},
		{Target: "sip:1@127.0.0.1:5060", Transport: "sctp"},
		{Target: "sip:1@127.0.0.1:5060", Transport: "tls"}, // no Secure.TLS listener
		{Target: "sip:1@127.0.0.1:5060", Codecs: []string{"G729"}},
	} {
		if _, err := a.Dial(context.Background(), o); !errors.Is(err, pbx.ErrDialOptions) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// TestDialTLSSRTP: the INVITE over TLS with an SDES offer; both legs run
// SRTP (nothing fails authentication), tones cross, the BYE goes over TLS.
// A callee that answers plain RTP is BYEd with 488.
func TestDialTLSSRTP(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	secure := func(policy string) pbx.Secure {
		return pbx.Secure{
			TLS:       &tls.Config{Certificates: []tls.Certificate{pki.ServerPair}, MinVersion: tls.VersionTLS12},
			ClientTLS: &tls.Config{RootCAs: pki.CA, MinVersion: tls.VersionTLS12},
			SRTP:      policy,
		}
	}
	t.Run("srtp", func(t *testing.T) {
		b := startPBX(t, pbx.Config{Secure: secure(""), ToneHz: 1200, ExpectToneHz: 700})
		a := startPBX(t, pbx.Config{Secure: secure(""), ToneHz: 700, ExpectToneHz: 1200})
		ca, cb := placeCall(t, a, b, pbx.DialOptions{Transport: "tls", SRTP: true})
		if tr := cb.Invite().Transport(); tr != "TLS" || cb.Offer().Proto != "RTP/SAVP" || len(cb.Offer().Crypto) != 1 {
			t.Fatalf("callee got %s %s %d crypto", tr, cb.Offer().Proto, len(cb.Offer().Crypto))
		}
		if ct := cb.Invite().Contact(); ct == nil || !strings.Contains(ct.Address.String(), "transport=tls") {
			t.Fatalf("caller Contact %v", ct)
		}
		time.Sleep(time.Second)
		from := ca.AnsweredAt().Add(300 * time.Millisecond)
		heardTone(t, "caller", ca.Received(), from)
		heardTone(t, "callee", cb.Received(), from)
		for who, c := range map[string]*pbx.Call{"caller": ca, "callee": cb} {
			if on, _, in, failed := c.SRTP(); !on || in < 20 || failed != 0 {
				t.Errorf("%s SRTP on=%v in=%d failed=%d", who, on, in, failed)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ca.Hangup(ctx); err != nil {
			t.Fatal(err)
		}
		if !eventually(3*time.Second, func() bool { return cb.EndedBy() == "bye" }) {
			t.Fatalf("callee ended by %q", cb.EndedBy())
		}
	})
	t.Run("plain answer", func(t *testing.T) {
		b := startPBX(t, pbx.Config{Secure: secure(pbx.SRTPPlain)})
		a := startPBX(t, pbx.Config{Secure: secure("")})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := a.Dial(ctx, pbx.DialOptions{Target: targetOf(b, "1"), Transport: "tls", SRTP: true})
		if !errors.Is(err, pbx.ErrNoMedia) {
			t.Fatalf("want ErrNoMedia, got %v", err)
		}
		cb, err := b.NextCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !eventually(3*time.Second, func() bool { return cb.EndedBy() == "bye" }) || !strings.Contains(cb.ByeReason(), "488") {
			t.Fatalf("callee ended by %q (%q)", cb.EndedBy(), cb.ByeReason())
		}
	})
}

// TestDialClose: Close ends placed calls and a Dial in progress.
func TestDialClose(t *testing.T) {
	b := startPBX(t, pbx.Config{})
	a := startPBX(t, pbx.Config{})
	ca, _ := placeCall(t, a, b, pbx.DialOptions{})

	slow := startPBX(t, pbx.Config{AnswerDelay: 10 * time.Second})
	ringing := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := a.Dial(context.Background(), pbx.DialOptions{Target: targetOf(slow, "1"), OnProvisional: func(p pbx.ProvisionalInfo) {
			if p.Code == 180 {
				close(ringing)
			}
		}})
		errc <- err
	}()
	select {
	case <-ringing:
	case <-time.After(5 * time.Second):
		t.Fatal("no 180")
	}
	a.Close()
	select {
	case <-ca.Ended():
	default:
		t.Fatal("Close left the placed call up")
	}
	if ca.EndedBy() != "local" {
		t.Fatalf("ended by %q", ca.EndedBy())
	}
	if err := <-errc; !errors.Is(err, pbx.ErrClosed) {
		t.Fatalf("ringing Dial: %v", err)
	}
	if _, err := a.Dial(context.Background(), pbx.DialOptions{Target: targetOf(b, "1")}); !errors.Is(err, pbx.ErrClosed) {
		t.Fatalf("Dial after Close: %v", err)
	}
}
