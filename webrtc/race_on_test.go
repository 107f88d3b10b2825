//go:build race

package webrtc_test

// raceEnabled: the race detector makes sync.Pool drop items at random (so pion's SRTP buffer
// pool allocates) and instruments allocations; allocation counts are meaningless then.
const raceEnabled = true
