package sip_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/transcode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger shows sipgo/ponte warnings only with -v.
func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("SIP_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newUA starts a UA on loopback (UDP and TCP, ephemeral ports).
func newUA(t *testing.T, mod ...func(*sip.Config)) *sip.UA {
	t.Helper()
	cfg := sip.Config{
		Listen:     []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0"},
		RTPHost:    "127.0.0.1",
		RTPPortMin: 41000,
		RTPPortMax: 41999,
		UserAgent:  "ponte-test",
		Logger:     testLogger(),
	}
	for _, f := range mod {
		f(&cfg)
	}
	u, err := sip.NewUA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func newRTP(t *testing.T, u *sip.UA) *sip.RTPSession {
	t.Helper()
	s, err := u.NewRTPSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sendTone sends n 20 ms PCMU frames of a tone, paced in real time.
func sendTone(ctx context.Context, s *sip.RTPSession, freq float64, n int, ssrc uint32) error {
	gen := transcode.NewToneGen(freq, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	h := rtp.Header{Version: 2, PayloadType: 0, SSRC: ssrc, SequenceNumber: 1000, Timestamp: 5000}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		gen.Fill(pcm)
		transcode.ULawEncode(payload, pcm)
		h.Marker = i == 0
		if err := s.WriteRTP(&h, payload); err != nil {
			return err
		}
		h.SequenceNumber++
		h.Timestamp += 160
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// receiveAudio decodes PCMU packets until n samples arrived or the deadline.
func receiveAudio(s *sip.RTPSession, samples int, deadline time.Duration) ([]int16, error) {
	type res struct {
		pcm []int16
		err error
	}
	done := make(chan res, 1)
	go func() {
		buf := make([]byte, 1500)
		var p rtp.Packet
		out := make([]int16, 0, samples)
		frame := make([]int16, 1500)
		for len(out) < samples {
			if err := s.ReadRTP(buf, &p); err != nil {
				done <- res{out, err}
				return
			}
			if p.PayloadType != 0 {
				continue
			}
			n := transcode.ULawDecode(frame, p.Payload)
			out = append(out, frame[:n]...)
		}
		done <- res{out, nil}
	}()
	select {
	case r := <-done:
		return r.pcm, r.err
	case <-time.After(deadline):
		s.Close() // unblocks the reader
		r := <-done
		return r.pcm, errors.New("timeout waiting for audio")
	}
}

// assertTone checks that freq dominates the audio (Goertzel against two
// off-frequency probes) at a sane level.
func assertTone(t *testing.T, pcm []int16, freq float64) {
	t.Helper()
	if len(pcm) < 800 {
		t.Fatalf("only %d samples", len(pcm))
	}
	block := pcm[len(pcm)/4:]
	on := transcode.Goertzel(block, 8000, freq)
	for _, off := range []float64{freq * 0.6, freq * 1.7} {
		if p := transcode.Goertzel(block, 8000, off); on < 100*p {
			t.Fatalf("tone %.0f Hz not dominant: power %.3g vs %.3g at %.0f Hz", freq, on, p, off)
		}
	}
	if lvl := transcode.ToneLevelDBFS(block, 8000, freq); math.Abs(lvl-(-12)) > 2 {
		t.Fatalf("tone level %.1f dBFS, want -12±2", lvl)
	}
}

// freeUDPPort returns a currently free UDP port on loopback (even, with
// port+1 free too, for RTP peers).
func freeUDPPort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if p%2 == 0 && p < 65530 {
			c2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
			if err == nil {
				c2.Close()
				return p
			}
		}
	}
	t.Fatal("no free port")
	return 0
}
