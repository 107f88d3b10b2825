package webrtc

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Every call's WebRTC packets arrive on one socket (the single-port ICE mux), so its
// kernel receive queue is shared by all of them. Linux sizes it at net.core.rmem_default
// (208 KiB on Debian), and each small UDP packet costs about 1.2 KiB of it (the skb's
// truesize, not the payload): about 170 packets, 35 ms of 100 calls' traffic. A scheduling
// stall longer than that drops audio of every call at once, before ponte sees it. A few
// MiB turn that into seconds.

// setSocketBuffer sets conn's receive and send buffers to size bytes. SO_RCVBUFFORCE /
// SO_SNDBUFFORCE (root or CAP_NET_ADMIN) ignore net.core.rmem_max/wmem_max; without the
// privilege it falls back to SO_RCVBUF/SO_SNDBUF, which the kernel caps, and says so.
func setSocketBuffer(conn *net.UDPConn, size int, log *slog.Logger) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain int }{
			{syscall.SO_RCVBUFFORCE, syscall.SO_RCVBUF},
			{syscall.SO_SNDBUFFORCE, syscall.SO_SNDBUF},
		} {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o.force, size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o.plain, size)
			}
		}
		// The kernel doubles the value it stores (bookkeeping overhead, socket(7)).
		if got, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil && got < size {
			log.Warn("webrtc socket receive buffer is smaller than media.socket_buffer: raise net.core.rmem_max or run with CAP_NET_ADMIN",
				"wanted_bytes", size, "kernel_bytes", got)
		}
	})
}

// warnSocketCap warns when net.core.rmem_max will cap a buffer set with SO_RCVBUF (the
// multi-interface mux, whose sockets pion opens itself).
func warnSocketCap(log *slog.Logger, size int) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		return
	}
	if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && max < size {
		log.Warn("net.core.rmem_max caps the webrtc socket receive buffer below media.socket_buffer: sysctl -w net.core.rmem_max="+strconv.Itoa(size),
			"wanted_bytes", size, "rmem_max", max)
	}
}

// socketBuffer returns conn's receive buffer as the kernel reports it (tests).
func socketBuffer(conn *net.UDPConn) int {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	_ = raw.Control(func(fd uintptr) { n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
	return n
}
