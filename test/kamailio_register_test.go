package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/sip"
)

// kamailioRegCfg is kamailio as a registrar with digest and no database:
// the password is fixed (pv_www_authenticate), bindings live in memory
// (usrloc db_mode 0). A REGISTER below min_expires gets 423 (RFC 3261
// §10.3 step 7; min_expires_mode 1). An INVITE for a registered user is
// relayed to its Contact (lookup). Every step is logged (xlog) so the test
// can see what kamailio did.
const kamailioRegCfg = `#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:127.0.0.1:%[1]d
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 5)
modparam("registrar", "min_expires_mode", 1)
modparam("registrar", "max_expires", 3600)
request_route {
	xlog("L_NOTICE", "PONTE-REG req $rm cs=$cs exp=[$hdr(Expires)] user=[$au] src=$si:$sp ci=$ci\n");
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (is_method("REGISTER")) {
		if (!pv_www_authenticate("$td", "%[2]s", "0")) { www_challenge("$td", "0"); exit; }
		if ($au != $tU) { sl_send_reply("403", "Forbidden"); exit; }
		consume_credentials();
		if (!save("location")) {
			xlog("L_NOTICE", "PONTE-REG refused cs=$cs exp=[$hdr(Expires)] ci=$ci\n");
			exit;
		}
		xlog("L_NOTICE", "PONTE-REG saved cs=$cs exp=[$hdr(Expires)] contact=[$ct] ci=$ci\n");
		exit;
	}
	if (has_totag()) {
		if (loose_route()) { t_relay(); exit; }
		if (is_method("ACK") && t_check_trans()) { t_relay(); }
		exit;
	}
	if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
	if (is_method("INVITE")) {
		if (!lookup("location")) {
			xlog("L_NOTICE", "PONTE-REG nobody ruri=$ru ci=$ci\n");
			sl_send_reply("404", "Not Found");
			exit;
		}
		xlog("L_NOTICE", "PONTE-REG relay ruri=$ru ci=$ci\n");
	}
	if (!t_relay()) { sl_reply_error(); }
}
`

var kamRegLine = regexp.MustCompile(`PONTE-REG (req|saved|refused|relay|nobody) (.*) ci=(\S+)`)

// kamRegEvents returns kamailio's PONTE-REG lines for callID as "kind rest".
func kamRegEvents(log, callID string) []string {
	var out []string
	for _, m := range kamRegLine.FindAllStringSubmatch(log, -1) {
		if m[3] == callID {
			out = append(out, m[1]+" "+m[2])
		}
	}
	return out
}

// runKamailio checks cfg, runs kamailio in the foreground in its own
// process group and stops it (and the group) in the test's cleanup.
func runKamailio(t *testing.T, dir, cfg string, port int) *peer {
	t.Helper()
	bin := needBin(t, "kamailio", "kamailio")
	file := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("kamailio -c: %v\n%s", err, out)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &peer{name: "kamailio", done: make(chan struct{}), cancel: func() {}}
	p.cmd = exec.Command(bin, "-DD", "-E", "-f", file, "-Y", run, "-P", filepath.Join(run, "kamailio.pid"))
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start kamailio: %v", err)
	}
	pgid := p.cmd.Process.Pid
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		for i := 0; i < 100 && syscall.Kill(-pgid, 0) == nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if syscall.Kill(-pgid, 0) == nil {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			t.Errorf("kamailio children outlived the main process (group %d killed)", pgid)
		}
		if t.Failed() {
			t.Logf("kamailio output:\n%s", p.out.String())
		}
	})
	p.waitListening(t, port, 10*time.Second)
	return p
}

