package test

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// loSniffer captures UDP datagrams on the loopback interface toward one
// port with an AF_PACKET socket, to check what ponte sends a peer that does
// not record its audio (sipp's uac_pcap plays a capture and keeps nothing).
// It needs root (CAP_NET_RAW), as `make test` does for the NAT test.
type loSniffer struct {
	fd   int
	port uint16
	mu   sync.Mutex
	got  []sniffed
	done chan struct{}
}

type sniffed struct {
	at      time.Time
	payload []byte // the UDP payload
}

const ethPAll = 0x0003

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sniffUDP starts capturing datagrams to dstPort on lo until the test ends.
func sniffUDP(t *testing.T, dstPort int) *loSniffer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("capturing on lo needs root (CAP_NET_RAW); euid is %d", os.Geteuid())
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(ethPAll)))
	if err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	lo, err := loIndex()
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: lo}); err != nil {
		syscall.Close(fd)
		t.Fatalf("bind to lo: %v", err)
	}
	tv := syscall.Timeval{Usec: 100000}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	s := &loSniffer{fd: fd, port: uint16(dstPort), done: make(chan struct{})}
	stop := make(chan struct{})
	go s.run(stop)
	t.Cleanup(func() { close(stop); <-s.done; syscall.Close(fd) })
	return s
}

func loIndex() (int, error) {
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}

func (s *loSniffer) run(stop <-chan struct{}) {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue // timeout: look at stop again
		}
		// On lo every datagram is seen leaving and arriving: keep one copy.
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == 4 /* PACKET_OUTGOING */ {
			continue
		}
		p := buf[:n]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != 17 { // IPv4 UDP only
			continue
		}
		ihl := int(p[0]&15) * 4
		if len(p) < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != s.port {
			continue
		}
		pl := append([]byte(nil), p[ihl+8:]...)
		s.mu.Lock()
		s.got = append(s.got, sniffed{at: time.Now(), payload: pl})
		s.mu.Unlock()
	}
}

// packets returns what was captured so far.
func (s *loSniffer) packets() []sniffed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sniffed(nil), s.got...)
}
