package loadgen

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// ErrCPUList wraps a CPU list that taskset(1) would not accept either.
var ErrCPUList = errors.New("loadgen: bad CPU list")

// cpuSet is the kernel's cpu_set_t (1024 CPUs), the argument of sched_setaffinity(2).
type cpuSet [1024 / 64]uint64

// parseCPUList reads taskset -c syntax: "0", "1,3", "0-2,5". Empty is no pinning.
func parseCPUList(s string) (*cpuSet, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var set cpuSet
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= len(set)*64 {
			return nil, fmt.Errorf("%w: %q", ErrCPUList, s)
		}
		for c := a; c <= b; c++ {
			set[c/64] |= 1 << (c % 64)
		}
	}
	return &set, nil
}

// setAffinity is sched_setaffinity(tid, set): tid 0 is the calling thread.
func setAffinity(tid int, set *cpuSet) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(*set), uintptr(unsafe.Pointer(set)))
	if e != 0 {
		return fmt.Errorf("sched_setaffinity(%d): %w", tid, e)
	}
	return nil
}

func getAffinity(tid int) (*cpuSet, error) {
	var set cpuSet
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(set), uintptr(unsafe.Pointer(&set)))
	if e != 0 {
		return nil, fmt.Errorf("sched_getaffinity(%d): %w", tid, e)
	}
	return &set, nil
}

// pinSelf pins every thread of this process. Threads started later inherit the mask of the
// thread that creates them (sched_setaffinity(2)), so two passes catch any thread created
// by a not-yet-pinned one during the first.
func pinSelf(set *cpuSet) error {
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := setAffinity(tid, set); err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// startPinned starts cmd with its CPU affinity set to set. A child inherits the affinity of
// the thread that forks it (sched_setaffinity(2), fork(2)), and os/exec forks from the
// calling thread: so the goroutine locks its thread, narrows that thread's mask, starts the
// child and restores the mask before unlocking. The thread must survive (Pdeathsig fires
// when the forking thread exits), which unlocking, rather than exiting locked, ensures.
func startPinned(cmd *exec.Cmd, set *cpuSet) error {
	if set == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := getAffinity(0)
	if err != nil {
		return err
	}
	if err := setAffinity(0, set); err != nil {
		return err
	}
	startErr := cmd.Start()
	// Should the restore fail, this one thread stays on the gateway's CPUs: harmless, and
	// it must not exit (see above), so it is unlocked all the same.
	return errors.Join(startErr, setAffinity(0, old))
}

// allowedCPUs is Cpus_allowed_list of /proc/<pid>/status ("self" for this process).
func allowedCPUs(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