// TestKamailioRegister: ponte registers to kamailio with digest, is told
// 423 and asks again for kamailio's Min-Expires, refreshes the 5 s binding,
// and an INVITE sent to kamailio for the registered user reaches ponte's
// Contact (lookup), where the test's handler answers 486, relayed back to
// the caller. Close unregisters: the next INVITE finds nobody.
func TestKamailioRegister(t *testing.T) {
	noLeaks(t)
	const password = "s3cret-reg"
	dir := t.TempDir()
	kamPort := freePorts(t, 2)
	kam := runKamailio(t, dir, fmt.Sprintf(kamailioRegCfg, kamPort, password), kamPort)

	u, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", UserAgent: "ponte-test", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var (
		mu      sync.Mutex
		invites []*sipgo.Request
	)
	// The call's own handling is the inbound server's (not this test's):
	// here it is enough to see the INVITE arrive and refuse it.
	u.OnInvite(func(req *sipgo.Request, tx sipgo.ServerTransaction) {
		mu.Lock()
		invites = append(invites, req.Clone())
		mu.Unlock()
		_ = tx.Respond(sipgo.NewResponseFromRequest(req, 486, "Busy Here", nil))
	})

	trunk := &sip.Trunk{Name: "kamailio", Address: fmt.Sprintf("127.0.0.1:%d", kamPort), Username: "ponte", Password: password}
	reg, err := u.Register(context.Background(), sip.Registration{
		Trunk: trunk, User: "ponte", Expires: 3 * time.Second, KeepAlive: time.Second, RetryMin: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = reg.Close(ctx)
		}
	}()
	// Kamailio grants its min_expires, 5 s: a refresh is due at 2.5 s.
	deadline := time.Now().Add(12 * time.Second)
	var st sip.RegStatus
	for {
		st = reg.Status()
		if st.Registered && st.Refreshes >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refreshed registration within 12 s: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if g := st.Expires.Sub(st.LastSuccess); g != 5*time.Second || st.Failures != 0 || st.LastCode != 200 {
		t.Fatalf("status %+v (granted %v, want kamailio's 5 s)", st, g)
	}
	contact := "sip:ponte@" + u.ListenAddr("udp").String()
	if st.Contact != contact {
		t.Fatalf("Contact %q, want %q", st.Contact, contact)
	}

	// The INVITE for the AOR reaches ponte through kamailio's lookup.
	caller := newSIPCaller(t)
	kam4 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kamPort}
	if code := caller.invite(t, kam4, fmt.Sprintf("sip:ponte@127.0.0.1:%d", kamPort), "reg-call-1"); code != 486 {
		t.Fatalf("INVITE through kamailio: %d, want ponte's 486", code)
	}
	mu.Lock()
	got := append([]*sipgo.Request(nil), invites...)
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("ponte got %d INVITEs, want 1", len(got))
	}
	if ruri := got[0].Recipient.String(); ruri != contact {
		t.Fatalf("INVITE Request-URI %s, want the registered Contact %s", ruri, contact)
	}
	if n := len(got[0].GetHeaders("Via")); n != 2 {
		t.Fatalf("INVITE with %d Vias, want the caller's and kamailio's", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reg.Close(ctx); err != nil {
		t.Fatalf("unregister: %v", err)
	}
	closed = true
	if code := caller.invite(t, kam4, fmt.Sprintf("sip:ponte@127.0.0.1:%d", kamPort), "reg-call-2"); code != 404 {
		t.Fatalf("INVITE after unregister: %d, want 404", code)
	}

	// What kamailio did with the binding's REGISTERs (one Call-ID). Its
	// log reaches the test through a pipe: wait for the last lines.
	var (
		evs, relayed                        []string
		refused, saved5, saved0, challenged int
	)
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		log := kam.out.String()
		evs = kamRegEvents(log, reg.CallID())
		refused, saved5, saved0, challenged = 0, 0, 0, 0
		for _, e := range evs {
			switch {
			case strings.HasPrefix(e, "refused") && strings.Contains(e, "exp=[3]"):
				refused++
			case strings.HasPrefix(e, "saved") && strings.Contains(e, "exp=[5]"):
				saved5++
			case strings.HasPrefix(e, "saved") && strings.Contains(e, "exp=[0]"):
				saved0++
			case strings.HasPrefix(e, "req REGISTER") && strings.Contains(e, "user=[<null>]"):
				challenged++
			}
		}
		relayed = kamRegEvents(log, "reg-call-1")
		if (refused == 1 && saved5 >= 2 && saved0 == 1 && challenged >= 3 && len(relayed) >= 2) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("kamailio, Call-ID %s:\n  %s", reg.CallID(), strings.Join(evs, "\n  "))
	if refused != 1 || saved5 < 2 || saved0 != 1 || challenged < 3 {
		t.Fatalf("kamailio saw %d 423s for Expires 3 (want 1), %d bindings saved for 5 s (want >= 2: a refresh), %d unregisters (want 1), %d REGISTERs without credentials (want >= 3: each is challenged)", refused, saved5, saved0, challenged)
	}
	if len(relayed) < 2 || !strings.Contains(relayed[1], "relay ruri="+contact) {
		t.Fatalf("kamailio's lookup: %q", relayed)
	}
}

// sipCaller sends INVITEs from a raw UDP socket and reads the final answer.
type sipCaller struct {
	conn *net.UDPConn
}

func newSIPCaller(t *testing.T) *sipCaller {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sipCaller{conn: c}
}

// invite sends an INVITE to ruri via proxy and returns the final code,
// ACKing a non-2xx (RFC 3261 §17.1.1.3).
func (c *sipCaller) invite(t *testing.T, proxy *net.UDPAddr, ruri, callID string) int {
	t.Helper()
	port := c.conn.LocalAddr().(*net.UDPAddr).Port
	branch := "z9hG4bK-" + callID
	head := fmt.Sprintf("Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c1\r\n", port, branch)
	inv := fmt.Sprintf("INVITE %s SIP/2.0\r\n%sTo: <%s>\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:%d>\r\nContent-Length: 0\r\n\r\n", ruri, head, ruri, callID, port)
	if _, err := c.conn.WriteToUDP([]byte(inv), proxy); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no final answer to the INVITE %s: %v", callID, err)
		}
		m, err := sipgo.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		res, ok := m.(*sipgo.Response)
		if !ok || res.StatusCode < 200 || res.CallID() == nil || res.CallID().Value() != callID {
			continue
		}
		ack := fmt.Sprintf("ACK %s SIP/2.0\r\n%s%s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", ruri, head, res.To().String(), callID)
		if _, err := c.conn.WriteToUDP([]byte(ack), proxy); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode
	}
}

