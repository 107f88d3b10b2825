package gateway

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/transcode"
)

// memLeg is an in-memory media leg: the test injects packets with inject and
// reads what the bridge wrote from sent.
type memLeg struct {
	in     chan rtp.Packet
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	sent []sentPkt
}

type sentPkt struct {
	h       rtp.Header
	payload []byte
	at      time.Time
}

func newMemLeg() *memLeg { return &memLeg{in: make(chan rtp.Packet, 256), closed: make(chan struct{})} }

func (l *memLeg) ReadRTP(buf []byte, p *rtp.Packet) error {
	select {
	case pk := <-l.in:
		n := copy(buf, pk.Payload)
		p.Header = pk.Header
		p.Payload = buf[:n]
		return nil
	case <-l.closed:
		return net.ErrClosed
	}
}

func (l *memLeg) WriteRTP(h *rtp.Header, payload []byte) error {
	l.mu.Lock()
	l.sent = append(l.sent, sentPkt{*h, append([]byte(nil), payload...), time.Now()})
	l.mu.Unlock()
	return nil
}

func (l *memLeg) Close() { l.once.Do(func() { close(l.closed) }) }

func (l *memLeg) packets() []sentPkt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentPkt(nil), l.sent...)
}

// source sends 20 ms frames of a tone encoded with codec, paced in real time.
func source(ctx context.Context, l *memLeg, codec string, pt uint8, freq float64, ssrcSwitchAfter int) {
	enc, err := transcode.NewEncoder(codec, 8000, transcode.EncoderOptions{Complexity: 5, Bitrate: 24000})
	if err != nil {
		panic(err)
	}
	gen := transcode.NewToneGen(freq, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	buf := make([]byte, 400)
	step := uint32(transcode.ClockRate(codec) / 50)
	ssrc, seq, ts := uint32(1111), uint16(100), uint32(5000)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if i == ssrcSwitchAfter {
			ssrc, seq, ts = 2222, 60000, 1<<31 // a new source: new SSRC, seq and ts bases
		}
		gen.Fill(pcm)
		n, _ := enc.Encode(pcm, buf)
		pk := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: append([]byte(nil), buf[:n]...)}
		seq++
		ts += step
		select {
		case l.in <- pk:
		default:
		}
	}
}

