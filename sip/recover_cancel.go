package sip

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
)

// EarlyState returns what another process needs to CANCEL this dialog's
// INVITE (RFC 3261 §9.1) if this one dies while the PBX rings: the INVITE's
// Request-URI, top Via (sent-by and branch: the PBX matches the CANCEL to
// its INVITE transaction by them, §17.2.3), From, To, Call-ID and CSeq
// number. It reports false unless ponte sent the INVITE, a provisional
// response has arrived (§9.1: no CANCEL before one) and no final one.
// DialogState.Branch set and RemoteTag empty mark such an early state.
func (d *Dialog) EarlyState() (DialogState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.role != roleUAC || !d.gotProvisional || d.resultSet || d.invite == nil {
		return DialogState{}, false
	}
	inv := d.invite
	via := inv.Via()
	if via == nil || inv.CSeq() == nil {
		return DialogState{}, false
	}
	branch, _ := via.Params.Get("branch")
	from := sip.HeaderClone(inv.From()).(*sip.FromHeader)
	from.Params.Remove("tag")
	to := sip.HeaderClone(inv.To()).(*sip.ToHeader)
	to.Params.Remove("tag")
	return DialogState{
		Role: RoleUAC, CallID: d.callID, LocalTag: d.localTag,
		LocalURI: from.Value(), RemoteURI: to.Value(), InviteURI: inv.Recipient.String(),
		ViaSentBy: net.JoinHostPort(via.Host, strconv.Itoa(via.Port)), Branch: branch,
		CSeq: inv.CSeq().SeqNo, Transport: d.transport, Dest: d.dest, Trunk: d.trunk.Name,
		// For the BYE of a 2xx that crosses the recovery CANCEL.
		ViaHost: d.trunk.NAT.AdvertiseHost, RewriteContact: d.trunk.NAT.RewriteContact,
	}, true
}

// Early reports whether st is an EarlyState (to CANCEL) rather than a
// confirmed dialog's state (to BYE).
func (st DialogState) Early() bool { return st.Branch != "" && st.RemoteTag == "" }

