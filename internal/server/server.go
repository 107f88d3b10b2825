// Package server wires ponte's packages together from a config: the two HTTP
// listeners, the webhook, the Graph client, the WebRTC engine, the SIP UA and
// the gateway. cmd/ponte runs it; end-to-end tests and `ponte demo` start it
// in-process on loopback.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ponte-gw/ponte/api"
	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/webrtc"
	"github.com/ponte-gw/ponte/whatsapp"
)

// Server is a running ponte.
type Server struct {
	cfg *config.Config
	log *slog.Logger

	Webhook *whatsapp.Webhook
	Graph   *whatsapp.Client
	Gateway *gateway.Gateway
	UA      *sip.UA
	RTC     *webrtc.Engine
	Metrics *metrics.Metrics // Metrics.Registry is what /metrics serves
	CPU     *metrics.CPULoad // host CPU load for admission.max_cpu and ponte_cpu_load

	// StoreCheck, when set before Start, is pinged by /readyz ("store
	// writable"); store.Store implements it. nil: no store check.
	StoreCheck Pinger
	Store      *store.SQLite
	// Spool takes the gateway's call-record writes and queues them while the
	// store is unavailable, so calls go on (issue 8); its Close flushes the
	// queue and closes Store. /readyz still reports the store itself.
	Spool *store.Spool

	stopEvents context.CancelFunc // ends the event deliverer
	eventsDone chan struct{}

	// Clock is the permission ledger's time (wall clock unless NewWithClock
	// was given one: tests move it across Meta's 24 h and 7-day windows).
	Clock      func() time.Time
	registrars []*sip.Registrar

	public, admin     *http.Server
	publicLn, adminLn net.Listener
	draining          atomic.Bool
}

// Pinger checks a dependency /readyz needs (the store: a write).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Version and Revision are reported by ponte_build_info; cmd/ponte sets
// them from its -ldflags (Revision only matters where the binary carries no
// VCS information).
var (
	Version  = "dev"
	Revision = ""
)

// New builds every component; nothing listens until Start.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	return NewWithClock(cfg, log, nil)
}

