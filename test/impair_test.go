package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/internal/impair"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// TestImpairedMedia (issue 8 item 6): the network misbehaves on BOTH media
// legs at once: the caller's pion socket and the PBX's RTP socket are
// wrapped by internal/impair, impairing what each sends, i.e. both inputs of
// the gateway (Opus from WhatsApp, PCMU from the PBX: every frame is
// transcoded). Only the send side is impaired because what is under test is
// the gateway: the simulators' receivers, unlike phones and PBXs, have no
// jitter buffer and no PLC (they decode packets as they come), so impairing
// their last hop would judge the simulators. Per condition:
//
//	(a) each end still hears the other's tone at the right frequency (the
//	    analyzer counts a 20 ms window only when the expected frequency
//	    holds >= 50 % of its power within ±3 dB of the expected level);
//	(b) RFC 4733 digits sent each way arrive exactly once and in order;
//	(c) the gateway's PLC ran on both of its inputs (Record.ToPBX/ToMeta
//	    .Concealed > 0: lost or late packets were concealed);
//	(d) nothing crashes and the call ends with one completed record.
//
// Tone thresholds, per direction, follow from how each codec conceals a
// lost frame of a steady tone. Toward the caller the gateway's input is PCMU:
// G.711 concealment replays the last frame (transcode g711Decoder), still the
// tone, so only the frames after 3 concealed ones (silence) and the first
// frame after a gap miss it. Toward the PBX the input is narrowband Opus
// (SILK, the caller's 16 kbps encoder): libopus takes several frames to get
// its level back after a lost one. Measured offline with the same encoder
// settings, 5 % random loss leaves the tone in 79-81 % of windows, about 4.4
// windows per lost frame, with PLC, FEC or nothing alike: a lost Opus frame
// costs ~90 ms of tone whatever the gateway does.
//
//   - loss 5 %: caller >= 0.90 (~5 % of frames concealed by replay); PBX
//     >= 0.60 (15 losses expected per 300 windows, 3σ more is 27, at 4.4
//     windows each 0.61). Measured: caller 1.00, PBX 0.66-0.81.
//   - jitter 40 ms (uniform 0..40 ms per packet, so packets 20 ms apart
//     reorder): a packet that arrives after its slot was played (concealed)
//     deepens the playout by one frame (gateway/depth.go), up to the 60 ms
//     cap (maxDepthFrames), so after the first few late packets the buffer
//     holds the whole 40 ms spread and almost nothing is late again:
//     caller >= 0.85; PBX >= 0.85 (the first late Opus packets cost ~4.4
//     windows each while the depth grows: 3-4 of them, plus the losses the
//     first frames of concealment cause, stay under 45 windows of 300).
//     Measured: caller 1.00, PBX 0.96. Before late packets deepened the
//     playout (only underruns did), ~6-10 % of the Opus packets were given
//     up as late and the PBX heard the tone in 0.38-0.53 of windows.
//   - bursts of 200 ms every 2 s: any 6 s window holds 3 bursts. Measured
//     per burst: ~13 windows without the tone toward the caller (10 lost
//     frames: 3 concealed, silence, then the first frame after the gap), ~24
//     toward the PBX (SILK's recovery after 10 lost frames): caller >= 0.80
//     (20 per burst), PBX >= 0.65 (35 per burst).
//
// Digits for the burst condition last 300 ms with 300 ms between them: a
// 200 ms burst can take the start or the End packets of an event but never
// all of it, and the receivers complete an event whose End packets were lost
// by timeout (RFC 4733 §2.5.2.1); with loss and jitter the usual 100/100 ms
// digits survive because each End packet is sent three times (§2.5.1.4).
func TestImpairedMedia(t *testing.T) {
	const digits = "1123##00"
	for _, tc := range []struct {
		name              string
		model             impair.Model
		minCaller, minPBX float64 // tone ratio each end must hear (see above)
		each, gap         time.Duration
	}{
		{"loss5", impair.Model{Loss: 0.05}, 0.90, 0.60, 100 * time.Millisecond, 100 * time.Millisecond},
		{"jitter40", impair.Model{Jitter: 40 * time.Millisecond}, 0.85, 0.85, 100 * time.Millisecond, 100 * time.Millisecond},
		{"burst200ms", impair.Model{BurstEvery: 2 * time.Second, BurstLen: 200 * time.Millisecond}, 0.80, 0.65, 300 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Distinct fixed seeds per leg; logged with the counters so a
			// failure can be replayed.
			waM, pbxM := tc.model, tc.model
			waM.Seed, pbxM.Seed = 0x5eed01, 0x5eed02
			waM.Dir, pbxM.Dir = impair.Write, impair.Write
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{Codecs: []string{"PCMU"}, PBX: pbx.Config{Impair: &pbxM}})
			caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000, Impair: &waM})
			acc := caller.AcceptRespondedAt()

			// (a) tones, judged over 6 s windows from 1 s after accept.
			var last [2]audio.Report
			listen(t, w, acc.Add(time.Second), 6*time.Second, func(from, to time.Time, skip []audio.Span) string {
				var msg []string
				heard := caller.Heard().Report(from, to, skip...)
				got := pc.Received().Report(from, to, skip...)
				last = [2]audio.Report{heard, got}
				// Audio must keep arriving: the gateway sends a frame every
				// 20 ms whatever its input, so nearly all 300 windows.
				if heard.ToneRatio < tc.minCaller || heard.Windows < 270 {
					msg = append(msg, fmt.Sprintf("caller heard the PBX's 1000 Hz in %.1f%% of %d windows (longest gap %v)", heard.ToneRatio*100, heard.Windows, heard.MaxGap))
				}
				if got.ToneRatio < tc.minPBX || got.Windows < 270 {
					msg = append(msg, fmt.Sprintf("PBX heard the caller's 440 Hz in %.1f%% of %d windows (longest gap %v)", got.ToneRatio*100, got.Windows, got.MaxGap))
				}
				return strings.Join(msg, "; ")
			})
			t.Logf("tone ratio: caller hears %.3f (%d windows, gap %v), PBX hears %.3f (%d windows, gap %v)",
				last[0].ToneRatio, last[0].Windows, last[0].MaxGap, last[1].ToneRatio, last[1].Windows, last[1].MaxGap)

			// (b) digits each way, exactly once and in order.
			ctx := ctxT(t, 30*time.Second)
			caller.SendDTMF(digits, tc.each, tc.gap)
			if err := caller.WaitDTMF(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(3*time.Second, func() bool { return len(pc.Digits()) >= len(digits) })
			pc.SendDTMF(digits, tc.each, tc.gap)
			span := time.Duration(len(digits)) * (tc.each + tc.gap)
			waitFor(span+3*time.Second, func() bool { return len(caller.Digits()) >= len(digits) })
			time.Sleep(time.Second) // a duplicate (or an event completed twice) would show up here
			if got := digitString(pc.Digits()); got != digits {
				t.Errorf("PBX got digits %q, want %q", got, digits)
			}
			if got := callerDigitString(caller.Digits()); got != digits {
				t.Errorf("caller got digits %q, want %q", got, digits)
			}

			// The impairment really happened, on both legs and both ways.
			waSt, waSeed, ok1 := caller.ImpairStats()
			pbxSt, pbxSeed, ok2 := pc.ImpairStats()
			if !ok1 || !ok2 {
				t.Fatalf("impairment not installed: caller %v, PBX %v", ok1, ok2)
			}
			t.Logf("caller socket (seed %#x): %+v", waSeed, waSt.Write)
			t.Logf("PBX socket (seed %#x): %+v", pbxSeed, pbxSt.Write)
			for _, c := range []struct {
				who string
				st  impair.Counters
			}{{"caller", waSt.Write}, {"PBX", pbxSt.Write}} {
				hit := c.st.Dropped + c.st.Burst
				if tc.model.Jitter > 0 {
					hit = c.st.Reordered
				}
				if c.st.Sent < 300 || hit == 0 {
					t.Errorf("%s: %+v: the condition was not applied", c.who, c.st)
				}
			}

			// (d) a clean end and one record; (c) PLC on both inputs.
			hangupAndWait(t, env, caller, pc)
			recs := env.Server.Gateway.Records()
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			r := recs[0]
			t.Logf("gateway toward PBX: in %d concealed %d silence %d lost %d; toward Meta: in %d concealed %d silence %d lost %d",
				r.ToPBX.In, r.ToPBX.Concealed, r.ToPBX.Silence, r.ToPBX.Jitter.Lost, r.ToMeta.In, r.ToMeta.Concealed, r.ToMeta.Silence, r.ToMeta.Jitter.Lost)
			if r.Outcome != "completed" || r.EndedBy != "caller" || r.Codec != "PCMU" {
				t.Errorf("record: outcome %q ended by %q codec %q", r.Outcome, r.EndedBy, r.Codec)
			}
			if r.ToPBX.Concealed == 0 {
				t.Errorf("no concealment toward the PBX though the WhatsApp leg was impaired: %+v", r.ToPBX)
			}
			if r.ToMeta.Concealed == 0 {
				t.Errorf("no concealment toward Meta though the PBX leg was impaired: %+v", r.ToMeta)
			}
			if r.ToPBX.Digits != uint64(len(digits)) || r.ToMeta.Digits != uint64(len(digits)) {
				t.Errorf("gateway relayed %d digits to the PBX and %d to Meta, want %d each", r.ToPBX.Digits, r.ToMeta.Digits, len(digits))
			}
		})
	}
}
