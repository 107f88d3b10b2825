package test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/store"
)

// Crash recovery (issue 8 item 5): ponte runs in its own process, is killed
// with SIGKILL mid-call and started again on the same SQLite file. Before it
// takes new calls the new process must BYE the PBX's dialog (matched by the
// PBX on Call-ID and its own tag), send exactly one terminate to Meta for the
// wacid, leave a record ended as interrupted, and empty the live-call table.

const crashConfig = `# written by test/crash_test.go
node_id: ponte-crash
log: { level: info, format: text }
http:
  public: "%[1]s"
  admin: "%[2]s"
whatsapp:
  graph_url: "%[3]s"
  access_token: "%[4]s"
  app_secret: "%[5]s"
  verify_token: "%[6]s"
  accept_deadline: 30s
  request_timeout: 3s
  numbers:
    - { phone_number_id: "%[7]s", display_phone_number: "%[8]s", inbound_route: support }
media:
  bind_ip: 127.0.0.1
  webrtc_udp_port: %[9]d
  rtp_ip: 127.0.0.1
  rtp_ports: 40000-49999
  connect_timeout: 10s
sip:
  listen: [ "udp:127.0.0.1:%[10]d" ]
  trunks:
    - { name: pbx, address: "%[11]s", transport: udp, codecs: [ PCMU ], inbound: { allow: [ "127.0.0.1" ] } }
routes:
  support:
    targets: [ { uri: "sip:agent@%[11]s", trunk: pbx, ring_timeout: 25s } ]
store: { driver: sqlite, dsn: "%[12]s" }
`

// crashEnv is the simulators in this process and ponte in a child process.
type crashEnv struct {
	t       *testing.T
	bin     string
	cfgPath string
	dbPath  string
	admin   string
	sipPort int
	pbxAddr string
	meta    *wasim.Meta
	pbx     *pbx.PBX
	logs    []string
	child   *exec.Cmd
	exited  chan struct{}
}

func newCrashEnv(t *testing.T, bin string) *crashEnv {
	t.Helper()
	dir := t.TempDir()
	pub, err := scenario.FreeTCP()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := scenario.FreeTCP()
	if err != nil {
		t.Fatal(err)
	}
	rtc, err := scenario.FreeUDP()
	if err != nil {
		t.Fatal(err)
	}
	sipPort, err := scenario.FreeUDP()
	if err != nil {
		t.Fatal(err)
	}
	e := &crashEnv{t: t, bin: bin, admin: admin, sipPort: sipPort, dbPath: filepath.Join(dir, "ponte.db"), cfgPath: filepath.Join(dir, "ponte.yaml")}
	ctx := context.Background()
	e.meta, err = wasim.Start(ctx, wasim.Config{
		WebhookURL: "http://" + pub + "/webhook", AppSecret: scenario.AppSecret, AccessToken: scenario.AccessToken,
		PhoneNumberID: scenario.PhoneNumberID, DisplayNumber: scenario.DisplayNumber, Logger: logger().With("sim", "meta"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.meta.Close() })
	e.pbx, err = pbx.Start(ctx, pbx.Config{Listen: "127.0.0.1:0", Codecs: []string{"PCMU"}, ExpectToneHz: 440, Logger: logger().With("sim", "pbx")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.pbx.Close() })
	e.pbxAddr = e.pbx.Addr().String()
	body := fmt.Sprintf(crashConfig, pub, admin, e.meta.GraphURL(), scenario.AccessToken, scenario.AppSecret, scenario.VerifyToken,
		scenario.PhoneNumberID, scenario.DisplayNumber, rtc, sipPort, e.pbx.Addr().String(), e.dbPath)
	if err := os.WriteFile(e.cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(e.cfgPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() || os.Getenv("CRASH_LOGS") != "" {
			for _, l := range e.logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
	})
	return e
}

// start runs `ponte serve` and waits for /healthz (which listens only after
// the crash recovery in Server.Start).
func (e *crashEnv) start() {
	t := e.t
	t.Helper()
	logPath := filepath.Join(filepath.Dir(e.cfgPath), fmt.Sprintf("ponte-%d.log", len(e.logs)+1))
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	e.logs = append(e.logs, logPath)
	cmd := exec.Command(e.bin, "serve", "-config", e.cfgPath, "-drain-timeout", "2s")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the test
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatal(err)
	}
	e.child, e.exited = cmd, make(chan struct{})
	exited := e.exited
	go func() { _ = cmd.Wait(); lf.Close(); close(exited) }()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := hc.Get("http://" + e.admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatal("ponte exited before it was healthy")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("ponte never answered /healthz")
		}
	}
}

// kill is the crash: SIGKILL, no cleanup of any kind in ponte.
func (e *crashEnv) kill() {
	e.t.Helper()
	if err := e.child.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	<-e.exited
	e.child = nil
}

// stop ends the child with SIGTERM (a clean stop), or kills it after 10 s.
func (e *crashEnv) stop() {
	if e.child == nil {
		return
	}
	_ = e.child.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.child.Process.Kill()
		<-e.exited
	}
	e.child = nil
}

