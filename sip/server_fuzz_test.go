package sip

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// fuzzTx is a server transaction that records the responses a handler
// sends instead of writing them: the fuzz target runs ponte's request
// handlers in process, without sockets.
type fuzzTx struct {
	mu   sync.Mutex
	res  []*sip.Response
	done chan struct{}
}

func (t *fuzzTx) Respond(r *sip.Response) error {
	t.mu.Lock()
	t.res = append(t.res, r)
	t.mu.Unlock()
	return nil
}
func (t *fuzzTx) Acks() <-chan *sip.Request          { return nil }
func (t *fuzzTx) OnCancel(sip.FnTxCancel) bool       { return true }
func (t *fuzzTx) Terminate()                         {}
func (t *fuzzTx) OnTerminate(sip.FnTxTerminate) bool { return true }
func (t *fuzzTx) Done() <-chan struct{}              { return t.done }
func (t *fuzzTx) Err() error                         { return nil }
func (t *fuzzTx) responses() []*sip.Response         { t.mu.Lock(); defer t.mu.Unlock(); return t.res }
func (t *fuzzTx) reset()                             { t.mu.Lock(); t.res = t.res[:0]; t.mu.Unlock() }
func (t *fuzzTx) String() string                     { return "fuzzTx" }
func (t *fuzzTx) final() *sip.Response               { return lastFinal(t.responses()) }
func lastFinal(rs []*sip.Response) (f *sip.Response) {
	for _, r := range rs {
		if r.StatusCode >= 200 {
			f = r
		}
	}
	return f
}

// fuzzServer is one UA with the server set, shared by every execution of
// the fuzz target (NewUA and Close cost milliseconds): a trunk allowed by
// address (fuzzTrunkSrc), one by digest, bans and rate limits high enough
// that state carried over between inputs does not change their verdicts.
type fuzzServer struct {
	u        *UA
	routes   map[sip.RequestMethod]func(*sip.Request, sip.ServerTransaction)
	other    func(*sip.Request, sip.ServerTransaction)
	parser   *sip.Parser
	log      bytes.Buffer // Error-level lines only: the recovered panic, if any
	handled  int          // INVITEs the gateway callback saw
	tx       fuzzTx
	trunkSrc net.Addr
}

const (
	fuzzTrunkSrc    = "10.1.2.3:5060"
	fuzzStrangerSrc = "203.0.113.9:5060"
)

func newFuzzServer(tb testing.TB) *fuzzServer {
	fs := &fuzzServer{parser: sip.NewParser(), tx: fuzzTx{done: make(chan struct{})}}
	log := slog.New(slog.NewTextHandler(&fs.log, &slog.HandlerOptions{Level: slog.LevelError}))
	u, err := NewUA(Config{Listen: []string{"udp:127.0.0.1:0"}, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { u.Close() })
	err = u.SetServer(ServerConfig{
		Trunks: []InboundTrunk{
			{Name: "pbx", Allow: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}},
			{Name: "remote", Username: "pbx", Password: "secret"},
		},
		RateLimit: 1e9, RateBurst: 1 << 30, Ban: BanConfig{After: 1 << 30},
	}, func(c *IncomingCall) {
		// The gateway's part, kept cheap: ring, then refuse.
		fs.handled++
		_ = c.Ring(180, "Ringing")
		_ = c.Reject(486, "Busy Here")
	})
	if err != nil {
		tb.Fatal(err)
	}
	routes, other := u.routes()
	fs.u, fs.other = u, other
	fs.routes = map[sip.RequestMethod]func(*sip.Request, sip.ServerTransaction){}
	for m, h := range routes {
		fs.routes[m] = h
	}
	fs.trunkSrc, _ = net.ResolveUDPAddr("udp", fuzzTrunkSrc)
	return fs
}

