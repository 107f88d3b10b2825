// Package metrics holds ponte's measurements: Prometheus collectors with
// bounded labels, and the call-quality estimate (E-model) that records and
// the MOS histogram use.
package metrics

import (
	"math"
	"strings"
)

// This file estimates a call's MOS from what RTP/RTCP tell us (codec, loss,
// delay), with the simplified E-model of ITU-T G.107 as used for VoIP
// monitoring (Cole & Rosenbluth, "Voice over IP performance monitoring",
// ACM SIGCOMM CCR 31(2), 2001), with every G.107 default except the delay and
// equipment terms:
//
//	R = 93.2 - Id - Ie,eff                      (Ro - Is = 93.2 at G.107 defaults, A = 0)
//	Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3) (d: one-way mouth-to-ear delay, ms)
//	Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl/BurstR + Bpl)   (G.107 §7.4, Ppl in %)
//	MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R)  for 0 < R < 100 (G.107 Annex B),
//	      1 at or below 0, 4.5 at or above 100, never below 1.
//
// It is the narrowband (3.1 kHz) model: a wideband Opus leg cannot score
// above a clean G.711 call (R 93.2, MOS 4.41) here, which is what the PBX side
// of a bridged call hears anyway.

// Codec is a codec's E-model parameters.
type Codec struct {
	Name string
	Ie   float64 // equipment impairment factor with no loss
	Bpl  float64 // packet-loss robustness factor
}

// Codec parameters.
//
// G.711 values are ITU-T G.113 Appendix I (provisional planning values): Ie 0; Bpl 4.3 with no
// concealment (random loss), 25.1 with the packet loss concealment of G.711
// Appendix I. ponte conceals lost frames, so G711PLC is the default for it.
//
// Opus: G.113 lists no narrowband Ie/Bpl for Opus, so these two values are
// ASSUMPTIONS, stated here so nobody mistakes them for published figures:
//   - Ie 0: at the bitrates WhatsApp and ponte use (16-32 kb/s wideband), the
//     IETF listening tests summarised in draft-ietf-codec-results rate Opus at
//     or above G.711's quality, and the narrowband scale cannot credit more
//     than "no impairment".
//   - Bpl 25.1: Opus always conceals lost frames (RFC 6716 §4.4); we assume it
//     is at least as robust as G.711 with Appendix I PLC and take that value.
//     In-band FEC (RFC 6716 §2.1.7) would make it more robust; we do not credit it.
var (
	G711    = Codec{Name: "G.711", Ie: 0, Bpl: 4.3}
	G711PLC = Codec{Name: "G.711+PLC", Ie: 0, Bpl: 25.1}
	Opus    = Codec{Name: "opus", Ie: 0, Bpl: 25.1}
)

// CodecParams returns the parameters for an SDP codec name (PCMU, PCMA,
// opus), assuming the receiver conceals losses as ponte does. Unknown names
// get G.711 without concealment, the pessimistic choice.
func CodecParams(name string) Codec {
	switch strings.ToLower(name) {
	case "pcmu", "pcma", "g711", "g.711":
		return G711PLC
	case "opus":
		return Opus
	}
	return G711
}

// Conditions are the inputs of one estimate.
type Conditions struct {
	Codec   Codec
	DelayMs float64 // one-way mouth-to-ear delay, see OneWayDelay
	LossPct float64 // packet loss, 0..100, including packets discarded as late
	// BurstR is the burst ratio (G.107 §7.4): 1 for random loss, >1 for
	// bursty loss; 0 means 1. For a 2-state Markov loss model with p =
	// P(loss | previous received) and q = P(received | previous lost),
	// BurstR = 1/(p+q); see BurstRatio.
	BurstR float64
}

// DelayImpairment is Id for one-way delay d in ms (simplified G.107).
func DelayImpairment(d float64) float64 {
	if d <= 0 {
		return 0
	}
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}
	return id
}

// EffectiveIe is Ie,eff (G.107 eq. 7-29).
func EffectiveIe(c Codec, lossPct, burstR float64) float64 {
	ppl := math.Min(math.Max(lossPct, 0), 100)
	if burstR <= 0 {
		burstR = 1
	}
	if ppl == 0 {
		return c.Ie
	}
	return c.Ie + (95-c.Ie)*ppl/(ppl/burstR+c.Bpl)
}

// RFactor is the transmission rating R for the conditions.
func RFactor(c Conditions) float64 {
	return 93.2 - DelayImpairment(c.DelayMs) - EffectiveIe(c.Codec, c.LossPct, c.BurstR)
}

// MOSFromR maps R to the estimated conversational MOS (G.107 Annex B, B-4).
func MOSFromR(r float64) float64 {
	switch {
	case math.IsNaN(r) || r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	// The cubic dips just under 1 for R below about 6.5; a MOS is never
	// below 1, so clamp.
	return math.Max(1, 1+0.035*r+7e-6*r*(r-60)*(100-r))
}

// EstimateMOS returns R and MOS for the conditions.
func EstimateMOS(c Conditions) (r, mos float64) {
	r = RFactor(c)
	return r, MOSFromR(r)
}

// OneWayDelay estimates mouth-to-ear delay from what a gateway can see: half
// the RTCP round trip (RFC 3550 §6.4.1: the network path, assumed
// symmetric), plus the receiver's jitter buffer and the packetisation time
// (a frame is collected before it is sent). Codec lookahead and the far
// terminal's own buffers are not visible to ponte, so this is a lower bound.
func OneWayDelay(rttMs, jitterBufferMs, frameMs float64) float64 {
	return math.Max(rttMs, 0)/2 + math.Max(jitterBufferMs, 0) + math.Max(frameMs, 0)
}

// BurstRatio is G.107's BurstR for a 2-state Markov loss model: p is the
// probability of a loss after a received packet, q of a reception after a
// lost one. Random loss (q = 1 - p) gives 1.
func BurstRatio(p, q float64) float64 {
	if p+q <= 0 {
		return 1
	}
	return 1 / (p + q)
}
