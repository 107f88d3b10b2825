//go:build !race

package rtpeng

const raceDetector = false
