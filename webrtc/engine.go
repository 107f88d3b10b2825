// Package webrtc is ponte's WhatsApp media leg: a pion PeerConnection shaped to Meta's
// Calling API profile (whatsapp-calling-api.md §5.3).
//
// The profile, and why:
//   - ICE-full and CONTROLLING: Meta's relay is ICE-lite (a=ice-lite in every offer, §5.1), and
//     RFC 8445 §6.1.1 makes the full agent controlling. Meta recommends regular nomination,
//     which is what pion's controlling selector does (ice selection.go).
//   - DTLS client (a=setup:active) in answers: Meta's [IP] page, "BSP should act as a DTLS client".
//   - Exactly one audio m-line, one SSRC, Opus PT 111 (48 kHz clock) and telephone-event/8000
//     PT 126, ptime 20: Meta's mandatory list; anything else "will fail" (§5.3).
//   - Nothing toward Meta before the gateway calls [Leg.EnableSend]: WhatsApp clients treat the
//     first media packet as "accepted" and start the caller's timer (§3.2), so the leg sends no
//     RTP and no RTCP until then. That is why the pion API has no interceptors at all: pion's
//     default interceptors (RTCP reports, NACK, TWCC) would emit RTCP on their own.
//
// All legs share one pion configuration and one UDP port (an ICE UDP mux) so a gateway needs a single
// firewall hole for WhatsApp media. The package knows nothing about SIP.
package webrtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	pwebrtc "github.com/pion/webrtc/v4"
)

// Payload types and codec parameters of Meta's offer (whatsapp-calling-api.md §5.1). The leg
// registers them at these PTs so that an answer to Meta's offer echoes them unchanged.
const (
	OpusPT           = 111
	TelephoneEventPT = 126
	// OpusFmtp is Meta's Graph-API offer fmtp (§5.1); answers echo the offer's own line.
	OpusFmtp = "minptime=10;useinbandfec=1"
	// OpusClockRate is the RTP clock of Opus, always 48 kHz (RFC 7587 §4.1).
	OpusClockRate = 48000
	// TelephoneEventClockRate: Meta supports only 8 kHz DTMF (§5.4).
	TelephoneEventClockRate = 8000
	mimeTelephoneEvent      = "audio/telephone-event"
)

