package sip_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sip"
)

// rawInvite is an INVITE from addr with a body of n bytes declared as SDP.
func rawInvite(transport, addr, callID string, n int) []byte {
	// A PBX's offer padded with an attribute ponte ignores, cut at a line
	// end so that it stays valid SDP.
	body := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	for pad := "a=x-pad:" + strings.Repeat("y", 56) + "\r\n"; len(body)+len(pad) <= n; {
		body += pad
	}
	n = len(body)
	return []byte(fmt.Sprintf("INVITE sip:+5511987654321@127.0.0.1 SIP/2.0\r\n"+
		"Via: SIP/2.0/%s %s;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:1001@127.0.0.1>;tag=f1\r\nTo: <sip:+5511987654321@127.0.0.1>\r\n"+
		"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@%s>\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		transport, addr, callID, callID, addr, n, body))
}

func rawOptions(transport, addr, callID string) []byte {
	return []byte(fmt.Sprintf("OPTIONS sip:127.0.0.1 SIP/2.0\r\n"+
		"Via: SIP/2.0/%s %s;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:1001@127.0.0.1>;tag=f1\r\nTo: <sip:127.0.0.1>\r\n"+
		"Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", transport, addr, callID, callID))
}

// Oversize SIP messages are never processed (issue 8). ponte sends no 513
// (RFC 3261 §21.5.14) because sipgo drops them before any handler runs: a
// UDP datagram is read into a 32 KiB buffer (TransportBufferReadSize) and a
// longer one arrives cut, its Content-Length unmet, so it does not parse;
// over TCP the stream parser refuses a message past 64 KiB
// (ParseMaxMessageLength) and, with no boundary to resync on, closes the
// connection. The test asserts that drop: no response, the gateway never
// sees the INVITE, and the server goes on answering.
func TestOversizeMessagesDropped(t *testing.T) {
	u := newUA(t)
	var calls atomic.Int32
	err := u.SetServer(sip.ServerConfig{Trunks: []sip.InboundTrunk{
		{Name: "pbx", Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
	}}, func(c *sip.IncomingCall) {
		calls.Add(1)
		_ = c.Reject(486, "Busy Here")
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("udp", func(t *testing.T) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.ListenAddr("udp")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadBuffer(1 << 20)
		la := c.LocalAddr().String()
		buf := make([]byte, 65536)
		// A legal INVITE of a few KiB gets its answer: the path works.
		if _, err := c.Write(rawInvite("UDP", la, "small-udp", 2000)); err != nil {
			t.Fatal(err)
		}
		if got := readFinal(t, c, buf); got != 486 {
			t.Fatalf("small INVITE: final %d, want 486", got)
		}
		// 60 KB: past sipgo's read buffer, cut and dropped.
		if _, err := c.Write(rawInvite("UDP", la, "big-udp", 60000)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(rawOptions("UDP", la, "after-udp")); err != nil {
			t.Fatal(err)
		}
		// The OPTIONS sent after it is answered, and nothing answers the
		// big INVITE before or after (its Call-ID never comes back).
		deadline := time.Now().Add(5 * time.Second)
		sawOptions := false
		for time.Now().Before(deadline) {
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				if sawOptions {
					break
				}
				continue
			}
			msg := buf[:n]
			if bytes.Contains(msg, []byte("Call-ID: big-udp")) {
				t.Fatalf("oversize INVITE answered: %s", rawFirstLine(msg))
			}
			if bytes.Contains(msg, []byte("Call-ID: after-udp")) && bytes.HasPrefix(msg, []byte("SIP/2.0 200")) {
				sawOptions = true
			}
		}
		if !sawOptions {
			t.Fatal("OPTIONS after the oversize datagram got no 200")
		}
	})

	t.Run("tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", u.ListenAddr("tcp").String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		la := c.LocalAddr().String()
		// Past 64 KiB: the connection is closed, nothing is answered.
		go func() { _, _ = c.Write(rawInvite("TCP", la, "big-tcp", 70000)) }()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if len(got) != 0 {
			t.Fatalf("oversize INVITE over TCP answered: %q", rawFirstLine(got))
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("ponte kept the connection of an oversize message open")
		}
		// A new connection is served as usual.
		c2, err := net.Dial("tcp", u.ListenAddr("tcp").String())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if _, err := c2.Write(rawOptions("TCP", c2.LocalAddr().String(), "after-tcp")); err != nil {
			t.Fatal(err)
		}
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c2).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "SIP/2.0 200") {
			t.Fatalf("OPTIONS after the oversize message: %q %v", line, err)
		}
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("gateway saw %d INVITEs, want 1 (the small one)", n)
	}
}

// readFinal reads responses until a final one and returns its code.
func readFinal(t *testing.T, c net.Conn, buf []byte) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0
		}
		var code int
		if _, err := fmt.Sscanf(string(buf[:n]), "SIP/2.0 %d", &code); err == nil && code >= 200 {
			return code
		}
	}
}

func rawFirstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}
