package sip

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Scanner traffic (H-SIPSEC, issue 8). A gateway on the public internet is
// probed all day by SIPVicious-style tools: OPTIONS sweeps, REGISTER and
// INVITE brute force. Those requests are answered cheaply or not at all,
// count toward the source's ban, and never reach the gateway; configured
// trunks and peers are never judged by them.

// scannerAgents are User-Agent substrings of well-known SIP scanners
// (SIPVicious "friendly-scanner" and its forks, sipcli, VaxSIP, the
// "sundayddr" and "pplsip" worms), compared case-insensitively.
var scannerAgents = []string{"friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "sundayddr", "pplsip"}

// recentTTL is how long a source that proved a trunk's digest credentials
// stays known: its OPTIONS (PBX qualify) are answered like a listed
// trunk's even under Unauthorized=drop.
const recentTTL = time.Hour

// scannerAgent reports whether a User-Agent value names a scanner.
func scannerAgent[T string | []byte](v T) bool {
	for _, a := range scannerAgents {
		if containsFold(v, a) {
			return true
		}
	}
	return false
}

// containsFold: sub (lower-case ASCII) occurs in s, ASCII case folded.
func containsFold[T string | []byte](s T, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// rawScanner reads the User-Agent header of a raw request (one UDP
// datagram) without parsing the message: it looks only at header lines
// (up to the first empty line) and reports whether one names a scanner.
// Lines end with CRLF (RFC 3261 §7), as sipgo's parser requires: a bare LF
// does not end a line here either, so this check never sees a header the
// parser would not. Responses are never scanners. What this misses
// (a stream, an odd layout) the handlers catch after parsing.
func rawScanner(data []byte) bool {
	if len(data) >= 4 && string(data[:4]) == "SIP/" {
		return false
	}
	first := true
	for len(data) > 0 {
		var line []byte
		if end := bytes.Index(data, crlf); end >= 0 {
			line, data = data[:end], data[end+2:]
		} else {
			line, data = data, nil
		}
		if first {
			first = false
			continue
		}
		if len(line) == 0 {
			return false // end of the header section
		}
		const name = "user-agent"
		if len(line) <= len(name) || !containsFold(line[:len(name)], name) {
			continue
		}
		rest := line[len(name):]
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			rest = rest[1:]
		}
		if len(rest) > 0 && rest[0] == ':' && scannerAgent(rest[1:]) {
			return true
		}
	}
	return false
}

var crlf = []byte("\r\n")

// scannerRequest: the parsed request's User-Agent names a scanner.
func scannerRequest(req *sip.Request) bool {
	for _, h := range req.GetHeaders("User-Agent") {
		if scannerAgent(h.Value()) {
			return true
		}
	}
	return false
}

// recentSet remembers sources for a while (bounded, lazily expired).
type recentSet struct {
	mu  sync.Mutex
	max int
	m   map[netip.Addr]time.Time
}

func (r *recentSet) add(ip netip.Addr, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[netip.Addr]time.Time{}
	}
	if _, ok := r.m[ip]; !ok && len(r.m) >= r.max {
		delete(r.m, earliestOfSample(r.m))
	}
	r.m[ip] = now
}

func (r *recentSet) has(ip netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.m[ip]
	if ok && now.Sub(t) > recentTTL {
		delete(r.m, ip)
		return false
	}
	return ok
}

// strangerVerdict is what the gate decided for an out-of-dialog request
// other than INVITE.
type strangerVerdict int

const (
	verdictServe  strangerVerdict = iota // answer as usual
	verdictSilent                        // drop: no response
)

// gateStranger judges an OPTIONS, REGISTER or unknown-method request once
// SetServer has installed the server: trunks, peers and sources that
// recently proved a trunk's credentials are served; a scanner is dropped;
// anyone else counts toward the ban and the failure rate limit, and is
// served under Unauthorized=reject while it has failures left, dropped
// otherwise.
func (u *UA) gateStranger(req *sip.Request, what string) strangerVerdict {
	in := u.inboundServer()
	pol := u.sec.pol.Load()
	if in == nil || pol == nil {
		return verdictServe
	}
	src, ok := transportSource(req)
	if !ok {
		return verdictSilent
	}
	ip := src.Addr()
	s := in.snapshot()
	if allowed(pol.known, ip) || in.recent.has(ip, s.now) {
		return verdictServe
	}
	if to := req.To(); to != nil && to.Params.Has("tag") && u.findDialog(req) != nil {
		// In-dialog (an unsupported method inside a call): the peer of
		// a live dialog is no stranger.
		return verdictServe
	}
	if scannerRequest(req) {
		u.sec.scanners.Add(1)
		pol.ban.fail(ip, s.now, "scanner")
		return verdictSilent
	}
	u.sec.strangers.Add(1)
	pol.ban.fail(ip, s.now, what)
	if s.drop {
		return verdictSilent
	}
	if !s.limit.take(ip, s.now) {
		in.rateLimited.Add(1)
		return verdictSilent
	}
	return verdictServe
}

// serveOptions answers OPTIONS (RFC 3261 §11.2) through the gate: trunk
// keepalives and PBX qualify always get their 200.
func (u *UA) serveOptions(req *sip.Request, tx sip.ServerTransaction) {
	if u.gateStranger(req, "OPTIONS") == verdictSilent {
		return
	}
	u.handleOptions(req, tx)
}

// serveNotAllowed answers REGISTER (ponte is no registrar) and methods
// ponte does not implement: 405 with the Allow header RFC 3261 §8.2.1
// requires, through the gate (sipgo's default 405 has no Allow and logs a
// warning per request, which a flood would turn into a log flood).
func (u *UA) serveNotAllowed(req *sip.Request, tx sip.ServerTransaction) {
	if u.gateStranger(req, string(req.Method)) == verdictSilent {
		return
	}
	respond(tx, req, 405, "Method Not Allowed", nil, sip.NewHeader("Allow", allowMethods))
}
