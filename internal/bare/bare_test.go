package bare

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary act as `ponte bare-child`: Run re-executes Options.Binary
// with "bare-child" as its first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "bare-child" {
		if err := Child(context.Background(), os.Stdin, os.Stdout, ChildOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, "bare-child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunEndToEnd runs 2 calls for 2 s through a real child process, both modes: packets must
// flow both ways, be counted, and carry each side's tone (decoded and analysed at the far end).
func TestRunEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		codec string
		legs  bool
	}{
		{"PCMU", true},
		{"PCMA", false},
		{"opus", false},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			rep, err := Run(context.Background(), Options{
				Binary: os.Args[0], Calls: 2, Hold: 2 * time.Second, Codec: tc.codec, Legs: tc.legs, CodecSeconds: 4,
			})
			if err != nil {
				t.Fatal(err)
			}
			runs := []*ChildRun{rep.Relay}
			if tc.legs {
				if rep.Legs == nil || rep.Legs.Mode != "passthrough" || rep.Legs.Codec != "opus" {
					t.Fatalf("legs run missing or wrong: %+v", rep.Legs)
				}
				runs = append(runs, rep.Legs)
			}
			wantMode := "transcoding"
			if tc.codec == "opus" {
				wantMode = "passthrough"
			}
			if rep.Relay.Mode != wantMode || rep.Relay.Codec != tc.codec {
				t.Errorf("relay mode %s codec %s, want %s %s", rep.Relay.Mode, rep.Relay.Codec, wantMode, tc.codec)
			}
			for _, r := range runs {
				checkRun(t, r)
			}
			if tc.codec == "opus" {
				if rep.CodecOnly != nil || rep.Legs != nil {
					t.Errorf("passthrough run measured codec or legs: %+v %+v", rep.CodecOnly, rep.Legs)
				}
			} else {
				c := rep.CodecOnly
				if c == nil || c.CallSeconds != 4 || c.CPUSeconds <= 0 || c.ToPBXUsPerFrame <= 0 || c.ToWAUsPerFrame <= 0 {
					t.Errorf("codec-only cost not measured: %+v", c)
				}
			}
			if tc.legs && rep.BarePartsCPUPerCallSecond != rep.CodecOnly.CPUPerCallSecond+rep.Legs.CPUPerCallSecond {
				t.Errorf("bare parts %v != codec %v + legs %v", rep.BarePartsCPUPerCallSecond, rep.CodecOnly.CPUPerCallSecond, rep.Legs.CPUPerCallSecond)
			}
			var b bytes.Buffer
			rep.WriteTable(&b)
			for _, want := range []string{"ponte bare: 2 calls", "to PBX", "PBX heard 440 Hz"} {
				if !strings.Contains(b.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, b.String())
				}
			}
			t.Logf("\n%s", b.String())
		})
	}
}

