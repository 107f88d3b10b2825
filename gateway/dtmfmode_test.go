package gateway

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/transcode"
)

// sendMetaDigits plays digits from the caller as RFC 4733 events on PT 126,
// each lasting each (in 20 ms packets), with gap between them, paced in real
// time. seq continues from *seq.
func sendMetaDigits(l *memLeg, digits string, each, gap time.Duration, seq *uint16) {
	buf := make([]byte, 4)
	ts := uint32(48000)
	for _, r := range digits {
		code, _ := transcode.DigitCode(r)
		n := int(each / frameDur)
		for i := 1; i <= n+2; i++ {
			d := uint16(min(i, n) * 160)
			ev := transcode.Event{Code: code, Duration: d, Volume: 10, End: i >= n}
			ev.Put(buf)
			l.in <- rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: metaDTMF, SequenceNumber: *seq, Timestamp: ts, SSRC: 9}, Payload: append([]byte(nil), buf...)}
			*seq++
			time.Sleep(frameDur)
		}
		ts += uint32((each + gap) / time.Second * 48000)
		ts += 48000
		time.Sleep(gap)
	}
}

// metaDigits decodes the RFC 4733 events that reached Meta.
func metaDigits(t tester, pkts []sentPkt) string {
	t.Helper()
	det := transcode.NewDetector(time.Second)
	var b strings.Builder
	for _, p := range pkts {
		if p.h.PayloadType != metaDTMF {
			continue
		}
		ev, err := transcode.ParseEvent(p.payload)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := det.Push(p.h.Timestamp, ev, p.at); ok {
			b.WriteRune(transcode.DigitRune(d.Code))
		}
	}
	return b.String()
}

// pcmuDigits decodes what reached the PBX and runs an in-band detector on it.
func pcmuDigits(t tester, pkts []sentPkt) string {
	t.Helper()
	dec, err := transcode.NewDecoder("PCMU", 8000)
	if err != nil {
		t.Fatal(err)
	}
	det := transcode.NewInbandDetector()
	pcm := make([]int16, 480)
	var b strings.Builder
	for _, p := range pkts {
		if p.h.PayloadType != 0 {
			t.Fatalf("PT %d toward an in-band PBX: only audio may go", p.h.PayloadType)
		}
		n, err := dec.Decode(p.payload, pcm)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range det.Push(pcm[:n]) {
			if d.End {
				b.WriteRune(d.Rune())
			}
		}
	}
	return b.String()
}

func runBridge(t tester, m pbxMedia, setup func(b *Bridge), drive func(wa, pbx *memLeg, b *Bridge)) (wa, pbx *memLeg, b *Bridge) {
	t.Helper()
	wa, pbx = newMemLeg(), newMemLeg()
	ctx, cancel := context.WithCancel(context.Background())
	b = newBridge(slog.Default(), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(error) {})
	if setup != nil {
		setup(b)
	}
	b.Start(ctx)
	if err := b.SetPBX(m); err != nil {
		t.Fatal(err)
	}
	b.OpenMeta()
	drive(wa, pbx, b)
	cancel()
	wa.Close()
	pbx.Close()
	b.Stop()
	b.Wait()
	return wa, pbx, b
}

// TestBridgeInbandDTMFTowardPBX: a PBX without telephone-event gets the
// caller's digits as ITU-T Q.23 tones in its G.711 audio, detected back.
func TestBridgeInbandDTMFTowardPBX(t *testing.T) {
	defer goleak.VerifyNone(t)
	// Real time: a CPU stall can cut a tone or an event short (realtime_test.go).
	realTime(t, func(t tester) {
		_, pbx, _ := runBridge(t, pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: -1, DTMFMode: dtmfMode("rfc4733", -1)}, nil,
			func(wa, _ *memLeg, _ *Bridge) {
				var seq uint16
				time.Sleep(100 * time.Millisecond)
				sendMetaDigits(wa, "19#", 100*time.Millisecond, 100*time.Millisecond, &seq)
				time.Sleep(200 * time.Millisecond)
			})
		if got := pcmuDigits(t, pbx.packets()); got != "19#" {
			t.Errorf("digits detected in the PBX's audio %q, want 19#", got)
		}
	})
}

// TestBridgeInbandDTMFFromPBX: tones in the PBX's audio reach Meta as RFC
// 4733 events on PT 126.
func TestBridgeInbandDTMFFromPBX(t *testing.T) {
	defer goleak.VerifyNone(t)
	// Real time: a CPU stall can cut a tone or an event short (realtime_test.go).
	realTime(t, func(t tester) {
		wa, _, _ := runBridge(t, pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: -1, DTMFMode: "inband"}, nil,
			func(_, pbx *memLeg, _ *Bridge) {
				enc, _ := transcode.NewEncoder("PCMU", 8000, transcode.EncoderOptions{})
				gen := transcode.NewInbandGenerator(8000)
				for _, r := range "47*" {
					_ = gen.Play(r, 80*time.Millisecond)
				}
				pcm := make([]int16, 160)
				buf := make([]byte, 160)
				for i := 0; i < 50; i++ {
					clear(pcm)
					gen.Mix(pcm)
					n, _ := enc.Encode(pcm, buf)
					pbx.in <- rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, Payload: append([]byte(nil), buf[:n]...)}
					time.Sleep(frameDur)
				}
				time.Sleep(300 * time.Millisecond)
			})
		if got := metaDigits(t, wa.packets()); got != "47*" {
			t.Errorf("digits relayed to Meta %q, want 47*", got)
		}
	})
}

// TestBridgeInfoDTMF: with dtmf: info the caller's digits leave as SIP INFO
// (one per digit, with its duration) and nothing but audio goes to the PBX;
// the PBX's INFO digits reach Meta as RFC 4733 events.
func TestBridgeInfoDTMF(t *testing.T) {
	defer goleak.VerifyNone(t)
	// Real time: a CPU stall can cut a tone or an event short (realtime_test.go).
	realTime(t, func(t tester) {
		var mu sync.Mutex
		var sent []string
		wa, pbx, _ := runBridge(t, pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101, DTMFMode: "info"},
			func(b *Bridge) {
				b.SetInfoSink(func(d rune, dur time.Duration) {
					mu.Lock()
					sent = append(sent, string(d)+":"+dur.String())
					mu.Unlock()
				})
			},
			func(wa, _ *memLeg, b *Bridge) {
				var seq uint16
				sendMetaDigits(wa, "3*", 120*time.Millisecond, 60*time.Millisecond, &seq)
				b.PBXDigit('8', 160*time.Millisecond)
				time.Sleep(100 * time.Millisecond)
				b.PBXDigit('0', 100*time.Millisecond)
				time.Sleep(500 * time.Millisecond)
			})
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(sent, ",") != "3:120ms,*:120ms" {
			t.Errorf("INFO digits %v, want 3 and * of 120 ms", sent)
		}
		for _, p := range pbx.packets() {
			if p.h.PayloadType != 0 {
				t.Fatalf("PT %d toward a dtmf: info PBX", p.h.PayloadType)
			}
		}
		if got := metaDigits(t, wa.packets()); got != "80" {
			t.Errorf("PBX INFO digits relayed to Meta %q, want 80", got)
		}
	})
}
