package sip_test

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sip"
)

// pbxLeg is a raw UDP PBX that places calls to ponte, for exact checks of
// ponte's SIP server and UAS dialogs.
type pbxLeg struct {
	t       *testing.T
	w       *wire
	to      *net.UDPAddr
	callID  string
	fromTag string
	branch  string
	cseq    int
	user    string
}

func newPBXLeg(t *testing.T, u *sip.UA) *pbxLeg {
	p := &pbxLeg{t: t, to: udpAddr(u), user: "+5511999990000"}
	p.w = newWire(t, p.to)
	p.fresh()
	return p
}

// fresh starts a new call (Call-ID, From tag, CSeq).
func (p *pbxLeg) fresh() {
	n := time.Now().UnixNano()
	p.callID, p.fromTag, p.cseq = fmt.Sprintf("uas-%d@pbx", n), fmt.Sprintf("pbx%d", n%1e6), 1
}

func (p *pbxLeg) ruri() string { return fmt.Sprintf("sip:%s@127.0.0.1:%d", p.user, p.to.Port) }

func (p *pbxLeg) from() string {
	if p.fromTag == "" {
		return `"Agent 1001" <sip:1001@127.0.0.1>`
	}
	return fmt.Sprintf(`"Agent 1001" <sip:1001@127.0.0.1>;tag=%s`, p.fromTag)
}

// invite sends an INVITE (new branch unless keep) with extra header lines
// and an SDP body ("" for none).
func (p *pbxLeg) invite(body, extra string, keep bool) {
	p.t.Helper()
	if !keep {
		p.branch = fmt.Sprintf("z9hG4bK-inv-%d", time.Now().UnixNano())
	}
	ct := ""
	if body != "" && !strings.Contains(extra, "Content-Type") {
		ct = "Content-Type: application/sdp\n"
	}
	p.w.send(fmt.Sprintf("INVITE %s SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\nMax-Forwards: 70\nFrom: %s\nTo: <sip:%s@127.0.0.1>\nCall-ID: %s\nCSeq: %d INVITE\nContact: <sip:1001@127.0.0.1:%d>\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\n%s%sContent-Length: %d\n\n%s",
		p.ruri(), p.w.port(), p.branch, p.from(), p.user, p.callID, p.cseq, p.w.port(), extra, ct, wireLen(body), body), nil)
}

// ack ACKs ponte's final response to the INVITE (2xx: new branch).
func (p *pbxLeg) ack(toTag, body string, success bool) {
	p.t.Helper()
	br := p.branch
	if success {
		br = fmt.Sprintf("z9hG4bK-ack-%d", time.Now().UnixNano())
	}
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\n"
	}
	p.w.send(fmt.Sprintf("ACK %s SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\nMax-Forwards: 70\nFrom: %s\nTo: <sip:%s@127.0.0.1>;tag=%s\nCall-ID: %s\nCSeq: %d ACK\n%sContent-Length: %d\n\n%s",
		p.ruri(), p.w.port(), br, p.from(), p.user, toTag, p.callID, p.cseq, ct, wireLen(body), body), nil)
}

// cancel CANCELs the pending INVITE (same branch and CSeq number, §9.1).
func (p *pbxLeg) cancel(extra string) {
	p.t.Helper()
	p.w.send(fmt.Sprintf("CANCEL %s SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\nMax-Forwards: 70\nFrom: %s\nTo: <sip:%s@127.0.0.1>\nCall-ID: %s\nCSeq: %d CANCEL\n%sContent-Length: 0\n\n",
		p.ruri(), p.w.port(), p.branch, p.from(), p.user, p.callID, p.cseq, extra), nil)
}

// request sends an in-dialog request (next CSeq) and returns its CSeq.
func (p *pbxLeg) request(method, toTag, ct, body, extra string) int {
	p.t.Helper()
	p.cseq++
	if body != "" {
		extra += "Content-Type: " + ct + "\n"
	}
	p.w.send(fmt.Sprintf("%s sip:ponte@127.0.0.1:%d SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s-%d;rport\nMax-Forwards: 70\nFrom: %s\nTo: <sip:%s@127.0.0.1>;tag=%s\nCall-ID: %s\nCSeq: %d %s\nContact: <sip:1001@127.0.0.1:%d>\n%sContent-Length: %d\n\n%s",
		method, p.to.Port, p.w.port(), method, time.Now().UnixNano(), p.from(), p.user, toTag, p.callID, p.cseq, method, p.w.port(), extra, wireLen(body), body), nil)
	return p.cseq
}

