// Package test holds ponte's interop tests against real SIP peers: sipp's
// built-in UAS with RTP echo and baresip auto-answering. They run the whole
// gateway (sim/scenario) with the WhatsApp simulator on one side and the
// outside peer as the PBX on the other, everything on 127.0.0.1.
//
//	go test -tags nolibopusfile -race -run Interop ./test/
package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
	"github.com/ponte-gw/ponte/transcode"
)

// Audio criteria of the acceptance (strict; only setup timeouts are generous).
const (
	callerWarmUp = 500 * time.Millisecond // skipped after accept (jitter buffers filling)
	pbxWarmUp    = time.Second            // skipped in the PBX's recording
	listenFor    = 3200 * time.Millisecond
	// maxWindows: listening windows per call while every one has a CPU
	// stall. Listening stops at the first window without one; this VM's
	// steal episodes last up to about 20 s, so 8 windows (25.6 s) can wait
	// one out. Peers and contexts here live 60 s.
	maxWindows    = 8
	minToneRatio  = 0.98 // caller side: 20 ms windows with the expected tone
	minWavRatio   = 0.95 // baresip's recording
	minWindowFrac = 0.95 // windows that arrived / windows expected: audio did not stop
	toneDBFS      = -12.0
	setupTimeout  = 20 * time.Second
)

