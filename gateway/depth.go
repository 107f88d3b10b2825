package gateway

import "time"

// The playout depth: how many frames of the source wait in the jitter buffer
// before they are played. Deeper absorbs more network jitter; shallower adds
// less delay. It starts at media.jitter_frames and adapts within
// [jitter_frames, maxDepthFrames].

// holdForLate reports whether to wait for the packet of this slot instead of
// concealing or skipping it: when a playing source's packet is merely late
// (two 20 ms clocks drifting in phase, a scheduling hiccup), waiting up to
// holdSlots keeps the audio whole. The slot keeps its timestamp, so the
// stream stays on wall-clock time; the packet just leaves a little later.
// Beyond holdSlots it is a real gap: conceal, then silence.
func (d *direction) holdForLate(due uint32) bool {
	// With packet sizes that differ between the sides (ptime 10/30), a slot
	// may need more than one buffered packet.
	short := d.fifoN+d.jb.Len()*max(d.lastN, 1) < d.outN
	return d.hadAudio && d.underrun == 0 && !d.cn && !d.relay.Active() && short && due-d.slots <= holdSlots
}

// adapt moves the playout depth: one frame deeper after an underrun of a
// source that was playing (packets arrive later than the clock asks for
// them), or after a packet that arrived once its slot had been played
// (jitter with reordering: a later packet was buffered, so the buffer never
// ran empty, yet this one missed its turn and was concealed); back toward the
// configured depth after a calm period. The cap keeps the one-way delay
// through ponte within its budget.
//
// An underrun deepens by itself (the buffer restarts at the new depth); a
// late packet does not, so one slot is stretched: concealed without
// consuming a packet, which leaves one more frame buffered from then on.
func (d *direction) adapt(now time.Time) {
	late := d.jb.Stats().Late
	missed := late > d.lateSeen
	d.lateSeen = late
	switch {
	case (d.underrun == 1 || missed) && d.hadAudio && d.target < maxDepthFrames:
		d.target++
		d.jb.SetTargetDepth(d.target)
		d.calmSince = now
		d.stretch = missed && d.underrun == 0 && !d.cn
	case missed:
		d.calmSince = now // at the cap: jitter goes on, stay deep
	case d.target > d.minTarget && now.Sub(d.calmSince) > depthDecay:
		d.target--
		d.jb.SetTargetDepth(d.target)
		d.calmSince = now
	}
}

// stretchPCM conceals one slot of audio from the last decoder without
// consuming a packet (see adapt). Caller holds mu.
func (d *direction) stretchPCM(need int) {
	d.stretch = false
	if d.lastDec == nil || d.fifoN >= need {
		return
	}
	dst := d.fifo[d.fifoN:need]
	if _, err := d.lastDec.Conceal(dst); err != nil {
		clear(dst)
	}
	d.fifoN = need
	d.st.Concealed++
}