// Config configures an [Engine].
type Config struct {
	// ListenUDP is the single UDP address used by every call, e.g. "0.0.0.0:3478"
	// ("127.0.0.1:0" in tests).
	ListenUDP string
	// PublicIPs are advertised in host candidates instead of the local addresses (1:1 NAT).
	// Implemented with pion's ICE address rewrite rules.
	PublicIPs []string
	// IncludeLoopback gathers loopback candidates (tests on 127.0.0.1).
	IncludeLoopback bool
	// ConnectTimeout bounds ICE+DTLS after Answer (default 10s).
	ConnectTimeout time.Duration
	// DisconnectedTimeout and FailedTimeout are pion's ICE liveness timers (defaults 5s and
	// 15s). Meta cannot re-handshake a business leg (§5.5), so a failed leg is final.
	DisconnectedTimeout time.Duration
	FailedTimeout       time.Duration
	// RTCPInterval is the sender-report period once sending is enabled (default 5s). Meta wants
	// "at-least RTCP packets even when there is silence" (§5.5).
	RTCPInterval time.Duration
	// SocketBuffer is the kernel receive/send buffer of the shared socket(s), in bytes
	// (0: the system default). See setSocketBuffer.
	SocketBuffer int
	Logger       *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.DisconnectedTimeout <= 0 {
		c.DisconnectedTimeout = 5 * time.Second
	}
	if c.FailedTimeout <= 0 {
		c.FailedTimeout = 15 * time.Second
	}
	if c.RTCPInterval <= 0 {
		c.RTCPInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine owns the shared pion API and the UDP mux. It is safe for concurrent use.
type Engine struct {
	cfg Config
	log *slog.Logger
	// Two pion APIs over the same mux and settings, differing only in the registered Opus fmtp:
	// answers echo Meta's offer (see newAPI), offers carry Meta's own line (§5.1).
	answerAPI, offerAPI *pwebrtc.API
	mux                 ice.UDPMux
	local               netip.AddrPort

	mu     sync.Mutex
	legs   map[*Leg]struct{}
	closed bool
}

// ErrClosed is returned by operations on a closed engine or leg.
var ErrClosed = errors.New("webrtc: closed")

// NewEngine opens the UDP mux and builds the pion API with Meta's codec profile.
func NewEngine(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if cfg.ListenUDP == "" {
		return nil, errors.New("webrtc: Config.ListenUDP is empty")
	}
	ap, err := netip.ParseAddrPort(cfg.ListenUDP)
	if err != nil {
		return nil, fmt.Errorf("webrtc: ListenUDP %q: %w", cfg.ListenUDP, err)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, legs: make(map[*Leg]struct{})}
	pionLog := newPionLoggerFactory(cfg.Logger)

	if ap.Addr().IsUnspecified() {
		// One socket per interface address, all on the same port: a UDPMuxDefault bound to
		// 0.0.0.0 cannot choose the right source address on multi-homed hosts.
		opts := []ice.UDPMuxFromPortOption{ice.UDPMuxFromPortWithLogger(pionLog.NewLogger("mux"))}
		if cfg.IncludeLoopback {
			opts = append(opts, ice.UDPMuxFromPortWithLoopback())
		}
		if ap.Addr().Is4() {
			opts = append(opts, ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4))
		}
		if cfg.SocketBuffer > 0 {
			// pion sets these with SO_RCVBUF/SO_SNDBUF, capped by net.core.rmem_max/wmem_max.
			opts = append(opts, ice.UDPMuxFromPortWithReadBufferSize(cfg.SocketBuffer),
				ice.UDPMuxFromPortWithWriteBufferSize(cfg.SocketBuffer))
			warnSocketCap(cfg.Logger, cfg.SocketBuffer)
		}
		m, err := ice.NewMultiUDPMuxFromPort(int(ap.Port()), opts...)
		if err != nil {
			return nil, fmt.Errorf("webrtc: listen %s: %w", cfg.ListenUDP, err)
		}
		e.mux = m
		port := ap.Port()
		if addrs := m.GetListenAddresses(); len(addrs) > 0 {
			if ua, ok := addrs[0].(*net.UDPAddr); ok {
				port = uint16(ua.Port)
			}
		}
		e.local = netip.AddrPortFrom(ap.Addr(), port)
	} else {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, fmt.Errorf("webrtc: listen %s: %w", cfg.ListenUDP, err)
		}
		if cfg.SocketBuffer > 0 {
			setSocketBuffer(conn, cfg.SocketBuffer, cfg.Logger)
		}
		e.mux = pwebrtc.NewICEUDPMux(pionLog.NewLogger("mux"), conn)
		e.local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}

	if e.answerAPI, err = newAPI(cfg, e.mux, pionLog, ""); err == nil {
		e.offerAPI, err = newAPI(cfg, e.mux, pionLog, OpusFmtp)
	}
	if err != nil {
		_ = e.mux.Close()
		return nil, err
	}
	return e, nil
}

