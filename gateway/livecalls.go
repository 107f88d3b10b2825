package gateway

import (
	"context"

	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
)

// LiveStore persists the calls in progress so that the next process can
// end what a crash left behind (issue 8 item 5): BYE to the PBX from the
// dialog state, terminate to Meta for the wacid. store.SQLite implements it.
// It is written directly, not through the record spool: a row is only worth
// anything if it is on disk when the process dies.
type LiveStore interface {
	PutLive(ctx context.Context, lc store.LiveCall) error
	DeleteLive(ctx context.Context, id string) error
}

// livePut writes the call's live row: the wacid, whether Meta accepted, and
// the confirmed PBX dialog if there is one. It runs on the call's own
// goroutine (never the media path) and is bounded by storeTimeout; a failure
// is logged and the call goes on (recovery is promised for a healthy disk).
func (c *call) livePut() {
	ls := c.g.live
	if ls == nil || c.ev.CallID == "" {
		return
	}
	lc := store.LiveCall{
		ID: c.id, WACID: c.ev.CallID, Direction: store.Inbound, PhoneNumberID: c.ev.PhoneNumberID,
		Accepted: c.accepted, Started: c.rec.Offered,
	}
	if c.out != nil {
		lc.Direction = store.Outbound
	}
	if c.liveDlg != nil {
		ld := LiveDialogOf(*c.liveDlg)
		lc.Dialog = &ld
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := ls.PutLive(ctx, lc); err != nil {
		c.g.obs.StoreError("live_put")
		c.log.Error("live call row not written: a crash now would leave this call to time out", "err", err)
	}
}

// liveDialog records the PBX dialog that has the call now (confirmed: at
// answer, and again after a transfer moved the call to another dialog).
func (c *call) liveDialog(d *sip.Dialog) {
	if c.g.live == nil || d == nil {
		return
	}
	st, ok := d.State()
	if !ok {
		return
	}
	c.liveDlg = &st
	c.livePut()
}

// liveEarly records the INVITE that rings the PBX now (after its first
// provisional response: RFC 3261 §9.1 sends no CANCEL before one), so that a
// crash while it rings leaves a CANCEL to send, not an agent's phone ringing
// for a dead call. A confirmed dialog (liveDialog) replaces it.
func (c *call) liveEarly(d *sip.Dialog) {
	if c.g.live == nil || d == nil {
		return
	}
	st, ok := d.EarlyState()
	if !ok {
		return
	}
	c.liveDlg = &st
	c.livePut()
}

// liveEnd removes the row once the call ended normally (Meta and the PBX
// have been told).
func (c *call) liveEnd() {
	ls := c.g.live
	if ls == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := ls.DeleteLive(ctx, c.id); err != nil {
		c.g.obs.StoreError("live_delete")
		c.log.Error("live call row not deleted: the next start will BYE a finished dialog", "err", err)
	}
}

// LiveDialogOf maps package sip's dialog state onto the store's row.
func LiveDialogOf(st sip.DialogState) store.LiveDialog {
	return store.LiveDialog{
		Role: st.Role, CallID: st.CallID, LocalTag: st.LocalTag, RemoteTag: st.RemoteTag,
		LocalURI: st.LocalURI, RemoteURI: st.RemoteURI, RemoteTarget: st.RemoteTarget,
		RouteSet: st.RouteSet, CSeq: st.CSeq, Transport: st.Transport, Dest: st.Dest,
		ViaHost: st.ViaHost, RewriteContact: st.RewriteContact,
		InviteURI: st.InviteURI, ViaSentBy: st.ViaSentBy, Branch: st.Branch, Trunk: st.Trunk,
	}
}

// DialogStateOf is LiveDialogOf's inverse, for recovery.
func DialogStateOf(ld store.LiveDialog) sip.DialogState {
	return sip.DialogState{
		Role: ld.Role, CallID: ld.CallID, LocalTag: ld.LocalTag, RemoteTag: ld.RemoteTag,
		LocalURI: ld.LocalURI, RemoteURI: ld.RemoteURI, RemoteTarget: ld.RemoteTarget,
		RouteSet: ld.RouteSet, CSeq: ld.CSeq, Transport: ld.Transport, Dest: ld.Dest,
		ViaHost: ld.ViaHost, RewriteContact: ld.RewriteContact,
		InviteURI: ld.InviteURI, ViaSentBy: ld.ViaSentBy, Branch: ld.Branch, Trunk: ld.Trunk,
	}
}