// final waits for ponte's final response to the request with CSeq seq and method.
func (p *pbxLeg) final(seq int, method string) *sipgo.Response {
	p.t.Helper()
	m, _ := p.w.recv(5*time.Second, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode >= 200 && int(r.CSeq().SeqNo) == seq && string(r.CSeq().MethodName) == method
	})
	return m.(*sipgo.Response)
}

// status waits for the next response to the INVITE with code.
func (p *pbxLeg) status(code int) *sipgo.Response {
	p.t.Helper()
	m, _ := p.w.recv(5*time.Second, func(m sipgo.Message) bool {
		r, ok := m.(*sipgo.Response)
		return ok && r.StatusCode == code && r.CSeq().MethodName == sipgo.INVITE
	})
	return m.(*sipgo.Response)
}

// quiet asserts that no response to the INVITE arrives within d.
func (p *pbxLeg) quiet(d time.Duration) {
	p.t.Helper()
	if m, _ := p.w.recvQuiet(d, isRes); m != nil {
		p.t.Fatalf("unexpected response %s", m.(*sipgo.Response).StartLine())
	}
}

func toTag(m interface{ To() *sipgo.ToHeader }) string {
	tag, _ := m.To().Params.Get("tag")
	return tag
}

// serverUA starts a UA with the SIP server and a handler that queues calls.
func serverUA(t *testing.T, cfg sip.ServerConfig, mod ...func(*sip.Config)) (*sip.UA, chan *sip.IncomingCall) {
	t.Helper()
	u := newUA(t, mod...)
	calls := make(chan *sip.IncomingCall, 16)
	if err := u.SetServer(cfg, func(c *sip.IncomingCall) { calls <- c }); err != nil {
		t.Fatal(err)
	}
	return u, calls
}

func nextIncoming(t *testing.T, calls chan *sip.IncomingCall) *sip.IncomingCall {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no IncomingCall")
		return nil
	}
}

