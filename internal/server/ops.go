package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/gateway"
)

// storePingTimeout bounds /readyz's store check: a store slower than this is
// not ready for calls either.
const storePingTimeout = 2 * time.Second

// serveReady is /readyz: 200 only when every SIP listener is bound, the
// store takes a write and ponte is not draining, so a load balancer or an
// orchestrator stops sending new work before a shutdown (issue 6 item 3).
// The body lists each check.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	ok := true
	check := func(name string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", name, err)
			return
		}
		fmt.Fprintf(&b, "%s: ok\n", name)
	}
	check("sip", s.listenersBound())
	if s.StoreCheck != nil {
		ctx, cancel := context.WithTimeout(r.Context(), storePingTimeout)
		err := s.StoreCheck.Ping(ctx)
		cancel()
		if err != nil {
			s.Metrics.StoreError("ping")
		}
		check("store", err)
	}
	for _, r := range s.registrars {
		st := r.Status()
		var err error
		if !st.Registered {
			err = fmt.Errorf("not registered (last response %d %s)", st.LastCode, st.LastError)
		}
		check("register "+st.Trunk, err)
	}
	if s.draining.Load() {
		check("drain", gateway.ErrDraining)
	} else {
		check("drain", nil)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(b.String()))
}

// listenersBound checks that every configured SIP listener is bound.
func (s *Server) listenersBound() error {
	for _, l := range s.cfg.SIP.Listen {
		tr, _, ok := strings.Cut(l, ":")
		if !ok {
			tr = "udp"
		}
		if !s.UA.ListenAddr(tr).IsValid() {
			return fmt.Errorf("listener %s not bound", l)
		}
	}
	return nil
}

// Drain is the graceful part of a shutdown (SIGTERM, issue 6 item 4):
// /readyz fails, new WhatsApp calls are rejected with the Graph API, new SIP
// INVITEs get 503 with Retry-After, and calls in progress go on until they
// end or ctx expires (its error is returned). Shutdown then ends whatever is
// left. On a single node behind one webhook URL, calls offered meanwhile are
// lost to this node (docs/operations.md).
func (s *Server) Drain(ctx context.Context) error {
	s.setDraining()
	s.log.Info("draining: new calls are refused", "active_calls", s.Gateway.Active())
	return s.Gateway.WaitIdle(ctx)
}

// Draining reports whether Drain or Shutdown was called.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) setDraining() {
	s.draining.Store(true)
	s.Metrics.SetDraining(true)
	s.Gateway.Drain()
}
