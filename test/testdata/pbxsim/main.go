// Command pbxsim runs the PBX simulator (sim/pbx) as its own process, for
// tests that need the PBX in another network namespace (test/nat_test.go
// starts it with `ip netns exec`). It answers each INVITE, plays a tone and
// measures what it hears. It talks JSON lines: events on stdout, commands on
// stdin (one per line):
//
//	report FROM TO   what it heard between two times (Unix nanoseconds)
//	foreign HZ N     send N packets of a HZ tone, from a second socket and a
//	                 new SSRC, to the address the call's offer gave (c=)
//	hangup           BYE the current call
//	quit             (or end of input) stop
//
// It is built by the test (go build ./testdata/pbxsim); `go build ./...`
// skips testdata directories.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/transcode"
)

// out writes one JSON event per line.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *out) emit(ev map[string]any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(ev)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:5060", "SIP address (UDP and TCP)")
	tone := flag.Float64("tone", 1000, "tone it plays (Hz)")
	expect := flag.Float64("expect", 440, "tone it expects to hear (Hz)")
	flag.Parse()
	o := &out{enc: json.NewEncoder(os.Stdout)}
	if err := run(*listen, *tone, *expect, os.Stdin, o); err != nil {
		o.emit(map[string]any{"event": "error", "err": err.Error()})
		os.Exit(1)
	}
}

func run(listen string, tone, expect float64, in io.Reader, o *out) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := pbx.Start(ctx, pbx.Config{Listen: listen, Codecs: []string{"PCMU"}, ToneHz: tone, ExpectToneHz: expect, Logger: log})
	if err != nil {
		return err
	}
	defer p.Close()
	o.emit(map[string]any{"event": "listening", "addr": p.Addr().String()})

	var mu sync.Mutex
	var cur *pbx.Call
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := p.NextCall(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			cur = c
			mu.Unlock()
			inv := c.Invite()
			ev := map[string]any{"event": "invite", "src": inv.Source(), "sdp": string(inv.Body())}
			if v := inv.Via(); v != nil {
				ev["via"] = v.Value()
			}
			if ct := inv.Contact(); ct != nil {
				ev["contact"] = ct.Address.String()
			}
			o.emit(ev)
			wg.Add(1)
			go func() {
				defer wg.Done()
				watch(ctx, c, o)
			}()
		}
	}()

	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		mu.Lock()
		c := cur
		mu.Unlock()
		if f[0] == "quit" {
			break
		}
		if c == nil {
			o.emit(map[string]any{"event": "error", "err": "no call for " + f[0]})
			continue
		}
		switch f[0] {
		case "report":
			from, to, err := times(f)
			if err != nil {
				o.emit(map[string]any{"event": "error", "err": err.Error()})
				continue
			}
			r := c.Received().Report(from, to)
			o.emit(map[string]any{"event": "report", "windows": r.Windows, "tone_windows": r.ToneWindows,
				"tone_ratio": r.ToneRatio, "mean_dbfs": r.MeanDBFS, "max_gap_ms": r.MaxGap.Milliseconds()})
		case "foreign":
			hz, n, err := foreignArgs(f)
			if err != nil {
				o.emit(map[string]any{"event": "error", "err": err.Error()})
				continue
			}
			from, err := foreign(ctx, p.Addr().Addr().String(), c.Offer().Addr.String(), hz, n)
			ev := map[string]any{"event": "foreign_done", "from": from, "sent": n}
			if err != nil {
				ev["err"] = err.Error()
			}
			o.emit(ev)
		case "hangup":
			hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Hangup(hctx)
			hcancel()
			ev := map[string]any{"event": "hangup"}
			if err != nil {
				ev["err"] = err.Error()
			}
			o.emit(ev)
		default:
			o.emit(map[string]any{"event": "error", "err": "unknown command " + f[0]})
		}
	}
	return sc.Err()
}

// watch reports the call's ACK and its end.
func watch(ctx context.Context, c *pbx.Call, o *out) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	acked := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Ended():
			if !acked && !c.AckedAt().IsZero() {
				o.emit(map[string]any{"event": "acked", "at": c.AckedAt().UnixNano()})
			}
			o.emit(map[string]any{"event": "ended", "by": c.EndedBy(), "reason": c.ByeReason(), "answered_at": c.AnsweredAt().UnixNano()})
			return
		case <-tick.C:
			if !acked && !c.AckedAt().IsZero() {
				acked = true
				o.emit(map[string]any{"event": "acked", "at": c.AckedAt().UnixNano(), "answered_at": c.AnsweredAt().UnixNano()})
			}
		}
	}
}

func times(f []string) (time.Time, time.Time, error) {
	if len(f) != 3 {
		return time.Time{}, time.Time{}, fmt.Errorf("usage: report FROM TO")
	}
	a, err1 := strconv.ParseInt(f[1], 10, 64)
	b, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("report: bad times %q %q", f[1], f[2])
	}
	return time.Unix(0, a), time.Unix(0, b), nil
}

func foreignArgs(f []string) (float64, int, error) {
	if len(f) != 3 {
		return 0, 0, fmt.Errorf("usage: foreign HZ N")
	}
	hz, err1 := strconv.ParseFloat(f[1], 64)
	n, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || n <= 0 || n > 5000 {
		return 0, 0, fmt.Errorf("foreign: bad arguments %q %q", f[1], f[2])
	}
	return hz, n, nil
}

// foreign sends n 20 ms PCMU packets of a tone from a fresh socket on host,
// in sequence under one SSRC (so a latch that learns any steady source
// would take it), paced in real time. It returns the socket's address.
func foreign(ctx context.Context, host, dst string, hz float64, n int) (string, error) {
	conn, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return conn.LocalAddr().String(), err
	}
	gen := transcode.NewToneGen(hz, 8000, transcode.AmpForDBFS(-12))
	pcm := make([]int16, 160)
	payload := make([]byte, 160)
	h := rtp.Header{Version: 2, PayloadType: 0, SSRC: rand.Uint32(), SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32()}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		gen.Fill(pcm)
		transcode.ULawEncode(payload, pcm)
		b, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
		if err != nil {
			return conn.LocalAddr().String(), err
		}
		if _, err := conn.WriteTo(b, raddr); err != nil {
			return conn.LocalAddr().String(), err
		}
		h.SequenceNumber++
		h.Timestamp += 160
		select {
		case <-ctx.Done():
			return conn.LocalAddr().String(), ctx.Err()
		case <-tick.C:
		}
	}
	return conn.LocalAddr().String(), nil
}
