package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// ErrBadState reports a persisted dialog state that cannot make a request.
var ErrBadState = errors.New("sip: bad dialog state")

// Roles of DialogState.Role.
const (
	RoleUAC = "uac" // ponte sent the INVITE (Dial)
	RoleUAS = "uas" // the PBX sent it (IncomingCall.Answer)
)

// RecoverCSeqMargin is added to the persisted CSeq of a dialog ended from
// another process. RFC 3261 §12.2.1.1 wants each new request's CSeq above
// the last one sent, and a UAS answers a lower one with 500 (§12.2.2). The
// gateway persists the CSeq when the dialog confirms (and again at a
// transfer), not after every session refresh or INFO: one SQLite write per
// in-dialog request would put the disk on the signalling path for no gain.
// A dialog sends at most a refresh per Session-Expires/2 (>= 45 s with
// RFC 4028's 90 s floor) plus the INFOs of DTMF relay, so 1000 covers days of
// refreshes and hundreds of relayed digits; CSeq stays far below 2^31
// (§8.1.1.5) because it starts below 2^15.
const RecoverCSeqMargin = 1000

// DialogState is a confirmed dialog as another ponte process needs it to end
// the dialog with a BYE (RFC 3261 §12.1.1, §12.1.2, §12.2.1.1). It holds no
// secret: digest credentials stay in the config.
type DialogState struct {
	Role      string // RoleUAC or RoleUAS
	CallID    string
	LocalTag  string
	RemoteTag string
	// LocalURI and RemoteURI are the From and To of ponte's in-dialog
	// requests as name-addr, without tags: for a UAC the INVITE's From and
	// To, for a UAS swapped (§12.1.1).
	LocalURI, RemoteURI string
	RemoteTarget        string   // the peer's Contact URI: the Request-URI
	RouteSet            []string // Route values in the order ponte sends them
	CSeq                uint32   // ponte's last local CSeq
	Transport           string   // UDP | TCP | TLS
	Dest                string   // next hop host:port when RewriteContact is set
	// ViaHost is the trunk's NAT.AdvertiseHost, if it has one; "" uses
	// the recovering UA's own advertised host and listener port, where the
	// response must come back to.
	ViaHost string
	// RewriteContact: requests go to Dest, not to the remote target's
	// host:port (a PBX behind NAT; NAT.RewriteContact).
	RewriteContact bool

	// Trunk is the name of the trunk the dialog runs on: recovery finds its
	// credentials and TLS settings in the config by it (ByeFromState), since
	// the state itself holds no secret.
	Trunk string

	// An early state (EarlyState, recover_cancel.go) is an INVITE still
	// ringing: its Request-URI and top Via, to CANCEL it. CSeq is then the
	// INVITE's, RemoteTag and RemoteTarget are empty.
	InviteURI string
	ViaSentBy string // host:port
	Branch    string
}

// State returns the dialog's state once it is confirmed (false before, or
// after it ended). The caller persists it to end the dialog from a later
// process (UA.ByeFromState) if this one dies.
func (d *Dialog) State() (DialogState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateConfirmed {
		return DialogState{}, false
	}
	from, to := d.fromToLocked()
	from.Params.Remove("tag")
	to.Params.Remove("tag")
	st := DialogState{
		Role: RoleUAC, CallID: d.callID, LocalTag: d.localTag, RemoteTag: d.remoteTag,
		LocalURI: from.Value(), RemoteURI: to.Value(), RemoteTarget: d.remoteTarget.String(),
		RouteSet: append([]string(nil), d.routes...), CSeq: d.cseq, Transport: d.transport,
		Dest: d.dest, ViaHost: d.trunk.NAT.AdvertiseHost, RewriteContact: d.trunk.NAT.RewriteContact,
		Trunk: d.trunk.Name,
	}
	if d.role == roleUAS {
		st.Role = RoleUAS
	}
	return st, true
}

