package test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

// TestInboundAudio: for a PCMU, a PCMA and an Opus (passthrough) PBX, over 5 s
// each end hears the other's tone in >= 98 % of 20 ms windows within ±3 dB,
// with no gap over 40 ms; and Meta's rules hold: pre_accept then accept with
// the identical answer SDP, nothing reached the caller before the accept
// response, the PBX was ACKed before accept was sent, one SSRC, sequence +1,
// timestamps tracking wall time.
func TestInboundAudio(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA", "opus"} {
		t.Run(codec, func(t *testing.T) {
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{Codecs: []string{codec}})
			caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "Ana", ExpectHz: 1000})
			acc := caller.AcceptRespondedAt()
			listen(t, w, acc.Add(500*time.Millisecond), 5*time.Second, bothWays(caller, pc, whole(240), whole(240)))
			if pc.Codec().Name != codec && !strings.EqualFold(pc.Codec().Name, codec) {
				t.Errorf("negotiated %q, want %q", pc.Codec().Name, codec)
			}

			st := caller.Stream()
			if len(st.SSRCs) != 1 || st.MaxSeqStep != 1 || st.SeqBackwards != 0 {
				t.Errorf("toward Meta: SSRCs %v, max sequence step %d, backwards %d", st.SSRCs, st.MaxSeqStep, st.SeqBackwards)
			}
			checkDrift(t, w, st, acc)
			if st.FirstWireRTP.Before(acc) || (!st.FirstWireRTCP.IsZero() && st.FirstWireRTCP.Before(acc)) {
				t.Errorf("media reached the caller before the accept response: RTP at %v, RTCP at %v, accept answered at %v",
					st.FirstWireRTP, st.FirstWireRTCP, acc)
			}

			rs := requests(env, caller.ID())
			if len(rs) < 2 || rs[0].Action != "pre_accept" || rs[1].Action != "accept" {
				t.Fatalf("Graph requests %q, want pre_accept,accept", actions(rs))
			}
			if rs[0].SDPType != "answer" || rs[1].SDPType != "answer" || rs[0].SDP != rs[1].SDP || rs[0].SDP == "" {
				t.Errorf("pre_accept/accept SDP not identical answers (types %q %q)", rs[0].SDPType, rs[1].SDPType)
			}
			if !strings.HasPrefix(rs[1].BizOpaque, "pc-") {
				t.Errorf("accept biz_opaque_callback_data %q is not ponte's call id", rs[1].BizOpaque)
			}
			if pc.AckedAt().IsZero() || !pc.AckedAt().Before(rs[1].ReceivedAt) {
				t.Errorf("PBX ACKed at %v, accept sent at %v: the ACK must come first", pc.AckedAt(), rs[1].ReceivedAt)
			}
			hangupAndWait(t, env, caller, pc)
			if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
				t.Errorf("after the user hung up ponte sent %q (the user ended the call: nothing more is owed)", a)
			}
			recs := env.Server.Gateway.Records()
			if t.Failed() && len(recs) == 1 {
				t.Logf("to Meta: %+v", recs[0].ToMeta)
				t.Logf("to PBX: %+v", recs[0].ToPBX)
			}
			if len(recs) != 1 || recs[0].Outcome != "completed" || recs[0].EndedBy != "caller" || recs[0].Codec != codec {
				t.Errorf("record %+v", recs)
			}
		})
	}
}

// TestInboundDelay measures one-way delay through ponte in both directions
// with marker tones (transitions between two frequencies), at zero network
// jitter: <= 80 ms including the jitter buffer and the codecs.
func TestInboundDelay(t *testing.T) {
	for _, codec := range []string{"PCMU", "opus"} {
		t.Run(codec, func(t *testing.T) {
			w := startStallWatch(t)
			pbxTx := audio.NewMarkerSender(8000, wasim.MarkerF1Hz, wasim.MarkerF2Hz, transcode.AmpForDBFS(-12), wasim.MarkerPeriod)
			pbxRx := audio.NewMarkerReceiver(8000, wasim.MarkerF1Hz, wasim.MarkerF2Hz)
			// The PBX rings 1 s, as PBXs do: ICE/DTLS completes meanwhile, so
			// the accept wait after its 200 is one Graph API round trip.
			env := startEnv(t, scenario.Options{Codecs: []string{codec}, PBX: pbx.Config{
				AnswerDelay: time.Second,
				Marker:      pbxTx,
				OnAudio:     func(_ *pbx.Call, pcm []int16, at time.Time) { pbxRx.Add(pcm, at) },
			}})
			caller, pc := connected(t, env, wasim.CallOptions{Marker: true})
			caller.HeardMarkers().Attach(pbxTx)
			pbxRx.Attach(caller.MarkerSender())
			// Steady state: transitions sent from 2 s after accept, when the
			// audio held during the accept wait has been played out.
			steady := caller.AcceptRespondedAt().Add(2 * time.Second)
			measureDelays(t, w, steady, []markerPath{
				{"PBX->caller", caller.HeardMarkers()}, {"caller->PBX", pbxRx},
			})
			hangupAndWait(t, env, caller, pc)
			if recs := env.Server.Gateway.Records(); t.Failed() && len(recs) == 1 {
				t.Logf("to PBX: %+v", recs[0].ToPBX)
				t.Logf("to Meta: %+v", recs[0].ToMeta)
			}
		})
	}
}

