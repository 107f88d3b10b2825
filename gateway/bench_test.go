package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/transcode"
)

// discardLeg drops what is written and never yields a packet: the benchmarks
// drive the directions by hand so only ponte's own media code is measured
// (pion's and the kernel's costs are measured separately).
type discardLeg struct{ n int }

func (l *discardLeg) ReadRTP([]byte, *rtp.Packet) error            { return net.ErrClosed }
func (l *discardLeg) WriteRTP(_ *rtp.Header, payload []byte) error { l.n += len(payload); return nil }

// frames encodes n 20 ms frames of a tone with codec.
func frames(tb testing.TB, codec string, n int) [][]byte {
	enc, err := transcode.NewEncoder(codec, 8000, transcode.EncoderOptions{Complexity: 5, Bitrate: 24000})
	if err != nil {
		tb.Fatal(err)
	}
	gen := transcode.NewToneGen(440, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	out := make([][]byte, n)
	for i := range out {
		gen.Fill(pcm)
		buf := make([]byte, 400)
		k, err := enc.Encode(pcm, buf)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = buf[:k]
	}
	return out
}

// callStep is one 20 ms step of a call: a packet arrives from each side and
// the playout clock ticks once.
type callStep struct {
	b          *Bridge
	fromPBX    [][]byte
	fromMeta   [][]byte
	pbxPT      uint8
	pPBX, pWA  rtp.Packet
	now        time.Time
	i          int
	wa, pbxLeg *discardLeg
}

func newCallStep(tb testing.TB, pbxCodec string) *callStep {
	wa, pbxLeg := &discardLeg{}, &discardLeg{}
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000, JitterFrames: 1, AcceptFrames: 50}, wa, pbxLeg, func(error) {})
	pt := map[string]uint8{"PCMU": 0, "PCMA": 8, "opus": 111}[pbxCodec]
	if err := b.SetPBX(pbxMedia{Codec: pbxCodec, PT: pt, DTMFPT: 101}); err != nil {
		tb.Fatal(err)
	}
	b.OpenMeta()
	s := &callStep{b: b, fromPBX: frames(tb, pbxCodec, 50), fromMeta: frames(tb, "opus", 50), pbxPT: pt, wa: wa, pbxLeg: pbxLeg}
	s.now = time.Now()
	b.toMeta.start, b.toPBX.start = s.now, s.now
	s.pPBX.Header = rtp.Header{Version: 2, PayloadType: pt, SSRC: 1}
	s.pWA.Header = rtp.Header{Version: 2, PayloadType: metaPT, SSRC: 2}
	return s
}

func (s *callStep) step() {
	k := s.i % 50
	s.pPBX.SequenceNumber, s.pPBX.Timestamp, s.pPBX.Payload = uint16(s.i), uint32(s.i*160), s.fromPBX[k]
	s.pWA.SequenceNumber, s.pWA.Timestamp, s.pWA.Payload = uint16(s.i), uint32(s.i*960), s.fromMeta[k]
	s.b.toMeta.mu.Lock()
	s.b.toMeta.receive(&s.pPBX, s.now)
	s.b.toMeta.mu.Unlock()
	s.b.toPBX.mu.Lock()
	s.b.toPBX.receive(&s.pWA, s.now)
	s.b.toPBX.mu.Unlock()
	s.b.toMeta.tick(s.now)
	s.b.toPBX.tick(s.now)
	s.i++
	s.now = s.now.Add(frameDur)
}

// TestBridgeNoAllocsPerPacket: ponte's media code (receive, jitter buffer,
// decode, encode, write) allocates nothing per packet in steady state, in
// both directions, transcoding and passthrough.
func TestBridgeNoAllocsPerPacket(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA", "opus"} {
		s := newCallStep(t, codec)
		for i := 0; i < 100; i++ { // warm up: buffers, codec state
			s.step()
		}
		if a := testing.AllocsPerRun(500, s.step); a != 0 {
			t.Errorf("%s: %.2f allocations per 20 ms step (two packets in, two out)", codec, a)
		}
		if s.wa.n == 0 || s.pbxLeg.n == 0 {
			t.Fatalf("%s: nothing written", codec)
		}
	}
}

// BenchmarkBridgeCallSecond reports ponte's own media CPU per call-second
// (50 steps: 50 packets each way), without pion/SRTP and sockets.
func BenchmarkBridgeCallSecond(b *testing.B) {
	for _, codec := range []string{"PCMU", "opus"} {
		b.Run(codec, func(b *testing.B) {
			s := newCallStep(b, codec)
			for i := 0; i < 100; i++ {
				s.step()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for k := 0; k < 50; k++ {
					s.step()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "cpu-s/call-s")
		})
	}
}

// TestBridgePanicEndsOnlyThisCall: a panic in one call's media goroutine is
// recovered, reported as ErrMediaPanic to that call, and the bridge's other
// goroutines stop normally.
func TestBridgePanicEndsOnlyThisCall(t *testing.T) {
	failed := make(chan error, 1)
	b := newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000}, panicLeg{}, &discardLeg{}, func(err error) { failed <- err })
	ctx, cancel := testContext()
	b.Start(ctx)
	select {
	case err := <-failed:
		if err == nil || !errorsIs(err, ErrMediaPanic) {
			t.Fatalf("fail got %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the panic was not reported")
	}
	cancel()
	b.Stop()
	b.Wait()
}

type panicLeg struct{}

func (panicLeg) ReadRTP([]byte, *rtp.Packet) error  { panic("decoder exploded") }
func (panicLeg) WriteRTP(*rtp.Header, []byte) error { return nil }

func testContext() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