// TestInteropSippEcho: a WhatsApp caller's 440 Hz goes Opus -> ponte -> PCMU
// -> `sipp -sn uas -rtp_echo` -> PCMU -> ponte -> Opus and comes back to the
// caller; then the caller hangs up and sipp gets ponte's BYE and ends its one
// call successfully.
func TestInteropSippEcho(t *testing.T) {
	bin := needBin(t, "sipp", "sip-tester")
	noLeaks(t)
	// SIP port, then sipp's RTP echo port (-mp) and the video echo port it
	// also binds at -mp+2.
	base := freePorts(t, 6)
	sipPort, mediaPort := base, base+2
	dir := t.TempDir()
	sipp := startPeer(t, "sipp", dir, bin,
		"-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", fmt.Sprint(sipPort), "-mp", fmt.Sprint(mediaPort),
		"-m", "1", "-nostdin", "-timeout", "60s",
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_screen", "-screen_file", filepath.Join(dir, "screen.log"))
	sipp.waitListening(t, sipPort, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := scenario.Start(ctx, scenario.Options{
		PBXAddr: fmt.Sprintf("127.0.0.1:%d", sipPort), Codecs: []string{"PCMU"}, TargetUser: "service", Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	watch := startStallWatch(t)

	caller, err := env.Meta.Call(ctx, wasim.CallOptions{ToneHz: 440, ToneDBFS: toneDBFS, ExpectHz: 440, ExpectDBFS: toneDBFS})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, setupTimeout)
	defer wcancel()
	if err := caller.WaitAccepted(wctx); err != nil {
		t.Fatalf("call not accepted: %v", err)
	}
	talk(t, caller, watch, "its own 440 Hz echoed by sipp")

	if err := caller.Hangup(ctx); err != nil {
		t.Fatalf("hangup: %v", err)
	}
	// sipp's UAS ends its scenario on the BYE; -m 1 then makes it exit with 0
	// only if that one call succeeded.
	exited, werr := sipp.wait(15 * time.Second)
	if !exited {
		t.Fatal("sipp still running 15 s after the caller hung up: no BYE reached it")
	}
	if werr != nil {
		t.Fatalf("sipp exited with %v (0 means its one call succeeded)", werr)
	}
	msgs, err := os.ReadFile(filepath.Join(dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^BYE sip:`).Match(msgs) {
		t.Errorf("sipp's message log has no BYE request:\n%s", msgs)
	}
	screen, err := os.ReadFile(filepath.Join(dir, "screen.log"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sippCount(string(screen), "Successful call"); got != 1 {
		t.Errorf("sipp counted %d successful calls, want 1:\n%s", got, screen)
	}
	if got := sippCount(string(screen), "Failed call"); got != 0 {
		t.Errorf("sipp counted %d failed calls, want 0:\n%s", got, screen)
	}
	rec := finishedRecord(ctx, t, env)
	if rec.EndedBy != "caller" || rec.Codec != "PCMU" {
		t.Errorf("record: ended_by=%q codec=%q, want caller and PCMU", rec.EndedBy, rec.Codec)
	}
	checkGraph(t, env, caller.ID())
}

// TestInteropBaresip: baresip auto-answers with PCMU and plays a 1000 Hz wav;
// the WhatsApp caller plays 440 Hz. Each side must hear the other's tone, and
// the caller's RFC 4733 digits must reach baresip in order.
func TestInteropBaresip(t *testing.T) {
	bin := needBin(t, "baresip", "baresip")
	noLeaks(t)
	// SIP port, then baresip's RTP range (RTP and RTCP pairs; rtcp_mux no).
	base := freePorts(t, 12)
	sipPort := base
	dir := t.TempDir()
	cfgDir, recDir := filepath.Join(dir, "cfg"), filepath.Join(dir, "rec")
	for _, d := range []string{cfgDir, recDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wav := filepath.Join(cfgDir, "tone1000.wav")
	toneWAV(t, wav, 1000, toneDBFS, 60) // longer than any call here: aufile does not loop
	writeBaresipConfig(t, cfgDir, baresipConfig{
		SIPPort: sipPort, RTPLo: base + 2, RTPHi: base + 11, Source: wav, RecDir: recDir,
	})
	// -v: baresip logs each received RFC 4733 event ("received event: '1'
	// (end=0)"); -t: it quits by itself if the test could not stop it.
	bs := startPeer(t, "baresip", dir, bin, "-f", cfgDir, "-v", "-t", "80")
	sctx, scancel := context.WithTimeout(context.Background(), setupTimeout)
	defer scancel()
	if err := bs.waitOutput(sctx, "baresip is ready."); err != nil {
		t.Fatalf("%v\n%s", err, bs.out.String())
	}
	bs.waitListening(t, sipPort, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, err := scenario.Start(ctx, scenario.Options{
		PBXAddr: fmt.Sprintf("127.0.0.1:%d", sipPort), Codecs: []string{"PCMU"}, TargetUser: "bob", Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	watch := startStallWatch(t)

	caller, err := env.Meta.Call(ctx, wasim.CallOptions{ToneHz: 440, ToneDBFS: toneDBFS, ExpectHz: 1000, ExpectDBFS: toneDBFS})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, setupTimeout)
	defer wcancel()
	if err := caller.WaitAccepted(wctx); err != nil {
		t.Fatalf("call not accepted: %v", err)
	}
	wins := talk(t, caller, watch, "baresip's 1000 Hz wav")

	// The digits go last and the recording is checked before the first one:
	// ponte mutes the audio toward the PBX while it relays an event (the
	// muted frames are missing from the recording). It also distorts the
	// audio for about half a second after the first digit: see
	// gateway/direction.go popAudio, which drops a queued Opus packet without
	// decoding it.
	const digits = "159#"
	time.Sleep(time.Until(wins[len(wins)-1].to.Add(dtmfMargin)))
	caller.SendDTMF(digits, 100*time.Millisecond, 100*time.Millisecond)
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if err := caller.WaitDTMF(dctx); err != nil {
		t.Fatalf("sending DTMF: %v", err)
	}
	var events []baresipEvent
	for dctx.Err() == nil {
		if events = baresipEvents(bs.out.String()); len(events) >= 2*len(digits) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkDigits(t, events, digits)

	if err := caller.Hangup(ctx); err != nil {
		t.Fatalf("hangup: %v", err)
	}
	// The BYE ends baresip's call, which closes (and finalises) its recordings.
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := bs.waitOutput(cctx, "session closed"); err != nil {
		t.Errorf("baresip did not close the call after the caller hung up: %v", err)
	}
	rec := finishedRecord(ctx, t, env)
	if err := bs.stop(10 * time.Second); err != nil && !isSignalExit(err) {
		t.Errorf("stopping baresip: %v", err)
	}
	if rec.EndedBy != "caller" || rec.Codec != "PCMU" {
		t.Errorf("record: ended_by=%q codec=%q, want caller and PCMU", rec.EndedBy, rec.Codec)
	}
	if rec.ToPBX.Digits != uint64(len(digits)) {
		t.Errorf("gateway relayed %d digits to the PBX, want %d", rec.ToPBX.Digits, len(digits))
	}
	checkGraph(t, env, caller.ID())
	checkBaresipRecording(t, recDir, rec, wins)
}

// dtmfMargin separates the last listening window from the first digit, so
// the recording's windows end well before the muted stretch.
const dtmfMargin = 300 * time.Millisecond

// talk lets the call run in consecutive listening windows after accept and
// checks what the caller heard: the expected tone in >= 98 % of the 20 ms
// windows, and (the ratio only covers windows that arrived) audio arriving
// for the whole window. A window that fails is measured again only if the
// machine starved this process meanwhile (stallWatch); listening stops at
// the first window without a stall, so the PBX side has a clean one too.
func talk(t *testing.T, caller *wasim.Caller, watch *stallWatch, what string) []listenWin {
	t.Helper()
	acc := caller.AcceptRespondedAt()
	want := int(listenFor / (20 * time.Millisecond))
	var wins []listenWin
	var pass []bool
	var reasons []string
	for k := range maxWindows {
		from := acc.Add(callerWarmUp + time.Duration(k)*listenFor)
		to := from.Add(listenFor)
		time.Sleep(time.Until(to) + 100*time.Millisecond) // +100 ms: the last windows are decoded
		r := caller.Heard().Report(from, to)
		w := listenWin{from: from, to: to, stall: watch.worst(from.Add(-dtmfMargin), to)}
		wins = append(wins, w)
		var why []string
		if r.ToneRatio < minToneRatio {
			why = append(why, fmt.Sprintf("tone in %.1f %% of windows, want >= %.0f %%", 100*r.ToneRatio, 100*minToneRatio))
		}
		if float64(r.Windows) < minWindowFrac*float64(want) {
			why = append(why, fmt.Sprintf("only %d of %d windows arrived", r.Windows, want))
		}
		pass = append(pass, len(why) == 0)
		reasons = append(reasons, strings.Join(why, "; "))
		t.Logf("window %d: caller heard %s in %d/%d windows (%.1f %%), %d/%d arrived, mean %.1f dBFS, longest gap %v; worst CPU stall %v",
			k, what, r.ToneWindows, r.Windows, 100*r.ToneRatio, r.Windows, want, r.MeanDBFS, r.MaxGap.Round(time.Millisecond), w.stall.Round(time.Millisecond))
		if w.stall < stallLimit {
			break
		}
	}
	switch i, ok := verdict(wins, pass); {
	case ok:
	case i < 0:
		t.Errorf("caller: every listening window failed while the machine starved the test (CPU stalls >= %v): %s", stallLimit, strings.Join(reasons, " | "))
	default:
		t.Errorf("caller heard %s badly in window %d: %s", what, i, reasons[i])
	}
	return wins
}

// checkBaresipRecording reads what baresip decoded from ponte (sndfile's
// -dec.wav, one 160-sample frame per PCMU packet received) and checks the
// caller's 440 Hz in >= 95 % of its 20 ms windows, over the listening
// windows from one second after the caller started speaking.
//
// The recording starts with ponte's first packet, sent at the PBX's 200 OK;
// ponte sends silence until Meta's accept, after which the caller speaks.
// Every frame before the first digit is recorded in real time, so wall-clock
// offsets from PBXAnswered map to sample offsets (dtmfMargin covers the
// mapping's error: a first packet lost, scheduling).
func checkBaresipRecording(t *testing.T, dir string, rec gateway.Record, wins []listenWin) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "dump-*-dec.wav"))
	if len(files) != 1 {
		all, _ := filepath.Glob(filepath.Join(dir, "*"))
		t.Fatalf("want one decoded recording from baresip, have %v", all)
	}
	rate, pcm, err := readWAV(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if rate != 8000 {
		t.Fatalf("%s: %d Hz, want 8000 (PCMU)", files[0], rate)
	}
	frame := rate / 50
	at := func(w time.Time) int { return int(w.Sub(rec.PBXAnswered).Seconds()*float64(rate)) / frame * frame }
	secs := func(n int) float64 { return float64(n) / float64(rate) }
	speech := rec.Accepted.Add(pbxWarmUp)
	pass := make([]bool, len(wins))
	reasons := make([]string, len(wins))
	for k, w := range wins {
		from, to := at(later(w.from, speech)), min(at(w.to), len(pcm))
		s := measureTone(pcm[from:to], rate, 440, toneDBFS)
		pass[k] = s.Ratio >= minWavRatio && to-from >= rate*2
		reasons[k] = fmt.Sprintf("440 Hz in %d/%d windows (%.1f %%, want >= %.0f %%) from %.2f s to %.2f s",
			s.ToneWindows, s.Windows, 100*s.Ratio, 100*minWavRatio, secs(from), secs(to))
		t.Logf("window %d: baresip heard the caller's %s of its %.2f s recording, tone %.1f dBFS",
			k, reasons[k], secs(len(pcm)), s.MeanToneDBFS)
	}
	switch i, ok := verdict(wins, pass); {
	case ok:
		return
	case i < 0:
		t.Errorf("baresip: every listening window failed while the machine starved the test: %s", strings.Join(reasons, " | "))
	default:
		t.Errorf("baresip heard the caller badly in window %d: %s", i, reasons[i])
	}
	for i := 0; i < len(pcm); i += rate / 2 {
		w := measureTone(pcm[i:min(len(pcm), i+rate/2)], rate, 440, toneDBFS)
		t.Logf("  %5.1f s: %2d/%2d windows with the tone, %.1f dBFS", secs(i), w.ToneWindows, w.Windows, w.MeanToneDBFS)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkDigits: baresip logged each digit's start and then its end, in the
// order the caller pressed them, and nothing else.
func checkDigits(t *testing.T, events []baresipEvent, digits string) {
	t.Helper()
	var want, got []string
	for _, d := range digits {
		want = append(want, fmt.Sprintf("%c:start", d), fmt.Sprintf("%c:end", d))
	}
	for _, e := range events {
		got = append(got, e.String())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("baresip received RFC 4733 events %v, want %v", got, want)
	}
}

// finishedRecord waits until the gateway is idle and returns the call record.
func finishedRecord(ctx context.Context, t *testing.T, env *scenario.Env) gateway.Record {
	t.Helper()
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := env.WaitIdle(ictx); err != nil {
		t.Fatalf("gateway still has a call after the hang-up: %v", err)
	}
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 {
		t.Fatalf("gateway has %d call records, want 1: %v", len(recs), recs)
	}
	t.Logf("record: %s; to PBX: %+v; to Meta: %+v", recs[0], recs[0].ToPBX, recs[0].ToMeta)
	return recs[0]
}

// checkGraph: the gateway answered the call on the Graph API with
// pre_accept then accept, both 200, and nothing else (the caller ended it).
func checkGraph(t *testing.T, env *scenario.Env, callID string) {
	t.Helper()
	var actions []string
	for _, r := range env.Meta.Requests() {
		if r.CallID == callID {
			actions = append(actions, fmt.Sprintf("%s:%d", r.Action, r.Status))
		}
	}
	if got, want := strings.Join(actions, " "), "pre_accept:200 accept:200"; got != want {
		t.Errorf("Graph API requests %q, want %q", got, want)
	}
}

// sippCount reads a counter from sipp's final screen, e.g.
// "Successful call  |   0  |   1  |   0  |   1" (the last column is the
// cumulative count); -1 if the line is missing.
func sippCount(screen, name string) int {
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s*\|.*\|\s*(\d+)\s*$`)
	m := re.FindAllStringSubmatch(screen, -1)
	if len(m) == 0 {
		return -1
	}
	var n int
	fmt.Sscan(m[len(m)-1][1], &n)
	return n
}

func isSignalExit(err error) bool {
	return err != nil && strings.Contains(err.Error(), "signal: terminated")
}

// The tooling above reads outside programs' output; these tests pin it to
// real samples of that output.

// wavBytes builds a WAV file: fmt chunk (format, channels, rate, bits), an
// optional odd-sized chunk before the data, and the data chunk with the
// given declared size (-1: the real size).
func wavBytes(format, channels, rate, bits int, extra bool, declared int, pcm []int16) []byte {
	le16 := func(b []byte, v int) []byte { return binary.LittleEndian.AppendUint16(b, uint16(v)) }
	le32 := func(b []byte, v int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(v)) }
	b := []byte("RIFF\x00\x00\x00\x00WAVEfmt ")
	b = le32(b, 16)
	b = le16(b, format)
	b = le16(b, channels)
	b = le32(b, rate)
	b = le32(b, rate*channels*bits/8)
	b = le16(b, channels*bits/8)
	b = le16(b, bits)
	if extra {
		b = append(b, "LIST"...)
		b = le32(b, 3)
		b = append(b, 'a', 'b', 'c', 0) // 3 bytes and the pad byte
	}
	b = append(b, "data"...)
	if declared < 0 {
		declared = 2 * len(pcm)
	}
	b = le32(b, declared)
	for _, s := range pcm {
		b = le16(b, int(s))
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func TestParseWAV(t *testing.T) {
	pcm := []int16{0, 1, -1, 32767, -32768}
	cases := []struct {
		name    string
		b       []byte
		wantErr bool
		want    []int16
	}{
		{"pcm", wavBytes(1, 1, 8000, 16, false, -1, pcm), false, pcm},
		{"padded odd chunk before data", wavBytes(1, 1, 8000, 16, true, -1, pcm), false, pcm},
		{"extensible", wavBytes(0xFFFE, 1, 8000, 16, false, -1, pcm), false, pcm},
		{"data size never patched", wavBytes(1, 1, 8000, 16, false, 0, pcm), false, pcm},
		{"data size past the end", wavBytes(1, 1, 8000, 16, false, 1<<30, pcm), false, pcm},
		{"declared shorter", wavBytes(1, 1, 8000, 16, false, 4, pcm), false, pcm[:2]},
		{"stereo", wavBytes(1, 2, 8000, 16, false, -1, pcm), true, nil},
		{"8 bit", wavBytes(1, 1, 8000, 8, false, -1, pcm), true, nil},
		{"float", wavBytes(3, 1, 8000, 32, false, -1, pcm), true, nil},
		{"not riff", []byte("RIFX\x00\x00\x00\x00WAVE"), true, nil},
		{"no data", wavBytes(1, 1, 8000, 16, false, -1, nil)[:36], true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rate, got, err := parseWAV(c.b)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if c.wantErr {
				return
			}
			if rate != 8000 || !slices.Equal(got, c.want) {
				t.Fatalf("got %d Hz %v, want 8000 Hz %v", rate, got, c.want)
			}
		})
	}
}

func FuzzParseWAV(f *testing.F) {
	f.Add(wavBytes(1, 1, 8000, 16, true, -1, []int16{1, 2, 3}))
	f.Add(wavBytes(1, 1, 8000, 16, false, 0, []int16{1, 2, 3}))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rate, pcm, err := parseWAV(b)
		if err == nil && 2*len(pcm) > len(b) {
			t.Fatalf("%d samples (rate %d) from %d bytes", len(pcm), rate, len(b))
		}
	})
}

func TestMeasureTone(t *testing.T) {
	tone := func(freq, dbfs float64) []int16 {
		pcm := make([]int16, 8000)
		transcode.NewToneGen(freq, 8000, transcode.AmpForDBFS(dbfs)).Fill(pcm)
		return pcm
	}
	cases := []struct {
		name  string
		pcm   []int16
		ratio float64
	}{
		{"expected tone", tone(440, -12), 1},
		{"2 dB low", tone(440, -14), 1},
		{"6 dB low", tone(440, -18), 0},
		{"other frequency", tone(1000, -12), 0},
		{"silence", make([]int16, 8000), 0},
	}
	for _, c := range cases {
		if s := measureTone(c.pcm, 8000, 440, -12); s.Windows != 50 || s.Ratio != c.ratio {
			t.Errorf("%s: %d windows, ratio %.2f, want 50 and %.2f", c.name, s.Windows, s.Ratio, c.ratio)
		}
	}
}

func TestSippCount(t *testing.T) {
	screen, err := os.ReadFile(filepath.Join("testdata", "sipp-uas-screen.log")) // sipp 3.6.1 -trace_screen
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"Successful call": 1, "Failed call": 0, "Incoming calls created": 1, "No such counter": -1} {
		if got := sippCount(string(screen), name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func TestBaresipEvents(t *testing.T) {
	// baresip 1.0.0 -v output as the peer writes it: events follow a status
	// line without a newline.
	out := "[0:00:04] audio=64000/63573 (bit/s)    received event: '1' (end=0)\n" +
		"received event: '1' (end=1)\n" +
		"[0:00:05] audio=64000/63573 (bit/s)    received event: '#' (end=0)\n" +
		"received event: '#' (end=1)\n" +
		"call: received DTMF: '7' (duration=100)\n" // SIP INFO, not RFC 4733
	var got []string
	for _, e := range baresipEvents(out) {
		got = append(got, e.String())
	}
	if want := "1:start 1:end #:start #:end"; strings.Join(got, " ") != want {
		t.Errorf("events %q, want %q", strings.Join(got, " "), want)
	}
}

func TestVerdict(t *testing.T) {
	clean, stalled := listenWin{stall: stallLimit - time.Millisecond}, listenWin{stall: stallLimit}
	cases := []struct {
		name   string
		wins   []listenWin
		pass   []bool
		i      int
		wantOK bool
	}{
		{"clean pass", []listenWin{clean}, []bool{true}, 0, true},
		{"clean failure is not excused", []listenWin{clean, clean}, []bool{false, true}, 0, false},
		{"stalled failure, then pass", []listenWin{stalled, clean}, []bool{false, true}, 1, true},
		{"stalled failure, then clean failure", []listenWin{stalled, clean}, []bool{false, false}, 1, false},
		{"stalled pass counts", []listenWin{stalled, clean}, []bool{true, false}, 0, true},
		{"all stalled and failed", []listenWin{stalled, stalled}, []bool{false, false}, -1, false},
	}
	for _, c := range cases {
		if i, ok := verdict(c.wins, c.pass); i != c.i || ok != c.wantOK {
			t.Errorf("%s: verdict = %d, %v; want %d, %v", c.name, i, ok, c.i, c.wantOK)
		}
	}
}
