//go:build race

package gateway

// raceEnabled: the race detector slows Go code several-fold, so real-time
// audio quality is asserted in the non-race pass (make test-media); under
// -race the same tests run every flow and structural check.
const raceEnabled = true