// ByeFromState ends a dialog that an earlier process confirmed: it sends a
// BYE built from st with CSeq st.CSeq+RecoverCSeqMargin and Reason r, and
// waits for the final response (bounded by ctx and Timer F). t is the
// dialog's trunk as this run's config has it (nil: unknown). Over TLS the
// connection is made with t's TLS settings (its CA, client certificate and
// server name), as the dialog's own was. A 401 or 407 is answered once with
// t's credentials, in a new BYE with the next CSeq (RFC 3261 §22.2);
// without a password it is returned as is. It returns the final response's
// code; an error only when no response came. The UA must be started.
func (u *UA) ByeFromState(ctx context.Context, st DialogState, r Reason, t *Trunk) (int, error) {
	req, err := u.byeFromState(st, r)
	if err != nil {
		return 0, err
	}
	if err := u.dialForState(ctx, st, t); err != nil {
		return 0, err
	}
	res, err := u.do(ctx, req)
	if err != nil {
		return 0, err
	}
	if (res.StatusCode == 401 || res.StatusCode == 407) && t != nil && t.Password != "" {
		auth, aerr := digestHeader(req, res, t.Username, t.Password)
		if aerr != nil {
			return res.StatusCode, nil // no challenge ponte can answer
		}
		st.CSeq++
		if req, err = u.byeFromState(st, r); err != nil {
			return 0, err
		}
		req.AppendHeader(auth)
		if res, err = u.do(ctx, req); err != nil {
			return 0, err
		}
	}
	return res.StatusCode, nil
}

// dialForState makes the connection a request rebuilt from st goes on when
// st's transport is TLS and its trunk t is known: with t's CA, client
// certificate and server name, as the dialog's own connection was, not
// sipgo's default dial (the old connection died with the old process).
func (u *UA) dialForState(ctx context.Context, st DialogState, t *Trunk) error {
	if t == nil || !strings.EqualFold(st.Transport, "TLS") {
		return nil
	}
	_, _, err := u.dialTLS(ctx, t, u.ListenAddr("tls"))
	return err
}

// byeFromState builds the BYE with the dialog's own in-dialog builder
// (build.go) on a shadow dialog, as forked() does for a second 2xx.
func (u *UA) byeFromState(st DialogState, r Reason) (*sip.Request, error) {
	d, err := u.dialogFromState(st)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	req := d.buildInDialogLocked(sip.BYE, st.CSeq+RecoverCSeqMargin)
	d.mu.Unlock()
	if !r.IsZero() {
		req.AppendHeader(sip.NewHeader("Reason", r.String())) // RFC 3326
	}
	return req, nil
}

