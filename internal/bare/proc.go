package bare

import (
	"syscall"
	"time"
)

// rusageThread is RUSAGE_THREAD (getrusage(2), Linux): the calling thread only.
const rusageThread = 1

// threadCPU is the calling thread's user+system CPU time; lock the goroutine to its thread
// (runtime.LockOSThread) around the measured work.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(rusageThread, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
