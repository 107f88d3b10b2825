package bare

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	pwebrtc "github.com/pion/webrtc/v4"

	"github.com/ponte-gw/ponte/webrtc"
)

// ChildOptions configure the child relay (`ponte bare-child`).
type ChildOptions struct {
	ListenUDP string // the single ICE UDP port (default 127.0.0.1:0)
	RTPIP     string // where the plain RTP sockets bind (default 127.0.0.1)
	// Opus toward the WebRTC side when transcoding: ponte's defaults (config media.opus_*,
	// gateway SetPBX: complexity 5, 24 kbps, in-band FEC, 5 % expected loss).
	Complexity, Bitrate int
	ConnectTimeout      time.Duration // ICE+DTLS per call (default 10 s)
	Logger              *slog.Logger
}

func (o *ChildOptions) setDefaults() {
	if o.ListenUDP == "" {
		o.ListenUDP = "127.0.0.1:0"
	}
	if o.RTPIP == "" {
		o.RTPIP = "127.0.0.1"
	}
	if o.Complexity == 0 {
		o.Complexity = 5
	}
	if o.Bitrate == 0 {
		o.Bitrate = 24000
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// child is the bare relay: the pion API over one UDP mux, and the calls.
type child struct {
	o   ChildOptions
	api *pwebrtc.API
	mux ice.UDPMux
	rtp netip.Addr

	outMu sync.Mutex
	out   *json.Encoder

	mu     sync.Mutex
	calls  []*relay
	closed bool
	stop   chan struct{}  // closed by close: set-ups in progress give up
	wg     sync.WaitGroup // call set-up goroutines

	st counters
}

// counters are the child's totals; the relays add to them per packet (atomics, no locks).
type counters struct {
	toPBXIn, toPBXOut, toWAIn, toWAOut, errors atomic.Int64
}

// Child runs the bare relay until in reaches EOF or ctx ends: it reads requests from in and
// writes responses to out (protocol.go). It is `ponte bare-child`.
func Child(ctx context.Context, in io.Reader, out io.Writer, o ChildOptions) error {
	o.setDefaults()
	c := &child{o: o, out: json.NewEncoder(out), stop: make(chan struct{})}
	var err error
	if c.rtp, err = netip.ParseAddr(o.RTPIP); err != nil {
		return fmt.Errorf("bare: rtp ip %q: %w", o.RTPIP, err)
	}
	if err := c.newAPI(); err != nil {
		return err
	}
	defer c.close()
	c.send(response{Op: opReady, ICE: c.mux.GetListenAddresses()[0].String()})

	lines := make(chan []byte)
	readErr := make(chan error, 1)
	// The reader ends at EOF on in (the parent closes our stdin), which also ends Child. When
	// ctx ends first it may stay blocked in Read until the process exits: it owns nothing.
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 4096), maxLine)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
		readErr <- sc.Err()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case line := <-lines:
			c.handle(ctx, line)
		}
	}
}

// newAPI builds the pion API the way ponte's webrtc package does (engine.go newAPI): Meta's two
// codecs registered without fmtp for answering, one UDP mux, no mDNS, loopback candidates,
// DTLS client in answers, and an explicitly empty interceptor registry (no RTCP reports, NACK
// or TWCC: ponte runs none either). ICE is full and controlling because the offerer is
// ICE-lite like Meta's relay (RFC 8445 §6.1.1).
func (c *child) newAPI() error {
	ap, err := netip.ParseAddrPort(c.o.ListenUDP)
	if err != nil {
		return fmt.Errorf("bare: listen %q: %w", c.o.ListenUDP, err)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("bare: listen %s: %w", c.o.ListenUDP, err)
	}
	lf := webrtc.NewPionLoggerFactory(c.o.Logger)
	c.mux = pwebrtc.NewICEUDPMux(lf.NewLogger("mux"), conn)
	me := &pwebrtc.MediaEngine{}
	if err := webrtc.RegisterMetaCodecs(me, ""); err != nil {
		_ = c.mux.Close()
		return err
	}
	se := pwebrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(c.mux)
	se.SetNetworkTypes([]pwebrtc.NetworkType{pwebrtc.NetworkTypeUDP4, pwebrtc.NetworkTypeUDP6})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	if err := se.SetAnsweringDTLSRole(pwebrtc.DTLSRoleClient); err != nil {
		_ = c.mux.Close()
		return fmt.Errorf("bare: %w", err)
	}
	c.api = pwebrtc.NewAPI(pwebrtc.WithMediaEngine(me), pwebrtc.WithSettingEngine(se),
		pwebrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	return nil
}

// send writes one response line; lines from concurrent calls never interleave.
func (c *child) send(r response) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	_ = c.out.Encode(r)
}

func (c *child) handle(ctx context.Context, line []byte) {
	r, err := parseRequest(line)
	if err != nil {
		c.send(response{Op: opError, ID: r.ID, Err: err.Error()})
		return
	}
	switch r.Op {
	case opStats:
		c.mu.Lock()
		n := len(c.calls)
		c.mu.Unlock()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms) // stops the world for microseconds; asked for 3 times a run
		c.send(response{Op: opStats, Stats: &ChildStats{
			Mallocs: ms.Mallocs,
			Calls:   n, ToPBXIn: c.st.toPBXIn.Load(), ToPBXOut: c.st.toPBXOut.Load(),
			ToWAIn: c.st.toWAIn.Load(), ToWAOut: c.st.toWAOut.Load(), Errors: c.st.errors.Load(),
			Goroutines: runtime.NumGoroutine(),
		}})
	case opCall:
		// Calls are set up concurrently, as a gateway would: ICE and DTLS take round trips.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.setup(ctx, r)
		}()
	}
}

// setup answers one offer, reports the answer, then waits for DTLS-SRTP and reports that.
func (c *child) setup(ctx context.Context, r request) {
	rl, answer, err := newRelay(c, r)
	if err != nil {
		c.send(response{Op: opError, ID: r.ID, Err: err.Error()})
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		rl.close()
		return
	}
	c.calls = append(c.calls, rl)
	c.mu.Unlock()
	c.send(response{Op: opAnswer, ID: r.ID, Answer: answer, RTP: rl.conn.LocalAddr().String()})
	ctx, cancel := context.WithTimeout(ctx, c.o.ConnectTimeout)
	defer cancel()
	select {
	case <-rl.connected:
		c.send(response{Op: opConnected, ID: r.ID})
	case <-rl.failed:
		c.send(response{Op: opError, ID: r.ID, Err: "peer connection failed"})
	case <-c.stop:
	case <-ctx.Done():
		c.send(response{Op: opError, ID: r.ID, Err: "ICE/DTLS did not connect: " + ctx.Err().Error()})
	}
}

// close ends every call, waits for their goroutines and closes the mux.
func (c *child) close() {
	c.mu.Lock()
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	c.wg.Wait() // no set-up adds a call after this
	c.mu.Lock()
	calls := c.calls
	c.calls = nil
	c.mu.Unlock()
	for _, rl := range calls {
		rl.close()
	}
	_ = c.mux.Close()
}
