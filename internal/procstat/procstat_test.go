package procstat

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 1234 and 567 in each line.
	tail := " S 1 1 1 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 12 0 300 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	cases := []struct {
		name         string
		line         string
		utime, stime uint64
		wantErr      bool
	}{
		{"plain", "4242 (ponte)" + tail, 1234, 567, false},
		{"comm with spaces", "4242 (my ponte)" + tail, 1234, 567, false},
		{"comm with parens", "4242 (a) b (c))" + tail, 1234, 567, false},
		{"no parens", "4242 ponte" + tail, 0, 0, true},
		{"truncated", "4242 (ponte) S 1 1 1 0 -1 4194560 100 0 0 0 1234", 0, 0, true},
		{"not a number", "4242 (ponte) S 1 1 1 0 -1 4194560 100 0 0 0 12x4 567 0", 0, 0, true},
		{"negative", "4242 (ponte) S 1 1 1 0 -1 4194560 100 0 0 0 1234 -5 0", 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, s, err := ParseStatCPU([]byte(c.line))
			if c.wantErr {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("err = %v, want ErrFormat", err)
				}
				return
			}
			if err != nil || u != c.utime || s != c.stime {
				t.Fatalf("got %d, %d, %v; want %d, %d", u, s, err, c.utime, c.stime)
			}
		})
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tponte\nVmPeak:\t 1300000 kB\nVmHWM:\t   45312 kB\nVmRSS:\t   40960 kB\nThreads:\t12\nBad:\t12 MB\n"
	cases := []struct {
		field   string
		want    int64
		wantErr bool
	}{
		{"VmRSS", 40960, false},
		{"VmHWM", 45312, false},
		{"VmPeak", 1300000, false},
		{"VmSwap", 0, true},  // absent
		{"Threads", 0, true}, // no unit
		{"Bad", 0, true},     // wrong unit
		{"Vm", 0, true},      // prefix of a field is not the field
	}
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			got, err := ParseStatusKiB([]byte(status), c.field)
			if c.wantErr {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("err = %v, want ErrFormat", err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %d, %v; want %d", got, err, c.want)
			}
		})
	}
}

func TestParseHostCPU(t *testing.T) {
	cases := []struct {
		name        string
		in          string
		busy, steal uint64
		wantErr     bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{"linux 2.6.33+", "cpu  100 2 30 500 7 1 4 5 9 0\ncpu0 50 1 15 250 3 0 2 2 4 0\n", 137, 5, false},
		{"exactly eight", "cpu 1 1 1 1 1 1 1 2", 5, 2, false},
		{"too few columns", "cpu 1 2 3 4 5 6 7\n", 0, 0, true},
		{"per-cpu line first", "cpu0 1 2 3 4 5 6 7 8\n", 0, 0, true},
		{"not a number", "cpu 1 2 x 4 5 6 7 8\n", 0, 0, true},
		{"empty", "", 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			busy, steal, err := ParseHostCPU([]byte(c.in))
			if c.wantErr {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("err = %v, want ErrFormat", err)
				}
				return
			}
			if err != nil || busy != c.busy || steal != c.steal {
				t.Fatalf("got busy %d steal %d, %v; want %d, %d", busy, steal, err, c.busy, c.steal)
			}
		})
	}
}

// The readers work on this very process: its RSS is not zero and its VmHWM is at least its RSS.
func TestProcSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := CPUTicks(pid); err != nil {
		t.Fatal(err)
	}
	rss, err := StatusKiB(pid, "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("VmRSS = %d, %v", rss, err)
	}
	hwm, err := StatusKiB(pid, "VmHWM")
	if err != nil || hwm < rss {
		t.Fatalf("VmHWM = %d (VmRSS %d), %v", hwm, rss, err)
	}
	if busy, _, err := HostCPU(); err != nil || busy == 0 {
		t.Fatalf("host busy %d ticks, %v", busy, err)
	}
	if _, err := CPUTicks(1 << 30); err == nil {
		t.Fatal("no error for a pid that does not exist")
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte("4242 (ponte) S 1 1 1 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0"))
	f.Add([]byte("1 ((() S"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, s, err := ParseStatCPU(b)
		if err != nil && (u != 0 || s != 0) {
			t.Fatalf("values %d, %d with error %v", u, s, err)
		}
	})
}

func FuzzParseStatusKiB(f *testing.F) {
	f.Add([]byte("VmRSS:\t 40960 kB\n"), "VmRSS")
	f.Add([]byte("VmRSS: -1 kB"), "VmRSS")
	f.Fuzz(func(t *testing.T, b []byte, field string) {
		v, err := ParseStatusKiB(b, field)
		if err == nil && (v < 0 || !strings.Contains(string(b), field+":")) {
			t.Fatalf("accepted %d for %q in %q", v, field, b)
		}
	})
}

func FuzzParseHostCPU(f *testing.F) {
	f.Add([]byte("cpu  100 2 30 500 7 1 4 5 9 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		busy, steal, err := ParseHostCPU(b)
		if err != nil && (busy != 0 || steal != 0) {
			t.Fatalf("values %d, %d with error %v", busy, steal, err)
		}
	})
}
