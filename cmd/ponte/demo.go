package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// demo places one real call through the gateway between the built-in
// simulators on loopback and says what happened. It exits non-zero unless
// every step worked.
func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	codec := fs.String("codec", "PCMU", "the PBX's codec: PCMU, PCMA or opus")
	talk := fs.Duration("talk", 3*time.Second, "how long both sides play their tones")
	verbose := fs.Bool("v", false, "log the gateway and the simulators")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	fmt.Printf("ponte demo: WhatsApp simulator <-> ponte <-> PBX simulator (%s), all on 127.0.0.1\n", *codec)
	env, err := scenario.Start(ctx, scenario.Options{Codecs: []string{*codec}, Logger: log})
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Printf("  gateway webhook %s, Graph API simulator %s\n", env.Server.WebhookURL(), env.Meta.GraphURL())

	var failures []string
	check := func(ok bool, format string, a ...any) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			failures = append(failures, fmt.Sprintf(format, a...))
		}
		fmt.Printf("  [%s] %s\n", mark, fmt.Sprintf(format, a...))
	}

	start := time.Now()
	caller, err := env.Meta.Call(ctx, wasim.CallOptions{From: "5511987654321", Name: "Maria Demo", ToneHz: 440, ExpectHz: 1000})
	if err != nil {
		return err
	}
	pbxCall, err := env.PBX.NextCall(ctx)
	if err != nil {
		return fmt.Errorf("the PBX was never rung: %w", err)
	}
	inv := pbxCall.Invite()
	check(inv.From() != nil && strings.Contains(inv.From().Address.User, "5511987654321"), "PBX rung: From %s, X-WA-Call-Id %s", fromOf(inv.From()), hdr(inv, "X-WA-Call-Id"))
	if err := caller.WaitAccepted(ctx); err != nil {
		return fmt.Errorf("the call was never accepted: %w", err)
	}
	setup := caller.AcceptRespondedAt().Sub(start)
	check(true, "call connected in %d ms (webhook -> accept 200), PBX ACKed %d ms before accept was answered",
		setup.Milliseconds(), caller.AcceptRespondedAt().Sub(pbxCall.AckedAt()).Milliseconds())

	time.Sleep(*talk)
	now := time.Now()
	heard := caller.Heard().Report(now.Add(-*talk+time.Second/2), now)
	check(heard.ToneRatio >= 0.98, "caller hears the PBX's 1000 Hz tone in %.1f%% of 20 ms windows (mean %.1f dBFS, longest gap %v)", heard.ToneRatio*100, heard.MeanDBFS, heard.MaxGap)
	pbxHeard := pbxCall.Received().Report(now.Add(-*talk+time.Second/2), now)
	check(pbxHeard.ToneRatio >= 0.98, "PBX hears the caller's 440 Hz tone in %.1f%% of 20 ms windows (mean %.1f dBFS, longest gap %v)", pbxHeard.ToneRatio*100, pbxHeard.MeanDBFS, pbxHeard.MaxGap)

	caller.SendDTMF("1123#", 100*time.Millisecond, 100*time.Millisecond)
	pbxCall.SendDTMF("42", 100*time.Millisecond, 100*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	pd := pbxDigits(pbxCall.Digits())
	check(pd == "1123#", "DTMF caller -> PBX: sent 1123#, PBX got %q", pd)
	cd := callerDigits(caller.Digits())
	check(cd == "42", "DTMF PBX -> caller: sent 42, caller got %q", cd)

	if err := caller.Hangup(ctx); err != nil {
		return err
	}
	select {
	case <-pbxCall.Ended():
		check(pbxCall.EndedBy() == "bye" && strings.Contains(pbxCall.ByeReason(), "cause=16"), "caller hung up: PBX got a BYE (Reason: %s)", pbxCall.ByeReason())
	case <-time.After(5 * time.Second):
		check(false, "caller hung up: PBX never got a BYE")
	}
	if err := env.WaitIdle(ctx); err != nil {
		return err
	}

	// The other direction: an agent on the PBX calls a WhatsApp user who
	// gave the business call permission.
	fmt.Println("  agent 2001 on the PBX dials +5511987654321 through ponte (business-initiated)")
	env.Meta.SetUser(wasim.UserOptions{WaID: "5511987654321", Permission: wasim.PermissionTemporary,
		AnswerAfter: time.Second, ToneHz: 440, ExpectHz: 1000})
	target := "sip:+5511987654321@" + env.Server.UA.ListenAddr("udp").String()
	agent, err := env.PBX.Dial(ctx, pbx.DialOptions{Target: target, From: "2001"})
	if err != nil {
		return fmt.Errorf("the agent's call failed: %w", err)
	}
	user, err := env.Meta.WaitCallee(ctx)
	if err != nil {
		return err
	}
	rang := false
	for _, p := range agent.Provisionals() {
		rang = rang || p.Code == 180
	}
	check(rang, "agent heard 180 Ringing while the user's phone rang; 200 OK when the user answered")
	time.Sleep(*talk)
	now = time.Now()
	uh := user.Heard().Report(now.Add(-*talk+time.Second/2), now)
	check(uh.ToneRatio >= 0.98, "WhatsApp user hears the agent's 1000 Hz tone in %.1f%% of 20 ms windows", uh.ToneRatio*100)
	ah := agent.Received().Report(now.Add(-*talk+time.Second/2), now)
	check(ah.ToneRatio >= 0.98, "agent hears the user's 440 Hz tone in %.1f%% of 20 ms windows", ah.ToneRatio*100)
	if err := agent.Hangup(ctx); err != nil {
		return err
	}
	select {
	case <-user.Ended():
		check(true, "agent hung up: ponte sent terminate to the Graph API (%s)", user.EndReason())
	case <-time.After(5 * time.Second):
		check(false, "agent hung up: the WhatsApp call never ended")
	}
	if err := env.WaitIdle(ctx); err != nil {
		return err
	}
	for _, r := range env.Server.Gateway.Records() {
		fmt.Printf("  record: %s\n", r)
	}
	if len(failures) > 0 {
		return errors.New("demo failed: " + strings.Join(failures, "; "))
	}
	fmt.Println("demo: all checks passed")
	return nil
}

func pbxDigits(ds []pbx.ReceivedDigit) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteRune(d.Rune)
	}
	return b.String()
}

func callerDigits(ds []wasim.ReceivedDigit) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteRune(d.Rune)
	}
	return b.String()
}

func fromOf(h *sip.FromHeader) string {
	if h == nil {
		return "(none)"
	}
	return h.Value()
}

func hdr(r *sip.Request, name string) string {
	if h := r.GetHeader(name); h != nil {
		return h.Value()
	}
	return "(none)"
}
