package procstat

import (
	"fmt"
	"os"
)

// OpenFDs counts the open file descriptors of pid: the entries of /proc/<pid>/fd, one
// symbolic link per descriptor (proc(5)). Reading another process's fd directory needs the
// same user (or CAP_SYS_PTRACE), which a parent has over the gateway child it started.
func OpenFDs(pid int) (int, error) {
	return countDir(fmt.Sprintf("/proc/%d/fd", pid))
}

// countDir counts the entries of dir without sorting or stat'ing them (os.ReadDir would sort
// and File.Readdirnames(-1) is all we need: names only).
func countDir(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names), nil
}