// TestKamailioRegisteredCall: the whole gateway registers to kamailio (a
// registration trunk, as for 3CX or a cloud PBX), /readyz and
// ponte_sip_registration_up say so, and an agent's call sent to kamailio for
// ponte's AOR, with the WhatsApp number in To, is relayed to ponte's
// Contact and becomes a business-initiated call with audio both ways.
func TestKamailioRegisteredCall(t *testing.T) {
	const password = "s3cret-reg"
	dir := t.TempDir()
	kamPort := freePorts(t, 2)
	w := startStallWatch(t)
	runKamailio(t, dir, fmt.Sprintf(kamailioRegCfg, kamPort, password), kamPort)
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.SIP.Trunks = append(c.SIP.Trunks, config.Trunk{Name: "kam", Address: fmt.Sprintf("127.0.0.1:%d", kamPort),
			Transport: "udp", Auth: config.Auth{Username: "ponte", Password: password}, Codecs: []string{"PCMU"},
			Register: &config.TrunkRegister{User: "ponte", Expires: config.Duration(10 * time.Second)}})
	}})
	ready := func() (string, string) {
		_, r := httpGet(t, env.Server.AdminURL()+"/readyz")
		_, m := httpGet(t, env.Server.AdminURL()+"/metrics")
		return r, m
	}
	if !waitFor(10*time.Second, func() bool {
		r, m := ready()
		return strings.Contains(r, "register kam: ok") && strings.Contains(m, `ponte_sip_registration_up{trunk="kam"} 1`)
	}) {
		r, _ := ready()
		t.Fatalf("not registered to kamailio: /readyz\n%s", r)
	}
	outboundUser(env, bicUser, wasim.UserOptions{})
	pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{Target: fmt.Sprintf("sip:ponte@127.0.0.1:%d", kamPort), ToUser: "+" + bicUser})
	if v := pc.Response().GetHeaders("Via"); len(v) != 1 {
		t.Errorf("the 200 came back with %d Vias", len(v))
	}
	listen(t, w, time.Now().Add(500*time.Millisecond), time.Second, bothWays(callee, pc, atLeast(0.95), atLeast(0.95)))
	_ = pc.Hangup(ctxT(t, 5*time.Second))
	<-callee.Ended()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