func checkRun(t *testing.T, r *ChildRun) {
	t.Helper()
	if r.CallsOK != 2 || r.CallsFailed != 0 {
		t.Fatalf("%s: calls ok %d failed %d: %v", r.Mode, r.CallsOK, r.CallsFailed, r.Errors)
	}
	// 2 calls x (settle 0.5 s + hold 2 s) at 50 packets/s is 250 each way; a starved test
	// machine sends fewer (SentPercent), never as few as 50.
	for name, d := range map[string]Direction{"to PBX": r.ToPBX, "to WA": r.ToWA} {
		if d.Sent < 50 || d.Received > d.Sent || d.Lost != d.Sent-d.Received {
			t.Errorf("%s %s: %+v", r.Mode, name, d)
		}
		// Loopback does not lose packets; a stalled test machine may drop a few.
		if float64(d.Received) < 0.95*float64(d.Sent) {
			t.Errorf("%s %s: %d of %d packets arrived", r.Mode, name, d.Received, d.Sent)
		}
	}
	if r.SentPercent <= 0 || r.SentPercent > 101 {
		t.Errorf("%s: senders sent %.1f %% of the frames due", r.Mode, r.SentPercent)
	}
	// The tone in what arrived, decoded at each end. Whether enough of it arrived in time
	// (PBXHeardOK, CallerHeardOK) depends on the machine's load, so it is reported, not tested:
	// the senders replay the frames in order, so a late frame is still the right audio.
	if r.PBXToneRatioMin < minToneRatio || r.CallerToneRatioMin < minToneRatio {
		t.Errorf("%s: worst call: PBX heard 440 Hz in %.3f of its windows, caller heard 1000 Hz in %.3f, want >= %.2f",
			r.Mode, r.PBXToneRatioMin, r.CallerToneRatioMin, minToneRatio)
	}
	if c := r.Child; c == nil {
		t.Errorf("%s: no child counters", r.Mode)
	} else {
		// What the parent received was relayed by the child, which read at least as much.
		if c.Calls != 2 || c.ToPBXOut < r.ToPBX.Received || c.ToWAOut < r.ToWA.Received || c.ToPBXIn < c.ToPBXOut || c.ToWAIn < c.ToWAOut {
			t.Errorf("%s: child counters %+v against to PBX %+v, to WA %+v", r.Mode, c, r.ToPBX, r.ToWA)
		}
	}
	if r.MeasuredSeconds < 2 || r.CallSeconds != 2*r.MeasuredSeconds || r.ChildRSSPeakKiB < r.ChildRSSIdleKiB || r.ChildRSSIdleKiB <= 0 {
		t.Errorf("%s: measurement %+v", r.Mode, r)
	}
	if r.ChildExit != "" {
		t.Errorf("%s: child exit: %s", r.Mode, r.ChildExit)
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in        Options
		wantErr   bool
		wantCodec string
		wantSecs  float64
	}{
		{Options{Binary: "x"}, false, "PCMU", 60}, // 10 calls x 10 s, capped at 60
		{Options{Binary: "x", Calls: 2, Hold: time.Second, Codec: "pcma"}, false, "PCMA", 2},
		{Options{Binary: "x", Codec: "OPUS"}, false, "opus", 60},
		{Options{Binary: "x", Codec: "G729"}, true, "", 0},
		{Options{}, true, "", 0},
		{Options{Binary: "x", Calls: -1}, true, "", 0},
	} {
		o := tc.in
		err := o.normalize()
		if (err != nil) != tc.wantErr {
			t.Errorf("%+v: err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (o.Codec != tc.wantCodec || o.CodecSeconds != tc.wantSecs) {
			t.Errorf("%+v: codec %s secs %v, want %s %v", tc.in, o.Codec, o.CodecSeconds, tc.wantCodec, tc.wantSecs)
		}
	}
}

func TestDirectionFinish(t *testing.T) {
	for _, tc := range []struct {
		sent, recv, lost int64
		pct              float64
	}{
		{1000, 1000, 0, 0},
		{1000, 999, 1, 0.1},
		{0, 0, 0, 0},
		{10, 12, 0, 0}, // duplicates never count as negative loss
	} {
		d := Direction{Sent: tc.sent, Received: tc.recv}
		d.finish()
		if d.Lost != tc.lost || d.LossPercent != tc.pct {
			t.Errorf("%d/%d: lost %d %.3f %%, want %d %.3f %%", tc.recv, tc.sent, d.Lost, d.LossPercent, tc.lost, tc.pct)
		}
	}
}

func TestReportOK(t *testing.T) {
	good := ChildRun{CallsOK: 2, CallerHeardOK: 2, PBXHeardOK: 2}
	lost := good
	lost.ToWA = Direction{Sent: 10, Received: 9, Lost: 1}
	deaf := good
	deaf.PBXHeardOK = 1
	for name, tc := range map[string]struct {
		r    Report
		want bool
	}{
		"good":       {Report{Relay: &good}, true},
		"good legs":  {Report{Relay: &good, Legs: &good}, true},
		"lost":       {Report{Relay: &lost}, false},
		"legs deaf":  {Report{Relay: &good, Legs: &deaf}, false},
		"no relay":   {Report{}, false},
		"call fails": {Report{Relay: &ChildRun{CallsFailed: 1}}, false},
	} {
		if got := tc.r.OK(); got != tc.want {
			t.Errorf("%s: OK %v, want %v", name, got, tc.want)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ijk"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write %q: %d %v", s, n, err)
		}
	}
	if got := b.String(); got != "defghijk" {
		t.Errorf("tail %q, want %q", got, "defghijk")
	}
}
