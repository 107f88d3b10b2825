package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// TrunkInbound lets the trunk's PBX place calls to WhatsApp users through
// ponte (business-initiated calls). A trunk without it is never accepted as a
// caller: its INVITEs get 403.
type TrunkInbound struct {
	// Allow lists the source addresses (IP or CIDR) the PBX sends from. The
	// transport source is checked, never a header. Empty: digest alone.
	Allow []string `yaml:"allow"`
	// Username and Password: digest credentials the PBX must answer a 401
	// with (RFC 3261 §22, RFC 7616). With Allow as well, both are required.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// BusinessNumber is the phone_number_id (or display number) calls from
	// this trunk are placed from. Default: the first number whose
	// outbound_trunk is this trunk, else the only configured number.
	BusinessNumber string `yaml:"business_number"`
	// NumberHeader names a SIP header that may pick another configured
	// business number per call (its phone_number_id or display number),
	// e.g. X-WA-Business-Number.
	NumberHeader string `yaml:"number_header"`
}

// TrunkRegister makes ponte REGISTER to the trunk (RFC 3261 §10), for PBXs
// and cloud PBXs that only send calls to registered endpoints. Calls from the
// registrar's address are then accepted like an allow-listed source.
type TrunkRegister struct {
	User      string   `yaml:"user"`      // AOR user (required)
	Domain    string   `yaml:"domain"`    // AOR domain, default the trunk's host
	Expires   Duration `yaml:"expires"`   // requested binding lifetime, default 300s
	KeepAlive Duration `yaml:"keepalive"` // NAT keep-alive period, default 25s; negative: off
}

// SIPServer configures how PBX-originated INVITEs are authenticated.
type SIPServer struct {
	// Unauthorized: reject (403, default) or drop (no answer at all, so a
	// scanner learns nothing).
	Unauthorized string   `yaml:"unauthorized"`
	NonceTTL     Duration `yaml:"nonce_ttl"`  // digest nonce lifetime, default 5m
	RateLimit    float64  `yaml:"rate_limit"` // failed/unknown INVITEs per second per source, default 5
	RateBurst    int      `yaml:"rate_burst"` // default 10
	// InviteRate: new INVITEs per second per source, authenticated or not
	// (over it: 480 with Retry-After); trunk allow-list addresses are
	// exempt. Default 20, burst (InviteBurst) 40. H-SIPSEC.
	InviteRate  float64 `yaml:"invite_rate"`
	InviteBurst int     `yaml:"invite_burst"`
	// Ban: after failures within a window, every request from the source
	// is dropped for a while (config/pstn.go).
	Ban SIPBan `yaml:"ban"`
	// PSTN: which trunks and number prefixes are the public telephone
	// network, never bridged to WhatsApp (config/pstn.go).
	PSTN PSTN `yaml:"pstn"`
}

// Outbound configures business-initiated calls (PBX → WhatsApp user).
type Outbound struct {
	// NoAnswerTimeout: the user has not accepted this long after connect →
	// ponte sends terminate and answers the PBX 480. Default 45s.
	NoAnswerTimeout Duration `yaml:"no_answer_timeout"`
	// ConnectTimeout bounds the Graph connect request. A timeout is never
	// followed by a second connect: the webhooks decide. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// EarlyMediaAnswers: media from the user before ACCEPTED counts as the
	// answer (Meta has not said whether it sends early media; off by default,
	// such media gives a 183 only).
	EarlyMediaAnswers bool `yaml:"early_media_answers"`
	// Limits are Meta's call-permission limits; Meta has changed them
	// several times, and its own answers always override them.
	Limits PermissionLimits `yaml:"limits"`
}

// PermissionLimits per (business number, user) pair unless said otherwise.
type PermissionLimits struct {
	RequestsPer24h        int      `yaml:"requests_per_24h"`        // 1
	RequestsPer7d         int      `yaml:"requests_per_7d"`         // 2
	ConnectedPer24h       int      `yaml:"connected_per_24h"`       // 100
	InitiationsPer24h     int      `yaml:"initiations_per_24h"`     // 10000 per business number
	WarnAfterUnanswered   int      `yaml:"warn_after_unanswered"`   // 2
	RevokeAfterUnanswered int      `yaml:"revoke_after_unanswered"` // 4
	CacheTTL              Duration `yaml:"cache_ttl"`               // GET call_permissions cache, 60s
	GetRate               float64  `yaml:"get_rate"`                // GETs per second per number, 5
}

// PermissionRequest says whether and how ponte asks a user for call
// permission when an agent dials someone who has not given it (Meta §4.2).
type PermissionRequest struct {
	Auto bool   `yaml:"auto"`
	Body string `yaml:"body"` // interactive message body, inside the 24 h window
	// Template: an approved call_permission_request template, the only way
	// outside the window.
	Template *PermissionTemplate `yaml:"template"`
}

// PermissionTemplate names an approved template.
type PermissionTemplate struct {
	Name     string   `yaml:"name"`
	Language string   `yaml:"language"`
	Params   []string `yaml:"params"`
}

