// Package transcode holds ponte's media DSP: G.711 tables, the Opus codec (libopus via
// github.com/hraban/opus), the RFC 4733 telephone-event model, a playout jitter buffer and
// tone generation/measurement. It never touches sockets: callers feed it RTP payloads and PCM.
//
// All PCM is mono signed 16-bit. Unless stated otherwise nothing in this package is safe for
// concurrent use; one media goroutine owns each codec, detector and generator.
package transcode
