package sip

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
)

func recoverUA(t *testing.T) *UA {
	t.Helper()
	u, err := newRecoverUA()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func newRecoverUA() (*UA, error) {
	u, err := NewUA(Config{Listen: []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0"}, AdvertiseHost: "192.0.2.10", RTPHost: "127.0.0.1",
		RTPPortMin: 42000, RTPPortMax: 42099, UserAgent: "ponte-test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if err := u.Start(context.Background()); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// TestByeFromStateBuild checks every header of the BYE built from a state,
// for both roles, loose and strict routing (RFC 3261 §12.2.1.1, §16.6).
func TestByeFromStateBuild(t *testing.T) {
	u := recoverUA(t)
	udp := strconv.Itoa(int(u.ListenAddr("udp").Port()))
	tcp := strconv.Itoa(int(u.ListenAddr("tcp").Port()))
	base := DialogState{
		CallID: "c1@ponte", LocalTag: "LT", RemoteTag: "RT",
		LocalURI: `"Maria" <sip:+5511999990000@ponte.example>`, RemoteURI: "<sip:1000@pbx.example>",
		RemoteTarget: "sip:1000@10.0.0.5:5070", CSeq: 10, Transport: "UDP", Dest: "10.0.0.5:5060",
	}
	tests := []struct {
		name              string
		edit              func(*DialogState)
		ruri, dest        string
		routes            []string
		from, to, viaSent string
	}{
		{name: "uac no routes", edit: func(s *DialogState) { s.Role = RoleUAC },
			ruri: "sip:1000@10.0.0.5:5070", dest: "10.0.0.5:5070",
			from: `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`, to: "<sip:1000@pbx.example>;tag=RT", viaSent: "192.0.2.10:" + udp},
		{name: "uac loose routes in order", edit: func(s *DialogState) {
			s.Role = RoleUAC
			s.RouteSet = []string{"<sip:p1.example:5080;lr>", "<sip:p2.example;lr>"}
		},
			ruri: "sip:1000@10.0.0.5:5070", dest: "p1.example:5080", routes: []string{"<sip:p1.example:5080;lr>", "<sip:p2.example;lr>"},
			from: `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`, to: "<sip:1000@pbx.example>;tag=RT", viaSent: "192.0.2.10:" + udp},
		{name: "uac strict router first", edit: func(s *DialogState) {
			s.Role = RoleUAC
			s.RouteSet = []string{"<sip:strict.example>", "<sip:p2.example;lr>"}
		},
			ruri: "sip:strict.example", dest: "strict.example:5060", routes: []string{"<sip:p2.example;lr>", "<sip:1000@10.0.0.5:5070>"},
			from: `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`, to: "<sip:1000@pbx.example>;tag=RT", viaSent: "192.0.2.10:" + udp},
		{name: "uas nat advertise rewrite", edit: func(s *DialogState) {
			s.Role = RoleUAS
			s.ViaHost, s.RewriteContact = "203.0.113.7:5999", true
		},
			ruri: "sip:1000@10.0.0.5:5070", dest: "10.0.0.5:5060",
			from: `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`, to: "<sip:1000@pbx.example>;tag=RT", viaSent: "203.0.113.7:5999"},
		{name: "uas tcp goes to the contact", edit: func(s *DialogState) {
			s.Role, s.Transport, s.RewriteContact = RoleUAS, "TCP", true
			s.RemoteTarget = "sip:1000@10.0.0.5:5070;transport=tcp"
		},
			ruri: "sip:1000@10.0.0.5:5070;transport=tcp", dest: "10.0.0.5:5070",
			from: `"Maria" <sip:+5511999990000@ponte.example>;tag=LT`, to: "<sip:1000@pbx.example>;tag=RT", viaSent: "192.0.2.10:" + tcp},
	}
	reason := Reason{Protocol: "SIP", Cause: 500, Text: "ponte restarted"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := base
			tt.edit(&st)
			req, err := u.byeFromState(st, reason)
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != "BYE" || req.Recipient.String() != tt.ruri {
				t.Errorf("request line %s", req.StartLine())
			}
			if req.Destination() != tt.dest {
				t.Errorf("destination %s, want %s", req.Destination(), tt.dest)
			}
			var routes []string
			for _, h := range req.GetHeaders("Route") {
				routes = append(routes, h.Value())
			}
			if strings.Join(routes, ",") != strings.Join(tt.routes, ",") {
				t.Errorf("Route %v, want %v", routes, tt.routes)
			}
			if got := req.From().Value(); got != tt.from {
				t.Errorf("From %s, want %s", got, tt.from)
			}
			if got := req.To().Value(); got != tt.to {
				t.Errorf("To %s, want %s", got, tt.to)
			}
			if got := req.CallID().Value(); got != "c1@ponte" {
				t.Errorf("Call-ID %s", got)
			}
			if cs := req.CSeq(); cs.SeqNo != 10+RecoverCSeqMargin || cs.MethodName != "BYE" {
				t.Errorf("CSeq %s", cs.Value())
			}
			v := req.Via()
			if v.Transport != strings.ToUpper(st.Transport) || v.Host+":"+strconv.Itoa(v.Port) != tt.viaSent || !strings.HasPrefix(v.Params.GetOr("branch", ""), "z9hG4bK") {
				t.Errorf("Via %s, want sent-by %s", v.Value(), tt.viaSent)
			}
			if h := req.GetHeader("Reason"); h == nil || h.Value() != reason.String() {
				t.Errorf("Reason %v", h)
			}
			if len(req.Body()) != 0 {
				t.Errorf("body %q", req.Body())
			}
		})
	}
}

func TestByeFromStateRejectsBadState(t *testing.T) {
	u := recoverUA(t)
	good := DialogState{Role: RoleUAC, CallID: "c", LocalTag: "a", RemoteTag: "b", LocalURI: "<sip:a@x>", RemoteURI: "<sip:b@y>", RemoteTarget: "sip:b@10.0.0.1"}
	for name, edit := range map[string]func(*DialogState){
		"role":           func(s *DialogState) { s.Role = "proxy" },
		"no call-id":     func(s *DialogState) { s.CallID = "" },
		"no remote tag":  func(s *DialogState) { s.RemoteTag = "" },
		"bad target":     func(s *DialogState) { s.RemoteTarget = "<<" },
		"bad local":      func(s *DialogState) { s.LocalURI = "" },
		"bad route":      func(s *DialogState) { s.RouteSet = []string{"<>"} },
		"rewrite no dst": func(s *DialogState) { s.RewriteContact = true },
		"crlf call-id":   func(s *DialogState) { s.CallID = "c\r\nX-Evil: 1" },
		"crlf tag":       func(s *DialogState) { s.LocalTag = "a\nb" },
	} {
		st := good
		edit(&st)
		if _, err := u.byeFromState(st, Reason{}); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: err %v, want ErrBadState", name, err)
		}
	}
	st := good
	st.Transport = "TLS" // no TLS listener
	if _, err := u.byeFromState(st, Reason{}); !errors.Is(err, ErrConfig) {
		t.Errorf("tls without listener: %v", err)
	}
	if _, err := u.byeFromState(good, Reason{}); err != nil {
		t.Errorf("good state refused: %v", err)
	}
}

// FuzzByeFromState: a persisted state is read back from disk, where it may
// be damaged; building a BYE from any state must fail cleanly or give a
// request with the state's Call-ID, never panic.
func FuzzByeFromState(f *testing.F) {
	f.Add("uac", "c1@ponte", "LT", "RT", `"M" <sip:+55@ponte>`, "<sip:1000@pbx>", "sip:1000@10.0.0.5:5070", "<sip:p1;lr>", "UDP", "10.0.0.5:5060", "")
	f.Add("uas", "x", "a", "b", "<sips:a@b;transport=tls>", "<sip:b@[::1]:5061>", "sip:b@[::1]", "<sip:strict>", "TCP", "", "203.0.113.7:9")
	u, err := newRecoverUA()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { u.Close() })
	f.Fuzz(func(t *testing.T, role, callID, lt, rt, local, remote, target, route, tr, dest, via string) {
		st := DialogState{Role: role, CallID: callID, LocalTag: lt, RemoteTag: rt, LocalURI: local, RemoteURI: remote,
			RemoteTarget: target, RouteSet: []string{route}, CSeq: 7, Transport: tr, Dest: dest, ViaHost: via, RewriteContact: dest != ""}
		req, err := u.byeFromState(st, Reason{Protocol: "SIP", Cause: 500, Text: via})
		if err != nil {
			return
		}
		if req.CallID().Value() != callID || req.CSeq().SeqNo != 7+RecoverCSeqMargin {
			t.Fatalf("Call-ID %q CSeq %d from state %+v", req.CallID().Value(), req.CSeq().SeqNo, st)
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
