package pbx_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/transcode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type leg struct {
	ua     *sip.UA
	d      *sip.Dialog
	media  *sip.RTPSession
	call   *pbx.Call
	answer *sip.MediaDesc
}

// dial starts a simulator with cfg and calls it from a sip UA.
func dial(t *testing.T, cfg pbx.Config, codecs ...string) *leg {
	t.Helper()
	cfg.Logger = quiet
	p, err := pbx.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", RTPPortMin: 43000, RTPPortMax: 43999, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	media, err := u.NewRTPSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { media.Close() })
	if len(codecs) == 0 {
		codecs = []string{"PCMU"}
	}
	d, err := u.Dial(context.Background(), sip.DialRequest{
		Trunk:  &sip.Trunk{Address: p.Addr().String(), Codecs: codecs},
		Target: "1000", Media: media,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	call, err := p.NextCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := d.WaitAnswer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &leg{ua: u, d: d, media: media, call: call, answer: ans}
}

type pkt struct {
	h       rtp.Header
	payload []byte
	at      time.Time
}

// collect reads RTP for dur.
func collect(t *testing.T, s *sip.RTPSession, dur time.Duration) []pkt {
	t.Helper()
	out := make(chan []pkt, 1)
	go func() {
		var got []pkt
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			if err := s.ReadRTP(buf, &p); err != nil {
				out <- got
				return
			}
			got = append(got, pkt{p.Header.Clone(), append([]byte(nil), p.Payload...), time.Now()})
		}
	}()
	time.Sleep(dur)
	s.Close()
	return <-out
}

func TestToneAndAnswerTiming(t *testing.T) {
	l := dial(t, pbx.Config{ToneHz: 1200, AnswerDelay: 200 * time.Millisecond})
	pkts := collect(t, l.media, 600*time.Millisecond)
	if len(pkts) < 20 {
		t.Fatalf("only %d packets", len(pkts))
	}
	var pcm []int16
	frame := make([]int16, 160)
	for i, p := range pkts {
		if p.h.PayloadType != 0 || len(p.payload) != 160 {
			t.Fatalf("packet %d: PT %d len %d", i, p.h.PayloadType, len(p.payload))
		}
		if i > 0 && (p.h.SequenceNumber != pkts[i-1].h.SequenceNumber+1 || p.h.Timestamp != pkts[i-1].h.Timestamp+160) {
			t.Fatalf("packet %d: seq/ts not continuous", i)
		}
		transcode.ULawDecode(frame, p.payload)
		pcm = append(pcm, frame...)
	}
	if on, off := transcode.Goertzel(pcm, 8000, 1200), transcode.Goertzel(pcm, 8000, 700); on < 100*off {
		t.Fatalf("1200 Hz not dominant: %g vs %g", on, off)
	}
	if lvl := transcode.ToneLevelDBFS(pcm, 8000, 1200); math.Abs(lvl+12) > 1 {
		t.Fatalf("level %.1f dBFS", lvl)
	}
	c := l.call
	if c.AnsweredAt().IsZero() || c.FirstRTPSentAt().Before(c.AnsweredAt()) || c.EarlyMediaSent() {
		t.Fatalf("answered %v first RTP %v", c.AnsweredAt(), c.FirstRTPSentAt())
	}
	if a := c.AckedAt(); a.IsZero() || a.Before(c.AnsweredAt()) {
		t.Fatalf("acked at %v", a)
	}
}

// TestDTMFBothWays: the simulator sends RFC 4733 at its own PT (96) with a
// constant timestamp per event and three End packets, and reassembles the
// digits we send it at that PT.
func TestDTMFBothWays(t *testing.T) {
	var frames atomic.Int64
	l := dial(t, pbx.Config{DTMFPT: 96, OnAudio: func(*pbx.Call, []int16, time.Time) { frames.Add(1) }})
	if l.answer.DTMFPT != 96 {
		t.Fatalf("answer DTMF PT %d", l.answer.DTMFPT)
	}
	got := make(chan []pkt, 1)
	go func() { got <- collect(t, l.media, 1500*time.Millisecond) }()
	l.call.SendDTMF("1#9", 100*time.Millisecond, 60*time.Millisecond)

	// Our side: send "4*" at PT 96 with transcode.Generator, audio between.
	h := rtp.Header{Version: 2, SSRC: 99, SequenceNumber: 1, Timestamp: 1000}
	payload := make([]byte, 160)
	for _, r := range "4*" {
		code, _ := transcode.DigitCode(r)
		var g transcode.Generator
		g.Start(code, 800, 10)
		evTS := h.Timestamp
		for g.Active() {
			ev, first := g.Next(160)
			n := ev.Put(payload)
			eh := h
			eh.PayloadType, eh.Timestamp, eh.Marker = 96, evTS, first
			if err := l.media.WriteRTP(&eh, payload[:n]); err != nil {
				t.Fatal(err)
			}
			h.SequenceNumber++
			h.Timestamp += 160
			time.Sleep(20 * time.Millisecond)
		}
		for i := 0; i < 3; i++ {
			transcode.ULawEncode(payload, make([]int16, 160))
			h.PayloadType = 0
			l.media.WriteRTP(&h, payload[:160])
			h.SequenceNumber++
			h.Timestamp += 160
			time.Sleep(20 * time.Millisecond)
		}
	}
	pkts := <-got

	// What the simulator sent.
	det := transcode.NewDetector(time.Second)
	var digits []rune
	ends := map[uint32]int{}
	for _, p := range pkts {
		if p.h.PayloadType != 96 {
			continue
		}
		ev, err := transcode.ParseEvent(p.payload)
		if err != nil {
			t.Fatal(err)
		}
		if ev.End {
			ends[p.h.Timestamp]++
			if ev.Duration != 800 {
				t.Fatalf("end duration %d, want 800", ev.Duration)
			}
		}
		if d, ok := det.Push(p.h.Timestamp, ev, p.at); ok {
			digits = append(digits, transcode.DigitRune(d.Code))
		}
	}
	if string(digits) != "1#9" {
		t.Fatalf("digits from simulator %q", string(digits))
	}
	for ts, n := range ends {
		if n != 3 {
			t.Fatalf("event ts %d: %d End packets, want 3", ts, n)
		}
	}

	// What the simulator received.
	waitDigits := time.Now().Add(2 * time.Second)
	for len(l.call.Digits()) < 2 && time.Now().Before(waitDigits) {
		time.Sleep(20 * time.Millisecond)
	}
	rd := l.call.Digits()
	if len(rd) != 2 || rd[0].Rune != '4' || rd[1].Rune != '*' || rd[0].PT != 96 || rd[0].Duration != 100*time.Millisecond {
		t.Fatalf("simulator digits %+v", rd)
	}
	if frames.Load() == 0 {
		t.Fatal("OnAudio never called")
	}
}

func TestSSRCChangeAndSilentAfter(t *testing.T) {
	l := dial(t, pbx.Config{ChangeSSRCAfter: 300 * time.Millisecond, SilentAfter: 700 * time.Millisecond})
	start := time.Now()
	pkts := collect(t, l.media, 1200*time.Millisecond)
	ssrcs := map[uint32]bool{}
	var last time.Time
	for _, p := range pkts {
		ssrcs[p.h.SSRC] = true
		last = p.at
	}
	if len(ssrcs) != 2 {
		t.Fatalf("%d SSRCs, want 2", len(ssrcs))
	}
	if gap := last.Sub(start); gap > 900*time.Millisecond {
		t.Fatalf("RTP still flowing %v after start (silent after 700 ms)", gap)
	}
	if st := l.media.Stats(); st.SSRCChanges != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSilent(t *testing.T) {
	l := dial(t, pbx.Config{Silent: true})
	if pkts := collect(t, l.media, 300*time.Millisecond); len(pkts) != 0 {
		t.Fatalf("silent simulator sent %d packets", len(pkts))
	}
	if !l.call.FirstRTPSentAt().IsZero() {
		t.Fatal("FirstRTPSentAt set")
	}
}

func TestOpus(t *testing.T) {
	l := dial(t, pbx.Config{Codecs: []string{"opus", "PCMU"}, ToneHz: 600}, "opus", "PCMU")
	c, ok := l.answer.Codec("opus")
	if !ok || c.PT != 111 || c.Rate != 48000 {
		t.Fatalf("answer %+v", l.answer)
	}
	pkts := collect(t, l.media, 800*time.Millisecond)
	dec, err := transcode.NewDecoder("opus", 8000)
	if err != nil {
		t.Fatal(err)
	}
	var pcm []int16
	frame := make([]int16, 960)
	for i, p := range pkts {
		if i > 0 && p.h.Timestamp-pkts[i-1].h.Timestamp != 960 {
			t.Fatalf("opus ts step %d", p.h.Timestamp-pkts[i-1].h.Timestamp)
		}
		n, err := dec.Decode(p.payload, frame)
		if err != nil {
			t.Fatal(err)
		}
		pcm = append(pcm, frame[:n]...)
	}
	if len(pcm) < 4000 {
		t.Fatalf("%d samples", len(pcm))
	}
	tail := pcm[len(pcm)/2:]
	if on, off := transcode.Goertzel(tail, 8000, 600), transcode.Goertzel(tail, 8000, 1100); on < 30*off {
		t.Fatalf("600 Hz not dominant after opus: %g vs %g", on, off)
	}
}

func TestRejectUnsupportedCodec(t *testing.T) {
	p, err := pbx.Start(context.Background(), pbx.Config{Codecs: []string{"PCMA"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	u, err := sip.NewUA(sip.Config{Listen: []string{"udp:127.0.0.1:0"}, RTPHost: "127.0.0.1", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, _ := u.NewRTPSession()
	defer m.Close()
	d, err := u.Dial(context.Background(), sip.DialRequest{Trunk: &sip.Trunk{Address: p.Addr().String(), Codecs: []string{"PCMU"}}, Target: "1", Media: m})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.WaitAnswer(context.Background())
	if se, ok := err.(*sip.StatusError); !ok || se.Code != 488 {
		t.Fatalf("want 488, got %v", err)
	}
}

// TestCodecOptions: AnswerAllCodecs answers every accepted codec of the
// offer, SwitchCodecEvery alternates the sending PT, Ptime sets a=ptime and
// the packet size, and CN is sent as RFC 3389 packets with nothing between.
func TestCodecOptions(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     pbx.Config
		ptime   int
		wantPTs []uint8
		cn      bool
	}{
		{"pcmu+pcma switching", pbx.Config{Codecs: []string{"PCMU", "PCMA"}, AnswerAllCodecs: true, SwitchCodecEvery: 200 * time.Millisecond}, 20, []uint8{0, 8}, false},
		{"ptime 10", pbx.Config{Ptime: 10}, 10, []uint8{0}, false},
		{"ptime 30", pbx.Config{Ptime: 30}, 30, []uint8{0}, false},
		{"comfort noise", pbx.Config{CNAfter: 200 * time.Millisecond, CNFor: 500 * time.Millisecond, CNInterval: 100 * time.Millisecond}, 20, []uint8{0, 13}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := dial(t, c.cfg, "PCMU", "PCMA")
			if l.answer.Ptime != c.ptime {
				t.Fatalf("answer ptime %d, want %d", l.answer.Ptime, c.ptime)
			}
			if c.cfg.AnswerAllCodecs && (len(l.answer.Codecs) != 2 || l.answer.Codecs[0].Name != "PCMU" || l.answer.Codecs[1].Name != "PCMA") {
				t.Fatalf("answer codecs %+v", l.answer.Codecs)
			}
			pkts := collect(t, l.media, time.Second)
			seen := map[uint8]int{}
			for i, p := range pkts {
				seen[p.h.PayloadType]++
				switch p.h.PayloadType {
				case 13:
					if len(p.payload) != 1 {
						t.Fatalf("CN packet %d: %d bytes", i, len(p.payload))
					}
				default:
					if len(p.payload) != c.ptime*8 {
						t.Fatalf("packet %d: %d bytes, want %d", i, len(p.payload), c.ptime*8)
					}
				}
				if i > 0 && p.h.SequenceNumber != pkts[i-1].h.SequenceNumber+1 {
					t.Fatalf("packet %d: sequence not continuous", i)
				}
			}
			for _, pt := range c.wantPTs {
				if seen[pt] < 2 {
					t.Errorf("PT %d sent %d times (all: %v)", pt, seen[pt], seen)
				}
			}
			if c.cn {
				// 500 ms at one CN per 100 ms instead of 25 audio packets.
				if seen[13] < 4 || seen[13] > 6 || seen[0] > 50-25+3 {
					t.Errorf("sent %v: want about 5 CN packets replacing 25 audio packets", seen)
				}
			} else {
				// The ptime shows in the RTP clock, not in wall-clock packet counts
				// (this runs under -race on a shared 2-core machine): every audio
				// packet advances the timestamp by exactly ptime*8 samples.
				if len(pkts) < 10 {
					t.Errorf("%d packets in 1 s at ptime %d", len(pkts), c.ptime)
				}
				for i := 1; i < len(pkts); i++ {
					if d := pkts[i].h.Timestamp - pkts[i-1].h.Timestamp; d != uint32(c.ptime*8) {
						t.Fatalf("packet %d: timestamp step %d, want %d", i, d, c.ptime*8)
					}
				}
			}
		})
	}
}
