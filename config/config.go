// Package config holds ponte's YAML schema, its defaults, ${ENV} expansion for
// secrets and validation. Errors name the key and the line so an operator can
// fix a file without reading code. It imports no other ponte package.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("config: invalid")

// Config is the whole file.
type Config struct {
	NodeID   string            `yaml:"node_id"`
	Log      Log               `yaml:"log"`
	HTTP     HTTP              `yaml:"http"`
	WhatsApp WhatsApp          `yaml:"whatsapp"`
	Media    Media             `yaml:"media"`
	SIP      SIP               `yaml:"sip"`
	Routes   map[string]*Route `yaml:"routes"`
	Store    Store             `yaml:"store"`
	API      API               `yaml:"api"`    // config/store.go
	Events   Events            `yaml:"events"` // config/store.go

	// Admission control and drain (config/ops.go).
	Admission Admission `yaml:"admission"`
	// Outbound: business-initiated calls (config/outbound.go).
	Outbound Outbound `yaml:"outbound"`
	Drain    Drain    `yaml:"drain"`
}

// Log configures log/slog.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error
	Format string `yaml:"format"` // text|json
}

// HTTP has two listeners on purpose: the public one carries only /webhook
// (Meta must reach it, over a CA-signed certificate), the admin one carries
// /metrics, /api and health and must never be exposed with the webhook.
type HTTP struct {
	Public  string `yaml:"public"`
	Admin   string `yaml:"admin"`
	TLSCert string `yaml:"tls_cert"` // optional: terminate TLS for /webhook here instead of at a proxy
	TLSKey  string `yaml:"tls_key"`
	// Pprof serves Go's profiler under /debug/pprof/ on the admin listener
	// (never the public one): for measuring the gateway under load (docs/performance.md).
	// Off by default: a profile is cheap to take but shows code paths and
	// can cost CPU while it runs.
	Pprof bool `yaml:"pprof"`
}

// WhatsApp is the Cloud API side.
type WhatsApp struct {
	GraphURL              string   `yaml:"graph_url"`
	AccessToken           string   `yaml:"access_token"`
	AppSecret             string   `yaml:"app_secret"`
	VerifyToken           string   `yaml:"verify_token"`
	RequestTimeout        Duration `yaml:"request_timeout"`
	Retries               int      `yaml:"retries"`
	AcceptDeadline        Duration `yaml:"accept_deadline"`
	ConnectStaleAfter     Duration `yaml:"connect_stale_after"`
	InsecureSkipSignature bool     `yaml:"insecure_skip_signature"`
	Numbers               []Number `yaml:"numbers"`
	MaxBodyBytes          int64    `yaml:"max_body_bytes"`
}

// Number maps one WhatsApp business number to its routing.
type Number struct {
	PhoneNumberID      string `yaml:"phone_number_id"`
	DisplayPhoneNumber string `yaml:"display_phone_number"`
	InboundRoute       string `yaml:"inbound_route"`
	OutboundTrunk      string `yaml:"outbound_trunk"`
	// PermissionRequest: ask users for call permission when an agent dials
	// one who has not given it (config/outbound.go).
	PermissionRequest *PermissionRequest `yaml:"permission_request"`
}

// Media configures both media legs.
type Media struct {
	PublicIP       string   `yaml:"public_ip"`       // advertised in ICE candidates toward Meta
	BindIP         string   `yaml:"bind_ip"`         // local address for the WebRTC mux
	WebRTCUDPPort  int      `yaml:"webrtc_udp_port"` // single-port ICE mux for every call
	RTPIP          string   `yaml:"rtp_ip"`          // local address for RTP toward PBXs, also put in SDP c=
	RTPPorts       string   `yaml:"rtp_ports"`       // "20000-29999"
	OpusComplexity int      `yaml:"opus_complexity"` // 0..10, default 5
	OpusBitrate    int      `yaml:"opus_bitrate"`    // bps toward Meta when transcoding, default 24000
	ConnectTimeout Duration `yaml:"connect_timeout"` // ICE+DTLS must complete within this
	// ICE liveness toward Meta once connected (RFC 7675 consent): no
	// traffic for ice_disconnected_timeout marks the leg disconnected, and
	// ice_failed_timeout more ends the call (BYE to the PBX, terminate to
	// Meta). Meta cannot re-handshake a business leg, so failed is final.
	ICEDisconnectedTimeout Duration `yaml:"ice_disconnected_timeout"` // default 5s
	ICEFailedTimeout       Duration `yaml:"ice_failed_timeout"`       // default 15s (after disconnected)
	JitterFrames           int      `yaml:"jitter_frames"`            // playout depth target, 20 ms frames
	AcceptBuffer           Duration `yaml:"accept_buffer"`            // PBX audio held while accept is in flight (<= 1 s)
	RTPTimeout             Duration `yaml:"rtp_timeout"`              // PBX silent this long mid-call (not on hold) ends the call; default 60s
	// SocketBuffer is the kernel receive and send buffer of the shared WebRTC
	// socket, in bytes (default 4 MiB). Every call's packets queue on that
	// one socket: Linux's default (208 KiB, about 170 small packets) holds
	// 35 ms of 100 calls' traffic, so any longer scheduling stall drops audio.
	SocketBuffer int `yaml:"socket_buffer"`
}

