package procstat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOpenFDsSelf opens and closes files in this process and checks that the count moves by
// exactly that many. No other goroutine of the test binary opens files meanwhile, and the
// count's own directory handle is closed before it returns, so it is not counted twice.
func TestOpenFDsSelf(t *testing.T) {
	before, err := OpenFDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before < 3 { // stdin, stdout, stderr at least, plus the directory being read
		t.Fatalf("OpenFDs = %d, want >= 3", before)
	}
	for _, n := range []int{1, 3, 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var files []*os.File
			for i := range n {
				f, err := os.Create(filepath.Join(t.TempDir(), "f"+string(rune('a'+i))))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			got, err := OpenFDs(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			if got != before+n {
				t.Errorf("with %d more files open: %d fds, want %d", n, got, before+n)
			}
			for _, f := range files {
				f.Close()
			}
			if got, _ := OpenFDs(os.Getpid()); got != before {
				t.Errorf("after closing them: %d fds, want %d", got, before)
			}
		})
	}
}

// TestOpenFDsChild counts the descriptors of another process: a shell that opens two extra
// files (fds 3 and 4) and waits. Its count is its standard three plus those two; the shell
// itself may hold one more for its script, so the difference between two such children that
// open 2 and 5 files is what is asserted.
func TestOpenFDsChild(t *testing.T) {
	count := func(extra string) int {
		t.Helper()
		cmd := exec.Command("sh", "-c", extra+" echo ready; read x")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		ready, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); _ = cmd.Wait() }()
		buf := make([]byte, 6)
		if _, err := ready.Read(buf); err != nil {
			t.Fatal(err)
		}
		n, err := OpenFDs(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	two := count("exec 3</dev/null 4</dev/null;")
	five := count("exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null;")
	if five-two != 3 || two < 5 {
		t.Errorf("child with 2 extra fds: %d, with 5: %d; want a difference of 3 and >= 5", two, five)
	}
}

func TestOpenFDsNoProcess(t *testing.T) {
	// pid_max is at most 2^22 on Linux, so this pid cannot exist.
	if _, err := OpenFDs(1 << 23); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
}
