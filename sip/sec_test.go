package sip_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// Issue 8 item 3 (H-SIPSEC): per-source INVITE rate, bans, scanner traffic.

var tenNet = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}

// wireFrom is a raw UDP endpoint on another loopback address (127.0.0.2):
// a second source for the per-source state.
func wireFrom(t *testing.T, ip string, to *net.UDPAddr) *wire {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("binding %s (loopback alias): %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return &wire{t: t, conn: c, to: to}
}

// ask sends an out-of-dialog request with extra header lines and returns
// the final response, nil if none came within d.
func ask(w *wire, method, extra string, d time.Duration) *sipgo.Response {
	w.t.Helper()
	msg := outOfDialog(method, w, "")
	msg = strings.Replace(msg, "Max-Forwards: 70\n", "Max-Forwards: 70\n"+extra, 1)
	w.send(msg, nil)
	m, _ := w.recvQuiet(d, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200 && string(r.CSeq().MethodName) == method
	})
	if m == nil {
		return nil
	}
	return m.(*sipgo.Response)
}

// inviteOnce places a fresh call from p and returns the final response (nil
// when none came), ACKing it.
func inviteOnce(p *pbxLeg, extra string, d time.Duration) *sipgo.Response {
	p.t.Helper()
	p.fresh()
	p.invite("", extra, false)
	m, _ := p.w.recvQuiet(d, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200 && r.CSeq().MethodName == sipgo.INVITE && r.CallID().Value() == p.callID
	})
	if m == nil {
		return nil
	}
	res := m.(*sipgo.Response)
	p.ack(toTag(res), "", false)
	return res
}

// TestInviteRateLimit: a source over its INVITE rate gets 480 with
// Retry-After (never 503, RFC 3261 §21.5.4), or nothing under drop; an
// allow-listed trunk address is exempt; another source has its own bucket.
func TestInviteRateLimit(t *testing.T) {
	tests := []struct {
		name   string
		cfg    sip.ServerConfig
		codes  []int // per INVITE; 0: no response; 1: accepted
		retry  string
		limits uint64
	}{
		{"stranger over the limit", sip.ServerConfig{InviteRate: 0.5, InviteBurst: 2, Trunks: []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}},
			[]int{403, 403, 480, 480}, "2", 2},
		{"drop policy: silence", sip.ServerConfig{InviteRate: 0.5, InviteBurst: 2, Unauthorized: sip.UnauthorizedDrop, Trunks: []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}},
			[]int{0, 0, 0}, "", 1},
		{"allow-listed trunk exempt", sip.ServerConfig{InviteRate: 0.01, InviteBurst: 1, Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}},
			[]int{1, 1, 1}, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := serverUA(t, tc.cfg)
			p := newPBXLeg(t, u)
			for i, want := range tc.codes {
				switch want {
				case 1:
					p.fresh()
					p.invite("", "", false)
					c := nextIncoming(t, calls)
					c.Reject(486, "Busy Here")
					res := p.final(1, "INVITE")
					if res.StatusCode != 486 {
						t.Fatalf("INVITE %d: %d, want the handler's 486", i, res.StatusCode)
					}
					p.ack(toTag(res), "", false)
				case 0:
					if res := inviteOnce(p, "", 400*time.Millisecond); res != nil {
						t.Fatalf("INVITE %d: got %d, want no response", i, res.StatusCode)
					}
				default:
					res := inviteOnce(p, "", 3*time.Second)
					if res == nil || res.StatusCode != want {
						t.Fatalf("INVITE %d: got %v, want %d", i, res, want)
					}
					if want == 480 {
						if h := res.GetHeader("Retry-After"); h == nil || h.Value() != tc.retry {
							t.Fatalf("480 Retry-After %v, want %s", h, tc.retry)
						}
					}
				}
			}
			if st := u.ServerStats(); st.InviteLimited != tc.limits {
				t.Fatalf("InviteLimited %d, want %d (stats %+v)", st.InviteLimited, tc.limits, st)
			}
			if tc.limits > 0 && tc.codes[0] == 403 {
				// Another source has a full bucket of its own.
				q := &pbxLeg{t: t, to: udpAddr(u), user: "+5511999990000", w: wireFrom(t, "127.0.0.2", udpAddr(u))}
				if res := inviteOnce(q, "", 3*time.Second); res == nil || res.StatusCode != 403 {
					t.Fatalf("second source: %v, want 403", res)
				}
			}
		})
	}
}

