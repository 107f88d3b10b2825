package server

import (
	"context"
	"fmt"
	sipmsg "github.com/emiago/sipgo/sip"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/gateway/permit"
	"github.com/ponte-gw/ponte/metrics"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
)

// Business-initiated calls: the SIP server that takes PBX INVITEs, the
// permission policy with its ledger, and the registrations to trunks that
// only send calls to registered endpoints.

// newPermits builds the policy on the store's ledger (in memory when the
// store keeps none).
func (s *Server) newPermits() *permit.Service {
	var l store.Ledger = store.NewMemoryLedger()
	if s.Store != nil {
		l = s.Store
	}
	lim := s.cfg.Outbound.Limits
	return permit.New(l, s.Graph, permit.Limits{
		RequestsPer24h: lim.RequestsPer24h, RequestsPer7d: lim.RequestsPer7d,
		ConnectedPer24h: lim.ConnectedPer24h, InitiationsPer24h: lim.InitiationsPer24h,
		WarnAfterUnanswered: lim.WarnAfterUnanswered, RevokeAfterUnanswered: lim.RevokeAfterUnanswered,
		CacheTTL: lim.CacheTTL.D(), GetRate: lim.GetRate,
	}, s.Clock, s.log)
}

// inboundTrunks turns the trunks' inbound sections into the SIP server's
// view. A registration trunk's registrar may send calls without being
// listed: its resolved address is allowed.
func inboundTrunks(cfg *config.Config) ([]sip.InboundTrunk, error) {
	var out []sip.InboundTrunk
	for _, t := range cfg.SIP.Trunks {
		if t.Inbound == nil && t.Register == nil {
			continue
		}
		it := sip.InboundTrunk{Name: t.Name}
		if in := t.Inbound; in != nil {
			it.Username, it.Password = in.Username, in.Password
			for _, a := range in.Allow {
				p, err := config.ParsePrefix(a)
				if err != nil {
					return nil, fmt.Errorf("trunk %s: inbound.allow %q: %w", t.Name, a, err)
				}
				it.Allow = append(it.Allow, p)
			}
		}
		if t.Register != nil && (t.Inbound == nil || len(t.Inbound.Allow) == 0) {
			host, _, err := net.SplitHostPort(t.Address)
			if err != nil {
				return nil, fmt.Errorf("trunk %s: address %q: %w", t.Name, t.Address, err)
			}
			addrs, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
			if err != nil {
				return nil, fmt.Errorf("trunk %s: resolving %s: %w", t.Name, host, err)
			}
			for _, a := range addrs {
				a = a.Unmap()
				it.Allow = append(it.Allow, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// startSIPServer installs the handler of PBX-originated INVITEs.
func (s *Server) startSIPServer() error {
	trunks, err := inboundTrunks(s.cfg)
	if err != nil {
		return err
	}
	sc := s.cfg.SIP.Server
	return s.UA.SetServer(sip.ServerConfig{
		Trunks: trunks, Unauthorized: sc.Unauthorized, NonceTTL: sc.NonceTTL.D(),
		RateLimit: sc.RateLimit, RateBurst: sc.RateBurst,
		InviteRate: sc.InviteRate, InviteBurst: sc.InviteBurst,
		Ban:   sip.BanConfig{After: sc.Ban.After, Within: sc.Ban.Within.D(), For: sc.Ban.Period()},
		Peers: trunkPeers(s.cfg, s.log),
	}, s.placeCall)
}

// trunkPeers resolves every trunk's address: their OPTIONS are answered and
// they are never banned (a PBX ponte only dials still qualifies ponte, and
// banning it would also drop the BYEs of its live calls). Resolved once, at
// start, like the inbound allow-lists.
func trunkPeers(cfg *config.Config, log *slog.Logger) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range cfg.SIP.Trunks {
		host, _, err := net.SplitHostPort(t.Address)
		if err != nil {
			host = t.Address
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil {
			log.Warn("trunk address not resolved: its OPTIONS count as a stranger's", "trunk", t.Name, "err", err)
			continue
		}
		for _, a := range addrs {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// placeCall takes an authenticated INVITE: drain and admission first (503
// with Retry-After, RFC 3261 §21.5.4), then the gateway.
func (s *Server) placeCall(ic *sip.IncomingCall) {
	s.Metrics.SIPRequest("INVITE", "in")
	req := ic.Request()
	if err := s.Gateway.Admit(); err != nil {
		retry := s.cfg.Admission.RetryAfter.D()
		if gateway.RefusalReason(err) == metrics.RefusedDraining {
			retry = s.cfg.Drain.RetryAfter.D()
		}
		s.Metrics.CallOffered(metrics.DirOutbound, "")
		s.Metrics.CallRefused(metrics.DirOutbound, "", gateway.RefusalReason(err))
		s.log.Warn("SIP INVITE refused", "reason", gateway.RefusalReason(err), "sip_call_id", ic.CallID(), "err", err)
		// Counted first: whoever receives the 503 may read /metrics at once.
		s.Metrics.SIPResponse("INVITE", 503, "out")
		_ = ic.Reject(503, "Service Unavailable", sip.Header{Name: "Retry-After", Value: strconv.Itoa(int(retry.Round(time.Second) / time.Second))})
		return
	}
	if t := s.cfg.Trunk(ic.Trunk()); t != nil {
		// The offer is checked before Meta is asked to ring the user: a
		// call the PBX side cannot carry must not reach the user's phone.
		if err := ic.CheckOffer(t.Codecs); err != nil {
			s.Metrics.CallOffered(metrics.DirOutbound, "")
			s.Metrics.SIPResponse("INVITE", 488, "out")
			s.Metrics.CallRefused(metrics.DirOutbound, "", "bad_offer")
			s.log.Info("SIP INVITE refused: unusable SDP offer", "sip_call_id", ic.CallID(), "trunk", ic.Trunk(), "err", err)
			ic.RefuseOffer(err) // counted first: whoever receives the 488 may read /metrics at once
			return
		}
	}
	agent := ""
	if f := req.From(); f != nil {
		agent = f.Address.User
	}
	s.Gateway.PlaceCall(ic, ic.Trunk(), dialledUser(req), agent, func(name string) string {
		if h := req.GetHeader(name); h != nil {
			return strings.TrimSpace(h.Value())
		}
		return ""
	})
}

// startRegistrations registers to every trunk with a register section.
func (s *Server) startRegistrations(ctx context.Context) error {
	for i := range s.cfg.SIP.Trunks {
		t := &s.cfg.SIP.Trunks[i]
		if t.Register == nil {
			continue
		}
		r, err := s.UA.Register(ctx, sip.Registration{
			Trunk: gateway.SIPTrunk(t), User: t.Register.User, Domain: t.Register.Domain,
			Expires: t.Register.Expires.D(), KeepAlive: t.Register.KeepAlive.D(),
			OnChange: func(st sip.RegStatus) { s.Metrics.Registration(st.Trunk, st.Registered) },
		})
		if err != nil {
			return fmt.Errorf("register %s: %w", t.Name, err)
		}
		s.registrars = append(s.registrars, r)
	}
	return nil
}

// stopRegistrations unregisters (Expires: 0) within ctx.
func (s *Server) stopRegistrations(ctx context.Context) {
	for _, r := range s.registrars {
		_ = r.Close(ctx)
	}
	s.registrars = nil
}

// dialledUser is the WhatsApp user an INVITE asks for: the Request-URI user,
// or, when that is no number (a registrar relaying to ponte's registered
// Contact, sip:ponte@..., as 3CX and cloud PBXs do), the To user, which
// keeps what the agent dialled (RFC 3261 §8.1.1.2).
func dialledUser(req *sipmsg.Request) string {
	u := req.Recipient.User
	if permit.IsBSUID(u) {
		return u
	}
	if _, _, err := permit.NormalizeNumber(u, ""); err == nil {
		return u
	}
	if to := req.To(); to != nil && to.Address.User != "" {
		return to.Address.User
	}
	return u
}
