// Package scenario starts ponte with the WhatsApp simulator and the PBX
// simulator on loopback: real sockets, real WebRTC, real SIP. `ponte demo`
// and the end-to-end tests share it.
package scenario

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/internal/server"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/store"
)

// Fixed identities of the simulated business.
const (
	PhoneNumberID = "1098765432"
	DisplayNumber = "5511400001234"
	AccessToken   = "sim-access-token"
	AppSecret     = "sim-app-secret"
	VerifyToken   = "sim-verify-token"
)

// Options shape one environment.
type Options struct {
	// Codecs the trunk offers and the PBX simulator accepts (default PCMU).
	Codecs []string
	// PBX overrides for the PBX simulator (Listen, Codecs and Logger are set here).
	PBX pbx.Config
	// PBXAddr points the trunk at an outside PBX (sipp, baresip) instead of the simulator.
	PBXAddr string
	// EarlyMedia is the trunk's early_media policy (ignore|answer).
	EarlyMedia string
	// AcceptDeadline and RingTimeout (defaults 30 s and 25 s).
	AcceptDeadline, RingTimeout time.Duration
	// MetaAcceptWindow, NoMediaStart, NoMediaMid override the simulator's timers.
	MetaAcceptWindow time.Duration
	// ConnectTimeout bounds ICE+DTLS with the caller (default 10 s).
	ConnectTimeout time.Duration
	// ConnectStaleAfter gates stale connect webhooks (default 60 s).
	ConnectStaleAfter time.Duration
	// TargetUser is the user part of the target URI (default "agent"; "-"
	// for a host-only target, which ponte fills with the dialled number).
	TargetUser string
	// Configure, when set, adjusts the gateway's config before it starts.
	Configure func(*config.Config)
	// Clock is the time of ponte's permission ledger and of the simulator's
	// permissions and limits (nil: the wall clock).
	Clock  func() time.Time
	Logger *slog.Logger
	// WrapStore wraps the store the record spool writes to (store fault tests, issue 8 item 5).
	WrapStore func(store.Store) store.Store
}

// Env is a running gateway with its simulators.
type Env struct {
	Config *config.Config
	Server *server.Server
	Meta   *wasim.Meta
	PBX    *pbx.PBX // nil when Options.PBXAddr is set

	cancel context.CancelFunc // ends the components' lifetime context
}

// Start brings everything up. Close it. ctx bounds the start only: the
// components live until Close.
func Start(ctx context.Context, o Options) (*Env, error) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 0 {
		return nil, context.DeadlineExceeded
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Codecs) == 0 {
		o.Codecs = []string{"PCMU"}
	}
	if o.TargetUser == "" {
		o.TargetUser = "agent"
	}
	e := &Env{}
	life, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	pub, err := FreeTCP()
	if err != nil {
		cancel()
		return nil, err
	}
	ctx = life
	e.Meta, err = wasim.Start(ctx, wasim.Config{
		WebhookURL:    "http://" + pub + "/webhook",
		AppSecret:     AppSecret,
		AccessToken:   AccessToken,
		PhoneNumberID: PhoneNumberID,
		DisplayNumber: DisplayNumber,
		AcceptWindow:  o.MetaAcceptWindow,
		Now:           o.Clock,
		Logger:        o.Logger.With("sim", "meta"),
	})
	if err != nil {
		return nil, fmt.Errorf("meta simulator: %w", err)
	}
	pbxAddr := o.PBXAddr
	if pbxAddr == "" {
		pc := o.PBX
		pc.Listen = "127.0.0.1:0"
		if len(pc.Codecs) == 0 {
			pc.Codecs = o.Codecs
		}
		pc.Logger = o.Logger.With("sim", "pbx")
		if pc.ExpectToneHz == 0 {
			pc.ExpectToneHz = 440 // what the simulated WhatsApp caller plays
		}
		e.PBX, err = pbx.Start(ctx, pc)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("pbx simulator: %w", err)
		}
		pbxAddr = e.PBX.Addr().String()
	}
	rtcPort, err := FreeUDP()
	if err != nil {
		e.Close()
		return nil, err
	}
	cfg := &config.Config{
		HTTP: config.HTTP{Public: pub, Admin: "127.0.0.1:0"},
		WhatsApp: config.WhatsApp{
			GraphURL: e.Meta.GraphURL(), AccessToken: AccessToken, AppSecret: AppSecret, VerifyToken: VerifyToken,
			AcceptDeadline:    config.Duration(or(o.AcceptDeadline, 30*time.Second)),
			ConnectStaleAfter: config.Duration(or(o.ConnectStaleAfter, 60*time.Second)),
			RequestTimeout:    config.Duration(3 * time.Second),
			Numbers:           []config.Number{{PhoneNumberID: PhoneNumberID, DisplayPhoneNumber: DisplayNumber, InboundRoute: "support"}},
		},
		Media: config.Media{BindIP: "127.0.0.1", WebRTCUDPPort: rtcPort, RTPIP: "127.0.0.1", RTPPorts: "40000-49999", ConnectTimeout: config.Duration(or(o.ConnectTimeout, 10*time.Second))},
		SIP: config.SIP{
			Listen: []string{"udp:127.0.0.1:0"},
			// The PBX may also place calls to WhatsApp users (from loopback).
			Trunks: []config.Trunk{{Name: "pbx", Address: pbxAddr, Transport: "udp", Codecs: o.Codecs, EarlyMedia: o.EarlyMedia,
				Inbound: &config.TrunkInbound{Allow: []string{"127.0.0.1"}}}},
		},
		Routes: map[string]*config.Route{"support": {Targets: []config.Target{{
			URI: targetURI(o.TargetUser, pbxAddr), Trunk: "pbx", RingTimeout: config.Duration(or(o.RingTimeout, 25*time.Second)),
		}}}},
		Store: config.Store{Driver: "memory"},
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	if err := cfg.Finalize(); err != nil {
		e.Close()
		return nil, err
	}
	e.Config = cfg
	e.Server, err = server.NewWithClock(cfg, o.Logger.With("node", "ponte"), o.Clock, o.WrapStore)
	if err != nil {
		e.Close()
		return nil, err
	}
	if err := e.Server.Start(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close stops the gateway and the simulators.
func (e *Env) Close() {
	if e.Server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.Server.Shutdown(ctx)
		cancel()
	}
	if e.PBX != nil {
		_ = e.PBX.Close()
	}
	if e.Meta != nil {
		_ = e.Meta.Close()
	}
	if e.cancel != nil {
		e.cancel()
	}
}

// SIPTarget is a Request-URI for user at ponte's listener of transport
// ("udp", "tcp" or "tls"), e.g. for the PBX simulator's Dial.
func (e *Env) SIPTarget(user, transport string) string {
	a := e.Server.UA.ListenAddr(transport)
	scheme := "sip"
	if transport == "tls" {
		scheme = "sips"
	}
	return scheme + ":" + user + "@" + a.String()
}

// WaitIdle waits until the gateway has no call in progress.
func (e *Env) WaitIdle(ctx context.Context) error {
	for e.Server.Gateway.Active() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// FreeTCP returns a loopback address whose TCP port was free a moment ago.
func FreeTCP() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreeUDP returns a loopback UDP port that was free a moment ago.
func FreeUDP() (int, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return int(netip.MustParseAddrPort(c.LocalAddr().String()).Port()), nil
}

func targetURI(user, host string) string {
	if user == "-" {
		return "sip:" + host
	}
	return "sip:" + user + "@" + host
}