// dialogFromState rebuilds enough of a Dialog for buildInDialogLocked.
func (u *UA) dialogFromState(st DialogState) (*Dialog, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadState, what) }
	var role dialogRole
	switch st.Role {
	case RoleUAC:
		role = roleUAC
	case RoleUAS:
		role = roleUAS
	default:
		return nil, bad("role " + st.Role)
	}
	if st.CallID == "" || st.LocalTag == "" || st.RemoteTag == "" {
		return nil, bad("Call-ID and both tags are required")
	}
	sp, err := u.parseState(st, st.RemoteTarget, "remote target", append([]string{st.RemoteTag, st.RemoteTarget, st.ViaHost}, st.RouteSet...)...)
	if err != nil {
		return nil, err
	}
	tr, lap, target := sp.tr, sp.lap, sp.uri
	local, lp, ln, remote, rp, rn := sp.local, sp.lp, sp.ln, sp.remote, sp.rp, sp.rn
	for _, rt := range st.RouteSet {
		var ru sip.Uri
		hp := sip.NewParams()
		if _, err := sip.ParseAddressValue(rt, &ru, &hp); err != nil || ru.Host == "" {
			return nil, bad("route " + SanitizeHeaderValue(rt, 128))
		}
	}
	d := &Dialog{
		ua: u, role: role, transport: tr, dest: st.Dest, viaPort: lap.Port(),
		callID: st.CallID, localTag: st.LocalTag, remoteTag: st.RemoteTag,
		remoteTarget: target, routes: append([]string(nil), st.RouteSet...), state: stateConfirmed,
		trunk: Trunk{NAT: NAT{AdvertiseHost: st.ViaHost, RewriteContact: st.RewriteContact}},
	}
	if role == roleUAS && sip.IsReliable(tr) {
		// The PBX's own TCP/TLS connection died with the old process: its
		// source port (Dest) listens for nothing, so the BYE goes to the
		// Contact, which must then be reachable (RFC 3261 §12.2.1.1).
		d.trunk.NAT.RewriteContact = false
	}
	if d.trunk.NAT.RewriteContact && d.dest == "" {
		return nil, bad("RewriteContact without Dest")
	}
	if tr == "UDP" {
		// From the listening socket, so the response reaches the Via port.
		d.laddr = sip.Addr{IP: net.IP(lap.Addr().AsSlice()), Port: int(lap.Port())}
	}
	// fromToLocked takes the INVITE's From and To: the local URI is the
	// From of a UAC's INVITE and the To of a UAS's (§12.1.1).
	if role == roleUAC {
		d.from = sip.FromHeader{DisplayName: ln, Address: local, Params: lp}
		d.from.Params.Add("tag", st.LocalTag)
		d.to = sip.ToHeader{DisplayName: rn, Address: remote, Params: rp}
	} else {
		d.to = sip.ToHeader{DisplayName: ln, Address: local, Params: lp}
		d.from = sip.FromHeader{DisplayName: rn, Address: remote, Params: rp}
	}
	return d, nil
}

// stateParts is what both recovery builders (BYE, CANCEL) read from a
// persisted state.
type stateParts struct {
	tr     string         // UDP | TCP | TLS
	lap    netip.AddrPort // this UA's listener for tr
	uri    sip.Uri        // the Request-URI
	local  sip.Uri        // LocalURI, tag removed
	lp     sip.HeaderParams
	ln     string
	remote sip.Uri // RemoteURI, tag removed
	rp     sip.HeaderParams
	rn     string
}

// parseState checks and parses the parts of st every request from it
// needs, with uri (named what in errors) as the Request-URI. The state comes
// back from disk: a damaged row must not put line breaks into a header, so
// st's identifiers and extra are refused with any CR, LF or NUL.
func (u *UA) parseState(st DialogState, uri, what string, extra ...string) (stateParts, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadState, what) }
	for _, v := range append([]string{st.CallID, st.LocalTag, st.LocalURI, st.RemoteURI, st.Dest}, extra...) {
		if strings.ContainsAny(v, "\r\n\x00") {
			return stateParts{}, bad("control characters")
		}
	}
	sp := stateParts{tr: strings.ToUpper(st.Transport)}
	if sp.tr == "" {
		sp.tr = "UDP"
	}
	var ok bool
	if sp.lap, ok = u.listenerFor(strings.ToLower(sp.tr)); !ok {
		return stateParts{}, fmt.Errorf("%w: no %s listener", ErrConfig, sp.tr)
	}
	if err := sip.ParseUri(uri, &sp.uri); err != nil || sp.uri.Host == "" {
		return stateParts{}, bad(what + " " + SanitizeHeaderValue(uri, 128))
	}
	var err error
	if sp.local, sp.lp, sp.ln, err = parseNameAddr(st.LocalURI); err != nil {
		return stateParts{}, bad("local URI")
	}
	if sp.remote, sp.rp, sp.rn, err = parseNameAddr(st.RemoteURI); err != nil {
		return stateParts{}, bad("remote URI")
	}
	sp.lp.Remove("tag")
	sp.rp.Remove("tag")
	return sp, nil
}

func parseNameAddr(s string) (sip.Uri, sip.HeaderParams, string, error) {
	var u sip.Uri
	hp := sip.NewParams()
	name, err := sip.ParseAddressValue(s, &u, &hp)
	if err == nil && u.Host == "" {
		err = errors.New("no host")
	}
	return u, hp, name, err
}
