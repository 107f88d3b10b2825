package test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

// noLeaks fails the test if, once it and all its cleanups are done, a
// goroutine it started (ponte, the simulators, a peer's waiter) is still
// running: every call must be torn down completely. Registered first, its
// cleanup runs last; goroutines from other tests of the package are ignored.
func noLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// testLogger shows the gateway's logs with -v and PONTE_DEBUG set.
func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("PONTE_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// needBin returns the path of a peer binary or skips the test: the interop
// tests need the real peers, which `make test` installs (scripts/deps.sh).
func needBin(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		// Not a skip: a check that silently does not run is a defect.
		t.Fatalf("%s not found (Debian package %s): `make test` installs it (scripts/deps.sh test, as root), or `apt-get install -y %s`: %v", name, pkg, pkg, err)
	}
	return p
}

// Port blocks for the peers are drawn from 20000-31999: below Linux's
// ephemeral range (32768-60999), so no socket bound to port 0 by ponte, pion,
// sipgo or a parallel test package can take them between the probe and the
// peer's own bind, and outside ponte's RTP range in the scenario (40000-49999).
const (
	portLo = 20000
	portHi = 32000
)

// freePorts returns the first of n consecutive ports on 127.0.0.1 that are
// free for UDP and TCP (baresip's sip_listen binds both).
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		base := portLo + rand.IntN(portHi-portLo-n)
		if portsFree(base, n) {
			return base
		}
	}
	t.Fatalf("no block of %d free ports in %d-%d", n, portLo, portHi)
	return 0
}

func portsFree(base, n int) bool {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for p := base; p < base+n; p++ {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			return false
		}
		closers = append(closers, u)
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			return false
		}
		closers = append(closers, l)
	}
	return true
}

// udpBound reports whether something already holds 127.0.0.1:port for UDP.
func udpBound(port int) bool {
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	u.Close()
	return false
}

// syncBuffer collects a peer's stdout and stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peer is one outside process (sipp, baresip) owned by a test: started with
// exec.CommandContext, stopped by PID, always waited for.
type peer struct {
	name   string
	cmd    *exec.Cmd
	out    syncBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done
	cancel context.CancelFunc
}

// startPeer runs bin in dir. The context bounds the process's life as a last
// resort; the test stops it explicitly and t.Cleanup makes sure it is gone.
func startPeer(t *testing.T, name, dir, bin string, args ...string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	p := &peer{name: name, done: make(chan struct{}), cancel: cancel}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.WaitDelay = 5 * time.Second // do not hang on pipes held open by a stray child
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// waitListening waits until the peer has bound its SIP port, or fails the
// test if it exited first (a port taken in the meantime, a bad config).
func (p *peer) waitListening(t *testing.T, port int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !udpBound(port) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %d: %v\n%s", p.name, port, p.err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on udp 127.0.0.1:%d after %v\n%s", p.name, port, timeout, p.out.String())
		}
	}
}

// wait waits for the process to exit by itself and returns Wait's error.
func (p *peer) wait(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// stop asks the process to quit (SIGTERM, so baresip closes its recordings)
// and kills it if it does not within the grace period.
func (p *peer) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if exited, err := p.wait(grace); exited {
		return err
	}
	p.kill()
	return fmt.Errorf("%s ignored SIGTERM for %v", p.name, grace)
}

func (p *peer) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cancel()
}

// waitOutput waits until the peer's output contains s.
func (p *peer) waitOutput(ctx context.Context, s string) error {
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never printed %q: %w", p.name, s, ctx.Err())
		case <-p.done:
			if strings.Contains(p.out.String(), s) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) without printing %q", p.name, p.err, s)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// toneWAV writes secs seconds of a freq Hz sine at dbfs (LevelDBFS scale: a
