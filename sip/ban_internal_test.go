package sip

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestBanList: a burst of After failures bans; a trickle slower than
// After/Within never does; bans expire; exempt prefixes are never banned;
// both maps stay bounded.
func TestBanList(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	cfg := BanConfig{After: 5, Within: time.Minute, For: 10 * time.Minute}
	tests := []struct {
		name   string
		gaps   []time.Duration // between failures of a
		banned bool
	}{
		{"burst", []time.Duration{0, time.Second, time.Second, time.Second, time.Second}, true},
		{"four then wait", []time.Duration{0, 0, 0, 0, 90 * time.Second}, false},
		{"five across a window boundary", []time.Duration{0, 50 * time.Second, 0, 0, 15 * time.Second, 0}, true},
		{"four across a window boundary", []time.Duration{0, 50 * time.Second, 0, 0, 15 * time.Second}, false},
		{"trickle: never five within a minute", []time.Duration{0, 16 * time.Second, 16 * time.Second, 16 * time.Second, 16 * time.Second, 16 * time.Second, 16 * time.Second, 16 * time.Second, 16 * time.Second}, false},
		{"spread but inside the window", []time.Duration{0, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newBanList(discard, 16)
			l.configure(cfg, nil)
			now, banAt := t0, time.Time{}
			for _, g := range tc.gaps {
				now = now.Add(g)
				l.fail(a, now, "test")
				if banAt.IsZero() && l.banned(a, now) {
					banAt = now
				}
			}
			if got := l.banned(a, now); got != tc.banned {
				t.Fatalf("banned %v, want %v", got, tc.banned)
			}
			if l.banned(b, now) {
				t.Fatal("an innocent source is banned")
			}
			if tc.banned {
				if l.current(now) != 1 || l.bans.Load() != 1 {
					t.Fatalf("current %d bans %d", l.current(now), l.bans.Load())
				}
				if !l.banned(a, banAt.Add(cfg.For-time.Second)) || l.banned(a, banAt.Add(cfg.For)) {
					t.Fatal("ban does not last exactly For from the failure that imposed it")
				}
				if l.current(banAt.Add(cfg.For)) != 0 || l.active.Load() != 0 {
					t.Fatal("expired ban still counted")
				}
			}
		})
	}
	t.Run("exempt", func(t *testing.T) {
		l := newBanList(discard, 16)
		l.configure(cfg, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
		for i := 0; i < 20; i++ {
			l.fail(a, t0, "test")
		}
		if l.banned(a, t0) || l.bans.Load() != 0 {
			t.Fatal("an allow-listed address was banned")
		}
	})
	t.Run("off", func(t *testing.T) {
		l := newBanList(discard, 16)
		l.configure(BanConfig{After: 1, Within: time.Minute, For: -1}, nil)
		l.fail(a, t0, "test")
		if l.banned(a, t0) {
			t.Fatal("banned with For<0")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		l := newBanList(discard, 8)
		l.configure(BanConfig{After: 2, Within: time.Minute, For: time.Hour}, nil)
		for i := 0; i < 100; i++ {
			ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			l.fail(ip, t0, "test")
			l.fail(ip, t0, "test")
			l.fail(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), t0, "test")
		}
		if len(l.scores) > 8 || len(l.until) > 8 || l.current(t0) != 8 || l.bans.Load() != 100 {
			t.Fatalf("scores %d bans %d current %d imposed %d", len(l.scores), len(l.until), l.current(t0), l.bans.Load())
		}
	})
}

// TestReadFilter: a banned source's datagrams are discarded and its
// streams closed; a scanner datagram is discarded and counts toward its
// ban; a known source's scanner-looking datagram passes.
func TestReadFilter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var s security
	ban := newBanList(discard, 16)
	ban.configure(BanConfig{After: 2, Within: time.Minute, For: time.Minute}, nil)
	s.pol.Store(&secPolicy{ban: ban, known: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, now: func() time.Time { return t0 }})
	scan := []byte("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nUser-Agent: friendly-scanner\r\n\r\n")
	udp := func(ip string) sip.TransportReadProps {
		return sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.ParseIP(ip), Port: 5060}}
	}
	if out, err := s.readFilter(udp("10.1.1.1"), scan); err != nil || len(out) != len(scan) {
		t.Fatalf("known source filtered: %d, %v", len(out), err)
	}
	for i := 0; i < 2; i++ {
		if out, err := s.readFilter(udp("192.0.2.9"), scan); err != nil || out != nil {
			t.Fatalf("scanner passed: %q, %v", out, err)
		}
	}
	if s.scanners.Load() != 2 || ban.bans.Load() != 1 {
		t.Fatalf("scanners %d bans %d", s.scanners.Load(), ban.bans.Load())
	}
	clean := []byte("OPTIONS sip:x SIP/2.0\r\nUser-Agent: Asterisk\r\n\r\n")
	if out, err := s.readFilter(udp("192.0.2.9"), clean); err != nil || out != nil {
		t.Fatalf("banned datagram passed: %q, %v", out, err)
	}
	tcp := sip.TransportReadProps{Transport: "TCP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 40000}}
	if _, err := s.readFilter(tcp, clean); err != ErrBanned {
		t.Fatalf("banned stream: %v, want ErrBanned", err)
	}
	if out, err := s.readFilter(udp("192.0.2.10"), clean); err != nil || len(out) != len(clean) {
		t.Fatalf("innocent datagram: %d, %v", len(out), err)
	}
	if s.banDropped.Load() != 2 {
		t.Fatalf("banDropped %d", s.banDropped.Load())
	}
	innocent, banned := udp("192.0.2.10"), udp("192.0.2.9")
	for name, props := range map[string]sip.TransportReadProps{"innocent": innocent, "banned": banned} {
		if n := testing.AllocsPerRun(100, func() { _, _ = s.readFilter(props, clean) }); n != 0 {
			t.Fatalf("%s: %v allocations per datagram", name, n)
		}
	}
}

