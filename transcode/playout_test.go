package transcode

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

type rtpPacket struct {
	seq     uint16
	ts      uint32
	payload []byte
}

// encodeStream encodes frames into RTP packets starting near the sequence wrap.
func encodeStream(t *testing.T, codec string, o EncoderOptions, frames [][]int16) []rtpPacket {
	t.Helper()
	enc, err := NewEncoder(codec, 8000, o)
	if err != nil {
		t.Fatal(err)
	}
	step := TimestampStep(codec, 20*time.Millisecond)
	out := make([]rtpPacket, len(frames))
	for i, f := range frames {
		buf := make([]byte, 400)
		n, err := enc.Encode(f, buf)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = rtpPacket{uint16(65500 + i), 1000 + uint32(i)*step, buf[:n]}
	}
	return out
}

// referenceDecode decodes every packet in order: what a lossless, in-order path plays.
func referenceDecode(t *testing.T, codec string, pkts []rtpPacket) [][]int16 {
	t.Helper()
	dec, err := NewDecoder(codec, 8000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]int16, len(pkts))
	for i, p := range pkts {
		out[i] = make([]int16, 160)
		if _, err := dec.Decode(p.payload, out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// playout simulates the transcoding receive path: packets (some dropped, some swapped
// with a neighbour) arrive one per 20 ms tick into a JitterBuffer; the same tick pops and
// decodes, concealing a PopLost with FEC from PeekNext (useFEC) or with PLC. It returns the
// played frames and which of them were concealed.
func playout(t *testing.T, codec string, pkts []rtpPacket, drop func(i int) bool, reorder, useFEC bool) ([][]int16, []bool, JitterStats) {
	t.Helper()
	var net []rtpPacket
	for i, p := range pkts {
		if !drop(i) {
			net = append(net, p)
		}
	}
	if reorder {
		rng := rand.New(rand.NewPCG(7, 8))
		for i := 1; i < len(net); i++ {
			if rng.IntN(6) == 0 {
				net[i-1], net[i] = net[i], net[i-1]
			}
		}
	}
	dec, err := NewDecoder(codec, 8000)
	if err != nil {
		t.Fatal(err)
	}
	jb := NewJitterBuffer(JitterConfig{TargetDepth: 3})
	var played [][]int16
	var concealed []bool
	for tick := 0; len(played) < len(pkts) && tick < 2*len(pkts); tick++ {
		if tick < len(net) {
			jb.Push(net[tick].seq, net[tick].ts, net[tick].payload)
		}
		pcm := make([]int16, 160)
		payload, _, st := jb.Pop()
		switch st {
		case PopEmpty:
			continue
		case PopOK:
			_, err = dec.Decode(payload, pcm)
		case PopLost:
			if nx, ok := jb.PeekNext(); useFEC && ok {
				_, err = dec.DecodeFEC(nx, pcm)
			} else {
				_, err = dec.Conceal(pcm)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		played = append(played, pcm)
		concealed = append(concealed, st == PopLost)
	}
	return played, concealed, jb.Stats()
}

func snrDB(ref, got []int16) float64 {
	var s, e float64
	for i := range ref {
		d := float64(got[i]) - float64(ref[i])
		s += float64(ref[i]) * float64(ref[i])
		e += d * d
	}
	if e == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(s/e)
}

// Reordering inside the target depth is fully undone: the played audio is bit-identical
// to an in-order decode, across the sequence-number wrap.
func TestPlayoutReorderBitExact(t *testing.T) {
	for _, codec := range []string{"PCMU", "opus"} {
		frames := speechLike(8000, 150)
		pkts := encodeStream(t, codec, EncoderOptions{}, frames)
		ref := referenceDecode(t, codec, pkts)
		played, _, st := playout(t, codec, pkts, func(int) bool { return false }, true, false)
		if st.Lost != 0 || st.Late != 0 || len(played) != len(ref) {
			t.Fatalf("%s: stats %+v, %d frames", codec, st, len(played))
		}
		for i := range ref {
			if !slices.Equal(played[i], ref[i]) {
				t.Fatalf("%s: frame %d differs from in-order decode", codec, i)
			}
		}
	}
}

// Every 10th packet lost: the jitter buffer reports each as PopLost with the next packet
// available, and Opus FEC from that packet reconstructs the lost frame far better than PLC.
func TestPlayoutOpusFECBeatsPLC(t *testing.T) {
	frames := speechLike(8000, 200)
	pkts := encodeStream(t, "opus", EncoderOptions{FEC: true, PacketLossPerc: 20}, frames)
	ref := referenceDecode(t, "opus", pkts)
	drop := func(i int) bool { return i%10 == 5 }
	mean := map[bool]float64{}
	for _, fec := range []bool{true, false} {
		played, concealed, st := playout(t, "opus", pkts, drop, true, fec)
		if st.Lost != 20 || st.Late != 0 || len(played) != len(pkts) {
			t.Fatalf("fec=%v: stats %+v, %d frames", fec, st, len(played))
		}
		var sum float64
		n := 0
		for i := range played {
			if concealed[i] != drop(i) {
				t.Fatalf("fec=%v: frame %d concealed=%v", fec, i, concealed[i])
			}
			if concealed[i] {
				sum += snrDB(ref[i], played[i])
				n++
			}
		}
		mean[fec] = sum / float64(n)
	}
	t.Logf("lost frames vs lossless decode: FEC %.1f dB SNR, PLC %.1f dB SNR", mean[true], mean[false])
	if mean[true] < mean[false]+3 {
		t.Fatalf("FEC (%.1f dB) not clearly better than PLC (%.1f dB)", mean[true], mean[false])
	}
}
