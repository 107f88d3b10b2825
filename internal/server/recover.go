package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/gateway"
	"github.com/ponte-gw/ponte/sip"
	"github.com/ponte-gw/ponte/store"
)

// recoverTimeout bounds the whole crash recovery at startup: every
// interrupted call is handled concurrently within it, so a dead PBX or a slow
// Graph API delays the start by at most this much.
const recoverTimeout = 5 * time.Second

// recoverConcurrency bounds the BYEs and Graph requests in flight at once.
const recoverConcurrency = 32

// recoverReason is the Reason (RFC 3326) of the BYE that ends a dialog the
// last process left: Q.850 cause 41, temporary failure.
var recoverReason = sip.Reason{Protocol: "Q.850", Cause: 41, Text: "ponte restarted"}

// recoverLive ends every call that the last process left in progress (it
// crashed or was killed; issue 8 item 5): BYE to the PBX from the persisted
// dialog state, so no agent sits in a dead call, and terminate to Meta for
// the wacid, so no business-initiated call goes on being billed (an
// inbound call Meta never accepted gets reject, reference §3). Every call
// keeps a record (CloseInterrupted in New closed the ones that were written;
// one the spool never wrote is created here), and its live row is deleted
// whatever the outcome: a PBX or Graph API that is down now would not be
// helped by a retry at every start. It runs in Start once the SIP
// listeners are up (a BYE needs them) and before the webhook listens.
func (s *Server) recoverLive(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	rows, err := s.Store.ListLive(ctx)
	if err != nil {
		s.log.Error("crash recovery: live calls not read; interrupted calls are left to time out", "err", err)
		return
	}
	if len(rows) == 0 {
		return
	}
	s.log.Warn("crash recovery: ending calls the last run left in progress", "calls", len(rows))
	sem := make(chan struct{}, recoverConcurrency)
	var wg sync.WaitGroup
	for _, lc := range rows {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.recoverCall(ctx, lc)
		}()
	}
	wg.Wait()
}

// recoverCall ends one interrupted call: BYE and the Graph request in
// parallel, then the record and the row.
func (s *Server) recoverCall(ctx context.Context, lc store.LiveCall) {
	var (
		wg      sync.WaitGroup
		byeCode int
		byeErr  error
		metaErr error
	)
	action := ""
	if lc.WACID != "" && lc.PhoneNumberID != "" {
		action = "terminate"
		if lc.Direction == store.Inbound && !lc.Accepted {
			action = "reject"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if action == "reject" {
				metaErr = s.Graph.Reject(ctx, lc.PhoneNumberID, lc.WACID)
			} else {
				metaErr = s.Graph.Terminate(ctx, lc.PhoneNumberID, lc.WACID)
			}
		}()
	}
	callID, sipAction := "", ""
	if lc.Dialog != nil {
		callID = lc.Dialog.CallID
		st := gateway.DialogStateOf(*lc.Dialog)
		if st.Early() {
			// The PBX was still ringing: CANCEL the INVITE (RFC 3261 §9.1).
			sipAction = "CANCEL"
			byeCode, byeErr = s.UA.CancelFromState(ctx, st, recoverReason, s.recoveryTrunk(st.Trunk))
		} else {
			sipAction = "BYE"
			byeCode, byeErr = s.UA.ByeFromState(ctx, st, recoverReason, s.recoveryTrunk(st.Trunk))
		}
	}
	wg.Wait()

	// The records are written directly: the spool is for the gateway's
	// calls, and at startup nothing else writes.
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	recErr := s.ensureInterruptedRecord(wctx, lc, callID)
	delErr := s.Store.DeleteLive(wctx, lc.ID)

	s.log.Warn("crash recovery: interrupted call ended", "call_id", lc.ID, "wacid", lc.WACID, "sip_call_id", callID,
		"direction", lc.Direction, "meta_action", action, "meta_err", errText(metaErr),
		"sip_action", sipAction, "sip_code", byeCode, "sip_err", errText(byeErr), "record_err", errText(recErr), "row_err", errText(delErr))
}

// recoveryTrunk is the named trunk as this run's config has it: its
// credentials answer a PBX that challenges the recovery BYE, and its TLS
// settings make the connection. A trunk renamed or removed since the crash
// is nil: the BYE then goes without either, and a 401/407 is logged.
func (s *Server) recoveryTrunk(name string) *sip.Trunk {
	t := s.cfg.Trunk(name)
	if name == "" || t == nil {
		return nil
	}
	return gateway.SIPTrunk(t)
}

// ensureInterruptedRecord leaves a record for the call: CloseInterrupted
// already ended the records that were written; a call whose record the
// spool still held when the process died gets a minimal one.
func (s *Server) ensureInterruptedRecord(ctx context.Context, lc store.LiveCall, sipCallID string) error {
	_, err := s.Store.Get(ctx, lc.ID)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	now := time.Now()
	rec := &store.Call{
		ID: lc.ID, WACID: lc.WACID, SIPCallID: sipCallID, Direction: lc.Direction, PhoneNumberID: lc.PhoneNumberID,
		Offered: lc.Started, Ended: now, Outcome: store.OutcomeFailed,
		EndReason: store.EndReasonInterrupted, EndedBy: store.EndedBySystem,
		Attempts: []store.Attempt{}, Transfers: []store.Transfer{}, MetaErrors: []int{},
	}
	if rec.Ended.Before(rec.Offered) {
		rec.Ended = rec.Offered
	}
	return s.Store.Create(ctx, rec, store.EventEnded)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
