package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/sip"
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

// GuardInvite wraps the handler of out-of-dialog SIP INVITEs (PBX-originated
// calls) with drain and admission control: while ponte drains, or is over
// admission.max_calls or admission.max_cpu, the INVITE gets 503 Service
// Unavailable with Retry-After (RFC 3261 §21.5.4: the PBX may retry after it,
// here or on another node) and is counted. next nil answers 501 Not
// Implemented, as the UA does without a handler: outbound calls do not exist
// yet (issue 5), so admitted INVITEs are not taken.
func (s *Server) GuardInvite(next sip.InviteHandler) sip.InviteHandler {
	return func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		s.Metrics.SIPRequest("INVITE", "in")
		if err := s.Gateway.Admit(); err != nil {
			retry := s.cfg.Admission.RetryAfter.D()
			if gateway.RefusalReason(err) == metrics.RefusedDraining {
				retry = s.cfg.Drain.RetryAfter.D()
			}
			s.Metrics.CallOffered(metrics.DirOutbound, "")
			s.Metrics.CallRefused(metrics.DirOutbound, "", gateway.RefusalReason(err))
			s.log.Warn("SIP INVITE refused", "reason", gateway.RefusalReason(err), "sip_call_id", callID(req), "err", err)
			s.respond(req, tx, 503, "Service Unavailable",
				sipmsg.NewHeader("Retry-After", strconv.Itoa(int(retry.Round(time.Second)/time.Second))))
			return
		}
		if next == nil {
			s.respond(req, tx, 501, "Not Implemented")
			return
		}
		next(req, tx)
	}
}

func (s *Server) respond(req *sipmsg.Request, tx sipmsg.ServerTransaction, code int, reason string, hdrs ...sipmsg.Header) {
	res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		s.log.Debug("SIP respond failed", "code", code, "err", err)
		return
	}
	s.Metrics.SIPResponse("INVITE", code, "out")
}

func callID(req *sipmsg.Request) string {
	if c := req.CallID(); c != nil {
		return c.Value()
	}
	return ""
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