// TestBan: After failures ban the source: its next INVITE and OPTIONS, over
// UDP and TCP, go unanswered; other sources are untouched; the counters say
// so. An address on a trunk's allow-list is never banned, and For<0 bans
// no one.
func TestBan(t *testing.T) {
	ban := sip.BanConfig{After: 3, Within: time.Minute, For: time.Minute}
	t.Run("banned", func(t *testing.T) {
		u, _ := serverUA(t, sip.ServerConfig{Ban: ban, Trunks: []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}})
		p := newPBXLeg(t, u)
		for i := 0; i < 3; i++ {
			if res := inviteOnce(p, "", 3*time.Second); res == nil || res.StatusCode != 403 {
				t.Fatalf("INVITE %d: %v, want 403", i, res)
			}
		}
		if res := inviteOnce(p, "", 400*time.Millisecond); res != nil {
			t.Fatalf("banned source got %d", res.StatusCode)
		}
		if res := ask(p.w, "OPTIONS", "", 400*time.Millisecond); res != nil {
			t.Fatalf("banned source's OPTIONS got %d", res.StatusCode)
		}
		// Over TCP the connection is closed at its first read, unanswered.
		tc, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(u.ListenAddr("tcp")))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		fmt.Fprintf(tc, "OPTIONS sip:ponte@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-tcp1\r\nFrom: <sip:x@127.0.0.1>;tag=a\r\nTo: <sip:ponte@127.0.0.1>\r\nCall-ID: tcp-ban@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
		tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if line, err := bufio.NewReader(tc).ReadString('\n'); err == nil {
			t.Fatalf("banned TCP source got %q", line)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("banned TCP connection left open")
		}
		// 127.0.0.2 is another source: still answered.
		q := wireFrom(t, "127.0.0.2", udpAddr(u))
		if res := ask(q, "OPTIONS", "", 3*time.Second); res == nil || res.StatusCode != 200 {
			t.Fatalf("other source's OPTIONS: %v, want 200", res)
		}
		st := u.ServerStats()
		if st.Banned != 1 || st.BannedNow != 1 || st.BanDropped < 3 || st.Forbidden != 3 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("trunk address never banned", func(t *testing.T) {
		u, _ := serverUA(t, sip.ServerConfig{Ban: ban, Trunks: []sip.InboundTrunk{{Name: "both", Allow: loopback, Username: "pbx1", Password: "pw"}}})
		p := newPBXLeg(t, u)
		for i := 0; i < 5; i++ {
			res := inviteOnce(p, `Authorization: Digest username="pbx1", realm="127.0.0.1", nonce="x", uri="sip:a@b", response="00"`+"\n", 3*time.Second)
			if res == nil || res.StatusCode != 403 {
				t.Fatalf("INVITE %d: %v, want 403", i, res)
			}
		}
		if st := u.ServerStats(); st.Banned != 0 || st.BannedNow != 0 || st.AuthFailed != 5 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("for<0: no bans", func(t *testing.T) {
		u, _ := serverUA(t, sip.ServerConfig{Ban: sip.BanConfig{After: 1, For: -1}, Trunks: []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}})
		p := newPBXLeg(t, u)
		for i := 0; i < 4; i++ {
			if res := inviteOnce(p, "", 3*time.Second); res == nil || res.StatusCode != 403 {
				t.Fatalf("INVITE %d: %v, want 403", i, res)
			}
		}
		if st := u.ServerStats(); st.Banned != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestScannerTraffic: requests whose User-Agent names a scanner are dropped
// unanswered and counted; OPTIONS from unknown sources are answered (reject)
// or not (drop) and counted; REGISTER and unknown methods get 405 with
// Allow; trunks and peers are never judged.
func TestScannerTraffic(t *testing.T) {
	strangers := []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}
	tests := []struct {
		name      string
		cfg       sip.ServerConfig
		method    string
		extra     string
		code      int // 0: no response
		allow     bool
		scanners  uint64
		strangers uint64
	}{
		{"scanner INVITE", sip.ServerConfig{Trunks: strangers}, "INVITE", "User-Agent: friendly-scanner\n", 0, false, 1, 0},
		{"scanner OPTIONS", sip.ServerConfig{Trunks: strangers}, "OPTIONS", "User-Agent: SIPVicious 0.3\n", 0, false, 1, 0},
		{"scanner REGISTER", sip.ServerConfig{Trunks: strangers}, "REGISTER", "User-Agent: VaxSIPUserAgent/3.1\n", 0, false, 1, 0},
		{"stranger OPTIONS, reject", sip.ServerConfig{Trunks: strangers}, "OPTIONS", "User-Agent: Zoiper\n", 200, true, 0, 1},
		{"stranger OPTIONS, drop", sip.ServerConfig{Trunks: strangers, Unauthorized: sip.UnauthorizedDrop}, "OPTIONS", "", 0, false, 0, 1},
		{"stranger REGISTER", sip.ServerConfig{Trunks: strangers}, "REGISTER", "", 405, true, 0, 1},
		{"stranger SUBSCRIBE", sip.ServerConfig{Trunks: strangers}, "SUBSCRIBE", "", 405, true, 0, 1},
		{"trunk OPTIONS under drop", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}, Unauthorized: sip.UnauthorizedDrop}, "OPTIONS", "", 200, true, 0, 0},
		{"peer OPTIONS under drop", sip.ServerConfig{Trunks: strangers, Peers: loopback, Unauthorized: sip.UnauthorizedDrop}, "OPTIONS", "", 200, true, 0, 0},
		{"trunk REGISTER", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}}, "REGISTER", "", 405, true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := serverUA(t, tc.cfg)
			w := newWire(t, udpAddr(u))
			wait := 3 * time.Second
			if tc.code == 0 {
				wait = 500 * time.Millisecond
			}
			res := ask(w, tc.method, tc.extra, wait)
			switch {
			case tc.code == 0 && res != nil:
				t.Fatalf("got %d, want no response", res.StatusCode)
			case tc.code != 0 && (res == nil || res.StatusCode != tc.code):
				t.Fatalf("got %v, want %d", res, tc.code)
			}
			if tc.allow {
				if h := res.GetHeader("Allow"); h == nil || !strings.Contains(h.Value(), "INVITE") || strings.Contains(h.Value(), "REGISTER") {
					t.Fatalf("Allow %v", h)
				}
			}
			noIncoming(t, calls)
			if st := u.ServerStats(); st.Scanners != tc.scanners || st.Strangers != tc.strangers || st.Accepted != 0 {
				t.Fatalf("stats %+v, want scanners %d strangers %d", st, tc.scanners, tc.strangers)
			}
		})
	}
}

// TestScannerOverTCP: over a stream the scanner check runs after parsing
// (a read may split the header): still no answer, still counted.
func TestScannerOverTCP(t *testing.T) {
	u, calls := serverUA(t, sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}})
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(u.ListenAddr("tcp")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.TCPAddr).Port
	fmt.Fprintf(c, "INVITE sip:+5511999990000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:%d;branch=z9hG4bK-scan1\r\nFrom: <sip:100@127.0.0.1>;tag=s1\r\nTo: <sip:+5511999990000@127.0.0.1>\r\nCall-ID: scan-tcp@test\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.1:%d;transport=tcp>\r\nUser-Agent: sipcli/v1.8\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", port, port)
	c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatalf("scanner got %q", line)
	}
	noIncoming(t, calls)
	if st := u.ServerStats(); st.Scanners != 1 || st.Forbidden != 0 {
		t.Fatalf("stats %+v", st)
	}
}
