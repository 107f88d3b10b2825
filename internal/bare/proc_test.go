package bare

import (
	"errors"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		line         string
		utime, stime uint64
		wantErr      bool
	}{
		{"1234 (ponte) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 12 0", 250, 37, false},
		{"99 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 11 12 0 0", 11, 12, false},
		{"1234 ponte S 1", 0, 0, true},
		{"1 (x) S 1 2 3", 0, 0, true},
		{"1 (x) S 1 2 3 4 5 6 7 8 9 10 u 12", 0, 0, true},
	} {
		u, s, err := parseStatCPU([]byte(tc.line))
		if (err != nil) != tc.wantErr || u != tc.utime || s != tc.stime {
			t.Errorf("%q: %d %d %v, want %d %d error %v", tc.line, u, s, err, tc.utime, tc.stime, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrProcFormat) {
			t.Errorf("%q: %v does not wrap ErrProcFormat", tc.line, err)
		}
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := []byte("Name:\tponte\nVmHWM:\t   20480 kB\nVmRSS:\t   16384 kB\nThreads:\t9\n")
	for _, tc := range []struct {
		field   string
		want    int64
		wantErr bool
	}{
		{"VmRSS", 16384, false},
		{"VmHWM", 20480, false},
		{"Threads", 0, true}, // no unit
		{"VmSwap", 0, true},  // absent
	} {
		got, err := parseStatusKiB(status, tc.field)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: %d %v, want %d error %v", tc.field, got, err, tc.want, tc.wantErr)
		}
	}
}

// FuzzParseStatCPU: /proc text is outside input; the parser must never panic.
func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte("1234 (ponte) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0"))
	f.Add([]byte("1 ()) ) S"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, err := parseStatCPU(b); err != nil && !errors.Is(err, ErrProcFormat) {
			t.Fatalf("error %v does not wrap ErrProcFormat", err)
		}
	})
}
