package rtpeng

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"go.uber.org/goleak"
)

// TestRunThroughRtpengine places two real calls through rtpengine: ICE and DTLS-SRTP with pion
// on one side, plain RTP on the other, 3 s of tones both ways, transcoded (PCMU <-> Opus) and
// passed through (Opus). It needs the rtpengine binary (Debian: rtpengine-daemon).
func TestRunThroughRtpengine(t *testing.T) {
	if _, err := exec.LookPath("rtpengine"); err != nil {
		t.Skip("rtpengine is not installed (apt-get install rtpengine-daemon); the comparison harness cannot run")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, codec := range []string{"PCMU", "opus"} {
		t.Run(codec, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			const hold = 3 * time.Second
			w := audio.StartStallWatch()
			rep, err := Run(ctx, Options{Calls: 2, Concurrency: 2, Rate: 0, Hold: hold, Codec: codec})
			stall := w.Stop()
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != 2 {
				t.Fatalf("calls ok %d, want 2: %+v", rep.OK, rep.Results)
			}
			if !raceDetector && rep.AudioOK != 2 {
				for _, c := range rep.Results {
					t.Logf("call %d: caller heard %+v pbx heard %+v to caller %+v to pbx %+v",
						c.Index, c.CallerHeard, c.PBXHeard, c.ToCaller, c.ToPBX)
				}
				// The harness's 20 ms clocks run in this process: if the machine held it back
				// for a frame or more, the missing audio is the machine's, not rtpengine's.
				if stall < audio.StallLimit {
					t.Fatalf("audio ok %d of 2 with no CPU stall (worst %v; rtpengine log: %s)", rep.AudioOK, stall, rep.GatewayLog)
				}
				t.Logf("audio ok %d of 2, excused by a CPU stall of %v: only packets and the stop are checked", rep.AudioOK, stall)
				checkFlowed(t, rep, int(hold/frameDur))
				return
			}
			if want := rep.Transcoding; want != (codec == "PCMU") {
				t.Fatalf("transcoding = %v for %s", rep.Transcoding, codec)
			}
			frames := int(hold / frameDur)
			if raceDetector {
				// Under -race the harness cannot keep real time (measured: 400 ms stalls on a
				// busy 2-core machine): only that media flowed both ways, and the stop.
				checkFlowed(t, rep, frames)
				return
			}
			for _, c := range rep.Results {
				t.Logf("call %d: setup %.1f ms, to caller %+v, to PBX %+v", c.Index, c.SetupMs, c.ToCaller, c.ToPBX)
				for name, d := range map[string]Direction{"to caller": c.ToCaller, "to PBX": c.ToPBX} {
					// The sender paces by the wall clock: about one frame per 20 ms of hold.
					if d.Sent < frames*9/10 || d.Sent > frames+2 {
						t.Errorf("call %d %s: sent %d packets in %v, want about %d", c.Index, name, d.Sent, hold, frames)
					}
					if d.Received < d.Sent*9/10 || d.Received > d.Sent {
						t.Errorf("call %d %s: received %d of %d", c.Index, name, d.Received, d.Sent)
					}
					// Loopback loses nothing: a gap inside the stream is rtpengine's. One
					// lost frame in a hundred is excused when this process stalled (the
					// harness then sends a burst, which rtpengine's transcoder may thin;
					// seen once in 10 runs under 15 % CPU steal); any other gap fails.
					if d.SeqLost != 0 || d.SeqExpected != d.Received {
						if stall >= audio.StallLimit && d.SeqLost*100 <= d.SeqExpected && d.SeqExpected-d.Received == d.SeqLost {
							t.Logf("call %d %s: %d of %d lost in sequence gaps, excused by a CPU stall of %v", c.Index, name, d.SeqLost, d.SeqExpected, stall)
						} else {
							t.Errorf("call %d %s: %d of %d lost in sequence gaps (worst CPU stall %v)", c.Index, name, d.SeqLost, d.SeqExpected, stall)
						}
					}
				}
				if c.SetupMs <= 0 {
					t.Errorf("call %d: setup %v ms", c.Index, c.SetupMs)
				}
			}
			if rep.MediaSeconds < 2*hold.Seconds()*0.99 {
				t.Errorf("media seconds %.2f, want >= %.2f", rep.MediaSeconds, 2*hold.Seconds()*0.99)
			}
			if rep.GatewayRSSPeakKiB <= 0 || rep.GatewayRSSPeakKiB < rep.GatewayRSSIdleKiB {
				t.Errorf("RSS idle %d peak %d KiB", rep.GatewayRSSIdleKiB, rep.GatewayRSSPeakKiB)
			}
			// rtpengine was stopped by its PID, cleanly.
			if rep.GatewayExit != "" || !processGone(rep.GatewayPID) {
				t.Fatalf("rtpengine %d not stopped cleanly: %q", rep.GatewayPID, rep.GatewayExit)
			}
		})
	}
}

// checkFlowed: media went both ways in every call, and rtpengine was stopped by its PID.
func checkFlowed(t *testing.T, rep *Report, frames int) {
	t.Helper()
	for _, c := range rep.Results {
		if c.ToCaller.Received < frames/2 || c.ToPBX.Received < frames/2 {
			t.Errorf("call %d: received %d to caller, %d to PBX, want >= %d each", c.Index, c.ToCaller.Received, c.ToPBX.Received, frames/2)
		}
	}
	if rep.GatewayExit != "" || !processGone(rep.GatewayPID) {
		t.Fatalf("rtpengine %d not stopped cleanly: %q", rep.GatewayPID, rep.GatewayExit)
	}
}

func TestRunOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"negative calls": {Calls: -1},
		"bad codec":      {Codec: "G729"},
		"settle >= hold": {Hold: time.Second, Settle: time.Second},
		"port range":     {PortMin: 65000, Concurrency: 100},
	} {
		if _, err := Run(context.Background(), o); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: err = %v, want ErrOptions", name, err)
		}
	}
	if _, err := Run(context.Background(), Options{Rtpengine: "/nonexistent/rtpengine"}); err == nil || errors.Is(err, ErrOptions) {
		t.Errorf("missing binary: err = %v", err)
	}
}