// serve does what sipgo does with one UDP datagram from src: the read
// filter (bans), the parser, the transaction layer's own 400 for a request
// it cannot key (no Via or CSeq: sipgo answers that itself), then the
// handler ponte registered for the method. It reports the request, nil if
// none reached a handler.
func (fs *fuzzServer) serve(data []byte, src string) *sip.Request {
	fs.tx.reset()
	fs.log.Reset()
	ra, _ := net.ResolveUDPAddr("udp", src)
	data, err := fs.u.sec.readFilter(sip.TransportReadProps{Transport: "UDP", RemoteAddr: ra}, data)
	if err != nil || data == nil {
		return nil
	}
	msg, err := fs.parser.ParseSIP(data)
	if err != nil {
		return nil
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Via() == nil || req.CSeq() == nil {
		return nil
	}
	req.SetTransport("UDP")
	req.SetSource(src)
	h := fs.routes[req.Method]
	if h == nil {
		h = fs.other
	}
	h(req, &fs.tx)
	return req
}

// FuzzServeRequest feeds arbitrary bytes to ponte's SIP server as one
// datagram. Invariants: no panic (the handlers' recover counts one and
// fails the input); every response has a status code 100-699 and mirrors
// the request's Call-ID, CSeq and Via (RFC 3261 §8.2.6.2); a request from
// a configured trunk always gets a final response (only ACK has none); an
// INVITE whose SDP offer ponte cannot parse never reaches the gateway and
// gets a 4xx, and when that is 488 it says why in a Warning (§20.43).
// Strangers may be answered or dropped (Unauthorized, scanners, bans).
func FuzzServeRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(byte(0), []byte(s))
		f.Add(byte(1), []byte(s))
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		src := fuzzTrunkSrc
		if who&1 == 1 {
			src = fuzzStrangerSrc
		}
		before := fs.handled
		req := fs.serve(data, src)
		if p := fs.u.panics.Swap(0); p != 0 {
			t.Fatalf("handler panicked: %s", fs.log.String())
		}
		if req == nil {
			return
		}
		rs := fs.tx.responses()
		for _, r := range rs {
			checkMirrors(t, req, r)
		}
		final := lastFinal(rs)
		if src == fuzzTrunkSrc && req.Method != sip.ACK && final == nil {
			t.Fatalf("%s from the trunk got no final response (%d provisional)", req.Method, len(rs))
		}
		if req.Method != sip.INVITE || !malformedOffer(req) {
			return
		}
		if fs.handled != before {
			t.Fatalf("INVITE with an unparsable SDP offer reached the gateway")
		}
		if final == nil {
			return // a stranger's, dropped
		}
		if final.StatusCode < 400 || final.StatusCode > 499 {
			t.Fatalf("INVITE with an unparsable SDP offer got %d", final.StatusCode)
		}
		if final.StatusCode == 488 {
			w := final.GetHeader("Warning")
			if w == nil || !strings.HasPrefix(w.Value(), "399 ") {
				t.Fatalf("488 without a Warning 399: %v", w)
			}
		}
	})
}

// malformedOffer: an out-of-dialog INVITE carrying an SDP body that ponte's
// parser refuses.
func malformedOffer(req *sip.Request) bool {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		return false
	}
	body := req.Body()
	ct := req.ContentType()
	if len(body) == 0 || ct == nil || !isSDPType(ct.Value()) {
		return false
	}
	_, err := ParseSDP(body)
	return err != nil
}

// checkMirrors: a response's status is 100-699 and its Call-ID, CSeq and
// Via are the request's (RFC 3261 §8.2.6.2).
func checkMirrors(t *testing.T, req *sip.Request, r *sip.Response) {
	t.Helper()
	if r.StatusCode < 100 || r.StatusCode > 699 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if callIDOf(r) != callIDOf(req) {
		t.Fatalf("%d: Call-ID %q, request %q", r.StatusCode, callIDOf(r), callIDOf(req))
	}
	if a, b := r.CSeq(), req.CSeq(); a == nil || a.Value() != b.Value() {
		t.Fatalf("%d: CSeq %v, request %v", r.StatusCode, a, b)
	}
	// The top Via is the request's, with received and rport filled in
	// from the source (RFC 3261 §18.2.1, RFC 3581 §4).
	a, b := r.Via(), req.Via()
	if a == nil || a.Host != b.Host || a.Port != b.Port || a.Transport != b.Transport ||
		a.Params.GetOr("branch", "") != b.Params.GetOr("branch", "") {
		t.Fatalf("%d: Via %v, request %v", r.StatusCode, a, b)
	}
}

func sipMsg(lines ...string) string { return strings.Join(lines, "\r\n") }