// full-scale sine is -3.01 dBFS), 8 kHz mono 16-bit, with sox. -D: no dither,
// so the file is a clean tone (reference §7.6).
func toneWAV(t *testing.T, path string, freq, dbfs float64, secs int) {
	t.Helper()
	sox := needBin(t, "sox", "sox")
	amp := transcode.AmpForDBFS(dbfs) / 32768
	out, err := exec.Command(sox, "-D", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", path,
		"synth", fmt.Sprint(secs), "sine", fmt.Sprint(freq), "vol", fmt.Sprintf("%.5f", amp)).CombinedOutput()
	if err != nil {
		t.Fatalf("sox: %v\n%s", err, out)
	}
}

// readWAV reads a 16-bit PCM mono WAV file (baresip's sndfile recording).
func readWAV(path string) (rate int, pcm []int16, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	rate, pcm, err = parseWAV(b)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	return rate, pcm, nil
}

// parseWAV decodes RIFF/WAVE with a PCM (or WAVE_FORMAT_EXTENSIBLE) fmt chunk
// of one 16-bit channel. A data chunk whose size was never patched (0, or
// larger than the file: a recorder killed mid-call) is read to the end.
func parseWAV(b []byte) (rate int, pcm []int16, err error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0, nil, errors.New("not a RIFF/WAVE file")
	}
	var channels, bits int
	haveFmt := false
	for off := 12; off+8 <= len(b); {
		id, size := string(b[off:off+4]), int(binary.LittleEndian.Uint32(b[off+4:off+8]))
		body := b[off+8:]
		switch id {
		case "fmt ":
			if size < 16 || len(body) < 16 {
				return 0, nil, errors.New("short fmt chunk")
			}
			if f := binary.LittleEndian.Uint16(body[0:2]); f != 1 && f != 0xFFFE {
				return 0, nil, fmt.Errorf("format %d is not PCM", f)
			}
			channels = int(binary.LittleEndian.Uint16(body[2:4]))
			rate = int(binary.LittleEndian.Uint32(body[4:8]))
			bits = int(binary.LittleEndian.Uint16(body[14:16]))
			haveFmt = true
		case "data":
			if !haveFmt {
				return 0, nil, errors.New("data chunk before fmt chunk")
			}
			if channels != 1 || bits != 16 {
				return 0, nil, fmt.Errorf("%d channels of %d bits, want mono 16-bit", channels, bits)
			}
			if size == 0 || size > len(body) {
				size = len(body)
			}
			pcm = make([]int16, size/2)
			for i := range pcm {
				pcm[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return rate, pcm, nil
		}
		if size > len(body) {
			break
		}
		off += 8 + size + size&1 // chunks are padded to an even size
	}
	return 0, nil, errors.New("no data chunk")
}

// toneStats classifies 20 ms windows of pcm with the criterion of
// sim/audio.Analyzer: the tone carries at least half of the window's power
// (Goertzel) and its level is within ±3 dB of the expected level.
type toneStats struct {
	Windows, ToneWindows int
	Ratio                float64
	MeanToneDBFS         float64 // power average of the tone's level over all windows
}

func measureTone(pcm []int16, rate int, freq, dbfs float64) toneStats {
	n := rate / 50
	var s toneStats
	var tsum float64
	for i := 0; i+n <= len(pcm); i += n {
		w := pcm[i : i+n]
		s.Windows++
		var sum float64
		for _, x := range w {
			sum += float64(x) * float64(x)
		}
		total := sum / float64(n) / (32768 * 32768)
		tp := transcode.Goertzel(w, rate, freq)
		tsum += tp
		if total > 0 && tp >= 0.5*total && math.Abs(transcode.PowerToDBFS(tp)-dbfs) <= 3 {
			s.ToneWindows++
		}
	}
	if s.Windows > 0 {
		s.Ratio = float64(s.ToneWindows) / float64(s.Windows)
		s.MeanToneDBFS = transcode.PowerToDBFS(tsum / float64(s.Windows))
	}
	return s
}

// baresipConfig is what varies between runs of baresip.
type baresipConfig struct {
	SIPPort      int
	RTPLo, RTPHi int
	Source       string // wav played to the caller
	RecDir       string // sndfile writes dump-<time>-enc.wav and -dec.wav here
}

// writeBaresipConfig writes config and accounts into dir, after the reference
// configuration (peer-configs/baresip-cfg): loopback only (net_interface, or
// baresip puts eth0 in its SDP), no sound device (aufile source, aubridge
// player), sndfile recording both directions, auto-answer with PCMU only.
// There is no console or control socket: nothing listens but SIP and RTP.
func writeBaresipConfig(t *testing.T, dir string, c baresipConfig) {
	t.Helper()
	cfg := fmt.Sprintf(`poll_method		epoll
sip_listen		127.0.0.1:%d
sip_trans_def		udp
net_interface		127.0.0.1
call_local_timeout	120
audio_player		aubridge,nil
audio_source		aufile,%s
audio_alert		aubridge,nil
ausrc_srate		8000
ausrc_channels		1
rtp_ports		%d-%d
rtcp_mux		no
jitter_buffer_delay	5-10
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module_app		account.so
module_app		menu.so
snd_path		%s
`, c.SIPPort, c.Source, c.RTPLo, c.RTPHi, c.RecDir)
	acc := "<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU\n"
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// baresipEventRE is how baresip 1.0.0 logs an RFC 4733 event it received
// (src/call.c, audio_event_handler; at info level): once when the event
// starts (end=0) and once when its End packet arrives (end=1).
var baresipEventRE = regexp.MustCompile(`received event: '(.)' \(end=([01])\)`)

// baresipEvent is one such log line.
type baresipEvent struct {
	Key rune
	End bool
}

func (e baresipEvent) String() string {
	if e.End {
		return string(e.Key) + ":end"
	}
	return string(e.Key) + ":start"
}

// baresipEvents returns the events baresip logged, in order.
func baresipEvents(out string) []baresipEvent {
	var evs []baresipEvent
	for _, m := range baresipEventRE.FindAllStringSubmatch(out, -1) {
		evs = append(evs, baresipEvent{Key: []rune(m[1])[0], End: m[2] == "1"})
	}
	return evs
}

// stallWatch is audio.StallWatch (CPU starvation of this process, shared with
// the gateway's and rtpeng's real-time tests), stopped at the test's end.
type stallWatch struct{ *audio.StallWatch }

// stallLimit and stallRecovery: see audio.StallLimit and audio.StallRecovery.
const (
	stallLimit    = audio.StallLimit
	stallRecovery = audio.StallRecovery
)

func startStallWatch(t *testing.T) *stallWatch {
	w := &stallWatch{audio.StartStallWatch()}
	t.Cleanup(func() { w.Stop() })
	return w
}

func (w *stallWatch) worst(from, to time.Time) time.Duration { return w.Worst(from, to) }

// late reports whether the gateway took longer than limit between from and
// to once the time this process was measurably starved in between is
// excused (timers in the gateway fire late by that much); el is the wall
// time taken, starved the excuse.
func (w *stallWatch) late(from, to time.Time, limit time.Duration) (el, starved time.Duration, late bool) {
	el, starved = to.Sub(from), w.Starved(from, to)
	return el, starved, el > limit+starved
}

func (w *stallWatch) skips(from, to time.Time) ([]audio.Span, time.Duration) {
	return w.Skips(from, to)
}

// verdict picks the window that decides a check over consecutive listening
// windows: the first that passed, or the first that failed without a CPU
// stall. A failure is excused only by a measured stall; ok is false when the
// deciding window failed or every window was starved (i == -1).
func verdict(wins []listenWin, pass []bool) (i int, ok bool) {
	for i, w := range wins {
		if pass[i] {
			return i, true
		}
		if w.stall < stallLimit {
			return i, false
		}
	}
	return -1, false
}

// listenWin is one listening window and the worst CPU stall around it.
type listenWin struct {
	from, to time.Time
	stall    time.Duration
}
