package rtpeng

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeNG is an ng responder on loopback: reply decides the answer to each request (nil: no
// answer), and every request is recorded with its cookie.
type fakeNG struct {
	conn  *net.UDPConn
	reply func(n int, req Dict) Dict
	mu    sync.Mutex
	reqs  []Dict
	cooks []string
	done  chan struct{}
}

func newFakeNG(t *testing.T, reply func(n int, req Dict) Dict) *fakeNG {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNG{conn: conn, reply: reply, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			i := bytes.IndexByte(buf[:n], ' ')
			v, err := Decode(buf[i+1 : n])
			if i <= 0 || err != nil {
				continue
			}
			req := v.(Dict)
			f.mu.Lock()
			f.reqs = append(f.reqs, req)
			f.cooks = append(f.cooks, string(buf[:i]))
			k := len(f.reqs)
			f.mu.Unlock()
			if r := f.reply(k, req); r != nil {
				body, _ := Encode(r)
				_, _ = conn.WriteToUDP(append([]byte(string(buf[:i])+" "), body...), from)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-f.done })
	return f
}

func (f *fakeNG) addr() string { return f.conn.LocalAddr().String() }

func (f *fakeNG) requests() ([]Dict, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Dict(nil), f.reqs...), append([]string(nil), f.cooks...)
}

func dial(t *testing.T, addr string) *Client {
	t.Helper()
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientCommands(t *testing.T) {
	f := newFakeNG(t, func(_ int, req Dict) Dict {
		switch req["command"] {
		case "ping":
			return Dict{"result": "pong"}
		case "offer":
			return Dict{"result": "ok", "sdp": "rewritten-offer:" + req["sdp"].(string)}
		case "answer":
			return Dict{"result": "ok", "sdp": "rewritten-answer"}
		case "delete":
			return Dict{"result": "error", "error-reason": "Unknown call-id"}
		}
		return Dict{"result": "error", "error-reason": "Unrecognized command"}
	})
	c := dial(t, f.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	got, err := c.Offer(ctx, "call-1", "tag-a", "v=0", Dict{"ICE": "force", "flags": []string{"trust-address"}})
	if err != nil || got != "rewritten-offer:v=0" {
		t.Fatalf("offer = %q, %v", got, err)
	}
	if got, err = c.Answer(ctx, "call-1", "tag-a", "tag-b", "v=0 b", nil); err != nil || got != "rewritten-answer" {
		t.Fatalf("answer = %q, %v", got, err)
	}
	err = c.Delete(ctx, "call-1", "tag-a")
	if !errors.Is(err, ErrNG) || !bytes.Contains([]byte(err.Error()), []byte("Unknown call-id")) {
		t.Fatalf("delete err = %v, want ErrNG with the error-reason", err)
	}
	reqs, cookies := f.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	want := []Dict{
		{"command": "ping"},
		{"command": "offer", "call-id": "call-1", "from-tag": "tag-a", "sdp": "v=0", "ICE": "force", "flags": []any{"trust-address"}},
		{"command": "answer", "call-id": "call-1", "from-tag": "tag-a", "to-tag": "tag-b", "sdp": "v=0 b"},
		{"command": "delete", "call-id": "call-1", "from-tag": "tag-a"},
	}
	seen := map[string]bool{}
	for i := range want {
		if !equalDict(reqs[i], want[i]) {
			t.Errorf("request %d = %#v, want %#v", i, reqs[i], want[i])
		}
		if seen[cookies[i]] {
			t.Errorf("cookie %q reused", cookies[i])
		}
		seen[cookies[i]] = true
	}
}

func equalDict(a, b Dict) bool {
	ea, _ := Encode(a)
	eb, _ := Encode(b)
	return bytes.Equal(ea, eb)
}

// A lost request is sent again with the same cookie (rtpengine answers repeats from its
// cookie cache), and the late reply is taken.
func TestClientRetransmits(t *testing.T) {
	f := newFakeNG(t, func(n int, _ Dict) Dict {
		if n < 3 {
			return nil // the first two datagrams are "lost"
		}
		return Dict{"result": "pong"}
	})
	c := dial(t, f.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	_, cookies := f.requests()
	if len(cookies) != 3 || cookies[0] != cookies[1] || cookies[1] != cookies[2] {
		t.Fatalf("cookies %q, want the same cookie three times", cookies)
	}
}

func TestClientErrors(t *testing.T) {
	t.Run("no reply", func(t *testing.T) {
		f := newFakeNG(t, func(int, Dict) Dict { return nil })
		c := dial(t, f.addr())
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("no result", func(t *testing.T) {
		f := newFakeNG(t, func(int, Dict) Dict { return Dict{"x": "y"} })
		c := dial(t, f.addr())
		if err := c.Ping(context.Background()); !errors.Is(err, ErrNG) {
			t.Fatalf("err = %v, want ErrNG", err)
		}
	})
	t.Run("offer without sdp", func(t *testing.T) {
		f := newFakeNG(t, func(int, Dict) Dict { return Dict{"result": "ok"} })
		c := dial(t, f.addr())
		if _, err := c.Offer(context.Background(), "c", "f", "v=0", nil); !errors.Is(err, ErrNG) {
			t.Fatalf("err = %v, want ErrNG", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		f := newFakeNG(t, func(int, Dict) Dict { return nil })
		c, err := Dial(f.addr())
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- c.Ping(context.Background()) }()
		time.Sleep(50 * time.Millisecond) // let the request go out (the result is the same either way)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("in-flight err = %v, want ErrClosed", err)
		}
		if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("after close err = %v, want ErrClosed", err)
		}
	})
}

func TestParseReply(t *testing.T) {
	for _, bad := range []string{"", "nocookie", " d6:result2:oke", "c1 i1e", "c1 d6:result"} {
		if _, _, err := parseReply([]byte(bad)); !errors.Is(err, ErrBencode) {
			t.Errorf("parseReply(%q) err = %v, want ErrBencode", bad, err)
		}
	}
	ck, d, err := parseReply([]byte("5_1 d6:result4:ponge"))
	if err != nil || ck != "5_1" || d["result"] != "pong" {
		t.Fatalf("parseReply = %q %v %v", ck, d, err)
	}
}

// FuzzParseReply: replies come from the network; parsing never panics.
func FuzzParseReply(f *testing.F) {
	f.Add([]byte("abc_1 d6:result4:ponge"))
	f.Add([]byte("x d3:sdp3:v=06:result2:oke"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ck, d, err := parseReply(b)
		if err == nil && (ck == "" || d == nil) {
			t.Fatalf("accepted %q without a cookie or dict", b)
		}
	})
}
