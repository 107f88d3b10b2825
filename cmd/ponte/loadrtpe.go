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

	"github.com/ponte-gw/ponte/internal/rtpeng"
)

// loadRtpengine runs the same media load as `ponte load` through rtpengine (userspace) as a
// child process, for the side-by-side comparison (test/load/compare-rtpengine.sh). It exits
// non-zero if any call failed or any audio check did.
func loadRtpengine(args []string) error {
	fs := flag.NewFlagSet("load-rtpengine", flag.ContinueOnError)
	bin := fs.String("rtpengine", "rtpengine", "the rtpengine binary (Debian package rtpengine-daemon)")
	calls := fs.Int("calls", 10, "total calls")
	conc := fs.Int("concurrency", 1, "most calls in progress at once")
	rate := fs.Float64("rate", 1, "new calls per second (0: as fast as -concurrency allows)")
	hold := fs.Duration("hold", 5*time.Second, "media time of each call")
	codec := fs.String("codec", "PCMU", "the plain RTP side's codec: PCMU or PCMA (transcoded to WebRTC Opus) or opus (passthrough)")
	settle := fs.Duration("settle", 0, "start of each hold left out of the audio check (default min(500ms, hold/2))")
	portMin := fs.Int("port-min", 30000, "first port of rtpengine's media port range")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	dir := fs.String("dir", "", "keep rtpengine's log here (default: a temp dir, kept only on failure)")
	verbose := fs.Bool("v", false, "log the harness's WebRTC peers on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := rtpeng.Run(ctx, rtpeng.Options{
		Rtpengine: *bin, Calls: *calls, Concurrency: *conc, Rate: *rate, Hold: *hold, Codec: *codec,
		Settle: *settle, PortMin: *portMin, Dir: *dir, Logger: log,
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
	if rep.Failed > 0 || rep.AudioOK < rep.Calls {
		return fmt.Errorf("load-rtpengine: %d of %d calls failed, %d failed the audio check", rep.Failed, rep.Calls, rep.Calls-rep.Failed-rep.AudioOK)
	}
	return nil
}
