//go:build race

package rtpeng

// raceDetector: the race detector slows pion and libopus several times over, so the
// real-time audio criteria are not applied under it (the calls, packets and the clean stop
// still are).
const raceDetector = true
