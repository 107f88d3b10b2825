package rtpeng

import (
	"os"
	"slices"
	"testing"
)

// Everything rtpengine is told stays on loopback and in userspace, and the Debian config file
// is kept out.
func TestDaemonArgs(t *testing.T) {
	a := daemonConf{Bin: "rtpengine", Dir: "/tmp/x", NGPort: 2223, PortMin: 30000, PortMax: 30420, LogLevel: 4}.args()
	for _, want := range []string{
		"--config-file=none", "--table=-1", "--interface=127.0.0.1", "--listen-ng=127.0.0.1:2223", "--foreground",
		"--port-min=30000", "--port-max=30420", "--pidfile=/tmp/x/rtpengine.pid", "--log-level=4",
	} {
		if !slices.Contains(a, want) {
			t.Errorf("args %q lack %q", a, want)
		}
	}
}

func TestQueueOverflows(t *testing.T) {
	dir := t.TempDir()
	log := dir + "/rtpengine.log"
	body := "[1.0] INFO: [core] Startup complete\n" +
		"[2.0] ERR: [c1]: [core] Too many packets in UDP receive queue (more than 50), aborting loop. Dropped packets possible\n" +
		"[3.0] ERR: [c1]: [core] UDP receive queue exceeded 5 times: discarding packet\n" +
		"[4.0] WARNING: [c1]: [ffmpeg] av_log: 1 frames left in the queue on closing\n"
	if err := os.WriteFile(log, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := queueOverflows(log); n != 2 {
		t.Fatalf("queueOverflows = %d, want 2", n)
	}
	if n := queueOverflows(dir + "/missing.log"); n != 0 {
		t.Fatalf("missing log: %d", n)
	}
}
