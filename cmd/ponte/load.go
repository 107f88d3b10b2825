package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ponte-gw/ponte/internal/loadgen"
)

// load runs the gateway as a child process against the built-in simulators and places calls
// through it (package loadgen). It exits non-zero if any call failed or any audio check did.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	self, _ := os.Executable()
	ponte := fs.String("ponte", self, "the ponte binary to run as the gateway (`ponte serve`)")
	calls := fs.Int("calls", 10, "total calls (with -duration: a limit only if given)")
	duration := fs.Duration("duration", 0, "place calls for this long at -rate, up to -concurrency at once (0: -calls decides)")
	media := fs.Bool("media", true, "send and check audio; false: signalling only (real ICE/DTLS, no audio sent, none checked)")
	gwCPUs := fs.String("gateway-cpus", "", "pin the gateway to these CPUs (taskset -c syntax, e.g. 0)")
	lgCPUs := fs.String("loadgen-cpus", "", "pin the load generator to these CPUs (e.g. 1)")
	conc := fs.Int("concurrency", 1, "most calls in progress at once")
	rate := fs.Float64("rate", 1, "new calls per second (0: as fast as -concurrency allows)")
	hold := fs.Duration("hold", 5*time.Second, "talk time of each call, from accept to hang-up")
	codec := fs.String("codec", "PCMU", "the PBX's codec: PCMU, PCMA or opus (passthrough)")
	ring := fs.Duration("ring", time.Second, "how long the PBX rings before answering (0: at once, before ICE/DTLS may have finished)")
	settle := fs.Duration("settle", 0, "start of each hold left out of the audio check (default min(500ms, hold/2))")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	dir := fs.String("dir", "", "keep the gateway config and log here (default: a temp dir, kept only on failure)")
	logLevel := fs.String("gateway-log", "warn", "the gateway's log level")
	verbose := fs.Bool("v", false, "log the simulators on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *duration > 0 {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "calls" })
		if !set {
			*calls = 0 // no limit: the duration decides
		}
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := loadgen.Run(ctx, loadgen.Options{
		Ponte: *ponte, Calls: *calls, Concurrency: *conc, Rate: *rate, Hold: *hold, Codec: *codec,
		Ring: ringOpt(*ring), Settle: *settle, Dir: *dir, LogLevel: *logLevel, Logger: log,
		Duration: *duration, NoMedia: !*media, GatewayCPUs: *gwCPUs, LoadgenCPUs: *lgCPUs,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteTable(os.Stdout)
	}
	if rep.Failed > 0 || (rep.Media && rep.AudioOK < rep.Calls) {
		bad := 0
		if rep.Media {
			bad = rep.Calls - rep.Failed - rep.AudioOK
		}
		return fmt.Errorf("load: %d of %d calls failed, %d failed the audio check", rep.Failed, rep.Calls, bad)
	}
	return nil
}

// ringOpt maps the -ring flag to loadgen.Options.Ring, where 0 means the default.
func ringOpt(d time.Duration) time.Duration {
	if d == 0 {
		return -1 // answer at once
	}
	return d
}
