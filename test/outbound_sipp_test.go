package test

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

// TestOutboundSippPcap: sipp's built-in uac_pcap scenario dials a WhatsApp
// user through ponte (PCMA + telephone-event offer), plays a recorded G.711
// capture and then an RFC 2833 digit 1. The simulated WhatsApp user hears
// the recording (its loudness contour matches the capture's, r >= 0.8) and
// the digit; the user's 440 Hz tone reaches sipp's media port (captured on
// lo, decoded as PCMA) in >= 90 % of 20 ms windows; sipp's BYE sends
// terminate.
func TestOutboundSippPcap(t *testing.T) {
	bin := needBin(t, "sipp", "sip-tester")
	ref := pcapPCM(t, "/usr/share/sip-tester/g711a.pcap")
	var mu sync.Mutex
	var heard []int16
	env := startEnv(t, scenario.Options{Codecs: []string{"PCMA", "PCMU"}})
	outboundUser(env, bicUser, wasim.UserOptions{AnswerAfter: 300 * time.Millisecond, ToneHz: 440, ExpectHz: 1000,
		OnAudio: func(pcm []int16, _ time.Time) { mu.Lock(); heard = append(heard, pcm...); mu.Unlock() }})

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pcap"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"g711a.pcap", "dtmf_2833_1.pcap"} {
		if err := os.Symlink("/usr/share/sip-tester/"+f, filepath.Join(dir, "pcap", f)); err != nil {
			t.Fatal(err)
		}
	}
	base := freePorts(t, 4)
	sniff := sniffUDP(t, base+2)
	ponte := env.Server.UA.ListenAddr("udp")
	p := startSippPeer(t, dir, bin, 60*time.Second, "-sn", "uac_pcap", "-s", "+"+bicUser, "-i", "127.0.0.1",
		"-p", fmt.Sprint(base), "-mp", fmt.Sprint(base+2), "-m", "1", "-timeout", "40s", "-nostdin",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"), ponte.String())
	select {
	case <-p.done:
	case <-time.After(50 * time.Second):
		t.Fatal("sipp's call did not end")
	}
	if p.err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		t.Fatalf("sipp: %v\n%s\n%s", p.err, p.out.String(), b)
	}

	// The recording reached the user.
	mu.Lock()
	got := append([]int16(nil), heard...)
	mu.Unlock()
	r, lag := envelopeMatch(ref, got)
	t.Logf("user heard %.1f s; loudness contour vs the capture: r=%.2f at lag %v", float64(len(got))/8000, r, lag)
	if r < 0.8 {
		t.Errorf("the user's audio does not follow the recording (r=%.2f)", r)
	}
	// And the digit.
	rec := waitRecords(t, env, 1)[0]
	var callee *wasim.Callee
	if callee = env.Meta.Callee(rec.WACID); callee == nil {
		t.Fatal("no callee for the call")
	}
	if d := callerDigitString(callee.Digits()); d != "1" {
		t.Errorf("digits at the user %q, want 1", d)
	}
	if got := graphActions(env, rec.WACID, rec.ID); got != "connect,terminate" {
		t.Errorf("Graph requests %q, want connect,terminate after sipp's BYE", got)
	}

	// The user's tone reached sipp.
	an := audio.NewAnalyzer(8000, 440, -12)
	dec, err := transcode.NewDecoder("PCMA", 8000)
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 1920)
	var pkt rtp.Packet
	n := 0
	var first, last time.Time
	for _, s := range sniff.packets() {
		if pkt.Unmarshal(s.payload) != nil || pkt.PayloadType != 8 {
			continue
		}
		k, err := dec.Decode(pkt.Payload, pcm)
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = s.at
		}
		last = s.at
		an.Add(pcm[:k], s.at)
		n++
	}
	rep := an.Report(first.Add(time.Second), last.Add(-time.Second))
	t.Logf("toward sipp: %d PCMA packets, 440 Hz in %.1f%% of %d windows", n, rep.ToneRatio*100, rep.Windows)
	if n < 300 || rep.ToneRatio < 0.9 {
		t.Errorf("sipp received %d PCMA packets with the user's tone in %.1f%% of windows", n, rep.ToneRatio*100)
	}
}

// pcapPCM decodes the PCMA payloads of a classic pcap (Ethernet, IPv4, UDP,
// RTP), in capture order.
func pcapPCM(t *testing.T, path string) []int16 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 1 {
		t.Fatalf("%s: not a little-endian Ethernet pcap", path)
	}
	dec, err := transcode.NewDecoder("PCMA", 8000)
	if err != nil {
		t.Fatal(err)
	}
	var out []int16
	pcm := make([]int16, 2000)
	var pkt rtp.Packet
	for off := 24; off+16 <= len(b); {
		incl := int(binary.LittleEndian.Uint32(b[off+8:]))
		frame := b[off+16 : min(off+16+incl, len(b))]
		off += 16 + incl
		if len(frame) < 14+20+8 {
			continue
		}
		ip := frame[14:]
		ihl := int(ip[0]&15) * 4
		if len(ip) < ihl+8 || pkt.Unmarshal(ip[ihl+8:]) != nil || pkt.PayloadType != 8 {
			continue
		}
		k, err := dec.Decode(pkt.Payload, pcm)
		if err == nil {
			out = append(out, pcm[:k]...)
		}
	}
	if len(out) < 8000 {
		t.Fatalf("%s: only %d samples of PCMA", path, len(out))
	}
	return out
}

// envelopeMatch compares loudness contours (dB per 20 ms) of the reference
// and what was heard, over lags up to 3 s, and returns the best Pearson r.
func envelopeMatch(ref, got []int16) (float64, time.Duration) {
	env := func(x []int16) []float64 {
		var e []float64
		for i := 0; i+160 <= len(x); i += 160 {
			var s float64
			for _, v := range x[i : i+160] {
				s += float64(v) * float64(v)
			}
			e = append(e, 10*math.Log10(s/160+1))
		}
		return e
	}
	a, b := env(ref), env(got)
	best, bestLag := -1.0, 0
	for lag := 0; lag <= 150 && lag+len(a) <= len(b); lag++ {
		if r := pearson(a, b[lag:lag+len(a)]); r > best {
			best, bestLag = r, lag
		}
	}
	return best, time.Duration(bestLag) * 20 * time.Millisecond
}

func pearson(x, y []float64) float64 {
	n := float64(len(x))
	var sx, sy, sxx, syy, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		syy += y[i] * y[i]
		sxy += x[i] * y[i]
	}
	d := math.Sqrt((n*sxx - sx*sx) * (n*syy - sy*sy))
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
