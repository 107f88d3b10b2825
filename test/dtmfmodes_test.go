package test

import (
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

// TestDTMFInfoBothWays: a trunk with dtmf: info and a PBX without
// telephone-event. The caller's digits reach the PBX as SIP INFO
// (application/dtmf-relay), the PBX's INFO digits reach the caller as RFC
// 4733 events on PT 126, and ponte offers no telephone-event.
func TestDTMFInfoBothWays(t *testing.T) {
	const digits = "159#"
	env := startEnv(t, scenario.Options{
		PBX:       pbx.Config{DTMFInfo: true, NoTelephoneEvent: true},
		Configure: func(c *config.Config) { c.SIP.Trunks[0].DTMF = "info" },
	})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	if pc.Offer().DTMFPT >= 0 {
		t.Errorf("ponte offered telephone-event (PT %d) to a dtmf: info trunk", pc.Offer().DTMFPT)
	}
	caller.SendDTMF(digits, 120*time.Millisecond, 100*time.Millisecond)
	if err := caller.WaitDTMF(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(3*time.Second, func() bool { return len(pc.InfoDigits()) >= len(digits) })
	if got := digitString(pc.InfoDigits()); got != digits {
		t.Errorf("PBX got INFO digits %q, want %q", got, digits)
	}
	if n := len(pc.Digits()); n != 0 {
		t.Errorf("the PBX also got %d RFC 4733 digits", n)
	}
	pc.SendDTMF("27*", 100*time.Millisecond, 100*time.Millisecond)
	waitFor(3*time.Second, func() bool { return len(caller.Digits()) >= 3 })
	time.Sleep(300 * time.Millisecond)
	if got := callerDigitString(caller.Digits()); got != "27*" {
		t.Errorf("caller got %q, want 27*", got)
	}
	hangupAndWait(t, env, caller, pc)
}

// TestDTMFInbandTowardPBX: a trunk with dtmf: inband. The caller's digits
// are played into the PBX's G.711 audio as Q.23 tones, found there by an
// independent detector, and no telephone-event is offered.
func TestDTMFInbandTowardPBX(t *testing.T) {
	const digits = "48#0"
	det := transcode.NewInbandDetector()
	got := make(chan rune, 16)
	env := startEnv(t, scenario.Options{
		PBX: pbx.Config{NoTelephoneEvent: true, OnAudio: func(_ *pbx.Call, pcm []int16, _ time.Time) {
			for _, d := range det.Push(pcm) {
				if d.End {
					got <- d.Rune()
				}
			}
		}},
		Configure: func(c *config.Config) { c.SIP.Trunks[0].DTMF = "inband" },
	})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	if pc.Offer().DTMFPT >= 0 {
		t.Errorf("ponte offered telephone-event (PT %d) to a dtmf: inband trunk", pc.Offer().DTMFPT)
	}
	caller.SendDTMF(digits, 120*time.Millisecond, 120*time.Millisecond)
	if err := caller.WaitDTMF(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var heard []rune
	deadline := time.After(3 * time.Second)
collect:
	for len(heard) < len(digits) {
		select {
		case r := <-got:
			heard = append(heard, r)
		case <-deadline:
			break collect
		}
	}
	if string(heard) != digits {
		t.Errorf("digits detected in the PBX's audio %q, want %q", string(heard), digits)
	}
	hangupAndWait(t, env, caller, pc)
}

// TestDTMFInbandFromPBX: a PBX that plays its digits as tones in its G.711
// audio (no telephone-event); ponte detects them and the caller receives
// them as RFC 4733 events on PT 126.
func TestDTMFInbandFromPBX(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{
		PBX:       pbx.Config{NoTelephoneEvent: true, DTMFInband: true},
		Configure: func(c *config.Config) { c.SIP.Trunks[0].DTMF = "inband" },
	})
	caller, pc := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	from := time.Now()
	pc.SendDTMF("369*", 100*time.Millisecond, 100*time.Millisecond)
	waitFor(3*time.Second, func() bool { return len(caller.Digits()) >= 4 })
	time.Sleep(300 * time.Millisecond)
	if got := callerDigitString(caller.Digits()); got != "369*" {
		t.Errorf("caller got %q, want 369*", got)
	}
	// ponte measures a digit on the audio it plays: a CPU stall of this
	// process underruns the playout, whose concealment prolongs the tone, so
	// only the duration is excused by a measured stall.
	stall := w.worst(from, time.Now())
	for _, d := range caller.Digits() {
		if d.PT != 126 {
			t.Errorf("digit %c on PT %d, want PT 126", d.Rune, d.PT)
		}
		if d.Duration < 60*time.Millisecond || d.Duration > 140*time.Millisecond {
			excuse(t, stall, "digit %c lasting %v, want about 100 ms", d.Rune, d.Duration)
		}
	}
	hangupAndWait(t, env, caller, pc)
}
