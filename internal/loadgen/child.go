package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/scenario"
)

// Errors of the child gateway.
var (
	ErrChildExited = errors.New("loadgen: ponte exited")
	ErrNotHealthy  = errors.New("loadgen: ponte never answered /healthz")
)

// gatewayConf is what the config file points at.
type gatewayConf struct {
	Public, Admin string // TCP listeners (webhook, admin)
	WebRTCPort    int    // single-port ICE mux
	GraphURL      string // the Meta simulator
	PBXAddr       string // the PBX simulator (UDP)
	Codec         string // the only codec of the trunk
	LogLevel      string
	RTPTimeout    time.Duration // media.rtp_timeout (default 60 s)
	StoreDSN      string        // a SQLite file for the call records; empty: the in-memory store
	Pprof         bool          // serve /debug/pprof on the admin listener (soak heap profiles)
}

// configYAML is a complete ponte config with everything on loopback. It is written as
// text, not marshalled from config.Config, so it exercises the same file format an
// operator writes; writeConfig validates it with config.Load before the child sees it.
const configYAML = `# written by ponte load: the gateway against the built-in simulators, all on 127.0.0.1
node_id: ponte-load
log: { level: %[7]s, format: text }
http:
  public: "%[1]s"
  admin: "%[2]s"
  pprof: %[18]t
whatsapp:
  graph_url: "%[4]s"
  access_token: "%[8]s"
  app_secret: "%[9]s"
  verify_token: "%[10]s"
  accept_deadline: 30s
  request_timeout: 3s
  numbers:
    - { phone_number_id: "%[11]s", display_phone_number: "%[12]s", inbound_route: support }
media:
  bind_ip: 127.0.0.1
  webrtc_udp_port: %[3]d
  rtp_ip: 127.0.0.1
  rtp_ports: 40000-49999
  connect_timeout: 10s
  rtp_timeout: %[13]s
  # pinned, not left to defaults: the delay model (calib.go) subtracts this depth and
  # calibrates the encoder with these settings
  jitter_frames: %[14]d
  opus_complexity: %[15]d
  opus_bitrate: %[16]d
sip:
  listen: [ "udp:127.0.0.1:0" ]
  trunks:
    - { name: pbx, address: "%[5]s", transport: udp, codecs: [ %[6]s ] }
routes:
  support:
    targets: [ { uri: "sip:agent@%[5]s", trunk: pbx, ring_timeout: 25s } ]
store: %[17]s
`

// storeYAML is the store: line's value: the in-memory SQLite store (every record stays in
// the gateway's memory) or a file, as in production.
func storeYAML(dsn string) string {
	if dsn == "" {
		return "{ driver: memory }"
	}
	return fmt.Sprintf("{ driver: sqlite, dsn: %q }", dsn)
}

// writeConfig writes dir/ponte.yaml and checks that ponte would accept it.
func writeConfig(dir string, c gatewayConf) (string, error) {
	if c.RTPTimeout <= 0 {
		c.RTPTimeout = 60 * time.Second
	}
	body := fmt.Sprintf(configYAML, c.Public, c.Admin, c.WebRTCPort, c.GraphURL, c.PBXAddr, c.Codec, c.LogLevel,
		scenario.AccessToken, scenario.AppSecret, scenario.VerifyToken, scenario.PhoneNumberID, scenario.DisplayNumber,
		c.RTPTimeout, gwJitterFrames, gwOpusComplexity, gwOpusBitrate, storeYAML(c.StoreDSN), c.Pprof)
	path := filepath.Join(dir, "ponte.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return "", err
	}
	if _, err := config.Load(path); err != nil {
		return "", err
	}
	return path, nil
}

// child is `ponte serve` running as a child process.
type child struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when Wait returned
	err    error         // Wait's result, valid after exited
}

// startChild runs `bin serve -config cfg` with its output in logPath, on the CPUs of cpus
// if set.
func startChild(bin, cfg, logPath string, cpus *cpuSet) (*child, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Not CommandContext: the child is stopped with SIGTERM and a grace period (stop), not
	// killed outright when a context ends.
	cmd := exec.Command(bin, "serve", "-config", cfg, "-drain-timeout", "5s")
	cmd.Stdout, cmd.Stderr = lf, lf
	// If the load generator dies without stopping it, the kernel kills the gateway too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startPinned(cmd, cpus); err != nil {
		lf.Close()
		return nil, fmt.Errorf("loadgen: start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, log: lf, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// waitHealthy polls the admin /healthz until it answers 200.
func (c *child) waitHealthy(ctx context.Context, admin string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://" + admin + "/healthz"
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%w before it was healthy: %v", ErrChildExited, c.err)
		case <-ctx.Done():
			return fmt.Errorf("%w within %v", ErrNotHealthy, limit)
		case <-t.C:
		}
	}
}

// stop sends SIGTERM (ponte drains and exits) and kills the child if it is still there
// after grace. It returns the child's exit error, if any.
func (c *child) stop(grace time.Duration) error {
	defer c.log.Close()
	select {
	case <-c.exited:
		return c.err
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return c.err
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("loadgen: ponte ignored SIGTERM for %v and was killed", grace)
	}
}
