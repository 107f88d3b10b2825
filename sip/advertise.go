package sip

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// NAT is how ponte addresses itself toward one trunk, and how it reaches a
// PBX that sits behind NAT. It gives split horizon: a PBX on the LAN is told
// ponte's private address while a cloud PBX across the Internet is told its
// public one, from the same UA. The zero value uses the UA's defaults.
type NAT struct {
	// AdvertiseHost is the host, or "host:port", ponte puts in Via sent-by
	// (RFC 3261 §18.1.1) and in its Contact (§8.1.1.8) toward this trunk:
	// the address the trunk can reach it at, e.g. a public IP that a 1:1 NAT
	// or a port forward maps to ponte's listener. Without a port the
	// listener's port is used. "" uses Config.AdvertiseHost.
	AdvertiseHost string
	// MediaIP is the SDP c= address toward this trunk (RFC 4566 §5.7). The
	// RTP port stays the bound one: a forward of the RTP range must keep
	// ports. The zero Addr uses the UA's SDP address.
	MediaIP netip.Addr
	// RewriteContact is for a PBX behind NAT whose Contact holds its private,
	// unreachable address: in-dialog requests without a route set (ACK, BYE,
	// re-INVITE, INFO) are sent to the trunk address, where its responses
	// come from, instead of to the Contact's host:port. The Request-URI is
	// still the Contact (RFC 3261 §12.2.1.1): like sending through an
	// outbound proxy (§8.1.2), only the next hop changes. This is Asterisk's
	// rewrite_contact for a trunk ponte calls out to.
	RewriteContact bool
}

// splitSentBy parses "host" or "host:port" ("[v6]:port" for IPv6). A
// malformed value is taken as a bare host; config validation rejects those
// before they reach the UA.
func splitSentBy(s string) (string, int) {
	s = strings.TrimSpace(s)
	if h, p, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65536 {
			return h, n
		}
		return h, 0
	}
	return strings.Trim(s, "[]"), 0
}

// viaHost is the host of Via sent-by and Contact toward the trunk.
func (t *Trunk) viaHost(u *UA) string {
	if t.NAT.AdvertiseHost != "" {
		if h, _ := splitSentBy(t.NAT.AdvertiseHost); h != "" {
			return h
		}
	}
	return u.advertise
}

// viaPort is the port of Via sent-by and Contact toward the trunk: the
// advertised one if AdvertiseHost names a port, else the listener's.
func (t *Trunk) viaPort(listen uint16) int {
	if t.NAT.AdvertiseHost != "" {
		if _, p := splitSentBy(t.NAT.AdvertiseHost); p != 0 {
			return p
		}
	}
	return int(listen)
}

// contactURI is ponte's Contact toward the trunk: a URI the trunk can send
// in-dialog requests to (RFC 3261 §12.1.2: it becomes the remote target).
func (t *Trunk) contactURI(u *UA, user string, listen uint16) sip.Uri {
	return sip.Uri{Scheme: "sip", User: user, Host: t.viaHost(u), Port: t.viaPort(listen)}
}

// bindMedia gives the trunk's c= address to the dialog's RTP session, so
// that every SDP built for it (offer, answers to re-INVITEs) carries it:
// UA.sdpAddr asks the session first.
func (t *Trunk) bindMedia(s *RTPSession) {
	if s != nil && t.NAT.MediaIP.IsValid() && !t.NAT.MediaIP.IsUnspecified() {
		s.setMediaIP(t.NAT.MediaIP)
	}
}

// targetDest is the next hop of an in-dialog request when there is no route
// set: the remote target's host:port (RFC 3261 §12.2.1.1, §8.1.2), or the
// trunk address when NAT.RewriteContact says the Contact is unreachable.
// The caller holds d.mu.
func (d *Dialog) targetDest() string {
	if d.trunk.NAT.RewriteContact {
		return d.dest
	}
	return uriDest(&d.remoteTarget, d.transport)
}
