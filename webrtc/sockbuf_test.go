package webrtc

import (
	"log/slog"
	"net"
	"testing"
)

// The shared socket gets the configured buffer (the kernel reports twice the value it was
// given, socket(7)); without it the system default is far smaller.
func TestSetSocketBuffer(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := socketBuffer(conn)
	const want = 2 << 20
	setSocketBuffer(conn, want, slog.New(slog.DiscardHandler))
	got := socketBuffer(conn)
	if got < want {
		t.Fatalf("receive buffer %d bytes after asking for %d (default was %d): needs root/CAP_NET_ADMIN or net.core.rmem_max >= %d", got, want, before, want)
	}
	if before >= want {
		t.Fatalf("the default buffer (%d) is already %d: the test shows nothing", before, want)
	}
}
