package sip_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

func TestRegisterErrors(t *testing.T) {
	s := newRegServer(t)
	u := newUA(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		reg  sip.Registration
	}{
		{"no trunk", sip.Registration{User: "ponte"}},
		{"no user", sip.Registration{Trunk: regTrunk(s, "udp")}},
		{"no tls listener", sip.Registration{Trunk: &sip.Trunk{Address: "127.0.0.1:5061", Transport: "tls"}, User: "ponte"}},
		{"bad address", sip.Registration{Trunk: &sip.Trunk{Address: "a b:x"}, User: "ponte"}},
		{"bad domain", sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte", Domain: "pbx.test>\r\nX: y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := u.Register(ctx, tc.reg); !errors.Is(err, sip.ErrConfig) {
				t.Fatalf("got %v, want ErrConfig", err)
			}
		})
	}
	idle, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Register(ctx, sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte"}); !errors.Is(err, sip.ErrNotStarted) {
		t.Fatalf("unstarted UA: %v", err)
	}
}

// TestRegisterRefresh: digest on every REGISTER of one binding, one Call-ID
// and From tag, CSeq +1 each time (RFC 3261 §10.2.4), a stable Contact at
// the UA's listener, refreshes before the granted 2 s run out (taken from
// the Contact's expires, not the Expires header), keep-alives on the
// registrar's socket, and Expires: 0 on Close.
func TestRegisterRefresh(t *testing.T) {
	for _, tr := range []string{"udp", "tcp", "tls"} {
		t.Run(tr, func(t *testing.T) {
			s := newRegServer(t)
			var u *sip.UA
			if tr == "tls" {
				pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1")
				if err != nil {
					t.Fatal(err)
				}
				s.serveTLS(pki)
				u = tlsUA(t, pki)
			} else {
				u = newUA(t)
			}
			var log statusLog
			r, err := u.Register(context.Background(), sip.Registration{
				Trunk: regTrunk(s, tr), User: "ponte", Domain: "pbx.test",
				KeepAlive: 150 * time.Millisecond, OnChange: log.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			wantContact := "sip:ponte@" + u.ListenAddr(tr).String()
			if tr != "udp" {
				wantContact += ";transport=" + tr
			}
			st := waitStatus(t, r, 3*2*time.Second, "two refreshes of a 2 s binding", func(st sip.RegStatus) bool { return st.Refreshes >= 2 })
			if !st.Registered || st.LastCode != 200 || st.Trunk != "cloud" || st.LastError != "" || st.Failures != 0 {
				t.Fatalf("status %+v", st)
			}
			if g := st.Expires.Sub(st.LastSuccess); g != 2*time.Second {
				t.Fatalf("granted %v, want the Contact's expires=2 (not Expires: 3600)", g)
			}
			if st.Contact != wantContact {
				t.Fatalf("status Contact %q, want %q", st.Contact, wantContact)
			}
			if st.NextAttempt.Before(st.LastSuccess) || st.NextAttempt.After(st.Expires) {
				t.Fatalf("next refresh %v not between the success %v and expiry %v", st.NextAttempt, st.LastSuccess, st.Expires)
			}
			// Keep-alives come from the binding's own flow: the listening
			// socket on UDP, the registration's connection on TCP/TLS.
			deadline := time.Now().Add(3 * time.Second)
			for {
				var n int
				switch tr {
				case "udp":
					n = s.udp.count(u.ListenAddr("udp").String())
				case "tcp":
					n = s.tcp.count()
				case "tls":
					n = s.tls.count()
				}
				if n >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d keep-alives seen on the registrar's %s socket, want >= 2", n, tr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			closeReg(t, r)

			recs := s.records()
			if len(recs) < 8 { // 3 bindings + unregister, each 401 then authorized
				t.Fatalf("%d REGISTERs", len(recs))
			}
			first := recs[0].req
			for i, rec := range recs {
				q := rec.req
				if q.CallID().Value() != first.CallID().Value() {
					t.Fatalf("REGISTER %d: Call-ID %s, first %s", i, q.CallID().Value(), first.CallID().Value())
				}
				if q.CSeq().SeqNo != first.CSeq().SeqNo+uint32(i) {
					t.Fatalf("REGISTER %d: CSeq %d, want %d", i, q.CSeq().SeqNo, first.CSeq().SeqNo+uint32(i))
				}
				if tag, _ := q.From().Params.Get("tag"); tag == "" || tag != first.From().Params.GetOr("tag", "") {
					t.Fatalf("REGISTER %d: From tag %q", i, tag)
				}
				if q.Recipient.String() != "sip:pbx.test" || q.From().Address.String() != "sip:ponte@pbx.test" || q.To().Address.String() != "sip:ponte@pbx.test" {
					t.Fatalf("REGISTER %d: R-URI %s From %s To %s", i, q.Recipient.String(), q.From().Address.String(), q.To().Address.String())
				}
				if c := contactsOf(q); len(c) != 1 || c[0] != wantContact {
					t.Fatalf("REGISTER %d: Contact %q, want %q", i, c, wantContact)
				}
				// Each REGISTER is first challenged, then authorized.
				if rec.authed != (i%2 == 1) {
					t.Fatalf("REGISTER %d: authorized=%v (%s), code %d", i, rec.authed, rec.authErr, rec.code)
				}
				last := i >= len(recs)-2
				if want := map[bool]int{false: 300, true: 0}[last]; rec.expires() != want {
					t.Fatalf("REGISTER %d: Expires %d, want %d", i, rec.expires(), want)
				}
			}
			if c := recs[len(recs)-1].code; c != 200 {
				t.Fatalf("unregister answered %d", c)
			}
			st = r.Status()
			if st.Registered || !st.Expires.IsZero() {
				t.Fatalf("after Close: %+v", st)
			}
			all := log.list()
			if len(all) < 4 || !all[0].Registered || all[len(all)-1].Registered {
				t.Fatalf("OnChange saw %d states, first %+v", len(all), all[0])
			}
			if err := r.Close(context.Background()); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if n := len(s.records()); n != len(recs) {
				t.Fatalf("second Close sent %d more REGISTERs", n-len(recs))
			}
		})
	}
}

// TestRegisterDigest checks the credentials ponte computes for each kind of
// challenge (RFC 7616 SHA-256 and MD5, with qop=auth and RFC 2069's
// without), and that refused credentials are not retried in a loop.
func TestRegisterDigest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alg   string
		noQOP bool
		pass  string
		ok    bool
	}{
		{"md5 default", "", false, "s3cret", true},
		{"md5 explicit", "MD5", false, "s3cret", true},
		{"md5 no qop", "MD5", true, "s3cret", true},
		{"sha-256", "SHA-256", false, "s3cret", true},
		{"sha-256 no qop", "SHA-256", true, "s3cret", true},
		{"wrong password", "MD5", false, "guess", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRegServer(t)
			s.set(func(s *regServer) { s.alg, s.noQOP, s.grant = tc.alg, tc.noQOP, 60 })
			u := newUA(t)
			trunk := regTrunk(s, "udp")
			trunk.Password = tc.pass
			r, err := u.Register(context.Background(), sip.Registration{Trunk: trunk, User: "ponte", RetryMin: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer closeReg(t, r)
			st := waitStatus(t, r, 5*time.Second, "an outcome", func(st sip.RegStatus) bool { return st.Registered || st.Failures > 0 })
			recs := s.records()
			if !tc.ok {
				if st.Registered || st.LastCode != 401 || !strings.Contains(st.LastError, "401") {
					t.Fatalf("refused credentials: %+v", st)
				}
				if len(recs) != 2 || recs[1].authed {
					t.Fatalf("%d REGISTERs for one refused attempt, want 2 (challenge, answer)", len(recs))
				}
				if !strings.HasPrefix(recs[1].authErr, "response ") {
					t.Fatalf("refused for %q, want a wrong response", recs[1].authErr)
				}
				return
			}
			if !st.Registered || len(recs) != 2 || !recs[1].authed {
				t.Fatalf("status %+v; registrar: %d REGISTERs, second authorized=%v (%s)", st, len(recs), len(recs) > 1 && recs[1].authed, recs[len(recs)-1].authErr)
			}
		})
	}
}

// TestRegisterIntervalTooBrief: a 423 makes ponte ask for the registrar's
// Min-Expires (RFC 3261 §10.2.8), and keep asking for it.
func TestRegisterIntervalTooBrief(t *testing.T) {
	s := newRegServer(t)
	s.set(func(s *regServer) { s.minExpires, s.grant = 3600, 3600 })
	u := newUA(t)
	r, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte", Expires: 300 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, r, 5*time.Second, "registered", func(st sip.RegStatus) bool { return st.Registered })
	if g := st.Expires.Sub(st.LastSuccess); g != time.Hour || st.Failures != 0 {
		t.Fatalf("granted %v, failures %d", g, st.Failures)
	}
	closeReg(t, r)
	var got []string
	for _, rec := range s.records() {
		got = append(got, fmt.Sprintf("%d:%d", rec.expires(), rec.code))
	}
	want := "300:401 300:423 3600:401 3600:200 0:401 0:200"
	if strings.Join(got, " ") != want {
		t.Fatalf("Expires:code sequence %q, want %q", strings.Join(got, " "), want)
	}
}

// TestRegisterBackoff: 503s are retried after a doubling, jittered delay,
// at least a Retry-After's, and the status shows the failures meanwhile.
func TestRegisterBackoff(t *testing.T) {
	s := newRegServer(t)
	s.set(func(s *regServer) {
		s.grant = 60
		s.script = []scripted{{503, ""}, {503, ""}, {503, "1 (maintenance)"}}
	})
	u := newUA(t)
	var log statusLog
	const retryMin = 150 * time.Millisecond
	r, err := u.Register(context.Background(), sip.Registration{
		Trunk: regTrunk(s, "udp"), User: "ponte", RetryMin: retryMin, RetryMax: 10 * time.Second, OnChange: log.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeReg(t, r)
	st := waitStatus(t, r, 10*time.Second, "registered after three 503s", func(st sip.RegStatus) bool { return st.Registered })
	if st.Failures != 3 || st.LastCode != 200 || st.LastError != "" || st.Refreshes != 0 {
		t.Fatalf("status %+v", st)
	}
	// Each attempt starts with an unauthorized REGISTER; the gap from a
	// 503 to the next attempt is the backoff: RetryMin·2^(k-1) -20 %, and
	// Retry-After's 1 s for the third.
	recs := s.records()
	var fails, starts []time.Time
	for _, rec := range recs {
		switch {
		case rec.code == 503:
			fails = append(fails, rec.at)
		case !rec.authed && len(fails) > len(starts):
			starts = append(starts, rec.at)
		}
	}
	if len(fails) != 3 || len(starts) != 3 {
		t.Fatalf("%d 503s and %d retries", len(fails), len(starts))
	}
	const slack = 5 * time.Millisecond
	for k, min := range []time.Duration{retryMin * 8 / 10, retryMin * 2 * 8 / 10, time.Second} {
		if gap := starts[k].Sub(fails[k]); gap < min-slack {
			t.Fatalf("retry %d after %v, want >= %v", k+1, gap, min)
		}
	}
	var sawFailure bool
	for _, st := range log.list() {
		if st.Failures == 1 && st.LastCode == 503 {
			sawFailure = true
			if st.Registered || !strings.Contains(st.LastError, "503") || !st.NextAttempt.After(st.LastSuccess) {
				t.Fatalf("status after the first 503: %+v", st)
			}
		}
	}
	if !sawFailure {
		t.Fatal("OnChange never reported the first 503")
	}
}

// TestRegisterLearnContact: the registrar saw ponte at another address
// (Via received/rport, RFC 3581): with LearnContact the next REGISTER
// binds that address and removes the old Contact; without, only the status
// tells.
func TestRegisterLearnContact(t *testing.T) {
	for _, learn := range []bool{true, false} {
		t.Run(fmt.Sprint("learn=", learn), func(t *testing.T) {
			s := newRegServer(t)
			// TEST-NET-3: only ever written in a Contact, never sent to.
			s.set(func(s *regServer) { s.grant, s.received, s.rport = 60, "203.0.113.7", 40000 })
			u := newUA(t)
			local := "sip:ponte@" + u.ListenAddr("udp").String()
			public := "sip:ponte@203.0.113.7:40000"
			r, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte", LearnContact: learn})
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]string{true: public, false: local}[learn]
			st := waitStatus(t, r, 5*time.Second, "registered", func(st sip.RegStatus) bool { return st.Registered && st.Contact == want })
			if st.PublicAddr != "203.0.113.7:40000" {
				t.Fatalf("PublicAddr %q", st.PublicAddr)
			}
			time.Sleep(300 * time.Millisecond) // room for a wrong extra REGISTER
			closeReg(t, r)
			var got []string
			for _, rec := range s.authed() {
				got = append(got, strings.Join(contactsOf(rec.req), ","))
			}
			wantSeq := []string{local, local}
			if learn {
				wantSeq = []string{local, local + ";expires=0," + public, public}
			}
			if strings.Join(got, " | ") != strings.Join(wantSeq, " | ") {
				t.Fatalf("Contacts of the authorized REGISTERs:\n got %q\nwant %q", got, wantSeq)
			}
		})
	}
}

// TestRegisterLearnNoStorm: a registrar that sees a new address in every
// answer gets one immediate re-REGISTER, not a stream of them; the next
// address waits for the refresh.
func TestRegisterLearnNoStorm(t *testing.T) {
	s := newRegServer(t)
	s.set(func(s *regServer) { s.grant, s.received, s.rport, s.rportStep = 60, "203.0.113.7", 40000, 1 })
	u := newUA(t)
	r, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte", LearnContact: true})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, r, 5*time.Second, "the second address learned", func(st sip.RegStatus) bool { return st.Contact == "sip:ponte@203.0.113.7:40001" })
	time.Sleep(500 * time.Millisecond) // a storm would show here
	if n := len(s.authed()); n != 2 {
		t.Fatalf("%d authorized REGISTERs, want 2 (the first, and one with the learned Contact)", n)
	}
	if st := r.Status(); !st.NextAttempt.After(time.Now().Add(20 * time.Second)) {
		t.Fatalf("next REGISTER at %v, want the refresh ~30 s away", st.NextAttempt)
	}
	closeReg(t, r)
	// The unregister removes both the Contact last bound and the pending one.
	last := s.authed()[2]
	if got := strings.Join(contactsOf(last.req), ","); got != "sip:ponte@203.0.113.7:40000;expires=0,sip:ponte@203.0.113.7:40001" || last.expires() != 0 {
		t.Fatalf("unregister Contacts %q Expires %d", got, last.expires())
	}
}

// TestRegisterFlowLost: when the registrar drops the TCP connection the
// keep-alive finds no flow and ponte registers again at once over a new
// one (RFC 5626 §4.4.1), long before the refresh is due.
func TestRegisterFlowLost(t *testing.T) {
	s := newRegServer(t)
	s.set(func(s *regServer) { s.grant = 60 })
	u := newUA(t)
	r, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "tcp"), User: "ponte", KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer closeReg(t, r)
	waitStatus(t, r, 5*time.Second, "registered", func(st sip.RegStatus) bool { return st.Registered })
	before := s.authed()[0].req.Source()
	s.tcp.closeConns()
	st := waitStatus(t, r, 3*time.Second, "registered again", func(st sip.RegStatus) bool { return st.Refreshes == 1 })
	if !st.Registered {
		t.Fatalf("status %+v", st)
	}
	after := s.authed()[1].req.Source()
	if after == before {
		t.Fatalf("re-REGISTER came over the old connection %s", before)
	}
}

// TestRegisterUAClose: UA.Close stops the loop (goleak checks it in
// TestMain); the binding cannot be removed afterwards, which Close says.
func TestRegisterUAClose(t *testing.T) {
	s := newRegServer(t)
	s.set(func(s *regServer) { s.grant = 60 })
	u := newUA(t)
	r, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte"})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, r, 5*time.Second, "registered", func(st sip.RegStatus) bool { return st.Registered })
	u.Close()
	n := len(s.records())
	if err := r.Close(context.Background()); !errors.Is(err, sip.ErrClosed) {
		t.Fatalf("Close after UA.Close: %v", err)
	}
	if m := len(s.records()); m != n {
		t.Fatalf("%d REGISTERs after UA.Close", m-n)
	}
	if _, err := u.Register(context.Background(), sip.Registration{Trunk: regTrunk(s, "udp"), User: "ponte"}); !errors.Is(err, sip.ErrClosed) {
		t.Fatalf("Register on a closed UA: %v", err)
	}
}

// TestRegisterCloseUnanswered: Close returns promptly while a REGISTER is
// unanswered (Timer F is 32 s), and sends no unregister for a binding that
// never existed.
func TestRegisterCloseUnanswered(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	type counts struct{ registers, unregisters int }
	got := make(chan counts, 1)
	go func() {
		buf := make([]byte, 4096)
		var n counts
		for {
			m, _, err := hole.ReadFrom(buf)
			if err != nil {
				got <- n
				return
			}
			if bytes.HasPrefix(buf[:m], []byte("REGISTER ")) {
				n.registers++
				if bytes.Contains(buf[:m], []byte("\r\nExpires: 0\r\n")) {
					n.unregisters++
				}
			}
		}
	}()
	u := newUA(t)
	r, err := u.Register(context.Background(), sip.Registration{Trunk: &sip.Trunk{Name: "dead", Address: hole.LocalAddr().String()}, User: "ponte"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the REGISTER and its first retransmissions (T1 = 500 ms)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if st := r.Status(); st.Registered || st.Failures != 0 {
		t.Fatalf("status %+v", st)
	}
	u.Close()
	hole.Close()
	// Retransmissions of the one REGISTER; never an unregister.
	if n := <-got; n.registers < 2 || n.unregisters != 0 {
		t.Fatalf("%d REGISTER datagrams (want the request and a retransmission), %d with Expires: 0 (want none)", n.registers, n.unregisters)
	}
}
