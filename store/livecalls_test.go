package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestLiveCallsRoundTrip writes rows, reopens the file (a restart) and reads
// them back field for field; deleting leaves the table empty.
func TestLiveCallsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ponte.db")
	s := openFile(t, path, false)
	uac := LiveCall{
		ID: "c-in", WACID: "wacid.IN", Direction: Inbound, PhoneNumberID: "1234", Accepted: true, Started: t0,
		Dialog: &LiveDialog{
			Role: "uac", CallID: "abc@ponte", LocalTag: "lt1", RemoteTag: "rt1",
			LocalURI: `"+5511" <sip:5511@ponte.example>`, RemoteURI: "<sip:1000@pbx.example>",
			RemoteTarget: "sip:1000@10.0.0.5:5070;transport=udp",
			RouteSet:     []string{"<sip:p1.example;lr>", "<sip:p2.example;lr>"},
			CSeq:         4242, Transport: "UDP", Dest: "10.0.0.5:5070", ViaHost: "203.0.113.7:5060", Trunk: "pbx-main",
		},
	}
	out := LiveCall{ID: "c-out", WACID: "", Direction: Outbound, PhoneNumberID: "5678", Started: t0.Add(time.Second)}
	ringing := LiveCall{ID: "c-ring", WACID: "wacid.RING", Direction: Inbound, PhoneNumberID: "1234", Started: t0.Add(1500 * time.Millisecond),
		Dialog: &LiveDialog{Role: "uac", CallID: "ring@ponte", LocalTag: "lt2", LocalURI: "<sip:5511@ponte.example>",
			RemoteURI: "<sip:1000@pbx.example>", CSeq: 12, Transport: "UDP", Dest: "10.0.0.5:5070",
			InviteURI: "sip:1000@pbx.example:5070", ViaSentBy: "203.0.113.7:5060", Branch: "z9hG4bKring"}}
	tcp := LiveCall{ID: "c-tcp", WACID: "wacid.TCP", Direction: Outbound, PhoneNumberID: "5678", Accepted: true, Started: t0.Add(2 * time.Second),
		Dialog: &LiveDialog{Role: "uas", CallID: "pbx-1", LocalTag: "a", RemoteTag: "b", RemoteTarget: "sip:pbx@10.0.0.9:5060;transport=tcp",
			CSeq: 7, Transport: "TCP", Dest: "10.0.0.9:40001", RewriteContact: true}}
	for _, lc := range []LiveCall{uac, out, ringing, tcp} {
		if err := s.PutLive(ctx, lc); err != nil {
			t.Fatal(err)
		}
	}
	// A later write replaces the row: the outbound call got its wacid.
	out.WACID = "wacid.OUT"
	if err := s.PutLive(ctx, out); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2 := openFile(t, path, false)
	got, err := s2.ListLive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []LiveCall{uac, out, ringing, tcp}
	if len(got) != len(want) {
		t.Fatalf("got %d rows, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Updated.IsZero() {
			t.Errorf("row %s: Updated not set", got[i].ID)
		}
		got[i].Updated = time.Time{}
		if !got[i].Started.Equal(want[i].Started) {
			t.Errorf("row %s: started %v, want %v", got[i].ID, got[i].Started, want[i].Started)
		}
		got[i].Started = want[i].Started
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d:\n got %+v %+v\nwant %+v %+v", i, got[i], got[i].Dialog, want[i], want[i].Dialog)
		}
	}
	for _, id := range []string{"c-in", "c-out", "c-ring", "c-tcp", "never-there"} {
		if err := s2.DeleteLive(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s2.ListLive(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after delete: %v %v", got, err)
	}
}

func TestLiveCallsValidation(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "ponte.db"), false)
	good := LiveCall{ID: "x", Direction: Inbound, Started: t0}
	tests := []struct {
		name string
		edit func(*LiveCall)
	}{
		{"no id", func(l *LiveCall) { l.ID = "" }},
		{"bad direction", func(l *LiveCall) { l.Direction = "sideways" }},
		{"no start", func(l *LiveCall) { l.Started = time.Time{} }},
		{"bad role", func(l *LiveCall) { l.Dialog = &LiveDialog{Role: "proxy", CallID: "c"} }},
		{"no call-id", func(l *LiveCall) { l.Dialog = &LiveDialog{Role: "uac"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc := good
			tt.edit(&lc)
			if err := s.PutLive(ctx, lc); !errors.Is(err, ErrInvalid) {
				t.Fatalf("PutLive = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.PutLive(ctx, good); err != nil {
		t.Fatalf("valid row refused: %v", err)
	}
	s.Close()
	if err := s.PutLive(ctx, good); err == nil {
		t.Fatal("PutLive on a closed store succeeded")
	}
}
