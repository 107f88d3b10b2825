//go:build race

package sip_test

// raceEnabled: sync.Pool drops items at random under -race, so allocation
// counts are asserted in the non-race pass (make test-media).
const raceEnabled = true