// sdpOffer is a PBX's offer (Asterisk-style, PCMU/PCMA and RFC 4733).
var sdpOffer = sipMsg("v=0", "o=- 1 1 IN IP4 10.1.2.3", "s=-", "c=IN IP4 10.1.2.3", "t=0 0",
	"m=audio 20000 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
	"a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv", "")

func withBody(head []string, ctype, body string) string {
	head = append(head, "Content-Type: "+ctype, "Content-Length: "+itoa(len(body)), "", body)
	return sipMsg(head...)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func reqHead(method, ruri, callID, cseq string, extra ...string) []string {
	h := []string{
		method + " " + ruri + " SIP/2.0",
		"Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-" + callID + ";rport",
		"Max-Forwards: 70",
		"From: <sip:1001@10.1.2.3>;tag=f-" + callID,
		"To: <sip:+5511987654321@127.0.0.1>",
		"Call-ID: " + callID,
		"CSeq: " + cseq + " " + method,
		"Contact: <sip:1001@10.1.2.3:5060>",
		"User-Agent: Asterisk PBX 20.5.0",
	}
	return append(h, extra...)
}

var fuzzSeeds = []string{
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv1", "1"), "application/sdp", sdpOffer),
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv2", "1", "Session-Expires: 1800;refresher=uac", "Supported: timer, 100rel"), "application/sdp", sdpOffer),
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv3", "1"), "application/sdp", "v=0\r\nm=video 1 RTP/AVP 96\r\n"),
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv4", "1"), "application/sdp", "garbage"),
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv5", "1"), "text/plain", "hello"),
	withBody(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv6", "1", "Require: foo"), "application/sdp", sdpOffer),
	sipMsg(append(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv7", "1", "Expires: 1"), "Content-Length: 0", "", "")...),
	sipMsg(append(reqHead("INVITE", "sip:+5511987654321@127.0.0.1", "inv8", "2", `Authorization: Digest username="pbx", realm="127.0.0.1", nonce="abc", uri="sip:+5511987654321@127.0.0.1", response="0123456789abcdef0123456789abcdef"`), "Content-Length: 0", "", "")...),
	// sipvicious svwar/svcrack style probe
	sipMsg("INVITE sip:100@127.0.0.1 SIP/2.0", "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-1;rport", "Max-Forwards: 70",
		"To: \"100\"<sip:100@127.0.0.1>", "From: \"100\"<sip:100@127.0.0.1>;tag=3861626663", "User-Agent: friendly-scanner",
		"Call-ID: 1234567890", "Contact: sip:100@203.0.113.9:5060", "CSeq: 1 INVITE", "Accept: application/sdp", "Content-Length: 0", "", ""),
	sipMsg("OPTIONS sip:100@127.0.0.1 SIP/2.0", "Via: SIP/2.0/UDP 203.0.113.9:5061;branch=z9hG4bK-2;rport", "Max-Forwards: 70",
		"To: \"sipvicious\"<sip:100@1.1.1.1>", "From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6631", "User-Agent: sipvicious",
		"Call-ID: 987654321", "Contact: sip:100@1.1.1.1:5060", "CSeq: 1 OPTIONS", "Accept: application/sdp", "Content-Length: 0", "", ""),
	sipMsg(append(reqHead("OPTIONS", "sip:127.0.0.1", "opt1", "1"), "Accept: application/sdp", "Content-Length: 0", "", "")...),
	sipMsg(append(reqHead("REGISTER", "sip:127.0.0.1", "reg1", "1", "Expires: 3600"), "Content-Length: 0", "", "")...),
	sipMsg(append(reqHead("BYE", "sip:ponte@127.0.0.1", "bye1", "2", "Reason: Q.850;cause=16"), "Content-Length: 0", "", "")...),
	sipMsg(append(reqHead("CANCEL", "sip:+5511987654321@127.0.0.1", "inv1", "1"), "Content-Length: 0", "", "")...),
	sipMsg(append(reqHead("ACK", "sip:+5511987654321@127.0.0.1", "inv1", "1"), "Content-Length: 0", "", "")...),
	withBody(reqHead("INFO", "sip:ponte@127.0.0.1", "info1", "3"), "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
	sipMsg(append(reqHead("REFER", "sip:ponte@127.0.0.1", "ref1", "3", "Refer-To: <sip:2001@10.1.2.3>", "Referred-By: <sip:1001@10.1.2.3>"), "Content-Length: 0", "", "")...),
	withBody(reqHead("UPDATE", "sip:ponte@127.0.0.1", "upd1", "3", "Session-Expires: 90"), "application/sdp", sdpOffer),
	sipMsg(append(reqHead("MESSAGE", "sip:ponte@127.0.0.1", "msg1", "1"), "Content-Length: 0", "", "")...),
	"\r\n\r\n",
}

// A sample of the invariants on the seeds, as a plain test (the fuzz
// target checks the same on every input): what each well-known message
// gets from a trunk.
func TestServeRequestSeeds(t *testing.T) {
	fs := newFuzzServer(t)
	cases := []struct {
		seed int
		src  string
		want int // final status; 0: none
	}{
		{0, fuzzTrunkSrc, 486},    // the fake gateway rejects after 180
		{2, fuzzTrunkSrc, 488},    // SDP without audio
		{3, fuzzTrunkSrc, 488},    // garbage SDP
		{4, fuzzTrunkSrc, 415},    // not SDP
		{5, fuzzTrunkSrc, 420},    // Require: foo
		{8, fuzzStrangerSrc, 0},   // scanner: dropped
		{9, fuzzStrangerSrc, 0},   // scanner OPTIONS: dropped
		{9, fuzzTrunkSrc, 200},    // a trunk is never judged a scanner
		{10, fuzzTrunkSrc, 200},   // OPTIONS
		{11, fuzzTrunkSrc, 405},   // REGISTER
		{12, fuzzTrunkSrc, 481},   // BYE for no dialog
		{13, fuzzTrunkSrc, 481},   // CANCEL for no transaction
		{14, fuzzTrunkSrc, 0},     // ACK: never answered
		{15, fuzzTrunkSrc, 481},   // INFO
		{16, fuzzTrunkSrc, 481},   // REFER
		{18, fuzzTrunkSrc, 405},   // MESSAGE
		{7, fuzzStrangerSrc, 403}, // digest trunk: a nonce ponte never issued is a failure
		{0, fuzzStrangerSrc, 401}, // digest trunk: no credentials, a challenge
	}
	for _, tc := range cases {
		req := fs.serve([]byte(fuzzSeeds[tc.seed]), tc.src)
		if req == nil { // dropped before parsing (a scanner's datagram) or unparsable
			if tc.want != 0 {
				t.Errorf("seed %d never reached a handler, want %d", tc.seed, tc.want)
			}
			continue
		}
		got := 0
		if f := fs.tx.final(); f != nil {
			got = f.StatusCode
			for _, r := range fs.tx.responses() {
				checkMirrors(t, req, r)
			}
			if got == 488 {
				if w := f.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "SDP") {
					t.Errorf("seed %d: 488 with Warning %v", tc.seed, w)
				}
			}
		}
		if got != tc.want {
			t.Errorf("seed %d (%s from %s): final %d, want %d", tc.seed, req.Method, tc.src, got, tc.want)
		}
	}
	if p := fs.u.panics.Load(); p != 0 {
		t.Errorf("%d handler panics: %s", p, fs.log.String())
	}
}

// A panic in a handler is recovered: the request gets 500, the panic is
// counted, and the UA goes on serving.
func TestGuardRecoversPanic(t *testing.T) {
	fs := newFuzzServer(t)
	boom := fs.u.guard(func(*sip.Request, sip.ServerTransaction) { panic("boom") })
	msg, err := sip.ParseMessage([]byte(fuzzSeeds[10]))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.SetSource(fuzzTrunkSrc)
	fs.tx.reset()
	boom(req, &fs.tx)
	if f := fs.tx.final(); f == nil || f.StatusCode != 500 {
		t.Fatalf("final %v, want 500", f)
	}
	checkMirrors(t, req, fs.tx.final())
	if st := fs.u.ServerStats(); st.Panics != 1 {
		t.Fatalf("Panics = %d, want 1", st.Panics)
	}
	if !strings.Contains(fs.log.String(), "boom") {
		t.Errorf("log %q does not name the panic", fs.log.String())
	}
	if fs.serve([]byte(fuzzSeeds[10]), fuzzTrunkSrc) == nil || fs.tx.final() == nil || fs.tx.final().StatusCode != 200 {
		t.Fatalf("OPTIONS after the panic: %v", fs.tx.final())
	}
}