// newAPI builds a pion API: Meta's two codecs, no interceptors, the mux, and the answering
// DTLS role.
//
// The answering API registers Opus without fmtp (opusFmtp ""). pion negotiates only the exact
// fmtp matches when any exist (mediaengine.go updateFromRemoteDescription), and a generic fmtp
// matches exactly only when shared keys agree: with "minptime=10" registered, Meta's SIP-style
// offer (minptime=20, §5.1) would lose Opus and keep only telephone-event. With no parameters
// Opus always matches, and the answer echoes Meta's own fmtp line.
func newAPI(cfg Config, mux ice.UDPMux, lf *pionLoggerFactory, opusFmtp string) (*pwebrtc.API, error) {
	me := &pwebrtc.MediaEngine{}
	if err := RegisterMetaCodecs(me, opusFmtp); err != nil {
		return nil, err
	}

	se := pwebrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(mux)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4, pwebrtc.NetworkTypeUDP6})
	// mDNS would open multicast sockets and could publish .local names Meta cannot resolve.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	se.SetICETimeouts(cfg.DisconnectedTimeout, cfg.FailedTimeout, 2*time.Second)
	// [IP]: the business acts as DTLS client on user-initiated calls (a=setup:active). Without
	// this, pion answers an ice-lite offer with setup:passive (peerconnection.go CreateAnswer).
	if err := se.SetAnsweringDTLSRole(pwebrtc.DTLSRoleClient); err != nil {
		return nil, fmt.Errorf("webrtc: %w", err)
	}
	if len(cfg.PublicIPs) > 0 {
		for _, ip := range cfg.PublicIPs {
			if _, err := netip.ParseAddr(ip); err != nil {
				return nil, fmt.Errorf("webrtc: PublicIPs %q: %w", ip, err)
			}
		}
		err := se.SetICEAddressRewriteRules(pwebrtc.ICEAddressRewriteRule{
			External:        cfg.PublicIPs,
			AsCandidateType: pwebrtc.ICECandidateTypeHost,
			Mode:            pwebrtc.ICEAddressRewriteReplace,
		})
		if err != nil {
			return nil, fmt.Errorf("webrtc: address rewrite: %w", err)
		}
	}
	// An explicitly empty interceptor registry: without WithInterceptorRegistry pion installs its
	// defaults (RTCP reports every second, NACK, TWCC), which would send RTCP to Meta before
	// accept. With none, pion never writes RTCP by itself, which keeps the send gate honest (§3.2).
	return pwebrtc.NewAPI(
		pwebrtc.WithMediaEngine(me),
		pwebrtc.WithSettingEngine(se),
		pwebrtc.WithInterceptorRegistry(&interceptor.Registry{}),
	), nil
}

// RegisterMetaCodecs registers Opus/48000/2 at PT 111 with the given fmtp and
// telephone-event/8000 "0-15" at PT 126 (whatsapp-calling-api.md §5.1, §5.4). Offerers shaped
// like Meta (the simulator) pass OpusFmtp; the answering engine passes "" (see newAPI).
func RegisterMetaCodecs(me *pwebrtc.MediaEngine, opusFmtp string) error {
	if err := me.RegisterCodec(pwebrtc.RTPCodecParameters{
		RTPCodecCapability: pwebrtc.RTPCodecCapability{
			MimeType: pwebrtc.MimeTypeOpus, ClockRate: OpusClockRate, Channels: 2, SDPFmtpLine: opusFmtp,
		},
		PayloadType: OpusPT,
	}, pwebrtc.RTPCodecTypeAudio); err != nil {
		return fmt.Errorf("webrtc: register opus: %w", err)
	}
	if err := me.RegisterCodec(pwebrtc.RTPCodecParameters{
		RTPCodecCapability: pwebrtc.RTPCodecCapability{
			MimeType: mimeTelephoneEvent, ClockRate: TelephoneEventClockRate, SDPFmtpLine: "0-15",
		},
		PayloadType: TelephoneEventPT,
	}, pwebrtc.RTPCodecTypeAudio); err != nil {
		return fmt.Errorf("webrtc: register telephone-event: %w", err)
	}
	return nil
}

// LocalAddr is the UDP address of the mux (the port every call uses).
func (e *Engine) LocalAddr() netip.AddrPort { return e.local }

// NewLeg creates an idle leg for one call. callID is used for logging only.
func (e *Engine) NewLeg(callID string) (*Leg, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	l, err := newLeg(e, callID)
	if err != nil {
		return nil, err
	}
	e.legs[l] = struct{}{}
	return l, nil
}

func (e *Engine) forget(l *Leg) {
	e.mu.Lock()
	delete(e.legs, l)
	e.mu.Unlock()
}

// Close closes every leg, then the UDP mux.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	legs := make([]*Leg, 0, len(e.legs))
	for l := range e.legs {
		legs = append(legs, l)
	}
	e.mu.Unlock()

	var errs []error
	for _, l := range legs {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.mux.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
