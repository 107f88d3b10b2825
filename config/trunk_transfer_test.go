package config

import "testing"

func TestTransferAllowed(t *testing.T) {
	open := Trunk{}
	open.transferDefaults()
	listed := Trunk{Transfer: Transfer{Allow: []string{"*@pbx.example.com", "2???@*"}}}
	pstn := Trunk{Transfer: Transfer{AllowPSTN: true}}
	for _, tc := range []struct {
		trunk Trunk
		uri   string
		want  bool
	}{
		{open, "sip:2001@pbx.example.com", true},
		{open, "sip:sales@10.0.0.5", true},
		{open, "sip:+5511999998888@pbx.example.com", false},
		{open, "sip:0011999998888@pbx.example.com", false},
		{open, "tel:+5511999998888", false},
		{open, "http://x", false},
		{listed, "sip:sales@PBX.example.com", true},
		{listed, "sip:2001@other", true},
		{listed, "sip:20011@other", false},
		{listed, "sip:sales@other", false},
		{pstn, "tel:+5511999998888", true},
		{pstn, "sip:5511999998888@gw", true},
	} {
		if got, why := tc.trunk.TransferAllowed(tc.uri); got != tc.want {
			t.Errorf("%+v TransferAllowed(%q) = %v (%s), want %v", tc.trunk.Transfer, tc.uri, got, why, tc.want)
		}
	}
}
