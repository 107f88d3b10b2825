package rtpeng

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors of the rtpengine child.
var (
	ErrExited   = errors.New("rtpeng: rtpengine exited")
	ErrNotReady = errors.New("rtpeng: rtpengine never answered ping")
)

// daemon is rtpengine running as a child process in the foreground, userspace only.
type daemon struct {
	cmd     *exec.Cmd
	log     *os.File
	logPath string
	pidfile string
	exited  chan struct{} // closed when Wait returned
	err     error         // Wait's result, valid after exited
}

// daemonConf is the command line of one rtpengine.
type daemonConf struct {
	Bin              string
	Dir              string // pidfile and log
	NGPort           int
	PortMin, PortMax int
	LogLevel         int // syslog level, 0..7
}

func (c daemonConf) args() []string {
	return []string{
		// The Debian package ships /etc/rtpengine/rtpengine.conf (kernel table 0, other
		// interfaces); "none" keeps it out so that only these options apply.
		"--config-file=none",
		"--table=-1", // userspace forwarding only: no kernel module (the comparison is userspace)
		"--interface=127.0.0.1",
		"--listen-ng=127.0.0.1:" + strconv.Itoa(c.NGPort),
		"--foreground",
		"--log-stderr",
		"--log-level=" + strconv.Itoa(c.LogLevel),
		"--port-min=" + strconv.Itoa(c.PortMin),
		"--port-max=" + strconv.Itoa(c.PortMax),
		"--pidfile=" + filepath.Join(c.Dir, "rtpengine.pid"),
		"--delete-delay=0", // free a call's ports at once on delete
	}
}

// startDaemon starts rtpengine and waits until it answers ping on ng.
func startDaemon(ctx context.Context, c daemonConf, ng *Client) (*daemon, error) {
	logPath := filepath.Join(c.Dir, "rtpengine.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Not CommandContext: stop sends SIGTERM and waits, and a killed parent takes the child
	// with it (Pdeathsig), so no rtpengine outlives the run.
	cmd := exec.Command(c.Bin, c.args()...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("rtpeng: start %s: %w", c.Bin, err)
	}
	d := &daemon{cmd: cmd, log: lf, logPath: logPath, pidfile: filepath.Join(c.Dir, "rtpengine.pid"), exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- ng.Ping(pctx) }()
	select {
	case err = <-ready:
	case <-d.exited:
		cancel()
		<-ready
		err = fmt.Errorf("%w before it answered ping: %v (log: %s)", ErrExited, d.err, logPath)
	}
	if err != nil {
		_ = d.stop(5 * time.Second)
		if errors.Is(err, ErrExited) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v (log: %s)", ErrNotReady, err, logPath)
	}
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// pidFromFile is the PID rtpengine wrote to its pidfile (it should equal pid(): it runs in the
// foreground and does not fork).
func (d *daemon) pidFromFile() (int, error) {
	b, err := os.ReadFile(d.pidfile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// stop sends SIGTERM and kills rtpengine if it is still there after grace. The PID is the
// child's own, so nothing else on the machine is touched.
func (d *daemon) stop(grace time.Duration) error {
	defer d.log.Close()
	select {
	case <-d.exited:
		return d.err
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-d.exited:
		var ee *exec.ExitError
		if errors.As(d.err, &ee) && ee.ExitCode() == -1 { // ended by our SIGTERM
			return nil
		}
		return d.err
	case <-t.C:
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("rtpeng: rtpengine ignored SIGTERM for %v and was killed", grace)
	}
}

// version runs `rtpengine --version` ("Version: 10.5.3.5-1").
func version(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(out))
	s = strings.TrimPrefix(s, "Version: ")
	return s
}

// processGone reports whether pid no longer exists (kill(pid, 0) fails with ESRCH).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// queueOverflows counts the lines in rtpengine's log where its media loop gave up on a full
// UDP receive queue ("Too many packets in UDP receive queue", "UDP receive queue exceeded
// ... discarding packet"): rtpengine's own record of dropping media because it fell behind.
func queueOverflows(logPath string) int {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("UDP receive queue"))
}
