package sip

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// The registration's wire details: keep-alives, the address the registrar
// sees, and what its responses say (register.go).

// keepAlive sends the CRLF ping toward the registrar; false when the
// connection it must go on is gone or broken (TCP/TLS), so the caller
// registers again at once. On UDP a send error is only logged: the next
// REGISTER will tell.
func (r *Registrar) keepAlive() bool {
	r.mu.Lock()
	// While failures are being retried the backoff decides, not the flow.
	remote, bound := r.remote, r.st.Registered && r.fails == 0
	r.mu.Unlock()
	if remote == "" || !bound {
		return true
	}
	if r.tr == "udp" {
		ap, err := netip.ParseAddrPort(remote)
		if err != nil {
			return true
		}
		var c *net.UDPConn
		r.ua.mu.Lock()
		for _, l := range r.ua.listeners {
			if l.transport == "udp" && l.addr == r.lap {
				c, _ = l.closer.(*net.UDPConn)
			}
		}
		r.ua.mu.Unlock()
		if c == nil {
			return true
		}
		if _, err := c.WriteToUDPAddrPort(crlfPing, ap); err != nil {
			r.log.Debug("sip: keep-alive failed", "err", err)
		}
		return true
	}
	pool := r.ua.ua.TransportLayer().Pool(r.tr)
	if pool == nil {
		return true
	}
	c := pool.Get(remote) // takes a reference
	if c == nil {
		return false
	}
	defer c.TryClose()
	w, ok := c.(io.Writer)
	if !ok {
		return true
	}
	if _, err := w.Write(crlfPing); err != nil {
		r.log.Info("sip: keep-alive failed", "err", err)
		return false
	}
	return true
}

// learnLocked compares the Contact with the address the registrar saw (RFC
// 3581 §4) and, when LearnContact allows, adopts that address; true if the
// Contact changed.
func (r *Registrar) learnLocked(res *sip.Response) bool {
	pub, ok := viaPublic(res)
	if !ok {
		return false
	}
	r.st.PublicAddr = pub.String()
	port := r.contact.Port
	if port == 0 {
		port = sip.DefaultPort(r.tr)
	}
	cur, err := netip.ParseAddr(strings.Trim(r.contact.Host, "[]"))
	// Over TCP/TLS the port seen is the connection's ephemeral one, never
	// the listener's: only the host tells of a NAT.
	samePort := port == int(pub.Port()) || r.tr != "udp"
	if err == nil && cur.Unmap() == pub.Addr() && samePort {
		return false
	}
	if !r.learn {
		if r.st.PublicAddr != r.seenLogged {
			r.seenLogged = r.st.PublicAddr
			r.log.Warn("sip: the registrar sees ponte at another address than its Contact (NAT?)",
				"contact", r.contact.String(), "seen", r.st.PublicAddr)
		}
		return false
	}
	old := r.contact
	r.oldContact = &old
	r.contact.Host, r.contact.Port = pub.Addr().String(), int(pub.Port())
	r.log.Info("sip: registering the address the registrar sees", "old", old.String(), "new", r.contact.String())
	return true
}

// grantedExpires is the lifetime the registrar granted our binding (RFC
// 3261 §10.2.4): the expires parameter of our Contact among those in the
// 2xx, else its Expires header, else what we asked for.
func grantedExpires(res *sip.Response, contact sip.Uri, asked int) time.Duration {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			c = &sip.ContactHeader{}
			if _, err := sip.ParseAddressValue(h.Value(), &c.Address, &c.Params); err != nil {
				continue
			}
		}
		if !sameBinding(c.Address, contact) {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, ok := deltaSeconds(v); ok {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, ok := deltaSeconds(h.Value()); ok {
			return time.Duration(n) * time.Second
		}
	}
	return time.Duration(asked) * time.Second
}

// sameBinding compares Contact URIs as a registrar would (RFC 3261 §10.3
// step 7, §19.1.4), on user, host and port.
func sameBinding(a, b sip.Uri) bool {
	pa, pb := a.Port, b.Port
	if pa == 0 {
		pa = 5060
	}
	if pb == 0 {
		pb = 5060
	}
	return a.User == b.User && pa == pb && strings.EqualFold(strings.Trim(a.Host, "[]"), strings.Trim(b.Host, "[]"))
}

// viaPublic is our address as the registrar saw it: the top Via's received
// and rport parameters (RFC 3581 §4), each defaulting to sent-by.
func viaPublic(res *sip.Response) (netip.AddrPort, bool) {
	v := res.Via()
	if v == nil {
		return netip.AddrPort{}, false
	}
	host, port := v.Host, v.Port
	if rcv, ok := v.Params.Get("received"); ok && rcv != "" {
		host = rcv
	}
	if rp, ok := v.Params.Get("rport"); ok && rp != "" {
		n, err := strconv.Atoi(rp)
		if err != nil || n <= 0 || n > 65535 {
			return netip.AddrPort{}, false
		}
		port = n
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil || port <= 0 || port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

// minExpires reads a 423's Min-Expires (RFC 3261 §20.23).
func minExpires(res *sip.Response) (int, bool) {
	h := res.GetHeader("Min-Expires")
	if h == nil {
		return 0, false
	}
	n, ok := deltaSeconds(h.Value())
	return int(min(n, 1<<31-1)), ok && n > 0
}

// retryAfter reads Retry-After (RFC 3261 §20.33): delta-seconds, then an
// optional comment and parameters.
func retryAfter(res *sip.Response) (time.Duration, bool) {
	h := res.GetHeader("Retry-After")
	if h == nil {
		return 0, false
	}
	v := h.Value()
	if i := strings.IndexAny(v, " \t(;"); i >= 0 {
		v = v[:i]
	}
	n, ok := deltaSeconds(v)
	if !ok {
		return 0, false
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter), true
}

// deltaSeconds parses delta-seconds (RFC 3261 §25.1: 1*DIGIT), capping at
// 2**32-1 as §10.2.1.1 allows.
func deltaSeconds(s string) (uint64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = min(n*10+uint64(c-'0'), maxDeltaSeconds)
	}
	return n, true
}

// challengeStale reports a challenge's stale=true: the credentials were
// right but the nonce had expired (RFC 2617 §3.2.1), so answering again is
// worth it.
func challengeStale(res *sip.Response) bool {
	name := "WWW-Authenticate"
	if res.StatusCode == 407 {
		name = "Proxy-Authenticate"
	}
	h := res.GetHeader(name)
	if h == nil {
		return false
	}
	c, err := digest.ParseChallenge(h.Value())
	return err == nil && c.Stale
}
