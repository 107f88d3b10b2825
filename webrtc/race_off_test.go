//go:build !race

package webrtc_test

const raceEnabled = false