// markerPath is one direction of a marker delay measurement.
type markerPath struct {
	dir string
	rx  *audio.MarkerReceiver // attached to the sender
}

// measureDelays judges the marker transitions sent from start on, in
// windows of 2.5 s, until each path has 5 judged transitions or 30 s have
// passed. Every judged transition must be heard within 0..80 ms; one never
// heard fails too. A transition is not judged when this process was
// measurably starved around it (delaysOutside): the audio check is ponte's
// delay, not the machine's.
func measureDelays(t *testing.T, w *stallWatch, start time.Time, paths []markerPath) {
	t.Helper()
	const window, want, limit = 2500 * time.Millisecond, 5, 30 * time.Second
	judged := make([][]time.Duration, len(paths))
	for from := start; ; from = from.Add(window) {
		to := from.Add(window)
		time.Sleep(time.Until(to.Add(stallRecovery)))
		skip, _ := w.skips(from, to.Add(stallRecovery))
		done := true
		for i, p := range paths {
			d, missed := delaysOutside(p.rx, from, to, skip)
			if missed > 0 {
				t.Errorf("%s: %d marker transitions sent in [%v, %v) after start, away from any CPU stall, were never heard", p.dir, missed, from.Sub(start), to.Sub(start))
			}
			if lo, _, hi := audio.DelayStats(d); len(d) > 0 && (hi > 80*time.Millisecond || lo < 0) {
				t.Errorf("%s: transitions took %v to %v, want within 0..80 ms (worst stall in the window %v)", p.dir, lo, hi, w.worst(from, to))
			}
			judged[i] = append(judged[i], d...)
			done = done && len(judged[i]) >= want
		}
		if t.Failed() {
			return
		}
		if done {
			break
		}
		if to.Sub(start) >= limit {
			for i, p := range paths {
				if len(judged[i]) < want {
					t.Errorf("%s: only %d transitions in %v could be judged: CPU stalls covered the rest", p.dir, len(judged[i]), limit)
				}
			}
			return
		}
	}
	for i, p := range paths {
		lo, mean, hi := audio.DelayStats(judged[i])
		t.Logf("%s one-way delay through ponte: min %v mean %v max %v (%d transitions)", p.dir, lo, mean, hi, len(judged[i]))
	}
}

// delaysOutside measures the marker transitions sent in [from, to) except
// those sent during a CPU stall of this process or while ponte won back the
// backlog it left: the stalled sender bursts on waking, and the playout
// drains that burst on silence (the marker pauses mid-tone) or one frame in
// four, which takes up to four times the stall and one more second.
func delaysOutside(rx *audio.MarkerReceiver, from, to time.Time, skip []audio.Span) (d []time.Duration, missed int) {
	add := func(a, b time.Time) {
		di, mi := rx.DelaysBetween(a, b)
		d, missed = append(d, di...), missed+mi
	}
	at := from
	for _, sp := range skip {
		if sp.From.After(at) {
			end := sp.From
			if end.After(to) {
				end = to
			}
			add(at, end)
		}
		if end := sp.To.Add(4*sp.To.Sub(sp.From) + time.Second); end.After(at) {
			at = end
		}
	}
	if to.After(at) {
		add(at, to)
	}
	return d, missed
}

// TestInboundDTMF: 1123##00 both ways, each digit once and in order with its
// duration kept (±20 ms); toward the caller on PT 126, toward the PBX on the
// PBX's own PT (101, then 96); and with every End packet lost.
func TestInboundDTMF(t *testing.T) {
	const digits = "1123##00"
	checkDur := func(t *testing.T, who string, d time.Duration) {
		if math.Abs(float64(d-100*time.Millisecond)) > float64(20*time.Millisecond) {
			t.Errorf("%s: digit duration %v, want 100 ms ±20 ms", who, d)
		}
	}
	for _, tc := range []struct {
		name    string
		pbxPT   uint8
		dropEnd bool
	}{{"pt101", 101, false}, {"pt96", 96, false}, {"caller-ends-lost", 101, true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := startEnv(t, scenario.Options{PBX: pbx.Config{DTMFPT: tc.pbxPT}})
			caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000, DTMFDropEnd: tc.dropEnd})
			ctx := ctxT(t, 20*time.Second)
			caller.SendDTMF(digits, 100*time.Millisecond, 100*time.Millisecond)
			if err := caller.WaitDTMF(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(2*time.Second, func() bool { return len(pc.Digits()) >= len(digits) })
			time.Sleep(300 * time.Millisecond) // a duplicate would show up here
			if got := digitString(pc.Digits()); got != digits {
				t.Errorf("PBX got %q, want %q", got, digits)
			}
			for _, d := range pc.Digits() {
				checkDur(t, "caller->PBX", d.Duration)
				if d.PT != tc.pbxPT {
					t.Errorf("caller->PBX digit on PT %d, want the PBX's %d", d.PT, tc.pbxPT)
				}
			}
			if !tc.dropEnd {
				pc.SendDTMF(digits, 100*time.Millisecond, 100*time.Millisecond)
				waitFor(2*time.Second, func() bool { return len(caller.Digits()) >= len(digits) })
				time.Sleep(300 * time.Millisecond)
				if got := callerDigitString(caller.Digits()); got != digits {
					t.Errorf("caller got %q, want %q", got, digits)
				}
				for _, d := range caller.Digits() {
					checkDur(t, "PBX->caller", d.Duration)
					if d.PT != 126 {
						t.Errorf("PBX->caller digit on PT %d, want 126", d.PT)
					}
				}
			}
			hangupAndWait(t, env, caller, pc)
		})
	}
}