// SIP configures the SIP user agent and the trunks.
type SIP struct {
	Listen        []string `yaml:"listen"`
	AdvertiseHost string   `yaml:"advertise_host"`
	UserAgent     string   `yaml:"user_agent"`
	Trunks        []Trunk  `yaml:"trunks"`
	// TLSCert and TLSKey: the certificate tls: listeners present (trunk_tls.go).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Server: authentication of PBX-originated INVITEs (config/outbound.go).
	Server SIPServer `yaml:"server"`
}

// Trunk is a PBX or callbot ponte sends calls to.
type Trunk struct {
	Name       string   `yaml:"name"`
	Address    string   `yaml:"address"`
	Transport  string   `yaml:"transport"`
	Auth       Auth     `yaml:"auth"`
	Codecs     []string `yaml:"codecs"`
	DTMF       string   `yaml:"dtmf"`
	DTMFPT     int      `yaml:"dtmf_payload_type"`
	EarlyMedia string   `yaml:"early_media"` // ignore|answer
	FromDomain string   `yaml:"from_domain"`
	// CallerID is how the WhatsApp caller's number goes in From:
	// e164_plus (+5511...), e164 (5511...), or national (the trunk's
	// country_code stripped: 11...). A BSUID is sent as is.
	CallerID    string `yaml:"caller_id"`
	CountryCode string `yaml:"country_code"` // digits, for caller_id: national
	// DisplayName: whatsapp (the profile name), number (the caller id) or none.
	DisplayName string `yaml:"display_name"`
	// OptionsInterval: send OPTIONS this often (0 = off); two unanswered in a
	// row mark the trunk down and its targets are skipped until one is answered.
	OptionsInterval Duration `yaml:"options_interval"`
	// Advertise: ponte's addresses toward this trunk (split horizon);
	// RewriteContact: the PBX is behind NAT; in-dialog requests go to the
	// trunk address, not to its unreachable Contact (trunk_net.go).
	Advertise      TrunkAdvertise `yaml:"advertise"`
	RewriteContact bool           `yaml:"rewrite_contact"`
	// TLS: client TLS toward this trunk (transport: tls); SRTP: off (default),
	// optional or required SDES-SRTP (trunk_tls.go).
	TLS  *TrunkTLS `yaml:"tls"`
	SRTP string    `yaml:"srtp"`
	// Transfer: which REFER targets its PBX may send callers to (trunk_transfer.go).
	Transfer Transfer `yaml:"transfer"`
	// Inbound: the PBX may place calls to WhatsApp users through ponte;
	// Register: ponte registers to the trunk (config/outbound.go).
	Inbound  *TrunkInbound  `yaml:"inbound"`
	Register *TrunkRegister `yaml:"register"`
}

// Auth holds digest credentials.
type Auth struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Route says where an inbound WhatsApp call rings. Everything but targets is
// optional; the schema and its rules are in routes.go and docs/routing.md.
type Route struct {
	Targets           []Target     `yaml:"targets"`            // rung in order
	Hours             *Hours       `yaml:"hours"`              // left out: always open
	Closed            *Closed      `yaml:"closed"`             // outside hours: reject (default) or a target
	Mode              string       `yaml:"mode"`               // ring_then_answer (default) | answer_then_hunt
	DefaultDepartment *Target      `yaml:"default_department"` // always tried last
	MoveOn            []string     `yaml:"move_on"`            // which failures move to the next attempt
	Queue             *Queue       `yaml:"queue"`              // answer_then_hunt only
	StickyAgent       *StickyAgent `yaml:"sticky_agent"`
	Hook              *Hook        `yaml:"hook"`
}

