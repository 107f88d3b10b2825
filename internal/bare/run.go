package bare

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Errors of the child process.
var (
	ErrChildExited = errors.New("bare: child exited")
	ErrChildSilent = errors.New("bare: child did not answer")
)

const (
	readyTimeout   = 10 * time.Second
	answerTimeout  = 10 * time.Second
	connectTimeout = 15 * time.Second
	statsTimeout   = 5 * time.Second
	drainTime      = 300 * time.Millisecond // packets in flight arrive before counting
	childGrace     = 5 * time.Second
	rssEvery       = 100 * time.Millisecond
	maxErrors      = 10 // call errors kept in the report
)

// childProc is `ponte bare-child` and its control lines.
type childProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	wmu    sync.Mutex
	enc    *json.Encoder
	stderr *tailBuffer

	mu      sync.Mutex
	waiters map[int]chan response
	ready   chan response
	stats   chan response

	exited chan struct{} // closed once the child's stdout ended and Wait returned
	err    error
}

func startChildProc(o Options) (*childProc, error) {
	bin, args := o.Binary, append([]string{"bare-child"}, o.ChildArgs...)
	if o.GatewayCPUs != "" {
		// taskset execs the binary: the pid stays the child's.
		bin, args = "taskset", append([]string{"-c", o.GatewayCPUs, o.Binary}, args...)
	}
	// Not CommandContext: the child is stopped by closing its stdin (it closes its calls).
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the parent
	cp := &childProc{
		cmd: cmd, stderr: &tailBuffer{max: 4096}, waiters: map[int]chan response{},
		ready: make(chan response, 1), stats: make(chan response, 1), exited: make(chan struct{}),
	}
	cmd.Stderr = cp.stderr
	var err error
	if cp.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cp.enc = json.NewEncoder(cp.stdin)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bare: start %s: %w", bin, err)
	}
	go func() { // owned by the child process: ends when its stdout closes
		cp.read(out)
		cp.err = cmd.Wait()
		close(cp.exited)
	}()
	return cp, nil
}

// read dispatches the child's lines; it never blocks on a slow waiter (buffered channels,
// extra lines are dropped).
func (cp *childProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		var r response
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		var ch chan response
		switch {
		case r.Op == opReady:
			ch = cp.ready
		case r.Op == opStats:
			ch = cp.stats
		case r.ID > 0:
			cp.mu.Lock()
			ch = cp.waiters[r.ID]
			cp.mu.Unlock()
		}
		if ch != nil {
			select {
			case ch <- r:
			default:
			}
		}
	}
}

func (cp *childProc) send(r request) error {
	cp.wmu.Lock()
	defer cp.wmu.Unlock()
	return cp.enc.Encode(r)
}

func (cp *childProc) waiter(id int) chan response {
	ch := make(chan response, 4)
	cp.mu.Lock()
	cp.waiters[id] = ch
	cp.mu.Unlock()
	return ch
}

// wait returns the next line on ch, or an error when the child exits, ctx ends or limit
// passes.
func (cp *childProc) wait(ctx context.Context, ch <-chan response, limit time.Duration) (response, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.Op == opError {
			return r, fmt.Errorf("bare: child: %s", r.Err)
		}
		return r, nil
	case <-cp.exited:
		return response{}, fmt.Errorf("%w: %v: %s", ErrChildExited, cp.err, cp.stderr.String())
	case <-ctx.Done():
		return response{}, ctx.Err()
	case <-t.C:
		return response{}, fmt.Errorf("%w within %v", ErrChildSilent, limit)
	}
}

// childStats asks the child for its counters; nil if it does not answer.
func (cp *childProc) childStats(ctx context.Context) *ChildStats {
	if cp.send(request{Op: opStats}) != nil {
		return nil
	}
	r, err := cp.wait(ctx, cp.stats, statsTimeout)
	if err != nil {
		return nil
	}
	return r.Stats
}

// stop closes the child's stdin (it closes its calls and exits) and kills it after grace.
func (cp *childProc) stop() error {
	_ = cp.stdin.Close()
	t := time.NewTimer(childGrace)
	defer t.Stop()
	select {
	case <-cp.exited:
		return cp.err
	case <-t.C:
		_ = cp.cmd.Process.Kill()
		<-cp.exited
		return fmt.Errorf("bare: child ignored EOF for %v and was killed", childGrace)
	}
}

// tailBuffer keeps the last max bytes written (the child's stderr, for error messages).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// setupCalls places o.Calls calls through the child, SetupParallel at a time; each starts
// sending once both ends are connected. It returns the connected calls and the failures.
func setupCalls(ctx context.Context, o Options, cp *childProc, m *media) ([]*call, []string, int) {
	var (
		mu     sync.Mutex
		ok     []*call
		errs   []string
		failed int
		wg     sync.WaitGroup
	)
	sem := make(chan struct{}, o.SetupParallel)
	for id := 1; id <= o.Calls; id++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := setupCall(ctx, o, cp, m, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if len(errs) < maxErrors {
					errs = append(errs, fmt.Sprintf("call %d: %v", id, err))
				}
				return
			}
			ok = append(ok, c)
		}()
	}
	wg.Wait()
	return ok, errs, failed
}

func setupCall(ctx context.Context, o Options, cp *childProc, m *media, id int) (*call, error) {
	c, offer, err := newCall(id, m, o.Logger)
	if err != nil {
		return nil, err
	}
	ch := cp.waiter(id)
	err = cp.send(request{Op: opCall, ID: id, Offer: offer, PBX: c.pbxConn.LocalAddr().String(), Codec: m.pbxCodec})
	var r response
	if err == nil {
		r, err = cp.wait(ctx, ch, answerTimeout)
	}
	if err == nil {
		err = c.answer(r.Answer, r.RTP)
	}
	if err == nil {
		_, err = cp.wait(ctx, ch, connectTimeout) // the child's DTLS is up
	}
	if err == nil {
		t := time.NewTimer(connectTimeout)
		select {
		case <-c.connected:
		case <-c.failed:
			err = errors.New("bare: caller peer failed")
		case <-t.C:
			err = errors.New("bare: caller did not connect")
		case <-ctx.Done():
			err = ctx.Err()
		}
		t.Stop()
	}
	if err != nil {
		c.close()
		return nil, err
	}
	c.startSending()
	return c, nil
}

// sleepCtx waits d or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
