package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/ponte-gw/ponte/internal/bare"
)

// bareCmd measures the bare cost of a call's parts (package bare): the codecs alone, a bare
// pion leg + plain RTP leg relaying the same packets, and a bare transcoding relay, each in
// CPU-seconds per call-second of a `ponte bare-child` process. It exits non-zero if a call
// failed, a packet was lost or a tone was not heard.
func bareCmd(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	self, _ := os.Executable()
	bin := fs.String("ponte", self, "the ponte binary to run as `ponte bare-child`")
	calls := fs.Int("calls", 10, "concurrent calls")
	hold := fs.Duration("hold", 10*time.Second, "measured time with every call up")
	codec := fs.String("codec", "PCMU", "the plain RTP side's codec: PCMU, PCMA (transcoding) or opus (passthrough)")
	legs := fs.Bool("legs", true, "after a transcoding run, also measure the bare legs (passthrough child, same calls and hold)")
	childCPUs := fs.String("child-cpus", "", "pin the child to these CPUs (taskset -c list)")
	selfCPUs := fs.String("loadgen-cpus", "", "pin this process to these CPUs (taskset -c list)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	prof := fs.String("child-cpuprofile", "", "write the child's CPU profile here (go tool pprof); with -legs, the legs run overwrites it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var childArgs []string
	if *prof != "" {
		childArgs = []string{"-cpuprofile", *prof}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bare.Run(ctx, bare.Options{
		Binary: *bin, Calls: *calls, Hold: *hold, Codec: *codec, Legs: *legs,
		GatewayCPUs: *childCPUs, LoadgenCPUs: *selfCPUs, ChildArgs: childArgs,
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
	if !rep.OK() {
		return errors.New("bare: a call failed, a packet was lost or a tone was not heard (see the report)")
	}
	return nil
}

// bareChild is the hidden `ponte bare-child`: the relay `ponte bare` measures, driven over
// stdin and stdout.
func bareChild(args []string) error {
	fs := flag.NewFlagSet("bare-child", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "the single ICE UDP port")
	rtpIP := fs.String("rtp-ip", "127.0.0.1", "address of the plain RTP sockets")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// SIGINT from a terminal reaches the whole process group; the parent stops the child by
	// closing its stdin, so the child ignores the signal and lets the parent decide.
	signal.Ignore(syscall.SIGINT)
	return bare.Child(context.Background(), os.Stdin, os.Stdout, bare.ChildOptions{
		ListenUDP: *listen, RTPIP: *rtpIP, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}
