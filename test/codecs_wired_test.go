package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// TestPBXSeveralCodecs: the PBX answers PCMU and PCMA and switches its
// sending codec every second: the caller keeps hearing its 1000 Hz tone, and
// ponte keeps sending PCMU, the first codec of the answer.
func TestPBXSeveralCodecs(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Codecs: []string{"PCMU", "PCMA"}, PBX: pbx.Config{
		AnswerAllCodecs: true, SwitchCodecEvery: time.Second,
	}})
	caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "Ana", ExpectHz: 1000})
	if n := len(pc.Codecs()); n != 2 {
		t.Fatalf("the PBX answered %d codecs", n)
	}
	acc := caller.AcceptRespondedAt()
	listen(t, w, acc.Add(500*time.Millisecond), 4*time.Second, func(from, to time.Time, skip []audio.Span) string {
		var msg []string
		if h := caller.Heard().Report(from, to, skip...); h.ToneRatio < 0.97 || h.Windows < 190 {
			msg = append(msg, fmt.Sprintf("caller heard the PBX's 1000 Hz in %.1f%% of %d windows", h.ToneRatio*100, h.Windows))
		}
		if g := pc.Received().Report(from, to, skip...); g.ToneRatio < 0.97 || g.Windows < 190 {
			msg = append(msg, fmt.Sprintf("PBX heard the caller's 440 Hz in %.1f%% of %d windows", g.ToneRatio*100, g.Windows))
		}
		return strings.Join(msg, "; ")
	})
	pts := pc.ReceivedPTs()
	if pts[0] < 100 || pts[8] != 0 {
		t.Errorf("the PBX received PTs %v: want PCMU (0) only", pts)
	}
	hangupAndWait(t, env, caller, pc)
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 || recs[0].Outcome != "completed" || recs[0].ToMeta.Discarded != 0 {
		t.Errorf("record %+v", recs)
	}
}

// TestPBXPtime: a PBX with a=ptime 10 or 30 sends such packets and gets such
// packets from ponte, while Meta's side stays at 20 ms.
func TestPBXPtime(t *testing.T) {
	for _, ptime := range []int{10, 30} {
		t.Run(fmt.Sprint(ptime), func(t *testing.T) {
			w := startStallWatch(t)
			env := startEnv(t, scenario.Options{Codecs: []string{"PCMA"}, PBX: pbx.Config{Ptime: ptime}})
			caller, pc := connected(t, env, wasim.CallOptions{From: "5511987654321", Name: "Ana", ExpectHz: 1000})
			acc := caller.AcceptRespondedAt()
			listen(t, w, acc.Add(500*time.Millisecond), 4*time.Second, func(from, to time.Time, skip []audio.Span) string {
				var msg []string
				if h := caller.Heard().Report(from, to, skip...); h.ToneRatio < 0.97 || h.Windows < 190 {
					msg = append(msg, fmt.Sprintf("caller heard the PBX's 1000 Hz in %.1f%% of %d windows", h.ToneRatio*100, h.Windows))
				}
				if g := pc.Received().Report(from, to, skip...); g.ToneRatio < 0.97 || g.Windows < 190 {
					msg = append(msg, fmt.Sprintf("PBX heard the caller's 440 Hz in %.1f%% of %d windows", g.ToneRatio*100, g.Windows))
				}
				return strings.Join(msg, "; ")
			})
			sizes := pc.ReceivedPacketSizes()
			total := 0
			for _, n := range sizes {
				total += n
			}
			if total < 100 || sizes[ptime*8] != total {
				t.Errorf("the PBX received packets of %v samples, want all %d", sizes, ptime*8)
			}
			st := caller.Stream()
			checkPPS(t, w, st)
			if st.MaxSeqStep != 1 {
				t.Errorf("toward Meta: max sequence step %d, want 1 (no gap)", st.MaxSeqStep)
			}
			hangupAndWait(t, env, caller, pc)
		})
	}
}