func noIncoming(t *testing.T, calls chan *sip.IncomingCall) {
	t.Helper()
	select {
	case c := <-calls:
		t.Fatalf("unexpected IncomingCall %s", c.CallID())
	case <-time.After(100 * time.Millisecond):
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

var challengeParam = regexp.MustCompile(`(\w+)=("([^"]*)"|[^,\s]+)`)

// challenge reads a WWW-Authenticate value into its parameters.
func challenge(v string) map[string]string {
	out := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(strings.TrimPrefix(v, "Digest "), -1) {
		if m[3] != "" || strings.HasPrefix(m[2], `"`) {
			out[m[1]] = m[3]
		} else {
			out[m[1]] = m[2]
		}
	}
	return out
}

// uasDigest answers a challenge the way a PBX would (RFC 7616 §3.4,
// qop=auth), written independently of ponte's code.
func uasDigest(ch map[string]string, user, pass, method, uri string) string {
	var h func() hash.Hash = md5.New
	if ch["algorithm"] == "SHA-256" {
		h = sha256.New
	}
	hx := func(s string) string { x := h(); x.Write([]byte(s)); return hex.EncodeToString(x.Sum(nil)) }
	ha1 := hx(user + ":" + ch["realm"] + ":" + pass)
	ha2 := hx(method + ":" + uri)
	resp := hx(ha1 + ":" + ch["nonce"] + ":00000001:0a4f113b:auth:" + ha2)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, cnonce="0a4f113b", opaque="%s", qop=auth, nc=00000001`,
		user, ch["realm"], ch["nonce"], uri, resp, ch["algorithm"], ch["opaque"])
}

// challenges returns the 401's WWW-Authenticate headers, parsed, in order.
func challenges(t *testing.T, res *sipgo.Response) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		out = append(out, challenge(h.Value()))
	}
	if len(out) == 0 {
		t.Fatalf("401 without WWW-Authenticate: %s", res.String())
	}
	return out
}

// TestServerDigest: the 401 offers SHA-256 then MD5 (RFC 8760 §2.4) with
// qop="auth"; either answer is accepted; a wrong password gets 403 and is
// counted; no credentials get 401.
func TestServerDigest(t *testing.T) {
	tests := []struct {
		name     string
		alg      string // challenge to answer: "" sends no credentials
		pass     string
		wantCode int // 0: accepted
	}{
		{"SHA-256", "SHA-256", "s3cret", 0},
		{"MD5", "MD5", "s3cret", 0},
		{"wrong password", "SHA-256", "guess", 403},
		{"no credentials", "", "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := serverUA(t, sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "pbx", Username: "pbx1", Password: "s3cret", Realm: "ponte.test"}}})
			p := newPBXLeg(t, u)
			p.invite("", "", false)
			res := p.final(1, "INVITE")
			if res.StatusCode != 401 {
				t.Fatalf("first INVITE: %d, want 401", res.StatusCode)
			}
			p.ack(toTag(res), "", false)
			chs := challenges(t, res)
			if len(chs) != 2 || chs[0]["algorithm"] != "SHA-256" || chs[1]["algorithm"] != "MD5" {
				t.Fatalf("challenges %v, want SHA-256 then MD5", chs)
			}
			for _, ch := range chs {
				if ch["qop"] != "auth" || ch["realm"] != "ponte.test" || ch["nonce"] == "" || ch["opaque"] == "" || ch["stale"] != "" {
					t.Fatalf("challenge %v", ch)
				}
			}
			if tc.alg == "" {
				if st := u.ServerStats(); st.Challenged != 1 || st.Accepted != 0 {
					t.Fatalf("stats %+v", st)
				}
				noIncoming(t, calls)
				return
			}
			ch := chs[0]
			if tc.alg == "MD5" {
				ch = chs[1]
			}
			p.cseq++
			p.invite("", "Authorization: "+uasDigest(ch, "pbx1", tc.pass, "INVITE", p.ruri())+"\n", false)
			if tc.wantCode != 0 {
				if res := p.final(2, "INVITE"); res.StatusCode != tc.wantCode || res.Reason != "Forbidden" {
					t.Fatalf("got %d %s, want %d Forbidden", res.StatusCode, res.Reason, tc.wantCode)
				}
				if st := u.ServerStats(); st.AuthFailed != 1 || st.Accepted != 0 || st.Challenged != 1 {
					t.Fatalf("stats %+v", st)
				}
				noIncoming(t, calls)
				return
			}
			c := nextIncoming(t, calls)
			if c.Trunk() != "pbx" || c.Source().Port() != uint16(p.w.port()) || c.Source().Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("trunk %q source %v", c.Trunk(), c.Source())
			}
			if h := c.Request().GetHeader("Authorization"); h == nil || !strings.Contains(h.Value(), "algorithm="+tc.alg) {
				t.Fatalf("Authorization %v", h)
			}
			if err := c.Reject(486, "Busy Here"); err != nil {
				t.Fatal(err)
			}
			if res := p.final(2, "INVITE"); res.StatusCode != 486 {
				t.Fatalf("got %d, want 486", res.StatusCode)
			}
			if st := u.ServerStats(); st.Accepted != 1 || st.Challenged != 1 || st.AuthFailed != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestServerStaleNonce: an expired nonce with the right password gets a new
// 401 with stale=true (RFC 7616 §3.3), and the new nonce works.
func TestServerStaleNonce(t *testing.T) {
	u, calls := serverUA(t, sip.ServerConfig{NonceTTL: 200 * time.Millisecond,
		Trunks: []sip.InboundTrunk{{Name: "pbx", Username: "pbx1", Password: "s3cret"}}})
	p := newPBXLeg(t, u)
	p.invite("", "", false)
	res := p.final(1, "INVITE")
	p.ack(toTag(res), "", false)
	old := challenges(t, res)[0]
	if old["realm"] != "127.0.0.1" {
		t.Fatalf("default realm %q, want the advertised host", old["realm"])
	}
	time.Sleep(300 * time.Millisecond)
	p.cseq++
	p.invite("", "Authorization: "+uasDigest(old, "pbx1", "s3cret", "INVITE", p.ruri())+"\n", false)
	res = p.final(2, "INVITE")
	p.ack(toTag(res), "", false)
	if res.StatusCode != 401 {
		t.Fatalf("stale nonce: %d, want 401", res.StatusCode)
	}
	fresh := challenges(t, res)[0]
	if fresh["stale"] != "true" || fresh["nonce"] == old["nonce"] {
		t.Fatalf("challenge %v, want stale=true and a new nonce", fresh)
	}
	p.cseq++
	p.invite("", "Authorization: "+uasDigest(fresh, "pbx1", "s3cret", "INVITE", p.ruri())+"\n", false)
	c := nextIncoming(t, calls)
	c.Reject(603, "Decline")
	if res := p.final(3, "INVITE"); res.StatusCode != 603 {
		t.Fatalf("got %d, want 603", res.StatusCode)
	}
	if st := u.ServerStats(); st.Challenged != 2 || st.Accepted != 1 || st.AuthFailed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerTrunkMatch: address-only trunks, digest-only trunks and trunks
// needing both, judged by the transport source (127.0.0.1 here).
func TestServerTrunkMatch(t *testing.T) {
	tenNet := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name      string
		trunks    []sip.InboundTrunk
		auth      bool // answer a 401 with pbx1/pw
		wantCode  int  // first final response; 0: accepted without a challenge
		wantTrunk string
	}{
		{"address allowed", []sip.InboundTrunk{{Name: "lan", Allow: loopback}}, false, 0, "lan"},
		{"address not allowed", []sip.InboundTrunk{{Name: "lan", Allow: tenNet}}, false, 403, ""},
		{"address allowed and digest required", []sip.InboundTrunk{{Name: "both", Allow: loopback, Username: "pbx1", Password: "pw"}}, true, 401, "both"},
		{"digest trunk but address not allowed", []sip.InboundTrunk{{Name: "both", Allow: tenNet, Username: "pbx1", Password: "pw"}}, false, 403, ""},
		{"second trunk matches", []sip.InboundTrunk{{Name: "other", Allow: tenNet}, {Name: "any", Username: "pbx1", Password: "pw"}}, true, 401, "any"},
		{"address trunk wins over digest", []sip.InboundTrunk{{Name: "any", Username: "pbx1", Password: "pw"}, {Name: "lan", Allow: loopback}}, false, 0, "lan"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := serverUA(t, sip.ServerConfig{Trunks: tc.trunks})
			p := newPBXLeg(t, u)
			p.invite("", "", false)
			if tc.wantCode == 0 {
				c := nextIncoming(t, calls)
				if c.Trunk() != tc.wantTrunk {
					t.Fatalf("trunk %q, want %q", c.Trunk(), tc.wantTrunk)
				}
				c.Reject(480, "Temporarily Unavailable")
				p.final(1, "INVITE")
				return
			}
			res := p.final(1, "INVITE")
			p.ack(toTag(res), "", false)
			if res.StatusCode != tc.wantCode {
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, tc.wantCode)
			}
			if res.StatusCode == 403 {
				if st := u.ServerStats(); st.Forbidden != 1 || res.Reason != "Forbidden" || res.GetHeader("WWW-Authenticate") != nil {
					t.Fatalf("403 %q, stats %+v", res.Reason, st)
				}
				noIncoming(t, calls)
				return
			}
			p.cseq++
			p.invite("", "Authorization: "+uasDigest(challenges(t, res)[0], "pbx1", "pw", "INVITE", p.ruri())+"\n", false)
			c := nextIncoming(t, calls)
			if c.Trunk() != tc.wantTrunk {
				t.Fatalf("trunk %q, want %q", c.Trunk(), tc.wantTrunk)
			}
			c.Reject(480, "Temporarily Unavailable")
			p.final(2, "INVITE")
		})
	}
}

// TestServerDrop: with Unauthorized=drop an unknown source gets no response
// at all, not even 100 Trying.
func TestServerDrop(t *testing.T) {
	u, calls := serverUA(t, sip.ServerConfig{Unauthorized: sip.UnauthorizedDrop,
		Trunks: []sip.InboundTrunk{{Name: "lan", Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}})
	p := newPBXLeg(t, u)
	p.invite("", "", false)
	p.quiet(700 * time.Millisecond)
	noIncoming(t, calls)
	if st := u.ServerStats(); st.Forbidden != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerRateLimit: failures beyond the burst are dropped silently and
// counted; digest attempts from that source are not even checked.
func TestServerRateLimit(t *testing.T) {
	u, calls := serverUA(t, sip.ServerConfig{RateLimit: 0.01, RateBurst: 3,
		Trunks: []sip.InboundTrunk{{Name: "d", Username: "pbx1", Password: "pw"}}})
	p := newPBXLeg(t, u)
	// Wrong password three times: 403 each.
	p.invite("", "", false)
	res := p.final(1, "INVITE")
	p.ack(toTag(res), "", false)
	ch := challenges(t, res)[0]
	for i := 0; i < 3; i++ {
		p.cseq++
		p.invite("", "Authorization: "+uasDigest(ch, "pbx1", fmt.Sprint("guess", i), "INVITE", p.ruri())+"\n", false)
		r := p.final(p.cseq, "INVITE")
		if r.StatusCode != 403 {
			t.Fatalf("attempt %d: %d, want 403", i, r.StatusCode)
		}
		p.ack(toTag(r), "", false) // else the 403 is retransmitted (RFC 3261 §17.2.1)
	}
	// The bucket is empty: even the right password is ignored now.
	for i := 0; i < 2; i++ {
		p.cseq++
		p.invite("", "Authorization: "+uasDigest(ch, "pbx1", "pw", "INVITE", p.ruri())+"\n", false)
		p.quiet(300 * time.Millisecond)
	}
	noIncoming(t, calls)
	if st := u.ServerStats(); st.AuthFailed != 3 || st.RateLimited != 2 || st.Challenged != 1 || st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerRequestChecks: what ponte cannot answer is refused before the
// gateway sees it.
func TestServerRequestChecks(t *testing.T) {
	tests := []struct {
		name, body, extra string
		code              int
		header, value     string // a header the response must carry (prefix of its value)
		noFromTag         bool
	}{
		{"no From tag", "", "", 400, "", "", true},
		{"unsupported Require", "", "Require: 100rel, foo\n", 420, "Unsupported", "100rel, foo", false},
		{"Require timer is fine, short interval is not", "", "Require: timer\nSupported: timer\nSession-Expires: 30\n", 422, "Min-SE", "90", false},
		{"not SDP", "hello", "Content-Type: text/plain\n", 415, "Accept", "application/sdp", false},
		{"unparsable SDP", "v=0\nm=video 9 RTP/AVP 96\n", "", 488, "Warning", "399 127.0.0.1 ", false},
		{"bad Session-Expires", "", "Session-Expires: soon\n", 400, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, calls := serverUA(t, sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}})
			p := newPBXLeg(t, u)
			if tc.noFromTag {
				p.fromTag = ""
			}
			p.invite(tc.body, tc.extra, false)
			res := p.final(1, "INVITE")
			p.ack(toTag(res), "", false)
			if res.StatusCode != tc.code {
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, tc.code)
			}
			if tc.header != "" {
				if h := res.GetHeader(tc.header); h == nil || !strings.HasPrefix(h.Value(), tc.value) {
					t.Fatalf("%s: %v, want prefix %q", tc.header, h, tc.value)
				}
			}
			noIncoming(t, calls)
			if st := u.ServerStats(); st.Accepted != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestServerRetransmission: a retransmitted INVITE makes no second
// IncomingCall (the provisional is repeated); the same Call-ID, From tag
// and CSeq on another branch is a merged request: 482 (RFC 3261 §8.2.2.2).
func TestServerRetransmission(t *testing.T) {
	u, calls := serverUA(t, sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "lan", Allow: loopback}}})
	p := newPBXLeg(t, u)
	p.invite("", "", false)
	c := nextIncoming(t, calls)
	if err := c.Ring(180, "Ringing"); err != nil {
		t.Fatal(err)
	}
	r180 := p.status(180)
	p.invite("", "", true) // retransmission: same branch
	if again := p.status(180); toTag(again) != toTag(r180) {
		t.Fatalf("retransmitted 180 tag %q, first %q", toTag(again), toTag(r180))
	}
	noIncoming(t, calls)
	p.invite("", "", false) // merged: new branch, same Call-ID/From tag/CSeq
	if res := p.final(1, "INVITE"); res.StatusCode != 482 {
		t.Fatalf("merged request: %d, want 482", res.StatusCode)
	}
	noIncoming(t, calls)
	if err := c.Reject(404, "Not Found"); err != nil {
		t.Fatal(err)
	}
	if st := u.ServerStats(); st.Accepted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSetServerErrors(t *testing.T) {
	u := newUA(t)
	h := func(*sip.IncomingCall) {}
	tests := []struct {
		name string
		cfg  sip.ServerConfig
		h    sip.IncomingHandler
	}{
		{"nil handler", sip.ServerConfig{}, nil},
		{"no name", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Allow: loopback}}}, h},
		{"neither address nor digest", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "x"}}}, h},
		{"username without password", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "x", Username: "u"}}}, h},
		{"bad prefix", sip.ServerConfig{Trunks: []sip.InboundTrunk{{Name: "x", Allow: []netip.Prefix{{}}}}}, h},
		{"bad policy", sip.ServerConfig{Unauthorized: "tarpit"}, h},
		{"negative rate", sip.ServerConfig{RateLimit: -1}, h},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := u.SetServer(tc.cfg, tc.h); !errors.Is(err, sip.ErrConfig) {
				t.Fatalf("err %v, want ErrConfig", err)
			}
		})
	}
	if st := u.ServerStats(); st != (sip.ServerStats{}) {
		t.Fatalf("stats without a server %+v", st)
	}
}
