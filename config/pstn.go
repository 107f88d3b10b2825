package config

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// SIP security settings (H-SIPSEC, issue 8): bans of sources that keep
// failing, and the PSTN policy.

// ErrPSTNPolicy: a target is on the public telephone network. Meta's terms
// forbid bridging WhatsApp calls to the PSTN, so ponte makes it a visible
// policy rather than an accident of a dial plan.
var ErrPSTNPolicy = errors.New("PSTN policy")

// SIPBan bans a source after After authentication failures (or scanner
// requests) within Within: everything it sends is dropped for For. A
// trunk's allow-listed address is never banned.
type SIPBan struct {
	After  int      `yaml:"after"`  // default 10
	Within Duration `yaml:"within"` // default 60s
	// For is the ban's length, default 10m; 0 turns banning off.
	For *Duration `yaml:"for"`
}

// Period is the ban's length; negative when banning is off (for: 0), the
// way sip.BanConfig.For takes it.
func (b SIPBan) Period() time.Duration {
	if b.For == nil {
		return 10 * time.Minute
	}
	if b.For.D() == 0 {
		return -1
	}
	return b.For.D()
}

// PSTN names what is the public telephone network. WhatsApp calls are never
// sent to a target on one of Trunks, nor to a number starting with one of
// Prefixes: check-config refuses such route targets, and at dial time (and
// for REFER targets) the gateway refuses them too. Allow turns the policy
// off (for a deployment whose terms permit it; Meta's do not).
type PSTN struct {
	Trunks []string `yaml:"trunks"`
	// Prefixes of dialled numbers ("+1900", "+44", "0800"). A prefix with
	// + also matches the 00 international form; one without + is compared
	// as written (list both forms if the PBX takes national numbers).
	Prefixes []string `yaml:"prefixes"`
	Allow    bool     `yaml:"allow"`
}

// PSTNPolicy is the configured policy (wherever the config keeps it).
func (c *Config) PSTNPolicy() *PSTN { return &c.SIP.Server.PSTN }

// Check reports whether a call may be sent to uri on trunk: nil, or an
// error wrapping ErrPSTNPolicy that says which rule refused it. A user
// part that cannot be decoded is refused (a REFER target is written by the
// far end; the PBX would decode it however it likes).
func (p *PSTN) Check(trunk, uri string) error {
	if p == nil || p.Allow {
		return nil
	}
	for _, t := range p.Trunks {
		if t != "" && t == trunk {
			return fmt.Errorf("%w: trunk %q is a PSTN trunk", ErrPSTNPolicy, trunk)
		}
	}
	if len(p.Prefixes) == 0 {
		return nil
	}
	num, err := dialledNumber(uri)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrPSTNPolicy, uri, err)
	}
	if num == "" {
		return nil
	}
	for _, pf := range p.Prefixes {
		if n := normalNumber(pf); n != "" && strings.HasPrefix(num, n) {
			return fmt.Errorf("%w: %q is under the PSTN prefix %q", ErrPSTNPolicy, uri, pf)
		}
	}
	return nil
}

// dialledNumber is the user part of a sip:, sips: or tel: URI (RFC 3261
// §19.1.1, RFC 3966), percent-decoded and normalised (normalNumber); ""
// for other schemes and URIs without a user part.
func dialledNumber(uri string) (string, error) {
	uri = strings.TrimSpace(uri)
	if i := strings.IndexByte(uri, '<'); i >= 0 { // name-addr
		uri = uri[i+1:]
		if j := strings.IndexByte(uri, '>'); j >= 0 {
			uri = uri[:j]
		}
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok {
		return "", nil
	}
	var user string
	switch strings.ToLower(strings.TrimSpace(scheme)) {
	case "tel":
		user, _, _ = strings.Cut(rest, ";")
	case "sip", "sips":
		rest, _, _ = strings.Cut(rest, "?")
		u, _, found := strings.Cut(rest, "@")
		if !found {
			return "", nil
		}
		user, _, _ = strings.Cut(u, ":") // user:password
		user, _, _ = strings.Cut(user, ";")
	default:
		return "", nil
	}
	dec, err := url.PathUnescape(user)
	if err != nil {
		return "", errors.New("malformed escape in the user part")
	}
	return normalNumber(dec), nil
}

// normalNumber drops RFC 3966 visual separators and writes the 00
// international prefix as +, so "+1 (900) 555" and "001900555" compare
// equal. The result is lower-cased (user parts are compared as written).
func normalNumber(s string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch r {
		case '-', '.', '(', ')', ' ':
			continue
		}
		b.WriteRune(r)
	}
	n := strings.ToLower(b.String())
	if strings.HasPrefix(n, "00") {
		n = "+" + n[2:]
	}
	return n
}