func (c *Config) applyOutboundDefaults() {
	o := &c.Outbound
	if o.NoAnswerTimeout == 0 {
		o.NoAnswerTimeout = Duration(45 * time.Second)
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = Duration(10 * time.Second)
	}
	l := &o.Limits
	defI := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defI(&l.RequestsPer24h, 1)
	defI(&l.RequestsPer7d, 2)
	defI(&l.ConnectedPer24h, 100)
	defI(&l.InitiationsPer24h, 10000)
	defI(&l.WarnAfterUnanswered, 2)
	defI(&l.RevokeAfterUnanswered, 4)
	if l.CacheTTL == 0 {
		l.CacheTTL = Duration(time.Minute)
	}
	if l.GetRate == 0 {
		l.GetRate = 5 // the lower of Meta's two documented figures (ref §3.5)
	}
	s := &c.SIP.Server
	if s.Unauthorized == "" {
		s.Unauthorized = "reject"
	}
	if s.NonceTTL == 0 {
		s.NonceTTL = Duration(5 * time.Minute)
	}
	if s.RateLimit == 0 {
		s.RateLimit = 5
	}
	if s.RateBurst == 0 {
		s.RateBurst = 10
	}
	s.applySecurityDefaults() // config/pstn.go
	for i := range c.SIP.Trunks {
		if r := c.SIP.Trunks[i].Register; r != nil {
			if r.Expires == 0 {
				r.Expires = Duration(300 * time.Second)
			}
			if r.KeepAlive == 0 {
				r.KeepAlive = Duration(25 * time.Second)
			}
		}
	}
}

func (c *Config) validateOutbound(add func(path, format string, a ...any)) {
	switch c.SIP.Server.Unauthorized {
	case "reject", "drop":
	default:
		add("sip.server.unauthorized", "%q is not one of reject, drop", c.SIP.Server.Unauthorized)
	}
	c.validateSecurity(add) // config/pstn.go
	if c.Outbound.NoAnswerTimeout.D() < 5*time.Second {
		add("outbound.no_answer_timeout", "%s is under 5s", c.Outbound.NoAnswerTimeout.D())
	}
	for i, t := range c.SIP.Trunks {
		p := fmt.Sprintf("sip.trunks[%d]", i)
		if in := t.Inbound; in != nil {
			for j, a := range in.Allow {
				if _, err := ParsePrefix(a); err != nil {
					add(fmt.Sprintf("%s.inbound.allow[%d]", p, j), "%q is not an IP address or CIDR", a)
				}
			}
			if len(in.Allow) == 0 && (in.Username == "" || in.Password == "") && t.Register == nil {
				add(p+".inbound", "needs allow, or username and password: an open trunk would let anyone place billed WhatsApp calls")
			}
			if (in.Username == "") != (in.Password == "") {
				add(p+".inbound.password", "username and password go together")
			}
			if in.BusinessNumber != "" && c.numberByAny(in.BusinessNumber) == nil {
				add(p+".inbound.business_number", "%q is not a configured whatsapp.numbers[] phone_number_id or display number", in.BusinessNumber)
			}
		}
		if r := t.Register; r != nil {
			if r.User == "" {
				add(p+".register.user", "is required")
			}
			if r.Expires.D() < 10*time.Second {
				add(p+".register.expires", "%s is under 10s", r.Expires.D())
			}
		}
	}
	for i, n := range c.WhatsApp.Numbers {
		pr := n.PermissionRequest
		if pr == nil {
			continue
		}
		p := fmt.Sprintf("whatsapp.numbers[%d].permission_request", i)
		if tp := pr.Template; tp != nil && (tp.Name == "" || tp.Language == "") {
			add(p+".template", "needs name and language")
		}
	}
}

// ParsePrefix reads an IP address or CIDR.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// numberByAny finds a business number by phone_number_id or display number.
func (c *Config) numberByAny(s string) *Number {
	d := strings.TrimPrefix(s, "+")
	for i := range c.WhatsApp.Numbers {
		n := &c.WhatsApp.Numbers[i]
		if n.PhoneNumberID == s || (n.DisplayPhoneNumber != "" && strings.TrimPrefix(n.DisplayPhoneNumber, "+") == d) {
			return n
		}
	}
	return nil
}

// BusinessNumberFor picks the number a call from trunk t is placed from:
// the header's value when it names a configured number, else the trunk's
// business_number, else the number whose outbound_trunk is t, else the only
// number.
func (c *Config) BusinessNumberFor(t *Trunk, headerValue string) *Number {
	if headerValue != "" {
		if n := c.numberByAny(strings.TrimSpace(headerValue)); n != nil {
			return n
		}
	}
	if t != nil && t.Inbound != nil && t.Inbound.BusinessNumber != "" {
		if n := c.numberByAny(t.Inbound.BusinessNumber); n != nil {
			return n
		}
	}
	if t != nil {
		for i := range c.WhatsApp.Numbers {
			if c.WhatsApp.Numbers[i].OutboundTrunk == t.Name {
				return &c.WhatsApp.Numbers[i]
			}
		}
	}
	if len(c.WhatsApp.Numbers) == 1 {
		return &c.WhatsApp.Numbers[0]
	}
	return nil
}
