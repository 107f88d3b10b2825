package sip

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestCancelFromStateBuild: the CANCEL rebuilt from an early state carries
// the INVITE's Request-URI, top Via sent-by and branch, From with its tag,
// To without one, Call-ID and CSeq number (RFC 3261 §9.1), goes to the
// trunk's address, and carries the Reason.
func TestCancelFromStateBuild(t *testing.T) {
	u := recoverUA(t)
	st := DialogState{Role: RoleUAC, CallID: "c9@ponte", LocalTag: "LT",
		LocalURI: `"Maria" <sip:+5511999990000@ponte.example>`, RemoteURI: "<sip:+551140001234@pbx.example>",
		InviteURI: "sip:1000@pbx.example:5070", ViaSentBy: "192.0.2.10:5060", Branch: "z9hG4bK.abc123",
		CSeq: 4711, Transport: "UDP", Dest: "10.0.0.5:5070"}
	if !st.Early() {
		t.Fatal("an early state does not say so")
	}
	req, _, _, err := u.cancelFromState(st, Reason{Protocol: "Q.850", Cause: 41, Text: "ponte restarted"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"method", string(req.Method), "CANCEL"},
		{"Request-URI", req.Recipient.String(), "sip:1000@pbx.example:5070"},
		{"Via", req.Via().Value(), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.abc123;rport"},
		{"From", req.From().Value(), `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`},
		{"To", req.To().Value(), "<sip:+551140001234@pbx.example>"},
		{"Call-ID", req.CallID().Value(), "c9@ponte"},
		{"CSeq", req.CSeq().Value(), "4711 CANCEL"},
		{"destination", req.Destination(), "10.0.0.5:5070"},
		{"Reason", req.GetHeader("Reason").Value(), `Q.850;cause=41;text="ponte restarted"`},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if n := len(req.GetHeaders("Via")); n != 1 {
		t.Errorf("%d Via headers, want exactly one (§9.1)", n)
	}
}

func TestCancelFromStateRejectsBadState(t *testing.T) {
	u := recoverUA(t)
	good := DialogState{Role: RoleUAC, CallID: "c", LocalTag: "LT", LocalURI: "<sip:a@b>", RemoteURI: "<sip:c@d>",
		InviteURI: "sip:c@d", ViaSentBy: "192.0.2.10:5060", Branch: "z9hG4bKx", CSeq: 1, Transport: "UDP", Dest: "10.0.0.5:5060"}
	for name, edit := range map[string]func(*DialogState){
		"confirmed":        func(s *DialogState) { s.RemoteTag = "RT" },
		"uas":              func(s *DialogState) { s.Role = RoleUAS },
		"no branch":        func(s *DialogState) { s.Branch = "" },
		"branch not token": func(s *DialogState) { s.Branch = "z9;received=1.2.3.4" },
		"no call id":       func(s *DialogState) { s.CallID = "" },
		"no dest":          func(s *DialogState) { s.Dest = "" },
		"no cseq":          func(s *DialogState) { s.CSeq = 0 },
		"line break":       func(s *DialogState) { s.CallID = "c\r\nX-Evil: 1" },
		"bad sent-by":      func(s *DialogState) { s.ViaSentBy = "nohostport" },
		"bad uri":          func(s *DialogState) { s.InviteURI = "::" },
	} {
		st := good
		edit(&st)
		if _, _, _, err := u.cancelFromState(st, Reason{}); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: err = %v, want ErrBadState", name, err)
		}
	}
	if _, _, _, err := u.cancelFromState(good, Reason{}); err != nil {
		t.Errorf("good state refused: %v", err)
	}
}

// FuzzCancelFromState: an early state read back from a damaged row builds a
// CANCEL with the state's identifiers and no line break, or fails cleanly.
func FuzzCancelFromState(f *testing.F) {
	f.Add("c1@ponte", "LT", `"M" <sip:+55@ponte>`, "<sip:1000@pbx>", "sip:1000@10.0.0.5:5070", "192.0.2.10:5060", "z9hG4bKx", "UDP", "10.0.0.5:5060")
	f.Add("x", "a", "<sips:a@b;transport=tls>", "<sip:b@[::1]:5061>", "sip:b@[::1]", "[::1]:5061", "z9", "TCP", "[::1]:5061")
	u, err := newRecoverUA()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { u.Close() })
	f.Fuzz(func(t *testing.T, callID, lt, local, remote, ruri, sentBy, branch, tr, dest string) {
		st := DialogState{Role: RoleUAC, CallID: callID, LocalTag: lt, LocalURI: local, RemoteURI: remote,
			InviteURI: ruri, ViaSentBy: sentBy, Branch: branch, CSeq: 9, Transport: tr, Dest: dest}
		req, _, _, err := u.cancelFromState(st, Reason{})
		if err != nil {
			return
		}
		if req.CallID().Value() != callID || req.CSeq().SeqNo != 9 || req.Method != "CANCEL" {
			t.Fatalf("Call-ID %q CSeq %v from state %+v", req.CallID().Value(), req.CSeq(), st)
		}
		if b, _ := req.Via().Params.Get("branch"); b != branch {
			t.Fatalf("branch %q, want %q", b, branch)
		}
		for _, h := range req.Headers() {
			if strings.ContainsAny(h.Value(), "\r\n") {
				t.Fatalf("header %s carries a line break: %q", h.Name(), h.Value())
			}
		}
		if strings.ContainsAny(req.Recipient.String(), "\r\n") {
			t.Fatalf("Request-URI carries a line break: %q", req.Recipient.String())
		}
	})
}

