// Command ponte bridges WhatsApp Business calls to SIP PBXs.
//
//	ponte serve -config ponte.yaml   run the gateway
//	ponte check-config ponte.yaml    validate a config file and exit
//	ponte demo                       a real call between the built-in simulators
//	ponte load -calls N ...          load through a ponte child process, measured from /proc
//	ponte load-rtpengine -calls N ...  the same load through rtpengine, for comparison
//	ponte bare -calls N ...          the bare cost of a call's parts (codecs, pion + RTP legs, a bare relay)
//	ponte healthcheck [-ready]       exit 0 when the admin listener says healthy (container HEALTHCHECK)
//	ponte version                    version and build info
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/internal/logmask"
	"github.com/ponte-gw/ponte/internal/server"
)

// version is set with -ldflags "-X main.version=..."; revision too where
// the build has no VCS information (a container build without .git).
var (
	version  = "dev"
	revision = ""
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "check-config":
		err = checkConfig(os.Args[2:])
	case "demo":
		err = demo(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "load-rtpengine":
		err = loadRtpengine(os.Args[2:])
	case "bare":
		err = bareCmd(os.Args[2:])
	case "bare-child":
		err = bareChild(os.Args[2:])
	case "healthcheck":
		err = healthcheck(os.Args[2:])
	case "version", "-version", "--version":
		printVersion(os.Stdout)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "ponte: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ponte:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: ponte <command> [flags]

commands:
  serve -config FILE     run the gateway
  check-config FILE      validate a config file (exit 1 with line-precise errors)
  demo                   place a real call through the gateway between the built-in
                         WhatsApp and PBX simulators on loopback; exit 0 only if it all worked
  load [flags]           run calls through a ponte child process with the simulators and
                         report setup latency, audio checks, gateway CPU and memory (-h for flags)
  load-rtpengine [flags] the same load through rtpengine 10.5 (userspace, a child process)
                         for the side-by-side comparison (test/load/compare-rtpengine.sh)
  bare [flags]           measure the bare cost of a call's parts in a child process: codecs
                         alone, a pion leg + RTP leg, a bare transcoding relay (-h for flags)
  healthcheck [-ready]   GET /healthz (or /readyz) on the config's admin listener; exit 0 on 200
  version                print version and build info
`)
}

// printVersion prints the version and what runtime/debug.ReadBuildInfo
// knows of the build: Go version, module, VCS revision, time and dirty flag,
// cgo and build tags.
func printVersion(w io.Writer) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintf(w, "ponte %s\n(no build info)\n", version)
		return
	}
	writeVersion(w, version, revision, bi)
}

func writeVersion(w io.Writer, version, revision string, bi *debug.BuildInfo) {
	fmt.Fprintf(w, "ponte %s\n", version)
	fmt.Fprintf(w, "go: %s\n", bi.GoVersion)
	if bi.Main.Path != "" {
		fmt.Fprintf(w, "module: %s %s\n", bi.Main.Path, bi.Main.Version)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		rev = revision
	}
	if rev == "" {
		rev = "unknown (built outside a VCS checkout, or with -buildvcs=false)"
	}
	fmt.Fprintf(w, "revision: %s\n", rev)
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(w, "revision time: %s\n", t)
	}
	if m, ok := settings["vcs.modified"]; ok {
		fmt.Fprintf(w, "dirty: %s\n", m)
	}
	for _, k := range []string{"CGO_ENABLED", "-tags", "GOOS", "GOARCH"} {
		if v, ok := settings[k]; ok {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
}

func checkConfig(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: ponte check-config FILE")
	}
	if _, err := config.Load(args[0]); err != nil {
		return err
	}
	fmt.Printf("%s: ok\n", args[0])
	return nil
}

// newLogger builds the process logger; above debug level phone numbers are
// masked (logmask: "+55119****4321").
func newLogger(c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := logmask.HandlerOptions(lvl)
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "ponte.yaml", "config file")
	drain := fs.Duration("drain-timeout", 0, "on SIGTERM, how long calls in progress may go on (default: the config's drain.timeout, 5m)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *drain > 0 {
		cfg.Drain.Timeout = config.Duration(*drain)
	}
	log := newLogger(cfg.Log).With("node", cfg.NodeID)
	server.Version, server.Revision = version, revision
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Start(context.Background()); err != nil {
		_ = s.Shutdown(context.Background())
		return err
	}
	// SIGHUP reloads the SIP TLS certificate now (it is also reloaded within
	// 10 s of its files changing): renewals need no restart.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupCtx, hupStop := context.WithCancel(context.Background())
	defer hupStop()
	go func() {
		for {
			select {
			case <-hup:
				if err := s.UA.ReloadCertificates(); err != nil {
					log.Error("tls certificate reload failed; the old one stays", "err", err)
				} else {
					log.Info("tls certificate reloaded")
				}
			case <-hupCtx.Done():
				return
			}
		}
	}()
	sig := <-sigs
	return stopServer(s, log, sig, sigs, cfg.Drain.Timeout.D())
}

// shutdownGrace bounds ending the calls left after the drain: each sends
// terminate and BYE, bounded by their own request timeouts.
const shutdownGrace = 30 * time.Second

// stopServer drains (issue 6 item 4): calls in progress go on for up to
// timeout while new ones are refused, then what is left is ended cleanly and
// recorded as "shutdown". A second signal cuts the drain short (the calls are
// still ended cleanly). A drain that ran out of time is a normal stop: exit 0.
func stopServer(s *server.Server, log *slog.Logger, sig os.Signal, sigs <-chan os.Signal, timeout time.Duration) error {
	log.Info("signal received: draining", "signal", sig.String(), "drain_timeout", timeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			log.Warn("second signal: ending the calls in progress now", "signal", sig.String())
			cancel()
		case <-dctx.Done():
		}
	}()
	if err := s.Drain(dctx); err != nil {
		log.Info("drain time is up: ending the calls in progress", "active_calls", s.Gateway.Active())
	}
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}
