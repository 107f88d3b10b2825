package test

import (
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// TestPBXComfortNoise: the PBX goes quiet with RFC 3389 comfort noise (one CN
// packet every 200 ms, nothing in between) for 2 s: the caller hears silence
// there, not concealment of the last tone; Meta keeps receiving >= 45
// packets/s; the tone is back afterwards; the call survives.
func TestPBXComfortNoise(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Codecs: []string{"PCMU"}, PBX: pbx.Config{
		CNAfter: 3 * time.Second, CNFor: 2 * time.Second,
	}})
	caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "Ana", ExpectHz: 1000})
	ans := pc.AnsweredAt()
	time.Sleep(time.Until(ans.Add(6500 * time.Millisecond)))

	// The PBX's send loop starts at its answer (give or take a tick and the
	// 100 ms of the playout path): CN from ans+3 s to ans+5 s.
	quiet := caller.Heard().Report(ans.Add(3300*time.Millisecond), ans.Add(4800*time.Millisecond))
	after := caller.Heard().Report(ans.Add(5500*time.Millisecond), ans.Add(6400*time.Millisecond))
	if stalled := w.worst(ans, ans.Add(6500*time.Millisecond)); stalled < stallLimit {
		if quiet.ToneWindows > 0 || quiet.MeanDBFS > -50 || quiet.Windows < 70 {
			t.Errorf("during comfort noise the caller heard %d tone windows of %d, mean %.1f dBFS", quiet.ToneWindows, quiet.Windows, quiet.MeanDBFS)
		}
		if after.ToneRatio < 0.97 {
			t.Errorf("after comfort noise the caller heard the tone in %.1f%% of %d windows", after.ToneRatio*100, after.Windows)
		}
	} else {
		t.Logf("CPU stall of %v: audio windows not judged", stalled)
	}
	st := caller.Stream()
	checkPPS(t, w, st)
	hangupAndWait(t, env, caller, pc)
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 || recs[0].Outcome != "completed" {
		t.Fatalf("record %+v", recs)
	}
	tm := recs[0].ToMeta
	t.Logf("to Meta: %+v", tm)
	if tm.ComfortNoise < 5 {
		t.Errorf("%d CN packets played, want about 10", tm.ComfortNoise)
	}
	// An underrun after the last tone would conceal 3 frames; so does one
	// that a CPU stall causes, which is the only excuse.
	if stalled := w.worst(ans, time.Now()); tm.Concealed >= 3 && stalled < stallLimit {
		t.Errorf("%d frames concealed toward Meta: the comfort-noise stretch was treated as loss", tm.Concealed)
	} else if tm.Concealed >= 3 {
		t.Logf("%d frames concealed toward Meta, excused by a measured %v CPU stall", tm.Concealed, stalled)
	}
}
