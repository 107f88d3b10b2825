package sip

import (
	"context"
	"fmt"
	"net"
	"strconv"

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
	}, true
}

// Early reports whether st is an EarlyState (to CANCEL) rather than a
// confirmed dialog's state (to BYE).
func (st DialogState) Early() bool { return st.Branch != "" && st.RemoteTag == "" }

// CancelFromState cancels an INVITE that an earlier process sent and that
// was still ringing when it died: a CANCEL built from st (EarlyState) with
// Reason r, sent to st.Dest; it waits for the CANCEL's final response
// (bounded by ctx and Timer F) and returns its code. The INVITE itself is
// then answered 487 by the PBX; this process holds no transaction for it,
// so that 487 goes unacknowledged and the PBX stops retransmitting it after
// Timer H (§17.2.1): the agent's phone stops ringing at the CANCEL.
func (u *UA) CancelFromState(ctx context.Context, st DialogState, r Reason) (int, error) {
	req, err := u.cancelFromState(st, r)
	return u.sendFromState(ctx, req, err)
}

// cancelFromState rebuilds the INVITE's identifying headers and hands them
// to the dialog's own CANCEL builder (buildCancel).
func (u *UA) cancelFromState(st DialogState, r Reason) (*sip.Request, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadState, what) }
	if st.Role != RoleUAC || !st.Early() {
		return nil, bad("not an early UAC state")
	}
	if st.CallID == "" || st.LocalTag == "" || st.Dest == "" || st.CSeq == 0 {
		return nil, bad("Call-ID, local tag, destination and CSeq are required")
	}
	for i := 0; i < len(st.Branch); i++ {
		if !isTokenChar(st.Branch[i]) {
			return nil, bad("branch is not a token")
		}
	}
	sp, err := u.parseState(st, st.InviteURI, "Request-URI", st.InviteURI, st.ViaSentBy)
	if err != nil {
		return nil, err
	}
	tr, lap, ruri := sp.tr, sp.lap, sp.uri
	local, lp, ln, remote, rp, rn := sp.local, sp.lp, sp.ln, sp.remote, sp.rp, sp.rn
	host, port, err := net.SplitHostPort(st.ViaSentBy)
	pn, perr := strconv.Atoi(port)
	if err != nil || perr != nil || host == "" || pn <= 0 || pn > 65535 {
		return nil, bad("Via sent-by " + SanitizeHeaderValue(st.ViaSentBy, 64))
	}
	if _, _, err := splitHostPort(st.Dest); err != nil {
		return nil, bad("destination " + SanitizeHeaderValue(st.Dest, 64))
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
	return d.buildCancel(inv, r), nil
}
