package bare

import (
	"errors"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		line      string
		wantErr   bool
		wantOp    string
		wantCodec string
	}{
		{`{"op":"call","id":1,"offer":"v=0\r\n","pbx":"127.0.0.1:5004","codec":"pcmu"}`, false, opCall, "PCMU"},
		{`{"op":"call","id":7,"offer":"v=0\r\n","pbx":"[::1]:5004","codec":"opus"}`, false, opCall, "opus"},
		{`{"op":"stats"}`, false, opStats, ""},
		{`{"op":"call","id":0,"offer":"v=0","pbx":"127.0.0.1:5004","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"hello","pbx":"127.0.0.1:5004","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"v=0","pbx":"127.0.0.1:0","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"v=0","pbx":"0.0.0.0:5004","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"v=0","pbx":"224.0.0.1:5004","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"v=0","pbx":"pbx.example:5004","codec":"PCMU"}`, true, "", ""},
		{`{"op":"call","id":1,"offer":"v=0","pbx":"127.0.0.1:5004","codec":"G729"}`, true, "", ""},
		{`{"op":"hangup","id":1}`, true, "", ""},
		{`{"op":`, true, "", ""},
		{``, true, "", ""},
	} {
		r, err := parseRequest([]byte(tc.line))
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("%s: %v does not wrap ErrProtocol", tc.line, err)
			}
			continue
		}
		if r.Op != tc.wantOp || r.Codec != tc.wantCodec {
			t.Errorf("%s: op %q codec %q, want %q %q", tc.line, r.Op, r.Codec, tc.wantOp, tc.wantCodec)
		}
	}
}

// FuzzParseRequest: any line is either refused with ErrProtocol or yields a request the
// child can act on.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"op":"call","id":1,"offer":"v=0\r\n","pbx":"127.0.0.1:5004","codec":"PCMU"}`))
	f.Add([]byte(`{"op":"stats"}`))
	f.Add([]byte(`{"op":"call","id":-3,"pbx":"[::]:1"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		switch r.Op {
		case opStats:
		case opCall:
			if r.ID <= 0 || r.Codec == "" || len(r.Offer) < 3 || r.Offer[:3] != "v=0" {
				t.Fatalf("accepted a bad call: %+v", r)
			}
		default:
			t.Fatalf("accepted op %q", r.Op)
		}
	})
}
