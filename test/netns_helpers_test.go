package test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mustRoot fails unless the test runs as root: network namespaces, veths
// and nftables need CAP_NET_ADMIN.
func mustRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the NAT test creates network namespaces and needs root (CAP_NET_ADMIN); euid is %d", os.Geteuid())
	}
}

// mustRun runs a command and fails the test with its output on error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// natLab is the NAT test's network, all of it created by the test and
// removed by its cleanup. The root namespace gets one veth end and nothing
// else (no route beyond the veth's own subnet, no firewall rule):
//
//	root ns (ponte)          router ns                     lan ns (PBX)
//	10.N.0.1/16  <--veth-->  wan 10.N.0.2/16
//	                         lan 10.N.128.1/24  <--veth-->  eth0 10.N.128.2/24
//
// The router has ip_forward on and, in nftables:
//   - MASQUERADE (random ports) of everything leaving the LAN;
//   - a port forward of UDP 5060 on its WAN address to the PBX: the trunk
//     address is 10.N.0.2:5060;
//   - ponte's "public" address 10.N.64.9, a 1:1 DNAT to 10.N.0.1, the only
//     way the LAN reaches ponte (forwarding drops anything not DNATed or
//     established): ponte must advertise it toward this trunk.
//
// The LAN 10.N.128.0/24 lies inside the root veth's /16, so anything ponte
// sends to the PBX's private address stays on the veth (no ARP answer)
// instead of following the machine's default route.
type natLab struct {
	id           string
	routerNS     string
	lanNS        string
	rootIf       string
	ponteIP      netip.Addr // on the root veth
	routerWAN    netip.Addr // the PBX's public address
	pontePublic  netip.Addr // ponte as the LAN sees it
	pbxIP        netip.Addr // the PBX's private address
	pbxSIPPort   int
	nftTableName string
}

func newNATLab(t *testing.T) *natLab {
	t.Helper()
	mustRoot(t)
	ip := needBin(t, "ip", "iproute2")
	nft := needBin(t, "nft", "nftables")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	l := &natLab{
		id: id, routerNS: "ponte-r-" + id, lanNS: "ponte-l-" + id, rootIf: "pnw" + id,
		pbxSIPPort: 5060, nftTableName: "ponte_nat",
	}
	n := l.pickSubnet(t, ip)
	l.ponteIP = netip.AddrFrom4([4]byte{10, n, 0, 1})
	l.routerWAN = netip.AddrFrom4([4]byte{10, n, 0, 2})
	l.pontePublic = netip.AddrFrom4([4]byte{10, n, 64, 9})
	l.pbxIP = netip.AddrFrom4([4]byte{10, n, 128, 2})
	routerLAN := netip.AddrFrom4([4]byte{10, n, 128, 1})

	// Cleanup first, so that a half-built lab is removed too.
	t.Cleanup(func() { l.remove(t, ip, nft) })
	mustRun(t, ip, "netns", "add", l.routerNS)
	mustRun(t, ip, "netns", "add", l.lanNS)
	mustRun(t, ip, "link", "add", l.rootIf, "type", "veth", "peer", "name", "wan", "netns", l.routerNS)
	mustRun(t, ip, "-n", l.routerNS, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", l.lanNS)
	mustRun(t, ip, "addr", "add", l.ponteIP.String()+"/16", "dev", l.rootIf)
	mustRun(t, ip, "link", "set", l.rootIf, "up")
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", l.routerWAN.String() + "/16", "dev", "wan"},
		{"link", "set", "wan", "up"},
		{"addr", "add", routerLAN.String() + "/24", "dev", "lan"},
		{"link", "set", "lan", "up"},
	} {
		mustRun(t, ip, append([]string{"-n", l.routerNS}, c...)...)
	}
	mustRun(t, ip, "netns", "exec", l.routerNS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", l.pbxIP.String() + "/24", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", routerLAN.String()},
	} {
		mustRun(t, ip, append([]string{"-n", l.lanNS}, c...)...)
	}
	rules := fmt.Sprintf(`table ip %[1]s {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan" udp dport %[2]d dnat to %[3]s
		iifname "lan" ip daddr %[4]s dnat to %[5]s
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade random
	}
	chain filt {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct status dnat accept
	}
}
`, l.nftTableName, l.pbxSIPPort, l.pbxIP, l.pontePublic, l.ponteIP)
	rf := filepath.Join(t.TempDir(), "nat.nft")
	if err := os.WriteFile(rf, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, ip, "netns", "exec", l.routerNS, nft, "-f", rf)
	return l
}