func TestRawScanner(t *testing.T) {
	tests := []struct {
		msg  string
		want bool
	}{
		{"INVITE sip:1@x SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n", true},
		{"OPTIONS sip:1@x SIP/2.0\r\nuser-agent:SIPVicious\r\n\r\n", true},
		{"OPTIONS sip:1@x SIP/2.0\nuser-agent:SIPVicious\n\n", false},                     // bare LF: sipgo reads one start line; the handlers judge it
		{"INVITE sip:1@x SIP/2.0\r\nVia: a\nUser-Agent: friendly-scanner\r\n\r\n", false}, // not at a line start
		{"REGISTER sip:x SIP/2.0\r\nVia: x\r\nUSER-AGENT \t: pplsip\r\n\r\n", true},
		{"INVITE sip:1@x SIP/2.0\r\nUser-Agent: Asterisk PBX 20\r\n\r\n", false},
		{"INVITE sip:1@x SIP/2.0\r\nX-User-Agent: friendly-scanner\r\n\r\n", false},
		{"INVITE sip:1@x SIP/2.0\r\nSubject: friendly-scanner\r\n\r\n", false},
		{"MESSAGE sip:1@x SIP/2.0\r\nUser-Agent: Linphone\r\n\r\nUser-Agent: friendly-scanner\r\n", false}, // body
		{"MESSAGE sip:1@x SIP/2.0\r\nUser-Agent: Linphone\r\n\r\n", false},
		{"SIP/2.0 200 OK\r\nUser-Agent: friendly-scanner\r\n\r\n", false},
		{"User-Agent: friendly-scanner\r\n", false}, // that is the start line
		{"", false},
	}
	for _, tc := range tests {
		if got := rawScanner([]byte(tc.msg)); got != tc.want {
			t.Errorf("rawScanner(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// FuzzRawScanner: the raw check never flags a request whose parsed
// User-Agent does not name a scanner (no false positives from bodies or
// other headers), and never panics.
func FuzzRawScanner(f *testing.F) {
	f.Add([]byte("INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("OPTIONS sip:1@x SIP/2.0\nUser-Agent :sipcli\n\nbody"))
	f.Fuzz(func(t *testing.T, data []byte) {
		raw := rawScanner(data)
		m, err := sip.ParseMessage(append([]byte(nil), data...))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			if raw {
				t.Fatalf("a response flagged: %q", data)
			}
			return
		}
		if raw && !scannerRequest(req) && !strings.Contains(strings.ToLower(string(data)), "\n ") && !strings.Contains(string(data), "\n\t") {
			t.Fatalf("raw flags %q, parsed User-Agent %v", data, req.GetHeaders("User-Agent"))
		}
	})
}
