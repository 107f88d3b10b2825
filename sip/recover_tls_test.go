package sip_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// tlsWire is a scripted PBX over mutual TLS (the server certificate and a
// required client certificate from pki): each accepted connection that
// completes its handshake is handed to the test, which reads and writes
// SIP messages on it by hand. Unlike a sipgo server, it answers a request
// on the connection the request came on (RFC 3261 §18.2.2), whichever
// transaction it belongs to.
type tlsWire struct {
	t     *testing.T
	ln    net.Listener
	conns chan net.Conn
}

func newTLSWire(t *testing.T, pki *pbx.PKI) *tlsWire {
	t.Helper()
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.ServerPair},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.CA}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	w := &tlsWire{t: t, ln: ln, conns: make(chan net.Conn, 8)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The client's dial waits for the handshake: complete it here.
			// One that fails (a client that does not trust the CA, or
			// without a certificate) is closed and never handed over.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = c.(*tls.Conn).HandshakeContext(ctx)
			cancel()
			if err != nil {
				c.Close()
				continue
			}
			select {
			case w.conns <- c:
			default:
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(w.conns)
		for c := range w.conns {
			c.Close()
		}
	})
	return w
}

func (w *tlsWire) addr() string { return w.ln.Addr().String() }

// accept returns the next connection whose TLS handshake succeeded.
func (w *tlsWire) accept(timeout time.Duration) *wireConn {
	w.t.Helper()
	select {
	case c := <-w.conns:
		w.t.Cleanup(func() { c.Close() })
		return &wireConn{t: w.t, c: c, r: bufio.NewReader(c)}
	case <-time.After(timeout):
		w.t.Fatal("no TLS connection completed its handshake")
		return nil
	}
}

// wireConn is one stream connection of a scripted PBX.
type wireConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (c *wireConn) send(msg string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, strings.ReplaceAll(msg, "\n", "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads messages (framed by Content-Length, RFC 3261 §18.3) until one
// passes filter.
func (c *wireConn) recv(timeout time.Duration, filter func(sipgo.Message) bool) sipgo.Message {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		var head strings.Builder
		n := 0
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				c.t.Fatalf("recv: %v", err)
			}
			if line == "\r\n" {
				if head.Len() == 0 {
					continue // a keepalive CRLF (RFC 5626 §3.5.1)
				}
				break
			}
			head.WriteString(line)
			name, value, _ := strings.Cut(line, ":")
			if k := strings.ToLower(strings.TrimSpace(name)); k == "content-length" || k == "l" {
				n, _ = strconv.Atoi(strings.TrimSpace(value))
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.r, body); err != nil {
			c.t.Fatalf("recv body: %v", err)
		}
		m, err := sipgo.ParseMessage([]byte(head.String() + "\r\n" + string(body)))
		if err != nil {
			c.t.Fatalf("parse: %v", err)
		}
		if filter == nil || filter(m) {
			return m
		}
	}
}

// TestCancelFromStateTLS: the PBX rings over mutual TLS with a private CA
// when ponte dies. The recovery CANCEL must connect with the trunk's TLS
// settings (CA, client certificate, server name): without them the
// handshake fails and the PBX goes on ringing; with them the CANCEL goes
// out with the INVITE's branch, gets its 200, and the INVITE's 487 is
// ACKed (RFC 3261 §17.1.1.3).
func TestCancelFromStateTLS(t *testing.T) {
	pki, err := pbx.NewTestPKI(t.TempDir(), "127.0.0.1", "pbx.test")
	if err != nil {
		t.Fatal(err)
	}
	w := newTLSWire(t, pki)
	trunk := &sip.Trunk{
		Name: "secure", Address: w.addr(), Transport: "tls", Codecs: []string{"PCMU"},
		TLS: &sip.TLSConfig{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, ServerName: "pbx.test"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u := tlsUA(t, pki)
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "1000", FromUser: "+5511999", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	c1 := w.accept(5 * time.Second)
	inv := c1.recv(5*time.Second, isReq("INVITE")).(*sipgo.Request)
	c1.send(provisional(inv, 180, "Ringing", "ring1"))
	st := earlyState(t, d)
	if st.Transport != "TLS" || st.Trunk != "secure" {
		t.Fatalf("early state %+v", st)
	}
	u.Close() // the crash
	reason := sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}

	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	if code, err := tlsUA(t, pki).CancelFromState(bctx, st, reason, nil); err == nil {
		t.Fatalf("CancelFromState without the trunk = %d, nil: want an error (the PBX's private CA is unknown to the default dial)", code)
	}

	done := make(chan error, 1)
	go func() {
		code, err := tlsUA(t, pki).CancelFromState(ctx, st, reason, trunk)
		if err == nil && code != 200 {
			err = fmt.Errorf("code %d", code)
		}
		done <- err
	}()
	c2 := w.accept(5 * time.Second)
	cr := c2.recv(5*time.Second, isReq("CANCEL")).(*sipgo.Request)
	ib, _ := inv.Via().Params.Get("branch")
	cb, _ := cr.Via().Params.Get("branch")
	if cb != ib || cr.CSeq().SeqNo != inv.CSeq().SeqNo || cr.CallID().Value() != inv.CallID().Value() || !strings.Contains(hdr(cr, "Reason"), "cause=500") {
		t.Fatalf("CANCEL does not match the INVITE (§9.1):\n%s\nINVITE:\n%s", cr, inv)
	}
	c2.send(response(cr, 200, "OK"))
	if err := <-done; err != nil {
		t.Fatalf("CancelFromState with the trunk: %v", err)
	}
	c2.send(strings.Replace(response(inv, 487, "Request Terminated"), "tag=uas1", "tag=ring1", 1))
	ack := c2.recv(5*time.Second, isReq("ACK")).(*sipgo.Request)
	if ab, _ := ack.Via().Params.Get("branch"); ab != ib || ack.CSeq().SeqNo != inv.CSeq().SeqNo {
		t.Fatalf("ACK of the 487:\n%s\nwant the INVITE's branch %s and CSeq %d", ack, ib, inv.CSeq().SeqNo)
	}
}
