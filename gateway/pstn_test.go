package gateway

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// TestDialTargetPSTNPolicy (H-SIPSEC, issue 8): dialTarget refuses a
// target on a PSTN trunk or under a PSTN prefix before anything is dialled,
// whoever chose it (route, hook, REFER); other targets go on to the next
// check (here a trunk marked down, so that nothing is dialled either).
func TestDialTargetPSTNPolicy(t *testing.T) {
	cfg := &config.Config{}
	cfg.SIP.Server.PSTN = config.PSTN{Trunks: []string{"carrier"}, Prefixes: []string{"+1900"}}
	down := &atomic.Bool{}
	down.Store(true)
	c := &call{g: &Gateway{cfg: cfg, trunkDown: map[string]*atomic.Bool{"carrier": down, "pbx": down}}}
	tests := []struct {
		trunk, uri string
		pstn       bool
	}{
		{"carrier", "sip:2001@sbc.carrier.example", true},
		{"pbx", "sip:+19005550000@pbx.example.com", true},
		{"pbx", "sip:0019005550000@pbx.example.com", true},
		{"pbx", "sip:sales@pbx.example.com", false},
		{"pbx", "sip:pbx.example.com", false}, // the DID goes in at dial time; the configured URI is judged
	}
	for _, tc := range tests {
		at := attempt{kind: "target", trunk: &config.Trunk{Name: tc.trunk}, target: config.Target{URI: tc.uri, Trunk: tc.trunk, RingTimeout: config.Duration(time.Second)}}
		_, _, err := c.dialTarget(at, &AttemptRecord{}, nil, nil, time.Time{})
		if got := errors.Is(err, config.ErrPSTNPolicy); got != tc.pstn {
			t.Errorf("%s on %s: err %v, want PSTN refusal %v", tc.uri, tc.trunk, err, tc.pstn)
		}
		if !tc.pstn && !errors.Is(err, ErrTrunkDown) {
			t.Errorf("%s on %s: err %v, want the next check's ErrTrunkDown", tc.uri, tc.trunk, err)
		}
	}
}