// Target is one SIP destination.
type Target struct {
	URI         string   `yaml:"uri"`
	Trunk       string   `yaml:"trunk"`
	RingTimeout Duration `yaml:"ring_timeout"`
	// NoProvisionalTimeout: no 100/18x within this time means the target is
	// dead; give up on it at once instead of waiting 32 s for Timer B.
	NoProvisionalTimeout Duration `yaml:"no_provisional_timeout"`
}

// Store configures call records.
type Store struct {
	Driver string `yaml:"driver"`
	DSN    string `yaml:"dsn"`
	// Timezone (IANA) dates protocol numbers in the business's local day; default: the host's.
	Timezone string `yaml:"timezone"`
}

// Duration accepts "30s", "1m30s" or a bare number of seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML keeps the line of a bad value in the error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*d = Duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use e.g. 30s, 1m30s)", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Known codecs and their canonical spelling.
var knownCodecs = map[string]string{"pcmu": "PCMU", "pcma": "PCMA", "opus": "opus"}

// PortRange parses "min-max".
func PortRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want MIN-MAX", s)
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || lo >= hi || hi-lo < 3 {
		return 0, 0, fmt.Errorf("%q: want MIN-MAX with 1024 <= MIN < MAX <= 65535", s)
	}
	return lo, hi, nil
}

// Trunk returns the named trunk.
func (c *Config) Trunk(name string) *Trunk {
	for i := range c.SIP.Trunks {
		if c.SIP.Trunks[i].Name == name {
			return &c.SIP.Trunks[i]
		}
	}
	return nil
}

// Number returns the business number entry for a phone_number_id.
func (c *Config) Number(phoneNumberID string) *Number {
	for i := range c.WhatsApp.Numbers {
		if c.WhatsApp.Numbers[i].PhoneNumberID == phoneNumberID {
			return &c.WhatsApp.Numbers[i]
		}
	}
	return nil
}

// applyDefaults fills what the file left out. Defaults follow Meta's limits
// (accept window 30-60 s, so 30 s leaves margin) and the measured costs in the
// dependencies reference (Opus complexity 5).
func (c *Config) applyDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defD := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.NodeID, "ponte-1")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	def(&c.HTTP.Public, "0.0.0.0:8443")
	def(&c.HTTP.Admin, "127.0.0.1:9090")
	def(&c.WhatsApp.GraphURL, "https://graph.facebook.com/v23.0")
	defD(&c.WhatsApp.RequestTimeout, 5*time.Second)
	defD(&c.WhatsApp.AcceptDeadline, 30*time.Second)
	defD(&c.WhatsApp.ConnectStaleAfter, 60*time.Second)
	if c.WhatsApp.Retries == 0 {
		c.WhatsApp.Retries = 2
	}
	if c.WhatsApp.MaxBodyBytes == 0 {
		c.WhatsApp.MaxBodyBytes = 1 << 20
	}
	def(&c.Media.BindIP, "0.0.0.0")
	if c.Media.WebRTCUDPPort == 0 {
		c.Media.WebRTCUDPPort = 3478
	}
	def(&c.Media.RTPPorts, "20000-29999")
	if c.Media.OpusComplexity == 0 {
		c.Media.OpusComplexity = 5
	}
	if c.Media.OpusBitrate == 0 {
		c.Media.OpusBitrate = 24000
	}
	if c.Media.JitterFrames == 0 {
		c.Media.JitterFrames = 1
	}
	defD(&c.Media.ConnectTimeout, 10*time.Second)
	defD(&c.Media.ICEDisconnectedTimeout, 5*time.Second)
	defD(&c.Media.ICEFailedTimeout, 15*time.Second)
	defD(&c.Media.AcceptBuffer, time.Second)
	defD(&c.Media.RTPTimeout, 60*time.Second) // a PBX gone without a BYE; held calls are exempt
	if c.Media.SocketBuffer == 0 {
		c.Media.SocketBuffer = 4 << 20
	}
	if len(c.SIP.Listen) == 0 {
		c.SIP.Listen = []string{"udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"}
	}
	def(&c.SIP.UserAgent, "ponte")
	for i := range c.SIP.Trunks {
		t := &c.SIP.Trunks[i]
		def(&t.Transport, "udp")
		def(&t.DTMF, "rfc4733")
		t.transferDefaults()
		def(&t.EarlyMedia, "ignore")
		def(&t.CallerID, "e164_plus")
		def(&t.DisplayName, "whatsapp")
		if len(t.Codecs) == 0 {
			t.Codecs = []string{"PCMU", "PCMA"}
		}
		if t.DTMFPT == 0 {
			t.DTMFPT = 101
		}
	}
	for _, r := range c.Routes {
		if r == nil {
			continue
		}
		r.routeDefaults()
	}
	def(&c.Store.Driver, "sqlite")
	def(&c.Store.DSN, "./ponte.db")
	c.applyStoreDefaults() // config/store.go
	c.applyOpsDefaults()   // config/ops.go
	c.applyOutboundDefaults()
}

