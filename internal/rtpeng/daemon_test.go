package rtpeng

import (
	"errors"
	"os"
	"slices"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		user, syst uint64
		err        bool
	}{
		{"plain", "1234 (rtpengine) S 1 1234 1234 0 -1 4194560 500 0 0 0 321 45 0 0 20 0 9 0 100 0 0",
			321, 45, false},
		// comm may hold spaces and parentheses: fields count from the last ')'.
		{"odd comm", "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 7 8 0 0 20 0 1 0", 7, 8, false},
		{"no paren", "1234 rtpengine S 1", 0, 0, true},
		{"short", "1 (x) S 1 2 3", 0, 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s 0", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, s, err := parseStatCPU([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, ErrProcFormat) {
					t.Fatalf("err = %v, want ErrProcFormat", err)
				}
				return
			}
			if err != nil || u != tc.user || s != tc.syst {
				t.Fatalf("= %d, %d, %v; want %d, %d", u, s, err, tc.user, tc.syst)
			}
		})
	}
}

func TestParseStatusKiB(t *testing.T) {
	st := "Name:\trtpengine\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n"
	if v, err := parseStatusKiB([]byte(st), "VmRSS"); err != nil || v != 10240 {
		t.Fatalf("VmRSS = %d, %v", v, err)
	}
	if v, err := parseStatusKiB([]byte(st), "VmHWM"); err != nil || v != 20480 {
		t.Fatalf("VmHWM = %d, %v", v, err)
	}
	for _, bad := range []string{"VmRSS:\t10 MB\n", "VmRSS:\t-1 kB\n", "Other: 1 kB\n"} {
		if _, err := parseStatusKiB([]byte(bad), "VmRSS"); !errors.Is(err, ErrProcFormat) {
			t.Errorf("%q: err = %v, want ErrProcFormat", bad, err)
		}
	}
}

// The live /proc of this process parses (the layout the kernel really writes).
func TestProcSelf(t *testing.T) {
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if v, err := statusKiB(os.Getpid(), "VmRSS"); err != nil || v <= 0 {
		t.Fatalf("VmRSS = %d, %v", v, err)
	}
	if _, _, err := hostCPU(); err != nil {
		t.Fatal(err)
	}
	if processGone(os.Getpid()) {
		t.Fatal("this process reported gone")
	}
}

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
