package rtpeng

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"string", "spam", "4:spam"},
		{"empty string", "", "0:"},
		{"bytes", []byte{0, 'a'}, "2:\x00a"},
		{"int", 42, "i42e"},
		{"negative", int64(-3), "i-3e"},
		{"zero", 0, "i0e"},
		{"string list", []string{"trust-address", "generate-mid"}, "l13:trust-address12:generate-mide"},
		{"any list", []any{"a", 1, []any{}}, "l1:ai1elee"},
		// BEP 3: keys in sorted order whatever the map's order.
		{"dict sorted", Dict{"sdp": "v=0", "command": "offer", "call-id": "x"}, "d7:call-id1:x7:command5:offer3:sdp3:v=0e"},
		{"nested", Dict{"codec": Dict{"mask": []string{"PCMU"}, "transcode": []string{"opus/48000/2"}}},
			"d5:codecd4:maskl4:PCMUe9:transcodel12:opus/48000/2eee"},
		{"empty dict", Dict{}, "de"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("Encode = %q, want %q", got, tc.want)
			}
		})
	}
	for _, bad := range []any{1.5, true, nil, []any{struct{}{}}, Dict{"k": uint8(1)}} {
		if _, err := Encode(bad); !errors.Is(err, ErrBencode) {
			t.Errorf("Encode(%#v) err = %v, want ErrBencode", bad, err)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{"4:pong", "pong"},
		{"0:", ""},
		{"i0e", int64(0)},
		{"i-17e", int64(-17)},
		{"i9223372036854775807e", int64(9223372036854775807)},
		{"le", []any{}},
		{"l4:spami3ee", []any{"spam", int64(3)}},
		{"d6:result4:ponge", Dict{"result": "pong"}},
		// rtpengine's reply to an offer: a dict holding the SDP with CRLFs.
		{"d3:sdp10:v=0\r\ns=-\r\n6:result2:oke", Dict{"sdp": "v=0\r\ns=-\r\n", "result": "ok"}},
		// Key order is not enforced on input.
		{"d1:bi2e1:ai1ee", Dict{"a": int64(1), "b": int64(2)}},
	}
	for _, tc := range tests {
		got, err := Decode([]byte(tc.in))
		if err != nil {
			t.Errorf("Decode(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Decode(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
	bad := []string{
		"", "i", "ie", "i-0e", "i01e", "i-e", "i1", "i99999999999999999999e", "i1x2e",
		"5:abc", "01:a", "-1:a", ":a", "3abc", "l", "l4:spam", "d", "d1:a", "d1:ai1e",
		"di1ei2ee", "dl1:xei1ee", "d1:ai1e1:ai2ee", // non-string keys, duplicate key
		"4:spamX", "i1ei2e", "x", "e",
		strings.Repeat("l", maxDepth+1) + strings.Repeat("e", maxDepth+1),
	}
	for _, in := range bad {
		if v, err := Decode([]byte(in)); !errors.Is(err, ErrBencode) {
			t.Errorf("Decode(%q) = %#v, %v; want ErrBencode", in, v, err)
		}
	}
	// The deepest accepted nesting.
	deep := strings.Repeat("l", maxDepth) + strings.Repeat("e", maxDepth)
	if _, err := Decode([]byte(deep)); err != nil {
		t.Errorf("depth %d: %v", maxDepth, err)
	}
}

func TestRoundTrip(t *testing.T) {
	in := Dict{
		"command": "offer", "call-id": "c1", "from-tag": "t1", "sdp": "v=0\r\n",
		"ICE": "force", "SDES": []any{"off"}, "n": int64(-5),
		"codec": Dict{"transcode": []any{"opus/48000/2"}, "mask": []any{"PCMU"}},
	}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, any(in)) {
		t.Fatalf("round trip:\n got %#v\nwant %#v", out, in)
	}
}

// FuzzBencode: anything Decode accepts re-encodes canonically (sorted keys), decodes to the
// same value, and the canonical form is a fixed point; Decode never panics.
func FuzzBencode(f *testing.F) {
	for _, s := range []string{
		"d6:result4:ponge", "l4:spami3ee", "i-17e", "0:", "d1:bi2e1:ai1ee",
		"d7:command5:offer5:codecd4:maskl4:PCMUeee", "i-0e", "d1:ai1e1:ai2ee", "llllee",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBencode) {
				t.Fatalf("error %v does not wrap ErrBencode", err)
			}
			return
		}
		enc, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", b, err)
		}
		v2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(%q) (re-encoded from %q): %v", enc, b, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed the value: %#v -> %#v", v, v2)
		}
		enc2, _ := Encode(v2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("canonical form not stable: %q -> %q", enc, enc2)
		}
		// Decode is strict about numbers, so only the key order may differ: same length.
		if len(enc) != len(b) {
			t.Fatalf("canonical form %q differs in length from the input %q", enc, b)
		}
	})
}
