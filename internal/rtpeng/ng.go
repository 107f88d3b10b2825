package rtpeng

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the ng client.
var (
	// ErrNG wraps a reply whose result is "error" (its error-reason follows) or is missing.
	ErrNG = errors.New("rtpeng: ng request failed")
	// ErrClosed is returned by requests on a closed client.
	ErrClosed = errors.New("rtpeng: ng client closed")
)

// retransmitEvery is how often an unanswered request is sent again. rtpengine keeps the reply
// of each cookie for a while and answers a repeat from that cache, so a repeated offer does not
// create a second call (ng protocol: "the cookie ... is used to detect retransmissions").
const retransmitEvery = 500 * time.Millisecond

// Client speaks rtpengine's ng control protocol: each datagram is "<cookie> <bencoded dict>"
// and the reply carries the same cookie. It is safe for concurrent use; one reader goroutine,
// stopped by Close, hands replies to the waiting requests.
type Client struct {
	conn   *net.UDPConn
	prefix string
	seq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan Dict
	closed  bool

	done chan struct{} // closed when the reader returned
}

// Dial connects to rtpengine's ng listener (host:port, UDP).
func Dial(addr string) (*Client, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("rtpeng: ng address: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("rtpeng: ng dial: %w", err)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	c := &Client{conn: conn, prefix: hex.EncodeToString(r[:]), pending: map[string]chan Dict{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

// Close stops the reader; requests in flight return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, 65535)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED while rtpengine is not listening yet
		}
		cookie, d, err := parseReply(buf[:n])
		if err != nil {
			continue
		}
		c.mu.Lock()
		ch := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if ch != nil {
			ch <- d // buffered 1, and the entry is gone: at most one send
		}
	}
}

// parseReply splits "<cookie> <bencoded dict>".
func parseReply(b []byte) (string, Dict, error) {
	i := bytes.IndexByte(b, ' ')
	if i <= 0 {
		return "", nil, fmt.Errorf("%w: reply without a cookie", ErrBencode)
	}
	v, err := Decode(b[i+1:])
	if err != nil {
		return "", nil, err
	}
	d, ok := v.(Dict)
	if !ok {
		return "", nil, fmt.Errorf("%w: reply is a %T, not a dictionary", ErrBencode, v)
	}
	return string(b[:i]), d, nil
}

// Do sends req (which must hold "command") and returns the reply once its "result" is not
// "error". Unanswered requests are retransmitted with the same cookie until ctx ends.
func (c *Client) Do(ctx context.Context, req Dict) (Dict, error) {
	body, err := Encode(req)
	if err != nil {
		return nil, err
	}
	cookie := c.prefix + "_" + strconv.FormatUint(c.seq.Add(1), 10)
	msg := append([]byte(cookie+" "), body...)
	ch := make(chan Dict, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[cookie] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, cookie)
		c.mu.Unlock()
	}()
	t := time.NewTicker(retransmitEvery)
	defer t.Stop()
	for {
		// A refused send (nothing listening yet) is retried like a lost datagram.
		_, _ = c.conn.Write(msg)
		select {
		case d := <-ch:
			return d, checkResult(req["command"], d)
		case <-ctx.Done():
			return nil, fmt.Errorf("rtpeng: ng %v: no reply: %w", req["command"], ctx.Err())
		case <-c.done:
			return nil, ErrClosed
		case <-t.C:
		}
	}
}

func checkResult(cmd any, d Dict) error {
	res, _ := d["result"].(string)
	switch res {
	case "":
		return fmt.Errorf("%w: %v: reply has no result", ErrNG, cmd)
	case "error":
		reason, _ := d["error-reason"].(string)
		return fmt.Errorf("%w: %v: %s", ErrNG, cmd, reason)
	}
	return nil
}

// Ping checks that rtpengine answers ("pong").
func (c *Client) Ping(ctx context.Context) error {
	d, err := c.Do(ctx, Dict{"command": "ping"})
	if err != nil {
		return err
	}
	if d["result"] != "pong" {
		return fmt.Errorf("%w: ping answered %v", ErrNG, d["result"])
	}
	return nil
}

// Offer sends an offer for call callID from fromTag with the offerer's SDP and returns the SDP
// rtpengine rewrote for the answerer. flags are extra ng keys (ICE, DTLS, codec, ...).
func (c *Client) Offer(ctx context.Context, callID, fromTag, sdp string, flags Dict) (string, error) {
	return c.sdpCommand(ctx, "offer", callID, fromTag, "", sdp, flags)
}

// Answer sends the answerer's SDP and returns the SDP rewritten for the offerer.
func (c *Client) Answer(ctx context.Context, callID, fromTag, toTag, sdp string, flags Dict) (string, error) {
	return c.sdpCommand(ctx, "answer", callID, fromTag, toTag, sdp, flags)
}

func (c *Client) sdpCommand(ctx context.Context, cmd, callID, fromTag, toTag, sdp string, flags Dict) (string, error) {
	req := Dict{"command": cmd, "call-id": callID, "from-tag": fromTag, "sdp": sdp}
	if toTag != "" {
		req["to-tag"] = toTag
	}
	for k, v := range flags {
		req[k] = v
	}
	d, err := c.Do(ctx, req)
	if err != nil {
		return "", err
	}
	out, ok := d["sdp"].(string)
	if !ok || out == "" {
		return "", fmt.Errorf("%w: %s: reply has no sdp", ErrNG, cmd)
	}
	return out, nil
}

// Delete ends the call and frees its ports.
func (c *Client) Delete(ctx context.Context, callID, fromTag string) error {
	_, err := c.Do(ctx, Dict{"command": "delete", "call-id": callID, "from-tag": fromTag})
	return err
}