func (s *SIPServer) applySecurityDefaults() {
	if s.InviteRate == 0 {
		s.InviteRate = 20
	}
	if s.InviteBurst == 0 {
		s.InviteBurst = 40
	}
	if s.Ban.After == 0 {
		s.Ban.After = 10
	}
	if s.Ban.Within == 0 {
		s.Ban.Within = Duration(time.Minute)
	}
}

func (c *Config) validateSecurity(add func(path, format string, a ...any)) {
	s := &c.SIP.Server
	if s.InviteRate < 0 || s.InviteBurst < 0 {
		add("sip.server.invite_rate", "rate %v and burst %d must not be negative", s.InviteRate, s.InviteBurst)
	}
	if s.Ban.After < 0 {
		add("sip.server.ban.after", "%d must not be negative", s.Ban.After)
	}
	if s.Ban.Within < 0 {
		add("sip.server.ban.within", "%s must not be negative", s.Ban.Within.D())
	}
	if s.Ban.For != nil && s.Ban.For.D() < 0 {
		add("sip.server.ban.for", "%s must not be negative (0 turns banning off)", s.Ban.For.D())
	}
	p := &s.PSTN
	for i, t := range p.Trunks {
		if c.Trunk(t) == nil {
			add(fmt.Sprintf("sip.server.pstn.trunks[%d]", i), "trunk %q is not defined under sip.trunks", t)
		}
	}
	for i, pf := range p.Prefixes {
		if !validPrefix(pf) {
			add(fmt.Sprintf("sip.server.pstn.prefixes[%d]", i), "%q: want digits with an optional leading + (e.g. +1900)", pf)
		}
	}
	if p.Allow {
		return
	}
	// Everything WhatsApp calls are sent to, or come from.
	check := func(path string, t Target) {
		if err := p.Check(t.Trunk, t.URI); err != nil {
			add(path, "%v: WhatsApp calls may not be bridged to the PSTN (Meta's terms); set sip.server.pstn.allow only if yours permit it", err)
		}
	}
	names := make([]string, 0, len(c.Routes))
	for n := range c.Routes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := c.Routes[n]
		if r == nil {
			continue
		}
		rp := "routes." + n
		for i, t := range r.Targets {
			check(fmt.Sprintf("%s.targets[%d]", rp, i), t)
		}
		if d := r.DefaultDepartment; d != nil {
			check(rp+".default_department", *d)
		}
		if cl := r.Closed; cl != nil && cl.Action == ClosedTarget {
			check(rp+".closed", cl.Target())
		}
		if sa := r.StickyAgent; sa != nil {
			check(rp+".sticky_agent.trunk", Target{Trunk: sa.Trunk})
		}
	}
	for i, t := range c.SIP.Trunks {
		if t.Inbound != nil {
			check(fmt.Sprintf("sip.trunks[%d].inbound", i), Target{Trunk: t.Name})
		}
	}
	for i, n := range c.WhatsApp.Numbers {
		if n.OutboundTrunk != "" {
			check(fmt.Sprintf("whatsapp.numbers[%d].outbound_trunk", i), Target{Trunk: n.OutboundTrunk})
		}
	}
}

// validPrefix: an optional + then 1 to 15 digits (E.164's longest number).
func validPrefix(s string) bool {
	d := strings.TrimPrefix(s, "+")
	if d == "" || len(d) > 15 {
		return false
	}
	for _, r := range d {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
