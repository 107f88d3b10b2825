package sip_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sip"
)

// TestByeFromStateUAC: ponte dials the PBX simulator, persists the dialog's
// state, "crashes" (its UA closes without signalling), and a new UA ends the
// PBX's call from the state alone with a BYE the PBX matches to its dialog.
func TestByeFromStateUAC(t *testing.T) {
	p := startPBX(t, pbx.Config{AnswerDelay: 50 * time.Millisecond})
	u := newUA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", FromUser: "+5511999990000", FromDisplay: "Maria", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.State(); ok {
		t.Fatal("State of an unanswered dialog reported ok")
	}
	call := nextCall(t, p)
	if _, err := d.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	st, ok := d.State()
	if !ok {
		t.Fatal("State of the answered dialog not ok")
	}
	inv := call.Invite()
	fromTag, _ := inv.From().Params.Get("tag")
	if st.Role != sip.RoleUAC || st.CallID != inv.CallID().Value() || st.LocalTag != fromTag || st.RemoteTag == "" ||
		!strings.Contains(st.LocalURI, "sip:+5511999990000@") || strings.Contains(st.LocalURI, "tag=") ||
		!strings.Contains(st.RemoteURI, "sip:1000@") || st.CSeq != inv.CSeq().SeqNo || st.Transport != "UDP" {
		t.Fatalf("state %+v does not match the INVITE %s", st, inv.StartLine())
	}
	u.Close() // the crash: no BYE from the dying process

	select {
	case <-call.Ended():
		t.Fatal("the PBX call ended with the UA's close")
	case <-time.After(100 * time.Millisecond):
	}
	u2 := newUA(t)
	reason := sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}
	code, err := u2.ByeFromState(ctx, st, reason, nil)
	if err != nil || code != 200 {
		t.Fatalf("ByeFromState = %d, %v", code, err)
	}
	waitClosed(t, call.Ended(), "the PBX call to end")
	if call.EndedBy() != "bye" || call.ByeReason() != reason.String() {
		t.Fatalf("PBX call ended by %q reason %q", call.EndedBy(), call.ByeReason())
	}
}

// TestByeFromStateUAS: the PBX (a second UA) calls ponte, ponte answers,
// persists, dies; a new UA BYEs the PBX's dialog with From/To swapped as a
// UAS must (RFC 3261 §12.1.1).
func TestByeFromStateUAS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, calls := lanServer(t)
	pbxUA := newUA(t)
	trunk := &sip.Trunk{Name: "ponte", Address: srv.ListenAddr("udp").String(), Transport: "udp", Codecs: []string{"PCMU"}}
	out, err := pbxUA.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "+5511999990000", FromUser: "1001", Media: newRTP(t, pbxUA)})
	if err != nil {
		t.Fatal(err)
	}
	c := nextIncoming(t, calls)
	d, err := c.Answer(ctx, sip.AnswerOptions{Media: newRTP(t, srv), Codecs: []string{"PCMU"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.WaitAnswer(ctx); err != nil {
		t.Fatal(err)
	}
	st, ok := d.State()
	if !ok {
		t.Fatal("State of the answered UAS dialog not ok")
	}
	if st.Role != sip.RoleUAS || st.CallID != out.CallID() || !strings.Contains(st.LocalURI, "sip:+5511999990000@") ||
		!strings.Contains(st.RemoteURI, "sip:1001@") {
		t.Fatalf("state %+v", st)
	}
	srv.Close()
	u2 := newUA(t)
	code, err := u2.ByeFromState(ctx, st, sip.Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}, nil)
	if err != nil || code != 200 {
		t.Fatalf("ByeFromState = %d, %v", code, err)
	}
	waitClosed(t, out.Done(), "the PBX's dialog to end")
	if !out.RemoteBye() {
		t.Fatal("the PBX's dialog did not end by a BYE")
	}
}

// TestCancelFromState: ponte dials the PBX simulator, which rings; ponte
// persists the INVITE's early state and "crashes"; a new UA cancels the
// ringing call from the state alone: the PBX matches the CANCEL to its
// INVITE (branch, sent-by), answers it 200 and stops ringing.
func TestCancelFromState(t *testing.T) {
	p := startPBX(t, pbx.Config{AnswerDelay: 20 * time.Second})
	u := newUA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunkFor(p, "udp"), Target: "1000", FromUser: "+5511999990000", Media: newRTP(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	call := nextCall(t, p)
	st := earlyState(t, d)
	inv := call.Invite()
	branch, _ := inv.Via().Params.Get("branch")
	if !st.Early() || st.Branch != branch || st.CallID != inv.CallID().Value() || st.CSeq != inv.CSeq().SeqNo ||
		st.InviteURI != inv.Recipient.String() {
		t.Fatalf("early state %+v does not match the INVITE %s (branch %s)", st, inv.StartLine(), branch)
	}
	if _, ok := d.State(); ok {
		t.Fatal("a ringing dialog reported a confirmed state")
	}
	u.Close() // the crash

	select {
	case <-call.Ended():
		t.Fatal("the PBX call ended with the UA's close")
	case <-time.After(100 * time.Millisecond):
	}
	u2 := newUA(t)
	code, err := u2.CancelFromState(ctx, st, sip.Reason{Protocol: "Q.850", Cause: 41, Text: "ponte restarted"}, nil)
	if err != nil || code != 200 {
		t.Fatalf("CancelFromState = %d, %v", code, err)
	}
	waitClosed(t, call.Ended(), "the PBX call to end")
	if call.EndedBy() != "cancel" {
		t.Fatalf("PBX call ended by %q, want cancel", call.EndedBy())
	}
}