// FuzzCrossedDialog: a 2xx that crosses the recovery CANCEL comes from the
// network; the dialog built from it (To tag, Contact, Record-Route) gives an
// ACK with the INVITE's Call-ID and CSeq number, the response's To tag and
// no line break in any header, or is refused cleanly.
func FuzzCrossedDialog(f *testing.F) {
	f.Add("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=LT\r\nTo: <sip:c@d>;tag=R1\r\n" +
		"Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@10.0.0.7:5062;transport=udp>\r\n" +
		"Record-Route: <sip:p2@10.0.0.2;lr>, <sip:p1@10.0.0.1;lr>\r\nContent-Length: 0\r\n\r\n")
	f.Add("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=LT\r\nTo: <sip:c@d>;tag=R1\r\n" +
		"Call-ID: c\r\nCSeq: 1 INVITE\r\nRecord-Route: <sip:p1@10.0.0.1>\r\nContent-Length: 0\r\n\r\n")
	u, err := newRecoverUA()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { u.Close() })
	st := DialogState{Role: RoleUAC, CallID: "c", LocalTag: "LT", LocalURI: "<sip:a@b>", RemoteURI: "<sip:c@d>",
		InviteURI: "sip:c@d", ViaSentBy: "192.0.2.10:5060", Branch: "z9hG4bKx", CSeq: 1, Transport: "UDP", Dest: "10.0.0.5:5060"}
	_, inv, d, err := u.cancelFromState(st, Reason{})
	if err != nil {
		f.Fatal(err)
	}
	ri := &recoveredInvite{inv: inv, d: d, st: st}
	f.Fuzz(func(t *testing.T, raw string) {
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			return
		}
		res, ok := m.(*sip.Response)
		if !ok || res.To() == nil {
			return
		}
		got, ack, err := u.crossedDialog(ri, res)
		if err != nil {
			return
		}
		tag, _ := res.To().Params.Get("tag")
		if ack.Method != sip.ACK || ack.CallID().Value() != "c" || ack.CSeq().SeqNo != 1 || got.RemoteTag != tag {
			t.Fatalf("ACK %s Call-ID %q CSeq %v, state tag %q, response tag %q", ack.Method, ack.CallID().Value(), ack.CSeq(), got.RemoteTag, tag)
		}
		if b, _ := ack.Via().Params.Get("branch"); b == "z9hG4bKx" {
			t.Fatal("the 2xx's ACK reuses the INVITE's branch (§13.2.2.4: a new transaction)")
		}
		for _, h := range ack.Headers() {
			if strings.ContainsAny(h.Value(), "\r\n") {
				t.Fatalf("header %s carries a line break: %q", h.Name(), h.Value())
			}
		}
		if strings.ContainsAny(ack.Recipient.String(), "\r\n") {
			t.Fatalf("Request-URI carries a line break: %q", ack.Recipient.String())
		}
	})
}