// NewWithClock is New with the permission ledger on clock (nil: time.Now).
// wrapStore (issue 8 item 5 fault seam, tests only): when given and non-nil,
// it wraps the store the record Spool writes to, e.g. with one that fails on
// demand; reads, /readyz and the API still use the real store.
func NewWithClock(cfg *config.Config, log *slog.Logger, clock func() time.Time, wrapStore ...func(store.Store) store.Store) (*Server, error) {
	if clock == nil {
		clock = time.Now
	}
	s := &Server{cfg: cfg, log: log, Clock: clock}
	var routes, trunks []string
	for name := range cfg.Routes {
		routes = append(routes, name)
	}
	for _, t := range cfg.SIP.Trunks {
		trunks = append(trunks, t.Name)
	}
	s.Metrics = metrics.New(metrics.Options{Version: Version, Revision: Revision, Routes: routes, Trunks: trunks})
	s.Metrics.SetLimits(cfg.Admission.MaxCalls, cfg.Admission.MaxCPU)
	if cfg.WhatsApp.InsecureSkipSignature {
		log.Warn("SECURITY: whatsapp.insecure_skip_signature is on: webhook signatures are NOT checked. Development only.")
	}
	s.Graph = whatsapp.NewClient(whatsapp.ClientConfig{
		BaseURL:     cfg.WhatsApp.GraphURL,
		AccessToken: cfg.WhatsApp.AccessToken,
		Timeout:     cfg.WhatsApp.RequestTimeout.D(),
		Retries:     cfg.WhatsApp.Retries,
		Logger:      log,
		Observer:    s.Metrics,
	})
	var err error
	s.RTC, err = webrtc.NewEngine(webrtc.Config{
		ListenUDP:       net.JoinHostPort(cfg.Media.BindIP, strconv.Itoa(cfg.Media.WebRTCUDPPort)),
		PublicIPs:       nonEmpty(cfg.Media.PublicIP),
		IncludeLoopback: isLoopback(cfg.Media.BindIP) || isLoopback(cfg.Media.PublicIP),
		ConnectTimeout:  cfg.Media.ConnectTimeout.D(),
		SocketBuffer:    cfg.Media.SocketBuffer,
		Logger:          log,

		DisconnectedTimeout: cfg.Media.ICEDisconnectedTimeout.D(),
		FailedTimeout:       cfg.Media.ICEFailedTimeout.D(),
	})
	if err != nil {
		return nil, fmt.Errorf("webrtc: %w", err)
	}
	lo, hi, _ := config.PortRange(cfg.Media.RTPPorts)
	rtpHost := cfg.Media.RTPIP
	if rtpHost == "" {
		rtpHost = firstListenHost(cfg.SIP.Listen)
	}
	advertise := cfg.SIP.AdvertiseHost
	if advertise == "" {
		advertise = rtpHost
	}
	s.UA, err = sip.NewUA(sip.Config{
		Listen: cfg.SIP.Listen, AdvertiseHost: advertise, RTPHost: rtpHost,
		RTPPortMin: lo, RTPPortMax: hi, UserAgent: cfg.SIP.UserAgent, Logger: log,
		TLSCertFile: cfg.SIP.TLSCert, TLSKeyFile: cfg.SIP.TLSKey,
	})
	if err != nil {
		s.RTC.Close()
		return nil, fmt.Errorf("sip: %w", err)
	}
	// The call records: calls a previous run left open are closed as
	// interrupted before any new call starts.
	so, err := store.OptionsFromConfig(cfg)
	if err == nil {
		so.Logger = log
		s.Store, err = store.Open(context.Background(), so)
	}
	if err != nil {
		s.UA.Close()
		s.RTC.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if n, err := s.Store.CloseInterrupted(context.Background(), time.Now()); err != nil {
		log.Error("closing interrupted call records failed", "err", err)
	} else if n > 0 {
		log.Warn("calls cut by the last stop recorded as interrupted", "calls", n)
	}
	s.StoreCheck = s.Store
	var spoolInner store.Store = s.Store
	if len(wrapStore) > 0 && wrapStore[0] != nil { // fault seam, see NewWithClock
		spoolInner = wrapStore[0](s.Store)
	}
	s.Spool = store.NewSpool(spoolInner, store.SpoolOptions{Logger: log})
	s.Metrics.WatchStoreSpool(s.Spool.Stats)
	s.CPU = metrics.NewCPULoad(cfg.Admission.CPUWindow.D(), time.Second, nil)
	s.Metrics.WatchCPU(s.CPU.Load)
	s.Gateway = gateway.New(gateway.Deps{Config: cfg, Graph: s.Graph, WebRTC: s.RTC, SIP: s.UA, Logger: log,
		Observer: s.Metrics, CPU: s.CPU, Store: s.Spool, Permits: s.newPermits(),
		Live: s.Store}) // CRASH: live rows for crash recovery (recover.go)
	// PBX-originated calls (business-initiated): authenticated by package
	// sip, admitted and placed by placeCall (outbound.go).
	if err := s.startSIPServer(); err != nil {
		s.UA.Close()
		s.RTC.Close()
		s.CPU.Close()
		s.Spool.Close()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	s.Webhook = whatsapp.NewWebhook(whatsapp.WebhookConfig{
		VerifyToken:           cfg.WhatsApp.VerifyToken,
		AppSecret:             cfg.WhatsApp.AppSecret,
		MaxBodyBytes:          cfg.WhatsApp.MaxBodyBytes,
		StaleAfter:            cfg.WhatsApp.ConnectStaleAfter.D(),
		InsecureSkipSignature: cfg.WhatsApp.InsecureSkipSignature,
		Logger:                log,
	}, s.Gateway.HandleEvent)
	s.Metrics.WatchSIPInbound(func() map[string]uint64 {
		st := s.UA.ServerStats()
		return map[string]uint64{"accepted": st.Accepted, "challenged": st.Challenged, "auth_failed": st.AuthFailed,
			"forbidden": st.Forbidden, "dropped": st.Dropped, "rate_limited": st.RateLimited,
			"invite_limited": st.InviteLimited, "scanner": st.Scanners, "stranger": st.Strangers,
			"banned": st.Banned, "ban_dropped": st.BanDropped, "banned_now": st.BannedNow}
	})
	s.Metrics.WatchPanics(func() map[string]uint64 {
		return map[string]uint64{"media": gateway.MediaPanics(), "sip": s.UA.ServerStats().Panics,
			"webhook": s.Webhook.Panics()}
	})
	s.Metrics.WatchWebhook(func() (received, rejected map[string]uint64) {
		st := s.Webhook.Stats()
		return st.Received, st.Rejected
	})
	return s, nil
}

// Start binds the SIP listeners and both HTTP listeners.
func (s *Server) Start(ctx context.Context) error {
	if err := s.UA.Start(ctx); err != nil {
		return fmt.Errorf("sip: %w", err)
	}
	s.recoverLive(ctx) // CRASH: BYE + terminate for calls a crash left, before the webhook listens (recover.go)
	if err := s.startRegistrations(ctx); err != nil {
		return err
	}
	pub := http.NewServeMux()
	pub.Handle("/webhook", s.Webhook)
	adm := http.NewServeMux()
	adm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	adm.HandleFunc("/readyz", s.serveReady)
	adm.Handle("/metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{}))
	if s.cfg.HTTP.Pprof {
		adm.HandleFunc("/debug/pprof/", pprof.Index)
		adm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		adm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		adm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		adm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	adm.Handle("/api/", api.New(api.Config{Token: s.cfg.API.Token, Calls: s.Store, Logger: s.log, Outbound: s.Gateway}))
	if ev := s.cfg.Events; ev.URL != "" {
		d, err := api.NewDeliverer(api.DelivererConfig{
			URL: ev.URL, Secret: ev.Secret, Outbox: s.Store, Timeout: ev.Timeout.D(),
			MaxBackoff: ev.MaxBackoff.D(), MaxAge: ev.MaxAge.D(), Logger: s.log,
		})
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		ectx, cancel := context.WithCancel(context.Background())
		s.stopEvents, s.eventsDone = cancel, make(chan struct{})
		go func() { defer close(s.eventsDone); _ = d.Run(ectx) }()
	}

	var err error
	if s.publicLn, err = net.Listen("tcp", s.cfg.HTTP.Public); err != nil {
		return fmt.Errorf("http.public: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", s.cfg.HTTP.Admin); err != nil {
		s.publicLn.Close()
		return fmt.Errorf("http.admin: %w", err)
	}
	s.public = &http.Server{Handler: pub, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	s.admin = &http.Server{Handler: adm, ReadHeaderTimeout: 10 * time.Second}
	go s.serve(s.public, s.publicLn, s.cfg.HTTP.TLSCert, s.cfg.HTTP.TLSKey)
	go s.serve(s.admin, s.adminLn, "", "")
	s.log.Info("ponte listening", "webhook", "http://"+s.publicLn.Addr().String()+"/webhook",
		"admin", s.adminLn.Addr().String(), "webrtc_udp", s.RTC.LocalAddr().String())
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener, cert, key string) {
	var err error
	if cert != "" {
		err = srv.ServeTLS(ln, cert, key)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("http server stopped", "err", err)
	}
}

// WebhookURL is where Meta (or the simulator) posts.
func (s *Server) WebhookURL() string { return "http://" + s.publicLn.Addr().String() + "/webhook" }

// AdminURL is the admin listener's base URL.
func (s *Server) AdminURL() string { return "http://" + s.adminLn.Addr().String() }

// Shutdown stops ponte: /readyz fails, new calls are refused, calls still in
// progress are ended at once, cleanly (terminate toward Meta, BYE toward the
// PBX, recorded as "shutdown"), and waited for until ctx expires; then every
// listener closes. Call Drain first for a graceful stop.
func (s *Server) Shutdown(ctx context.Context) error {
	s.setDraining()
	err := s.Gateway.Close(ctx)
	s.Webhook.Close()
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.public != nil {
		_ = s.public.Shutdown(hctx)
		_ = s.admin.Shutdown(hctx)
	}
	s.stopRegistrations(hctx)
	_ = s.UA.Close()
	_ = s.RTC.Close()
	s.CPU.Close()
	if s.stopEvents != nil {
		s.stopEvents()
		<-s.eventsDone
	}
	if cerr := s.Spool.Close(); cerr != nil && err == nil { // flushes, then closes the store
		err = cerr
	}
	return err
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isLoopback(ip string) bool { return strings.HasPrefix(ip, "127.") || ip == "::1" }

func firstListenHost(listen []string) string {
	for _, l := range listen {
		_, addr, _ := strings.Cut(l, ":")
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "0.0.0.0" && host != "::" {
			return host
		}
	}
	return "127.0.0.1"
}