// TestInboundPBXSSRCChange: the PBX restarts its stream (new SSRC, sequence
// and timestamp bases); toward Meta nothing changes: one SSRC, sequence +1,
// timestamps on wall time, and the tone goes on.
func TestInboundPBXSSRCChange(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{PBX: pbx.Config{ChangeSSRCAfter: 2 * time.Second}})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	acc := caller.AcceptRespondedAt()
	time.Sleep(4500 * time.Millisecond)
	st := caller.Stream()
	if len(st.SSRCs) != 1 || st.MaxSeqStep != 1 || st.SeqBackwards != 0 {
		t.Errorf("toward Meta across a PBX SSRC change: SSRCs %v, max step %d, backwards %d",
			st.SSRCs, st.MaxSeqStep, st.SeqBackwards)
	}
	checkDrift(t, w, st, acc)
	if r := caller.Heard().Report(acc.Add(500*time.Millisecond), acc.Add(4400*time.Millisecond)); r.ToneRatio < 0.97 || r.MaxGap > 60*time.Millisecond {
		if st := w.worst(acc, acc.Add(4400*time.Millisecond)); st >= stallLimit {
			t.Logf("tone across the SSRC change %.1f%%, longest gap %v, excused by a measured %v CPU stall", r.ToneRatio*100, r.MaxGap, st)
		} else {
			t.Errorf("tone across the SSRC change: %.1f%%, longest gap %v", r.ToneRatio*100, r.MaxGap)
		}
	}
	hangupAndWait(t, env, caller, pc)
}

// TestInboundPBXSilentKeepsMetaFed: a PBX that sends nothing for 35 s;
// ponte still sends >= 45 packets/s and Meta's no-media timers never fire.
func TestInboundPBXSilentKeepsMetaFed(t *testing.T) {
	if testing.Short() {
		t.Skip("35 s test; run without -short")
	}
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{PBX: pbx.Config{Silent: true}})
	caller, pc := connected(t, env, wasim.CallOptions{})
	time.Sleep(35 * time.Second)
	select {
	case <-caller.Ended():
		t.Fatalf("Meta ended the call: %s", caller.EndReason())
	default:
	}
	st := caller.Stream()
	if len(st.PPS) < 34 {
		t.Errorf("only %d one-second windows of packets toward Meta", len(st.PPS))
	}
	checkPPS(t, w, st)
	hangupAndWait(t, env, caller, pc)
}

// checkDrift: RTP timestamps toward Meta follow wall-clock time: the
// per-second medians of (arrival time - timestamp time) at the simulated
// caller stay within 60 ms of each other and of the first packet. A median
// moves when the timestamps run fast or slow, jump, or stop during silence;
// a burst that a scheduling stall delivered late (the caller runs in this
// process) moves the maximum, not the median, so the maximum is only logged.
// A median shift is excused only by a measured stall at least that long.
func checkDrift(t *testing.T, w *stallWatch, st wasim.StreamStats, since time.Time) {
	t.Helper()
	if len(st.OffsetMediansMs) < 2 {
		t.Errorf("too little audio toward Meta to measure timestamp drift: %d one-second windows", len(st.OffsetMediansMs))
		return
	}
	driftMs := st.ClockDriftMs
	if driftMs <= 60 {
		if st.MaxDriftMs > 60 {
			t.Logf("per-packet arrival jitter up to %.1f ms (per-second medians within %.1f ms: %.1f)", st.MaxDriftMs, driftMs, st.OffsetMediansMs)
		}
		return
	}
	stalled := w.worst(since, time.Now())
	if float64(stalled.Milliseconds()) >= driftMs-60 && stalled >= stallLimit {
		t.Logf("timestamp drift %.1f ms excused by a measured %v CPU stall", driftMs, stalled)
		return
	}
	t.Errorf("RTP timestamps drift %.1f ms from wall-clock time (per-second medians %.1f, worst CPU stall %v)", driftMs, st.OffsetMediansMs, stalled)
}