func TestBridgeTranscodesBothWaysAndKeepsOneStream(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, codec := range []string{"PCMU", "PCMA", "opus"} {
		t.Run(codec, func(t *testing.T) {
			realTime(t, func(t tester) {
				pt := map[string]uint8{"PCMU": 0, "PCMA": 8, "opus": 111}[codec]
				wa, pbx := newMemLeg(), newMemLeg()
				ctx, cancel := context.WithCancel(context.Background())
				var failed error
				b := newBridge(slog.Default(), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(err error) { failed = err })
				b.Start(ctx)
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); source(ctx, pbx, codec, pt, 1000, 75) }()
				go func() { defer wg.Done(); source(ctx, wa, "opus", metaPT, 440, -1) }()

				time.Sleep(200 * time.Millisecond) // PBX early media: must be discarded
				if err := b.SetPBX(pbxMedia{Codec: codec, PT: pt, DTMFPT: 101}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond) // accept in flight: nothing may reach Meta
				if n := len(wa.packets()); n != 0 {
					t.Fatalf("%d packets reached Meta before OpenMeta", n)
				}
				b.OpenMeta()
				time.Sleep(3 * time.Second)
				cancel()
				wa.Close()
				pbx.Close()
				b.Stop()
				b.Wait()
				wg.Wait()
				if failed != nil {
					t.Fatal(failed)
				}

				toMeta := wa.packets()
				sp, sm := b.Stats()
				t.Logf("to PBX %+v", sp)
				t.Logf("to Meta %+v", sm)
				if len(toMeta) < 100 || len(pbx.packets()) < 100 {
					t.Fatalf("too few packets: %d toward Meta, %d toward the PBX", len(toMeta), len(pbx.packets()))
				}
				// One SSRC, seq +1, timestamps following wall-clock time, across
				// the PBX's SSRC change at 1.5 s.
				first := toMeta[0]
				for i := 1; i < len(toMeta); i++ {
					p, q := toMeta[i-1], toMeta[i]
					if q.h.SSRC != first.h.SSRC || q.h.SequenceNumber != p.h.SequenceNumber+1 {
						t.Fatalf("packet %d: ssrc %d seq %d after %d", i, q.h.SSRC, q.h.SequenceNumber, p.h.SequenceNumber)
					}
					media := time.Duration(q.h.Timestamp-first.h.Timestamp) * time.Second / 48000
					wall := q.at.Sub(first.at)
					// A packet may leave up to holdSlots after its slot (playout
					// waits for a late packet) plus one tick, measured from the first
					// packet, which may itself have left late.
					bound := time.Duration(holdSlots+1) * frameDur
					if d := wall - media; !raceEnabled && (d > bound || d < -bound) {
						t.Fatalf("packet %d: media time %v vs wall time %v", i, media, wall)
					}
				}
				if raceEnabled {
					return // real-time quality is checked in the non-race pass
				}
				// The first 25 frames are not counted: the encoders start there.
				// 3 s with one source switch: at most 3 frames around the switch may miss.
				if r := pcmRatio(t, toMeta, 25, "opus", metaPT, 1000); r < 0.97 {
					t.Errorf("Meta heard the PBX tone in %.1f%% of frames", r*100)
				}
				if r := pcmRatio(t, pbx.packets(), 25, codec, pt, 440); r < 0.98 {
					t.Errorf("the PBX heard the caller tone in %.1f%% of frames", r*100)
				}
				if got := float64(len(toMeta)) / 3.0; got < 45 {
					t.Errorf("%.1f packets/s toward Meta", got)
				}
			})
		})
	}
}

func TestBridgeSilenceKeepsMetaFed(t *testing.T) {
	defer goleak.VerifyNone(t)
	realTime(t, func(t tester) {
		wa, pbx := newMemLeg(), newMemLeg()
		ctx, cancel := context.WithCancel(context.Background())
		b := newBridge(slog.Default(), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(error) {})
		b.Start(ctx)
		if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}); err != nil {
			t.Fatal(err)
		}
		b.OpenMeta()
		time.Sleep(time.Second) // the PBX sends nothing at all
		cancel()
		wa.Close()
		pbx.Close()
		b.Stop()
		b.Wait()
		if n := len(wa.packets()); n < 45 {
			t.Fatalf("only %d packets toward Meta in 1 s of PBX silence", n)
		}
	})
}

func TestBridgeRelaysDTMFWithReceiverPT(t *testing.T) {
	defer goleak.VerifyNone(t)
	wa, pbx := newMemLeg(), newMemLeg()
	ctx, cancel := context.WithCancel(context.Background())
	b := newBridge(slog.Default(), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(error) {})
	b.Start(ctx)
	if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 96}); err != nil {
		t.Fatal(err)
	}
	b.OpenMeta()
	// Caller presses 5 for 100 ms: events at 8 kHz on PT 126.
	buf := make([]byte, 4)
	for i, d := range []uint16{160, 320, 480, 640, 800, 800, 800, 800} {
		ev := transcode.Event{Code: 5, Duration: d, Volume: 10, End: i >= 5}
		ev.Put(buf)
		wa.in <- rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: metaDTMF, SequenceNumber: uint16(i), Timestamp: 48000, SSRC: 9}, Payload: append([]byte(nil), buf...)}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	wa.Close()
	pbx.Close()
	b.Stop()
	b.Wait()
	det := transcode.NewDetector(time.Second)
	var digits []transcode.Digit
	var evTS []uint32
	for _, p := range pbx.packets() {
		if p.h.PayloadType != 96 {
			continue
		}
		ev, err := transcode.ParseEvent(p.payload)
		if err != nil {
			t.Fatal(err)
		}
		evTS = append(evTS, p.h.Timestamp)
		if d, ok := det.Push(p.h.Timestamp, ev, p.at); ok {
			digits = append(digits, d)
		}
	}
	if len(digits) != 1 || digits[0].Code != 5 || digits[0].Duration != 800 {
		t.Fatalf("digits at the PBX: %+v", digits)
	}
	for _, ts := range evTS {
		if ts != evTS[0] {
			t.Fatalf("event timestamp changed within the event: %v", evTS)
		}
	}
}

