package sip

import (
	"errors"
	"strings"
	"testing"
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