// problem is one validation failure, tied to a key path.
type problem struct {
	path string
	msg  string
}

func (c *Config) validate() []problem {
	var ps []problem
	add := func(path, format string, a ...any) { ps = append(ps, problem{path, fmt.Sprintf(format, a...)}) }
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for _, k := range []struct{ path, v string }{{"http.public", c.HTTP.Public}, {"http.admin", c.HTTP.Admin}} {
		if _, err := netip.ParseAddrPort(k.v); err != nil {
			add(k.path, "%q is not IP:PORT", k.v)
		}
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		add("http.tls_cert", "tls_cert and tls_key go together")
	}
	w := &c.WhatsApp
	if !strings.HasPrefix(w.GraphURL, "https://") && !strings.HasPrefix(w.GraphURL, "http://") {
		add("whatsapp.graph_url", "%q is not an http(s) URL", w.GraphURL)
	}
	if w.AccessToken == "" {
		add("whatsapp.access_token", "is required (use ${WA_ACCESS_TOKEN})")
	}
	if w.AppSecret == "" && !w.InsecureSkipSignature {
		add("whatsapp.app_secret", "is required: webhook signatures are checked with it")
	}
	if w.VerifyToken == "" {
		add("whatsapp.verify_token", "is required for Meta's webhook verification")
	}
	if w.AcceptDeadline.D() < 5*time.Second || w.AcceptDeadline.D() > 60*time.Second {
		add("whatsapp.accept_deadline", "%s is outside 5s..60s (Meta's accept window is about 30-60 s)", w.AcceptDeadline.D())
	}
	if len(w.Numbers) == 0 {
		add("whatsapp.numbers", "at least one business number is required")
	}
	seen := map[string]bool{}
	for i, n := range w.Numbers {
		p := fmt.Sprintf("whatsapp.numbers[%d]", i)
		if n.PhoneNumberID == "" {
			add(p+".phone_number_id", "is required")
		} else if seen[n.PhoneNumberID] {
			add(p+".phone_number_id", "%q is listed twice", n.PhoneNumberID)
		}
		seen[n.PhoneNumberID] = true
		if n.InboundRoute != "" && c.Routes[n.InboundRoute] == nil {
			add(p+".inbound_route", "route %q is not defined under routes", n.InboundRoute)
		}
		if n.OutboundTrunk != "" && c.Trunk(n.OutboundTrunk) == nil {
			add(p+".outbound_trunk", "trunk %q is not defined under sip.trunks", n.OutboundTrunk)
		}
	}
	m := &c.Media
	if m.PublicIP != "" {
		if _, err := netip.ParseAddr(m.PublicIP); err != nil {
			add("media.public_ip", "%q is not an IP address", m.PublicIP)
		}
	}
	if _, err := netip.ParseAddr(m.BindIP); err != nil {
		add("media.bind_ip", "%q is not an IP address", m.BindIP)
	}
	if m.RTPIP != "" {
		if _, err := netip.ParseAddr(m.RTPIP); err != nil {
			add("media.rtp_ip", "%q is not an IP address", m.RTPIP)
		}
	}
	if m.WebRTCUDPPort < 0 || m.WebRTCUDPPort > 65535 {
		add("media.webrtc_udp_port", "%d is not a port", m.WebRTCUDPPort)
	}
	if _, _, err := PortRange(m.RTPPorts); err != nil {
		add("media.rtp_ports", "%v", err)
	}
	if m.OpusComplexity < 0 || m.OpusComplexity > 10 {
		add("media.opus_complexity", "%d is outside 0..10", m.OpusComplexity)
	}
	if m.OpusBitrate < 6000 || m.OpusBitrate > 128000 {
		add("media.opus_bitrate", "%d is outside 6000..128000", m.OpusBitrate)
	}
	if m.AcceptBuffer.D() > time.Second {
		add("media.accept_buffer", "%s is over 1s: longer holds delay the conversation", m.AcceptBuffer.D())
	}
	if m.SocketBuffer < 64<<10 || m.SocketBuffer > 256<<20 {
		add("media.socket_buffer", "%d is outside 65536..268435456 bytes", m.SocketBuffer)
	}
	if m.JitterFrames < 1 || m.JitterFrames > 10 {
		add("media.jitter_frames", "%d is outside 1..10", m.JitterFrames)
	}
	for i, l := range c.SIP.Listen {
		tr, addr, ok := strings.Cut(l, ":")
		if _, err := netip.ParseAddrPort(addr); !ok || err != nil || (tr != "udp" && tr != "tcp" && tr != "tls") {
			add(fmt.Sprintf("sip.listen[%d]", i), "%q: want udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT", l)
		}
	}
	names := map[string]bool{}
	for i, t := range c.SIP.Trunks {
		p := fmt.Sprintf("sip.trunks[%d]", i)
		if t.Name == "" {
			add(p+".name", "is required")
		} else if names[t.Name] {
			add(p+".name", "%q is defined twice", t.Name)
		}
		names[t.Name] = true
		if t.Address == "" {
			add(p+".address", "is required (host:port)")
		} else if _, port, ok := strings.Cut(t.Address, ":"); !ok || port == "" {
			add(p+".address", "%q: want host:port", t.Address)
		}
		if t.Transport != "udp" && t.Transport != "tcp" && t.Transport != "tls" {
			add(p+".transport", "%q is not one of udp, tcp, tls", t.Transport)
		}
		// Normalise a copy: the slice may be shared with whoever built the config.
		c.SIP.Trunks[i].Codecs = append([]string(nil), t.Codecs...)
		for j, cd := range t.Codecs {
			canon, ok := knownCodecs[strings.ToLower(cd)]
			if !ok {
				add(fmt.Sprintf("%s.codecs[%d]", p, j), "%q is not one of PCMU, PCMA, opus", cd)
				continue
			}
			c.SIP.Trunks[i].Codecs[j] = canon
		}
		if t.DTMF != "rfc4733" && t.DTMF != "info" && t.DTMF != "inband" {
			add(p+".dtmf", "%q is not one of rfc4733, info, inband", t.DTMF)
		}
		if t.DTMFPT < 96 || t.DTMFPT > 127 {
			add(p+".dtmf_payload_type", "%d is not a dynamic payload type (96..127)", t.DTMFPT)
		}
		if t.EarlyMedia != "ignore" && t.EarlyMedia != "answer" {
			add(p+".early_media", "%q is not one of ignore, answer", t.EarlyMedia)
		}
		switch t.CallerID {
		case "e164_plus", "e164":
		case "national":
			if t.CountryCode == "" || strings.Trim(t.CountryCode, "0123456789") != "" {
				add(p+".country_code", "caller_id: national needs the trunk's country code in digits (e.g. \"55\")")
			}
		default:
			add(p+".caller_id", "%q is not one of e164_plus, e164, national", t.CallerID)
		}
		if t.OptionsInterval != 0 && t.OptionsInterval.D() < 500*time.Millisecond {
			add(p+".options_interval", "%s is under 500ms (0 turns pings off)", t.OptionsInterval.D())
		}
		if t.DisplayName != "whatsapp" && t.DisplayName != "number" && t.DisplayName != "none" {
			add(p+".display_name", "%q is not one of whatsapp, number, none", t.DisplayName)
		}
	}
	c.validateTrunkNet(add) // trunk_net.go
	c.validateTLS(add)      // trunk_tls.go
	c.validateRoutes(add)
	c.validateOps(add)       // config/ops.go
	c.validateTransfers(add) // trunk_transfer.go
	c.validateOutbound(add)  // outbound.go
	switch c.Store.Driver {
	case "sqlite", "memory":
	default:
		add("store.driver", "%q is not one of sqlite, memory", c.Store.Driver)
	}
	ps = append(ps, c.validateStore()...) // config/store.go
	return ps
}