// TestBridgePlaysLocalAudioThenPBX: queue mode. Meta's side opens with
// locally made audio (a 425 Hz ringback stand-in) and no PBX; when the agent
// answers, the PBX's tone replaces it in the same stream (one SSRC, sequence
// +1), and what the PBX sent before SetPBX never reaches Meta.
func TestBridgePlaysLocalAudioThenPBX(t *testing.T) {
	defer goleak.VerifyNone(t)
	realTime(t, func(t tester) { playsLocalAudioThenPBX(t) })
}

func playsLocalAudioThenPBX(t tester) {
	wa, pbx := newMemLeg(), newMemLeg()
	ctx, cancel := context.WithCancel(context.Background())
	var failed error
	b := newBridge(slog.Default(), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbx, func(err error) { failed = err })
	b.Start(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); source(ctx, pbx, "PCMU", 0, 1000, -1) }()
	ring := transcode.NewToneGen(425, 8000, transcode.AmpForDBFS(-12))
	if err := b.PlayToMeta(ring.Fill); err != nil {
		t.Fatal(err)
	}
	b.OpenMeta()
	time.Sleep(1500 * time.Millisecond)
	switchAt := len(wa.packets())
	if err := b.SetPBX(pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cancel()
	wa.Close()
	pbx.Close()
	b.Stop()
	b.Wait()
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	toMeta := wa.packets()
	if switchAt < 50 || len(toMeta)-switchAt < 50 {
		t.Fatalf("packets toward Meta: %d before the agent answered, %d after", switchAt, len(toMeta)-switchAt)
	}
	for i := 1; i < len(toMeta); i++ {
		if toMeta[i].h.SSRC != toMeta[0].h.SSRC || toMeta[i].h.SequenceNumber != toMeta[i-1].h.SequenceNumber+1 {
			t.Fatalf("packet %d: ssrc %d seq %d after %d", i, toMeta[i].h.SSRC, toMeta[i].h.SequenceNumber, toMeta[i-1].h.SequenceNumber)
		}
	}
	if raceEnabled {
		return
	}
	before, after := toMeta[:switchAt], toMeta[switchAt:]
	if r := pcmRatio(t, before, 10, "opus", metaPT, 425); r < 0.95 {
		t.Errorf("before the agent answered Meta heard the local 425 Hz in %.1f%% of frames", r*100)
	}
	if r := pcmRatio(t, before, 10, "opus", metaPT, 1000); r > 0 {
		t.Errorf("the PBX's audio reached Meta before SetPBX (%.1f%% of frames)", r*100)
	}
	if r := pcmRatio(t, after, 10, "opus", metaPT, 1000); r < 0.95 {
		t.Errorf("after the agent answered Meta heard the PBX's 1000 Hz in %.1f%% of frames", r*100)
	}
}

// TestDirectionStaleTick: a playout tick stamped before the stream opened
// (its value waited in the ticker's channel while SetPBX opened the stream)
// must not wrap the slot count and silence the direction for good.
func TestDirectionStaleTick(t *testing.T) {
	out := newMemLeg()
	d := newDirection("to_pbx", out, 1, 50)
	d.silence = []byte{0xff}
	start := time.Now()
	d.mu.Lock()
	d.openAt(start)
	d.mu.Unlock()
	d.tick(start.Add(-45 * time.Millisecond))
	for i := 1; i <= 10; i++ {
		d.tick(start.Add(time.Duration(i) * frameDur))
	}
	if n := len(out.packets()); n < 10 || n > 12 {
		t.Fatalf("%d packets in 200 ms after a stale tick, want about 10", n)
	}
}
