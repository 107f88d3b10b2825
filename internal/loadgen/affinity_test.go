package loadgen

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	cases := []struct {
		in   string
		want []int // CPUs set; nil with err for invalid
		err  bool
	}{
		{"", nil, false},
		{"0", []int{0}, false},
		{"1,3", []int{1, 3}, false},
		{"0-2,5", []int{0, 1, 2, 5}, false},
		{" 64 ", []int{64}, false},
		{"2-1", nil, true},
		{"a", nil, true},
		{"-1", nil, true},
		{"0,", nil, true},
		{"1024", nil, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			set, err := parseCPUList(c.in)
			if c.err {
				if !errors.Is(err, ErrCPUList) {
					t.Fatalf("err = %v, want ErrCPUList", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.want == nil {
				if set != nil {
					t.Fatalf("set %v for an empty list", set)
				}
				return
			}
			var want cpuSet
			for _, cpu := range c.want {
				want[cpu/64] |= 1 << (cpu % 64)
			}
			if *set != want {
				t.Fatalf("got %x, want %x", *set, want)
			}
		})
	}
}

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0", "0-3,7", "1,", "9-2", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := parseCPUList(s)
		if err == nil && set == nil && strings.TrimSpace(s) != "" {
			t.Fatalf("%q: no set and no error", s)
		}
	})
}

// A child started pinned runs on those CPUs only, and this process is not left narrowed.
func TestStartPinned(t *testing.T) {
	before := allowedCPUs("self")
	set, err := parseCPUList("0")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "grep Cpus_allowed_list /proc/self/status")
	var out strings.Builder
	cmd.Stdout = &out
	if err := startPinned(cmd, set); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(out.String(), "Cpus_allowed_list:")); got != "0" {
		t.Fatalf("child allowed on %q, want 0", got)
	}
	if after := allowedCPUs("self"); after != before {
		t.Fatalf("this process went from CPUs %q to %q", before, after)
	}
}
