// Command ponte bridges WhatsApp Business calls to SIP PBXs.
//
//	ponte serve -config ponte.yaml   run the gateway
//	ponte check-config ponte.yaml    validate a config file and exit
//	ponte demo                       a real call between the built-in simulators
//	ponte load -calls N ...          load through a ponte child process, measured from /proc
//	ponte version                    version and build info
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/internal/server"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

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
	case "version", "-version", "--version":
		printVersion()
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
  version                print version and build info
`)
}

func printVersion() {
	fmt.Printf("ponte %s\n", version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Printf("go %s\n", bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "CGO_ENABLED" || s.Key == "-tags" {
				fmt.Printf("%s %s\n", s.Key, s.Value)
			}
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

func newLogger(c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "ponte.yaml", "config file")
	drain := fs.Duration("drain-timeout", 60*time.Second, "on SIGTERM, how long calls in progress may go on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log).With("node", cfg.NodeID)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		_ = s.Shutdown(context.Background())
		return err
	}
	<-ctx.Done()
	log.Info("signal received: draining", "drain_timeout", drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := s.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}