// openStore opens the gateway's database from the test process (SQLite WAL
// allows it while the child runs).
func (e *crashEnv) openStore() *store.SQLite {
	e.t.Helper()
	s, err := store.Open(context.Background(), store.Options{Driver: "sqlite", Path: e.dbPath, Location: time.UTC, Logger: logger()})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// waitLive waits until the child has written a live row that matches ok.
func (e *crashEnv) waitLive(ok func(store.LiveCall) bool) store.LiveCall {
	e.t.Helper()
	s := e.openStore()
	defer s.Close()
	var last []store.LiveCall
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rows, err := s.ListLive(context.Background())
		if err != nil {
			e.t.Fatal(err)
		}
		last = rows
		for _, r := range rows {
			if ok(r) {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("no matching live row; rows: %+v", last)
	return store.LiveCall{}
}

// metaActions counts the Graph requests for wacid by action.
func (e *crashEnv) metaActions(wacid string) map[string]int {
	n := map[string]int{}
	for _, r := range e.meta.Requests() {
		if r.CallID == wacid {
			n[r.Action]++
		}
	}
	return n
}

// afterRestart checks what the restarted process did about the call.
func (e *crashEnv) afterRestart(pc *pbx.Call, lc store.LiveCall, metaAction string) {
	t := e.t
	t.Helper()
	select {
	case <-pc.Ended():
	case <-time.After(10 * time.Second):
		t.Fatal("the PBX call did not end after the restart")
	}
	if pc.EndedBy() != "bye" || !strings.Contains(pc.ByeReason(), "cause=41") {
		t.Errorf("PBX call ended by %q (Reason %q), want ponte's recovery BYE", pc.EndedBy(), pc.ByeReason())
	}
	if !waitFor(5*time.Second, func() bool { return e.metaActions(lc.WACID)[metaAction] >= 1 }) {
		t.Errorf("no %s for %s; Graph requests %v", metaAction, lc.WACID, e.metaActions(lc.WACID))
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would come now, not later
	if n := e.metaActions(lc.WACID)[metaAction]; n != 1 {
		t.Errorf("%d %s requests for %s, want exactly 1", n, metaAction, lc.WACID)
	}
	e.stop()
	s := e.openStore()
	defer s.Close()
	rec, err := s.Get(context.Background(), lc.ID)
	if err != nil {
		t.Fatalf("no record for the interrupted call %s: %v", lc.ID, err)
	}
	if rec.EndReason != store.EndReasonInterrupted || rec.Ended.IsZero() || rec.WACID != lc.WACID || rec.EndedBy != store.EndedBySystem {
		t.Errorf("record: end_reason %q ended %v wacid %q ended_by %q", rec.EndReason, rec.Ended, rec.WACID, rec.EndedBy)
	}
	if rows, err := s.ListLive(context.Background()); err != nil || len(rows) != 0 {
		t.Errorf("live calls after recovery: %+v (err %v), want none", rows, err)
	}
}

func TestCrashRecovery(t *testing.T) {
	bin := buildPonte(t) // drain_test.go

	// An inbound WhatsApp call: ponte dialled the PBX (UAC) and accepted.
	t.Run("inbound", func(t *testing.T) {
		e := newCrashEnv(t, bin)
		e.start()
		ctx := ctxT(t, 60*time.Second)
		caller, pc := rung(t, ctx, e.meta, e.pbx, wasim.CallOptions{})
		if err := caller.WaitAccepted(ctx); err != nil {
			t.Fatal(err)
		}
		lc := e.waitLive(func(r store.LiveCall) bool { return r.WACID == caller.ID() && r.Accepted && r.Dialog != nil })
		inv := pc.Invite()
		fromTag, _ := inv.From().Params.Get("tag")
		if lc.Direction != store.Inbound || lc.Dialog.Role != "uac" || lc.Dialog.CallID != inv.CallID().Value() || lc.Dialog.LocalTag != fromTag {
			t.Fatalf("live row %+v dialog %+v does not match the INVITE (Call-ID %s, tag %s)", lc, lc.Dialog, inv.CallID().Value(), fromTag)
		}
		e.kill()
		select {
		case <-pc.Ended():
			t.Fatalf("the PBX call ended (%s) before the restart", pc.EndedBy())
		default:
		}
		e.start()
		e.afterRestart(pc, lc, "terminate")
		if n := e.metaActions(caller.ID())["reject"]; n != 0 {
			t.Errorf("%d rejects for an accepted call", n)
		}
	})

	// An inbound call killed while the PBX rings: Meta never accepted it, so
	// it gets reject (not terminate), and there is no dialog to BYE.
	t.Run("inbound ringing", func(t *testing.T) {
		e := newCrashEnv(t, bin)
		e.pbx.Close()
		var err error
		// The restarted PBX simulator rings for 30 s on the same address.
		e.pbx, err = pbx.Start(context.Background(), pbx.Config{Listen: e.pbxAddr, Codecs: []string{"PCMU"}, AnswerDelay: 30 * time.Second, Logger: logger().With("sim", "pbx")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.pbx.Close() })
		e.start()
		ctx := ctxT(t, 60*time.Second)
		caller, err := e.meta.Call(ctx, wasim.CallOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := e.pbx.NextCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The PBX's 180 makes the INVITE cancellable: its early state is saved.
		lc := e.waitLive(func(r store.LiveCall) bool { return r.WACID == caller.ID() && r.Dialog != nil })
		inv := pc.Invite()
		branch, _ := inv.Via().Params.Get("branch")
		if lc.Accepted || lc.Dialog.RemoteTag != "" || lc.Dialog.Branch != branch || lc.Dialog.CallID != inv.CallID().Value() {
			t.Fatalf("ringing call's live row %+v dialog %+v: want not accepted, the INVITE's early state (branch %s)", lc, lc.Dialog, branch)
		}
		e.kill()
		select {
		case <-pc.Ended():
			t.Fatal("the PBX stopped ringing when ponte died")
		case <-time.After(200 * time.Millisecond):
		}
		e.start()
		// No agent's phone keeps ringing for the dead call: CANCEL (RFC 3261 §9.1).
		if by := pbxEnded(t, pc, 5*time.Second); by != "cancel" {
			t.Errorf("the ringing PBX call ended by %q, want cancel", by)
		}
		if !waitFor(5*time.Second, func() bool { return e.metaActions(lc.WACID)["reject"] >= 1 }) {
			t.Fatalf("no reject for the unaccepted call; Graph requests %v", e.metaActions(lc.WACID))
		}
		time.Sleep(300 * time.Millisecond)
		if got := e.metaActions(lc.WACID); got["reject"] != 1 || got["terminate"] != 0 || got["accept"] != 0 {
			t.Errorf("Graph requests %v, want exactly one reject", got)
		}
		e.stop()
		s := e.openStore()
		defer s.Close()
		if rec, err := s.Get(context.Background(), lc.ID); err != nil || rec.EndReason != store.EndReasonInterrupted {
			t.Errorf("record %+v, %v: want end_reason interrupted", rec, err)
		}
		if rows, _ := s.ListLive(context.Background()); len(rows) != 0 {
			t.Errorf("live rows left: %+v", rows)
		}
	})

	// A call that ends normally deletes its row: a restart then does nothing.
	t.Run("normal end", func(t *testing.T) {
		e := newCrashEnv(t, bin)
		e.start()
		ctx := ctxT(t, 60*time.Second)
		caller, pc := rung(t, ctx, e.meta, e.pbx, wasim.CallOptions{})
		if err := caller.WaitAccepted(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitLive(func(r store.LiveCall) bool { return r.WACID == caller.ID() && r.Accepted && r.Dialog != nil })
		if err := pc.Hangup(ctx); err != nil {
			t.Fatal(err)
		}
		s := e.openStore()
		defer s.Close()
		if !waitFor(10*time.Second, func() bool { rows, err := s.ListLive(context.Background()); return err == nil && len(rows) == 0 }) {
			rows, _ := s.ListLive(context.Background())
			t.Fatalf("live rows after a normal end: %+v", rows)
		}
		before := e.metaActions(caller.ID())
		e.kill()
		e.start()
		time.Sleep(500 * time.Millisecond)
		if after := e.metaActions(caller.ID()); after["terminate"] != before["terminate"] || after["reject"] != 0 {
			t.Errorf("restart after a normal end sent Graph requests: before %v after %v", before, after)
		}
	})

	// An outbound (business-initiated) call: the PBX dialled ponte (UAS),
	// ponte connected the WhatsApp user.
	t.Run("outbound", func(t *testing.T) {
		e := newCrashEnv(t, bin)
		e.start()
		const user = "5511987650042"
		e.meta.SetUser(wasim.UserOptions{WaID: user, Permission: wasim.PermissionTemporary, ToneHz: 440, ExpectHz: 1000})
		ctx := ctxT(t, 60*time.Second)
		pc, err := e.pbx.Dial(ctx, pbx.DialOptions{Target: fmt.Sprintf("sip:+%s@127.0.0.1:%d", user, e.sipPort), From: "2001"})
		if err != nil {
			var de *pbx.DialError
			if errors.As(err, &de) {
				t.Fatalf("dial refused: %v", de)
			}
			t.Fatal(err)
		}
		callee, err := e.meta.WaitCallee(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := callee.WaitAccepted(ctx); err != nil {
			t.Fatal(err)
		}
		lc := e.waitLive(func(r store.LiveCall) bool { return r.WACID == callee.ID() && r.Dialog != nil })
		if lc.Direction != store.Outbound || lc.Dialog.Role != "uas" || lc.Dialog.CallID != pc.Invite().CallID().Value() {
			t.Fatalf("live row %+v dialog %+v does not match the PBX's INVITE %s", lc, lc.Dialog, pc.Invite().CallID().Value())
		}
		e.kill()
		select {
		case <-pc.Ended():
			t.Fatalf("the PBX call ended (%s) before the restart", pc.EndedBy())
		default:
		}
		e.start()
		e.afterRestart(pc, lc, "terminate")
		select {
		case <-callee.Ended():
		case <-time.After(5 * time.Second):
			t.Error("the WhatsApp user's call did not end after the terminate")
		}
	})
}
