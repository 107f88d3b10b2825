package test

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// TestBlindTransfer: the answering agent REFERs the caller to another
// extension. ponte answers 202, reports 100 then 200 by NOTIFY, rings the new
// target, moves the caller's audio to it (the new leg hears the caller's
// 440 Hz; the caller keeps hearing 1000 Hz), BYEs the transferor, and asks
// Meta for nothing new: one accept, one SSRC. A Refer-To outside the trunk's
// allow-list gets 403 and the call stays as it was.
func TestBlindTransfer(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.SIP.Trunks[0].Transfer.Allow = []string{"2???@*"}
	}})
	caller, agent := connected(t, env, wasim.CallOptions{ExpectHz: 1000})
	ctx := ctxT(t, 30*time.Second)
	host := env.PBX.Addr().String()

	res, err := agent.Request(ctx, "REFER", nil, "", sip.NewHeader("Refer-To", "<sip:+5511999998888@"+host+">"))
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("REFER to a phone number: %v %v, want 403", res, err)
	}
	res, err = agent.Request(ctx, "REFER", nil, "", sip.NewHeader("Refer-To", "<sip:2001@"+host+">"), sip.NewHeader("Referred-By", "<sip:1001@pbx>"))
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("REFER: %v %v, want 202", res, err)
	}
	next, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatalf("the transfer target never rang: %v", err)
	}
	if u := next.Invite().Recipient.User; u != "2001" {
		t.Errorf("transfer target INVITE to %q, want 2001", u)
	}
	transferred(t, w, agent, next, caller)
	if a := actions(requests(env, caller.ID())); a != "pre_accept,accept" {
		t.Errorf("Graph requests %q: a transfer must not touch the Meta side", a)
	}
	hangupAndWait(t, env, caller, next)
	recs := env.Server.Gateway.Records()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	var got []string
	for _, tr := range recs[0].Transfers {
		got = append(got, tr.Result)
	}
	if strings.Join(got, ",") != "denied,200" || recs[0].Outcome != "completed" {
		t.Errorf("record transfers %+v outcome %q", recs[0].Transfers, recs[0].Outcome)
	}
}

// TestOutboundBlindTransfer: an agent who called a WhatsApp user transfers
// the user to another extension with a blind REFER, as on an inbound call:
// 202, NOTIFY 100 then 200, the new target rings with the user's number as
// From, the user's audio moves to it in the same stream toward Meta, the
// agent is released, and Meta is asked for nothing new. Until this, ponte
// answered an outbound call's REFER 501.
func TestOutboundBlindTransfer(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Configure: func(c *config.Config) {
		c.SIP.Trunks[0].Transfer.Allow = []string{"2???@*"}
	}})
	outboundUser(env, bicUser, wasim.UserOptions{})
	agent, callee := dialUser(t, env, bicUser, pbx.DialOptions{From: "2001"})
	ctx := ctxT(t, 30*time.Second)
	host := env.PBX.Addr().String()

	res, err := agent.Request(ctx, "REFER", nil, "", sip.NewHeader("Refer-To", "<sip:2002@"+host+">"), sip.NewHeader("Referred-By", "<sip:2001@pbx>"))
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("REFER: %v %v, want 202", res, err)
	}
	next, err := env.PBX.NextCall(ctx)
	if err != nil {
		t.Fatalf("the transfer target never rang: %v", err)
	}
	if u := next.Invite().Recipient.User; u != "2002" {
		t.Errorf("transfer target INVITE to %q, want 2002", u)
	}
	if f := next.Invite().From().Address.User; !strings.Contains(f, bicUser) {
		t.Errorf("transfer target INVITE From %q, want the WhatsApp user %s", f, bicUser)
	}
	transferred(t, w, agent, next, callee)
	if err := next.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.Ended():
	case <-ctx.Done():
		t.Fatal("the WhatsApp user's call did not end after the new target hung up")
	}
	r := waitRecords(t, env, 1)[0]
	if got := graphActions(env, r.WACID, r.ID); got != "connect,terminate" {
		t.Errorf("Graph requests %q, want connect,terminate: a transfer must not touch the Meta side", got)
	}
	var got []string
	for _, tr := range r.Transfers {
		got = append(got, tr.Result)
	}
	if strings.Join(got, ",") != "200" || r.Outcome != "completed" || r.EndedBy != "pbx" || r.Direction != "outbound" {
		t.Errorf("record transfers %+v outcome %q ended_by %q direction %q", r.Transfers, r.Outcome, r.EndedBy, r.Direction)
	}
}

// waSide is the WhatsApp end of a call in the simulator (a caller or a
// callee).
type waSide interface {
	waEar
	Stream() wasim.StreamStats
}

// transferred checks a blind transfer once the target has been called: the
// transferor released by a BYE saying "transferred", NOTIFY 100 then 200
// (RFC 3515 §2.4.5), the new target and the WhatsApp side hearing each
// other, and one stream toward Meta across the switch (same SSRC, sequence
// +1).
func transferred(t *testing.T, w *stallWatch, transferor, next *pbx.Call, wa waSide) {
	t.Helper()
	select {
	case <-transferor.Ended():
	case <-time.After(5 * time.Second):
		t.Fatal("the transferor was not released")
	}
	if !strings.Contains(transferor.ByeReason(), "transferred") {
		t.Errorf("transferor's BYE Reason %q", transferor.ByeReason())
	}
	var notifies []string
	for _, r := range transferor.InDialog() {
		if r.Method == "NOTIFY" {
			notifies = append(notifies, strings.TrimSpace(string(r.Body)))
		}
	}
	if strings.Join(notifies, "|") != "SIP/2.0 100 Trying|SIP/2.0 200 OK" {
		t.Errorf("NOTIFY bodies %q, want 100 Trying then 200 OK", notifies)
	}
	if !waitFor(5*time.Second, func() bool { return !next.AnsweredAt().IsZero() }) {
		t.Fatal("the transfer target never answered")
	}
	listen(t, w, next.AnsweredAt().Add(500*time.Millisecond), time.Second, bothWays(wa, next, atLeast(0.95), atLeast(0.95)))
	st := wa.Stream()
	if len(st.SSRCs) != 1 || st.MaxSeqStep != 1 || st.SeqBackwards != 0 {
		t.Errorf("toward Meta across the transfer: SSRCs %v, max step %d, backwards %d", st.SSRCs, st.MaxSeqStep, st.SeqBackwards)
	}
}