// CancelFromState cancels an INVITE that an earlier process sent and that
// was still ringing when it died: a CANCEL built from st (EarlyState) with
// Reason r, sent to st.Dest; it waits for the CANCEL's final response
// (bounded by ctx and Timer F) and returns its code. t is the dialog's trunk
// as this run's config has it (nil: unknown): over TLS the connection is
// made with its TLS settings, as ByeFromState does.
//
// No transaction for the INVITE survives in this process, so for 64*T1
// this UA answers the INVITE's final response itself (ackRecovered): the
// PBX's 487 is ACKed at once rather than retransmitted until its Timer H
// (§17.2.1), and a 2xx that crossed the CANCEL (the agent answered as
// ponte died, §9.1) is ACKed and BYEd with t's credentials.
func (u *UA) CancelFromState(ctx context.Context, st DialogState, r Reason, t *Trunk) (int, error) {
	req, inv, d, err := u.cancelFromState(st, r)
	if err != nil {
		return 0, err
	}
	if err := u.dialForState(ctx, st, t); err != nil {
		return 0, err
	}
	u.rememberRecovered(&recoveredInvite{inv: inv, d: d, st: st, r: r, trunk: t})
	res, err := u.do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// recoveredInvite is an INVITE rebuilt from a state to cancel it: what the
// ACK of its final response needs (RFC 3261 §17.1.1.3, §13.2.2.4), and the
// BYE of a 2xx.
type recoveredInvite struct {
	inv     *sip.Request
	d       *Dialog     // transport, destination, local address
	st      DialogState // the early state it was rebuilt from
	r       Reason      // the CANCEL's, and the BYE's of a 2xx that crossed it
	trunk   *Trunk
	expires time.Time
	byed    map[string]bool // To tags of 2xx already BYEd (under u.mu)
}

// recoveredMax bounds the table; recovery cancels a handful of INVITEs.
const recoveredMax = 4096

func (u *UA) rememberRecovered(ri *recoveredInvite) {
	branch, _ := ri.inv.Via().Params.Get("branch")
	now := time.Now()
	ri.expires, ri.byed = now.Add(64*sip.T1), map[string]bool{}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.recovered == nil {
		u.recovered = map[string]*recoveredInvite{}
	}
	for k, old := range u.recovered {
		if now.After(old.expires) {
			delete(u.recovered, k)
		}
	}
	if len(u.recovered) < recoveredMax {
		u.recovered[branch] = ri
	}
}

// ackRecovered answers a final response to an INVITE cancelled from a
// state, and each retransmission of it. A non-2xx is ACKed as its client
// transaction would have: the INVITE's Request-URI, Via (same branch), From,
// Call-ID and CSeq number, and the response's To (§17.1.1.3). A 2xx is
// answered by answeredRecovered. It reports whether res was such a response.
func (u *UA) ackRecovered(res *sip.Response) bool {
	if res.StatusCode < 200 || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE || res.Via() == nil || res.To() == nil {
		return false
	}
	branch, _ := res.Via().Params.Get("branch")
	u.mu.Lock()
	ri, ok := u.recovered[branch]
	u.mu.Unlock()
	if !ok || time.Now().After(ri.expires) || callIDOf(res) != ri.inv.CallID().Value() || res.CSeq().SeqNo != ri.inv.CSeq().SeqNo {
		return false
	}
	if res.IsSuccess() {
		u.answeredRecovered(ri, res)
		return true
	}
	ack := likeInvite(ri.inv, sip.ACK, res.To())
	ack.SetBody(nil)
	ri.d.finish(ack, ri.d.dest)
	if err := u.ua.TransportLayer().WriteMsg(ack); err != nil {
		u.log.Debug("sip: ACK of a recovered INVITE's final response not sent", "call_id", callIDOf(res), "err", err)
	}
	return true
}

// answeredRecovered handles a 2xx that crossed the recovery CANCEL: the PBX
// answered before the CANCEL reached it (RFC 3261 §9.1), so the INVITE
// stands and a dialog exists. Left alone, the PBX would retransmit the 2xx
// and then hang up by itself after 64*T1 (§13.3.1.4), the agent hearing 32 s
// of silence. Like a fork's 2xx (forked), it is ACKed (a new transaction to
// its Contact along its Record-Route, §13.2.2.4), each retransmission
// again, and BYEd once per To tag with the CANCEL's Reason.
func (u *UA) answeredRecovered(ri *recoveredInvite, res *sip.Response) {
	st, ack, err := u.crossedDialog(ri, res)
	if err != nil {
		u.log.Warn("sip: a 2xx crossed the recovery CANCEL and cannot be ACKed", "call_id", ri.st.CallID, "err", err)
		return
	}
	if err := u.ua.TransportLayer().WriteMsg(ack); err != nil {
		u.log.Debug("sip: ACK of a 2xx that crossed the recovery CANCEL not sent", "call_id", st.CallID, "err", err)
	}
	u.mu.Lock()
	seen := ri.byed[st.RemoteTag]
	ri.byed[st.RemoteTag] = true
	u.mu.Unlock()
	if seen {
		return
	}
	u.log.Info("sip: a 2xx crossed the recovery CANCEL; ACK and BYE it", "call_id", st.CallID, "to_tag", st.RemoteTag)
	u.goTracked(func() {
		ctx, cancel := u.bgContext(sip.Timer_F + time.Second)
		defer cancel()
		code, err := u.ByeFromState(ctx, st, ri.r, ri.trunk)
		if err != nil || code >= 300 {
			u.log.Warn("sip: BYE of a 2xx that crossed the recovery CANCEL failed", "call_id", st.CallID, "code", code, "err", err)
		}
	})
}

// crossedDialog is the confirmed state of the dialog a 2xx that crossed the
// recovery CANCEL established (its To tag, Contact and reversed
// Record-Route, §12.1.2), and the ACK of that 2xx built on it. The response
// comes from the network: its Contact and routes go through the same checks
// as a state read back from disk.
func (u *UA) crossedDialog(ri *recoveredInvite, res *sip.Response) (DialogState, *sip.Request, error) {
	st := ri.st
	st.RemoteTag, _ = res.To().Params.Get("tag")
	st.RemoteTarget = st.InviteURI
	if c := res.Contact(); c != nil {
		st.RemoteTarget = c.Address.String()
	}
	st.RouteSet = uacRouteSet(res)
	st.InviteURI, st.ViaSentBy, st.Branch = "", "", ""
	g, err := u.dialogFromState(st)
	if err != nil {
		return st, nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.invite, g.inviteCSeq = ri.inv, st.CSeq
	return st, g.ackFor2xxLocked(), nil
}

// cancelFromState rebuilds the INVITE's identifying headers and hands them
// to the dialog's own CANCEL builder (buildCancel). It returns the rebuilt
// INVITE and its shadow dialog too, for ackRecovered.
func (u *UA) cancelFromState(st DialogState, r Reason) (*sip.Request, *sip.Request, *Dialog, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadState, what) }
	if st.Role != RoleUAC || !st.Early() {
		return nil, nil, nil, bad("not an early UAC state")
	}
	if st.CallID == "" || st.LocalTag == "" || st.Dest == "" || st.CSeq == 0 {
		return nil, nil, nil, bad("Call-ID, local tag, destination and CSeq are required")
	}
	for i := 0; i < len(st.Branch); i++ {
		if !isTokenChar(st.Branch[i]) {
			return nil, nil, nil, bad("branch is not a token")
		}
	}
	sp, err := u.parseState(st, st.InviteURI, "Request-URI", st.InviteURI, st.ViaSentBy)
	if err != nil {
		return nil, nil, nil, err
	}
	tr, lap, ruri := sp.tr, sp.lap, sp.uri
	local, lp, ln, remote, rp, rn := sp.local, sp.lp, sp.ln, sp.remote, sp.rp, sp.rn
	host, port, err := net.SplitHostPort(st.ViaSentBy)
	pn, perr := strconv.Atoi(port)
	if err != nil || perr != nil || host == "" || pn <= 0 || pn > 65535 {
		return nil, nil, nil, bad("Via sent-by " + SanitizeHeaderValue(st.ViaSentBy, 64))
	}
	if _, _, err := splitHostPort(st.Dest); err != nil {
		return nil, nil, nil, bad("destination " + SanitizeHeaderValue(st.Dest, 64))
	}
	lp.Add("tag", st.LocalTag)

	inv := sip.NewRequest(sip.INVITE, ruri)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: tr, Host: host, Port: pn, Params: sip.NewParams()}
	via.Params.Add("branch", st.Branch)
	via.Params.Add("rport", "") // as the INVITE's (newVia): the answer comes back to our source port
	inv.AppendHeader(via)
	inv.AppendHeader(&sip.FromHeader{DisplayName: ln, Address: local, Params: lp})
	inv.AppendHeader(&sip.ToHeader{DisplayName: rn, Address: remote, Params: rp})
	cid := sip.CallIDHeader(st.CallID)
	inv.AppendHeader(&cid)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: st.CSeq, MethodName: sip.INVITE})

	d := &Dialog{ua: u, role: roleUAC, transport: tr, dest: st.Dest, viaPort: lap.Port(), callID: st.CallID}
	if tr == "UDP" {
		// From the listening socket, so the response reaches the Via port.
		d.laddr = sip.Addr{IP: net.IP(lap.Addr().AsSlice()), Port: int(lap.Port())}
	}
	return d.buildCancel(inv, r), inv, d, nil
}
