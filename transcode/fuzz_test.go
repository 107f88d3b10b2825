package transcode

import (
	"testing"
	"time"
)

// FuzzOpusDecode: payloads come from the network; libopus must reject garbage with an
// error, never crash, and never report more samples than the buffer holds.
func FuzzOpusDecode(f *testing.F) {
	enc, _ := NewEncoder("opus", 8000, EncoderOptions{FEC: true, PacketLossPerc: 10})
	pcm := benchPCM(8000)
	buf := make([]byte, 400)
	n, _ := enc.Encode(pcm, buf)
	f.Add(buf[:n])
	f.Add([]byte{0xf8, 0xff, 0xfe}) // CELT FB 20 ms, DTX-ish
	f.Add([]byte{0x03})             // code 3 with missing count byte
	f.Add([]byte{0x0b, 0x81, 0x00}) // code 3, VBR, 1 frame
	f.Fuzz(func(t *testing.T, p []byte) {
		dec, err := NewDecoder("opus", 8000)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]int16, 960) // 120 ms at 8 kHz, the largest Opus packet
		n, err := dec.Decode(p, out)
		if err == nil && (n < 0 || n > len(out)) {
			t.Fatalf("decoded %d samples into %d", n, len(out))
		}
		if _, err := dec.DecodeFEC(p, out[:160]); err != nil && len(p) > 0 {
			_ = err // invalid packets may fail; must not crash
		}
		if _, err := dec.Conceal(out[:160]); err != nil {
			t.Fatalf("PLC after fuzz packet: %v", err)
		}
	})
}

// FuzzDetector feeds arbitrary packet sequences: no panic, no digit reported twice for the
// same timestamp, every reported digit was pushed.
func FuzzDetector(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 5, 10, 0, 160, 0, 0, 0, 1, 5, 0x8a, 3, 32})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDetector(100 * time.Millisecond)
		now := time.Unix(0, 0)
		pushed := map[uint32]bool{}
		codes := map[uint8]bool{}
		var lastTS uint32
		reported := false
		report := func(dg Digit, ok bool) {
			if !ok {
				return
			}
			if !codes[dg.Code] || !pushed[dg.TS] {
				t.Fatalf("digit %+v never pushed", dg)
			}
			if reported && dg.TS == lastTS {
				t.Fatalf("event at ts %d reported twice in a row", dg.TS)
			}
			lastTS, reported = dg.TS, true
		}
		for len(data) >= 8 {
			ts := uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3])
			ev, err := ParseEvent(data[4:8])
			if err != nil {
				t.Fatal(err)
			}
			data = data[8:]
			codes[ev.Code] = true
			now = now.Add(time.Duration(ts%50) * time.Millisecond)
			pushed[ts] = true
			report(d.Push(ts, ev, now))
			report(d.Expire(now))
		}
		report(d.Expire(now.Add(time.Hour)))
		report(d.Expire(now.Add(time.Hour)))
	})
}

// FuzzJitterBuffer: arbitrary arrival orders (the sequence numbers come from the network)
// keep the invariants: no panic, Len within MaxDepth, packets released in increasing
// extended order between resyncs, and each payload matches its sequence number.
func FuzzJitterBuffer(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0, 4, 0xff, 0xff, 0, 3, 0x80, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		j := NewJitterBuffer(JitterConfig{Capacity: 16, MaxPayload: 2, TargetDepth: 2, MaxDepth: 8})
		var last uint16
		haveLast := false
		resyncs := uint64(0)
		for i := 0; i+1 < len(data); i += 2 {
			seq := uint16(data[i])<<8 | uint16(data[i+1])
			j.Push(seq, uint32(seq)*160, []byte{data[i], data[i+1]})
			if j.Len() > 8 {
				t.Fatalf("Len %d > MaxDepth", j.Len())
			}
			if st := j.Stats(); st.Resync != resyncs {
				resyncs, haveLast = st.Resync, false
			}
			if data[i]&1 == 0 { // pop on roughly half the steps
				p, ts, st := j.Pop()
				if st == PopOK {
					got := uint16(p[0])<<8 | uint16(p[1])
					if ts != uint32(got)*160 {
						t.Fatalf("payload %d with ts %d", got, ts)
					}
					if haveLast && int16(got-last) <= 0 {
						t.Fatalf("released %d after %d", got, last)
					}
					last, haveLast = got, true
				}
			}
		}
		s := j.Stats()
		if s.Pushed != uint64(len(data)/2) {
			t.Fatalf("pushed %d, want %d", s.Pushed, len(data)/2)
		}
	})
}