// pickSubnet chooses N for 10.N.0.0/16 among 200..249 so that nothing on
// the machine already uses it.
func (l *natLab) pickSubnet(t *testing.T, ip string) byte {
	t.Helper()
	used := mustRun(t, ip, "-4", "route", "show", "table", "all") + mustRun(t, ip, "-4", "addr")
	for range 50 {
		k, _ := rand.Int(rand.Reader, big.NewInt(50))
		n := byte(200 + k.Int64())
		if !strings.Contains(used, fmt.Sprintf(" 10.%d.", n)) && !strings.Contains(used, fmt.Sprintf("\n10.%d.", n)) {
			return n
		}
	}
	t.Fatal("no free 10.N.0.0/16 for the NAT lab")
	return 0
}

// remove deletes the firewall table, the veths and the namespaces, and
// checks that they are gone.
func (l *natLab) remove(t *testing.T, ip, nft string) {
	var errs []string
	try := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
		}
	}
	nsList := mustRun(t, ip, "netns", "list")
	if strings.Contains(nsList, l.routerNS) {
		try(ip, "netns", "exec", l.routerNS, nft, "delete", "table", "ip", l.nftTableName)
	}
	if _, err := exec.Command(ip, "link", "show", l.rootIf).CombinedOutput(); err == nil {
		try(ip, "link", "del", l.rootIf) // removes its peer in the router too
	}
	for _, ns := range []string{l.lanNS, l.routerNS} {
		if strings.Contains(nsList, ns) {
			try(ip, "netns", "del", ns)
		}
	}
	left := mustRun(t, ip, "netns", "list")
	for _, ns := range []string{l.lanNS, l.routerNS} {
		if strings.Contains(left, ns) {
			errs = append(errs, "namespace "+ns+" still exists")
		}
	}
	if _, err := exec.Command(ip, "link", "show", l.rootIf).CombinedOutput(); err == nil {
		errs = append(errs, "veth "+l.rootIf+" still exists")
	}
	if len(errs) > 0 {
		t.Errorf("NAT lab cleanup: %s", strings.Join(errs, "; "))
	}
}

// buildPBXSim builds testdata/pbxsim (the PBX simulator as a program) into dir.
func buildPBXSim(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // make puts /usr/local/go/bin first in PATH
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	bin := filepath.Join(dir, "pbxsim")
	cmd := exec.Command(goBin, "build", "-tags", "nolibopusfile", "-o", bin, "./testdata/pbxsim")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/pbxsim: %v\n%s", err, out)
	}
	return bin
}

// simEvent is one JSON line from pbxsim.
type simEvent map[string]any

func (e simEvent) str(k string) string { s, _ := e[k].(string); return s }
func (e simEvent) num(k string) float64 {
	f, _ := e[k].(float64)
	return f
}

// nsProc is a process in a namespace that the test talks to over stdin and
// stdout (JSON lines). It is stopped by PID in the test's cleanup.
type nsProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr syncBuffer
	done   chan struct{}
	err    error

	mu     sync.Mutex
	events []simEvent
	raw    []string
	notify chan struct{}
}

// startInNS runs bin with args inside namespace ns (`ip netns exec`, which
// execs bin in place: the PID is bin's).
func startInNS(t *testing.T, name, ns, bin string, args ...string) *nsProc {
	t.Helper()
	ip := needBin(t, "ip", "iproute2")
	p := &nsProc{name: name, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	p.cmd = exec.Command(ip, append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the test binary
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var ev simEvent
			p.mu.Lock()
			p.raw = append(p.raw, line)
			if json.Unmarshal([]byte(line), &ev) == nil {
				p.events = append(p.events, ev)
			}
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, strings.Join(p.raw, "\n"), name, p.stderr.String())
			p.mu.Unlock()
		}
	})
	return p
}

// send writes one command line.
func (p *nsProc) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		t.Fatalf("%s: write %q: %v", p.name, cmd, err)
	}
}

// wait returns the first event named ev after the first `skip` of them.
func (p *nsProc) wait(t *testing.T, ev string, skip int, timeout time.Duration) simEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		seen := 0
		for _, e := range p.events {
			if e.str("event") == ev {
				if seen == skip {
					p.mu.Unlock()
					return e
				}
				seen++
			}
			if e.str("event") == "error" {
				p.mu.Unlock()
				t.Fatalf("%s: %s", p.name, e.str("err"))
			}
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.done:
			t.Fatalf("%s exited (%v) before %q\n%s", p.name, p.err, ev, p.stderr.String())
		case <-deadline:
			t.Fatalf("%s: no %q event within %v", p.name, ev, timeout)
		}
	}
}

// stop closes stdin (pbxsim quits), then kills by PID if it lingers.
func (p *nsProc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// withTimeout is context.WithTimeout that the test's cleanup cancels.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
