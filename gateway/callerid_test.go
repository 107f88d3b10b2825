package gateway

import (
	"testing"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/whatsapp"
)

func TestCallerIDFormats(t *testing.T) {
	br := whatsapp.CallEvent{From: "5511987654321", ContactName: "Ana"}
	us := whatsapp.CallEvent{From: "16315553602", ContactName: "Bob"}
	bsuid := whatsapp.CallEvent{From: "", FromUserID: "BR.1234567890", ContactName: "Cy"}
	cases := []struct {
		ev            whatsapp.CallEvent
		format, cc    string
		display       string
		wantID, wantN string
	}{
		{br, "e164_plus", "", "whatsapp", "+5511987654321", "Ana"},
		{br, "e164", "", "number", "5511987654321", "5511987654321"},
		{br, "national", "55", "none", "11987654321", ""},
		{us, "national", "55", "whatsapp", "+16315553602", "Bob"}, // foreign caller keeps +E.164
		{bsuid, "national", "55", "number", "BR.1234567890", "BR.1234567890"},
	}
	for _, tc := range cases {
		tr := &config.Trunk{CallerID: tc.format, CountryCode: tc.cc, DisplayName: tc.display}
		if got := callerID(tc.ev, tr); got != tc.wantID {
			t.Errorf("%s %s: caller id %q, want %q", tc.ev.From, tc.format, got, tc.wantID)
		}
		if got := displayName(tc.ev, tr); got != tc.wantN {
			t.Errorf("%s %s: display %q, want %q", tc.ev.From, tc.display, got, tc.wantN)
		}
	}
}
