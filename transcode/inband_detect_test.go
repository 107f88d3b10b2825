package transcode

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// Every key is detected once, from the generator and from an independent synthesis, in any
// framing, with its start and duration to within a block.
func TestInbandDetectEveryDigit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, k := range allKeys {
		g := NewInbandGenerator(InbandRate)
		if err := g.Play(k, 60*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		gen := make([]int16, ms(300))
		g.Mix(gen[ms(100):]) // the tone starts at 100 ms
		lo, hi := keyFreqs(t, k)
		sources := map[string][]int16{
			"generator":   gen,
			"synth equal": append(append(make([]int16, 777), dual(ms(60), lo, hi, -10, -10, rng.Float64()*6, rng.Float64()*6)...), make([]int16, 900)...),
			"synth loud":  append(append(make([]int16, 10), dual(ms(60), lo, hi, -3, -2, rng.Float64()*6, rng.Float64()*6)...), make([]int16, 900)...),
		}
		for name, pcm := range sources {
			for _, chunk := range []int{160, 80, 240, 1, 1000} {
				evs := detect(t, pcm, chunk)
				if got := digitsOf(evs); got != string(k) {
					t.Fatalf("%s %q chunk %d: detected %q (%+v)", name, k, chunk, got, evs)
				}
				start := map[string]int64{"generator": int64(ms(100)), "synth equal": 777, "synth loud": 10}[name]
				e := evs[1]
				if e.Start < start-inbandBlock || e.Start > start+inbandBlock || e.Duration < ms(60)-2*inbandBlock || e.Duration > ms(60)+inbandBlock {
					t.Errorf("%s %q: start %d duration %d, want ~%d/%d", name, k, e.Start, e.Duration, start, ms(60))
				}
			}
		}
	}
}

// keysPressed drives a generator as a WhatsApp caller's key presses would (Start at press,
// Stop at release, 20 ms frames), with tone/gap in ms.
func keysPressed(t testing.TB, keys string, toneMS, gapMS int) []int16 {
	g := NewInbandGenerator(InbandRate)
	t0 := time.Unix(0, 0)
	var pcm []int16
	frame := make([]int16, 160)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	clock := 0
	run := func(untilMS int) {
		for ; clock < untilMS; clock += 20 {
			clear(frame)
			g.Mix(frame)
			pcm = append(pcm, frame...)
		}
	}
	now := gapMS
	for _, k := range keys {
		run(now)
		if err := g.Start(k, at(now)); err != nil {
			t.Fatal(err)
		}
		now += toneMS
		run(now)
		g.Stop(at(now))
		now += gapMS
	}
	for g.Active() {
		run(clock + 20)
	}
	run(clock + 200)
	return pcm
}

func TestInbandSequence(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, keys := range []string{"123456789*0#", "ABCD", "1111", "5#5#00"} {
		sources := map[string][]int16{
			"keys 70/50":    keysPressed(t, keys, 70, 50),
			"keys 40/40":    keysPressed(t, keys, 40, 40),
			"keys 20/20":    keysPressed(t, keys, 20, 20), // the generator stretches to 40/40
			"synth 70/50":   seq(t, keys, 70, 50, -9, -7, rng),
			"synth 45/45":   seq(t, keys, 45, 45, -12, -10, rng),
			"synth 250/100": seq(t, keys, 250, 100, -6, -6, rng),
		}
		for name, pcm := range sources {
			for _, chunk := range []int{160, 240} {
				evs := detect(t, pcm, chunk)
				if got := digitsOf(evs); got != keys {
					t.Errorf("%s chunk %d: %q, want %q", name, chunk, got, keys)
				}
			}
		}
	}
	// Durations follow the key presses to within a block or two.
	evs := detect(t, keysPressed(t, "123456789*0#", 70, 50), 160)
	for _, e := range evs {
		if e.End && (e.Duration < ms(70)-2*inbandBlock || e.Duration > ms(70)+inbandBlock) {
			t.Errorf("%q lasted %d samples, pressed 560", e.Rune(), e.Duration)
		}
	}
}

// Q.24 signal duration: 40 ms operates wherever the tone falls against the block grid,
// 20 ms never does.
func TestInbandDuration(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, k := range allKeys {
		lo, hi := keyFreqs(t, k)
		for off := 0; off < inbandBlock; off += 3 {
			for _, c := range []struct {
				msec int
				want string
			}{{40, string(k)}, {20, ""}, {15, ""}} {
				pcm := make([]int16, off+ms(c.msec)+ms(100))
				copy(pcm[off:], dual(ms(c.msec), lo, hi, -8, -7, rng.Float64()*6, rng.Float64()*6))
				if got := digitsOf(detect(t, pcm, 160)); got != c.want {
					t.Errorf("%q %d ms at offset %d: %q, want %q", k, c.msec, off, got, c.want)
				}
			}
		}
	}
}

// One key press is one digit across a dropout of up to 10 ms wherever it falls; a 40 ms
// pause separates two presses of the same key.
func TestInbandDropout(t *testing.T) {
	for _, k := range "15*D" {
		lo, hi := keyFreqs(t, k)
		for off := 0; off < inbandBlock; off += 4 {
			for _, c := range []struct {
				gapMS int
				want  string
			}{{5, string(k)}, {10, string(k)}, {40, string(k) + string(k)}} {
				tone := dual(ms(300), lo, hi, -9, -7, 0, 1)
				at := ms(100) + off
				clear(tone[at : at+ms(c.gapMS)])
				pcm := append(append(make([]int16, 300), tone...), make([]int16, ms(100))...)
				if got := digitsOf(detect(t, pcm, 160)); got != c.want {
					t.Errorf("%q dropout %d ms at %d: %q, want %q", k, c.gapMS, off, got, c.want)
				}
			}
		}
	}
}

// Q.24 frequency tolerance on each of the eight tones: ±1.5 % operates, ±3.5 % does not.
func TestInbandFrequencyTolerance(t *testing.T) {
	for _, k := range allKeys {
		lo, hi := keyFreqs(t, k)
		for _, c := range []struct {
			dl, dh float64
			ok     bool
		}{
			{+0.015, 0, true}, {-0.015, 0, true}, {0, +0.015, true}, {0, -0.015, true},
			{+0.015, +0.015, true}, {-0.015, +0.015, true}, {+0.015, -0.015, true},
			{+0.035, 0, false}, {-0.035, 0, false}, {0, +0.035, false}, {0, -0.035, false},
			{+0.035, +0.035, false}, {-0.05, 0, false}, {0, +0.06, false},
		} {
			pcm := append(append(make([]int16, 50), dual(ms(100), lo*(1+c.dl), hi*(1+c.dh), -9, -7, 0.3, 2)...), make([]int16, ms(60))...)
			want := ""
			if c.ok {
				want = string(k)
			}
			if got := digitsOf(detect(t, pcm, 160)); got != want {
				t.Errorf("%q low %+.1f%% high %+.1f%%: %q, want %q", k, c.dl*100, c.dh*100, got, want)
			}
		}
	}
}

// Twist: the low group may be up to 8 dB louder (normal), the high group up to 4 dB louder
// (reverse); level: -27 dBm0 per tone operates, -33 does not.
func TestInbandTwistAndLevel(t *testing.T) {
	for _, k := range allKeys {
		lo, hi := keyFreqs(t, k)
		for _, c := range []struct {
			name     string
			low, hi  float64
			detected bool
		}{
			{"normal 7 dB", -5, -12, true}, {"normal 9 dB", -5, -14, false}, {"normal 12 dB", -3, -15, false},
			{"reverse 3 dB", -10, -7, true}, {"reverse 5 dB", -10, -5, false}, {"reverse 10 dB", -15, -5, false},
			{"level -27", -27, -27, true}, {"level -33", -33, -33, false}, {"level -40", -40, -40, false},
			{"only low", -7, -90, false}, {"only high", -90, -7, false},
		} {
			pcm := append(append(make([]int16, 99), dual(ms(120), lo, hi, c.low, c.hi, 1, 2)...), make([]int16, ms(60))...)
			want := ""
			if c.detected {
				want = string(k)
			}
			if got := digitsOf(detect(t, pcm, 160)); got != want {
				t.Errorf("%q %s: %q, want %q", k, c.name, got, want)
			}
		}
	}
}

// Every digit survives a G.711 µ-law or A-law round trip (also at -25 dBm0, where the
// quantisation noise is relatively larger) and white noise 20 dB below the tones.
func TestInbandThroughG711AndNoise(t *testing.T) {
	const keys = "123456789*0#ABCD"
	for seed := range uint64(3) {
		rng := rand.New(rand.NewPCG(seed, 9))
		clean := seq(t, keys, 60, 50, -9, -7, rng)
		quiet := seq(t, keys, 60, 50, -25, -24, rng)
		for _, c := range []struct {
			name string
			pcm  []int16
		}{
			{"µ-law", g711RoundTrip(clean, false)},
			{"A-law", g711RoundTrip(clean, true)},
			{"µ-law -25 dBm0", g711RoundTrip(quiet, false)},
			{"A-law -25 dBm0", g711RoundTrip(quiet, true)},
			{"generator µ-law", g711RoundTrip(keysPressed(t, keys, 70, 50), false)},
			{"20 dB SNR", addNoise(clean, 20, rng)},
			{"20 dB SNR quiet", addNoise(quiet, 20, rng)},
			{"20 dB SNR A-law", g711RoundTrip(addNoise(clean, 20, rng), true)},
		} {
			if got := digitsOf(detect(t, c.pcm, 160)); got != keys {
				t.Errorf("seed %d %s: %q, want %q", seed, c.name, got, keys)
			}
		}
	}
}

// Talk-off: speech-like, noise, music-like and non-DTMF tone signals never produce a digit,
// as heard by the PBX side after G.711.
func TestInbandTalkOff(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	sec := InbandRate
	vib := func(base, depth, rate float64) func(float64) float64 {
		return func(t float64) float64 { return base + depth*math.Sin(2*math.Pi*rate*t) }
	}
	glide := func(from, to, dur float64) func(float64) float64 {
		return func(t float64) float64 { return from + (to-from)*math.Mod(t, dur)/dur }
	}
	vowelA := []formant{{730, 90}, {1090, 110}, {2440, 170}}
	vowelI := []formant{{270, 60}, {2290, 100}, {3010, 150}}
	vowelU := []formant{{300, 60}, {870, 90}, {2240, 150}}
	vowelO := []formant{{770, 90}, {1209, 110}, {2500, 170}} // F1/F2 on '4'
	cases := []struct {
		name string
		pcm  []int16
	}{
		{"male /a/ vibrato", voiced(3*sec, vib(110, 15, 5), vowelA, 4, -15, rng)},
		{"female /i/ glide", voiced(3*sec, glide(180, 280, 0.7), vowelI, 3, -15, rng)},
		{"/u/ loud", voiced(3*sec, vib(130, 8, 4), vowelU, 0, -5, rng)},
		// Pitch 110 Hz puts harmonics 7 and 11 on 770 and 1210 Hz, and the formants sit on
		// them: the classic talk-off case. Neighbouring harmonics keep the energy share low.
		{"steady 110 Hz /o/ on row 770 col 1209", voiced(2*sec, vib(110, 0, 0), vowelO, 0, -10, rng)},
		{"steady 110 Hz /o/ syllables", voiced(2*sec, vib(110, 0.5, 3), vowelO, 4, -10, rng)},
		{"harmonic sweep", voiced(4*sec, glide(80, 400, 4), nil, 0, -12, rng)},
		{"white noise -10", noise(2*sec, -10, rng)},
		{"white noise -30", noise(2*sec, -30, rng)},
		{"C major chord", notes(sec, []float64{261.6, 329.6, 392}, -10)},
		{"A major chord", notes(sec, []float64{220, 277.2, 329.6, 440}, -10)},
		{"high chord", notes(sec, []float64{698.5, 880, 1046.5, 1318.5}, -10)},
		{"row+col+third tone", tones(sec, -8, 770, 1336, 1100)},
		{"row+col+their harmonics", tones(sec, -8, 852, 1477, 1704, 2954)},
		{"two rows and a column", tones(sec, -8, 697, 852, 1209)},
		{"row+col with a weaker second row", mixdown(tones(sec, -8, 770, 1336), tones(sec, -14, 852))},
		{"row+col with a weaker second column", mixdown(tones(sec, -8, 941, 1209), tones(sec, -14, 1336))},
		{"row+col with 2nd harmonics at -10 dB", mixdown(tones(sec, -8, 770, 1336), tones(sec, -18, 1540, 2672))},
		{"row+col with a column 2nd harmonic at -12 dB", mixdown(tones(sec, -8, 697, 1209), tones(sec, -20, 2418))},
		// Harmonics 4 and 5 of a 237 Hz voice land on '*' (948/1185 Hz, within tolerance)
		// and carry > 90 % of the power; the weaker comb lines around them give it away.
		{"harmonics 3-6 of 237 Hz", mixdown(tones(sec, -8, 948, 1185), tones(sec, -22, 237, 711, 1422))},
		{"harmonics 5-8 of 170 Hz", mixdown(tones(sec, -8, 850, 1190), tones(sec, -22, 680, 1020, 1360))},
		{"not a DTMF pair", tones(sec, -8, 1000, 1500)},
		{"two columns", tones(sec, -8, 1209, 1477)},
		{"two rows", tones(sec, -8, 697, 941)},
	}
	for _, f := range []float64{697, 770, 852, 941, 1209, 1336, 1477, 1633} {
		cases = append(cases, struct {
			name string
			pcm  []int16
		}{fmt.Sprintf("single %v Hz", f), tones(sec/2, -5, f)})
	}
	for _, c := range cases {
		for _, alaw := range []bool{false, true} {
			if evs := detect(t, g711RoundTrip(c.pcm, alaw), 160); len(evs) != 0 {
				t.Errorf("%s (A-law %v): digits %q", c.name, alaw, digitsOf(evs))
			}
		}
	}
	// The same detector still works after all that (no stuck state): speech, then a digit.
	mix := append(voiced(sec, vib(120, 10, 5), vowelA, 4, -15, rng), seq(t, "7", 60, 60, -9, -7, rng)...)
	if got := digitsOf(detect(t, mix, 160)); got != "7" {
		t.Fatalf("digit after speech: %q", got)
	}
}

// Silence and low-level noise never produce digits.
func TestInbandSilence(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, pcm := range [][]int16{make([]int16, 10*InbandRate), noise(5*InbandRate, -50, rng)} {
		if evs := detect(t, pcm, 160); len(evs) != 0 {
			t.Fatalf("digits from silence: %+v", evs)
		}
	}
}

// Imperfections a real generator or path adds must not stop detection.
func TestInbandImperfectTones(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	lead := make([]int16, 37)
	for _, c := range []struct {
		name string
		key  rune
		pcm  []int16
	}{
		{"2nd harmonics at -25 dB", '5', mixdown(tones(ms(80), -8, 770, 1336), tones(ms(80), -33, 1540, 2672))},
		{"3rd harmonic at -17 dB (clipping)", '9', mixdown(tones(ms(80), -8, 852, 1477), tones(ms(80), -28, 2556))},
		// Levels below are relative to each tone of the pair (tones() sets the sum's level).
		// A third tone within 20 dB may sit on a speech comb line and be refused (combFree).
		{"another row at -22 dB", '1', mixdown(tones(ms(80), -8, 697, 1209), tones(ms(80), -33, 852))},
		{"a tone between the groups at -22 dB", '1', mixdown(tones(ms(80), -8, 697, 1209), tones(ms(80), -33, 1050))},
		{"speech 16 dB below each tone", '0', mixdown(tones(ms(80), -6, 941, 1336), voiced(ms(80), func(float64) float64 { return 130 }, []formant{{500, 80}, {1500, 100}}, 0, -25, rng))},
		{"DC offset 2000", '#', mixdown(tones(ms(80), -8, 941, 1477), dc(ms(80), 2000))},
		{"50 Hz hum at -17 dB", 'D', mixdown(tones(ms(80), -8, 941, 1633), tones(ms(80), -28, 50))},
	} {
		pcm := append(append(lead, c.pcm...), make([]int16, ms(60))...)
		if got := digitsOf(detect(t, pcm, 160)); got != string(c.key) {
			t.Errorf("%s: %q, want %q", c.name, got, string(c.key))
		}
	}
}

// FuzzInbandDetector: PBX audio is outside input. Any PCM in any chunking: no panic, events
// pair up with sane positions, and silence afterwards ends any digit and starts none.
func FuzzInbandDetector(f *testing.F) {
	le := func(pcm []int16) []byte {
		b := make([]byte, 2*len(pcm))
		for i, x := range pcm {
			b[2*i], b[2*i+1] = byte(x), byte(x>>8)
		}
		return b
	}
	rng := rand.New(rand.NewPCG(17, 18))
	f.Add(uint8(160), le(seq(f, "1#", 60, 40, -9, -7, rng)))
	f.Add(uint8(1), le(tones(300, -3, 697, 1209)))
	f.Add(uint8(0), []byte{0xff, 0x7f, 0x00, 0x80})
	f.Add(uint8(77), le(noise(2000, 0, rng)))
	f.Fuzz(func(t *testing.T, chunk uint8, raw []byte) {
		pcm := make([]int16, len(raw)/2)
		for i := range pcm {
			pcm[i] = int16(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
		}
		step := max(1, int(chunk))
		d := NewInbandDetector()
		var evs []InbandDigit
		for i := 0; i < len(pcm); i += step {
			evs = append(evs, d.Push(pcm[i:min(len(pcm), i+step)])...)
		}
		n := len(evs)
		silence := make([]int16, 160)
		for range 50 { // 1 s
			for _, e := range d.Push(silence) {
				// A tone at the very end of the input may complete its second block with
				// the silence; no digit may start inside the silence itself.
				if !e.End && e.Start+inbandBlock > int64(len(pcm)) {
					t.Fatalf("digit %+v started in silence (input %d samples)", e, len(pcm))
				}
				evs = append(evs, e)
			}
		}
		if len(evs)-n > 2 {
			t.Fatalf("%d events during silence", len(evs)-n)
		}
		if _, ok := d.Active(); ok {
			t.Fatal("digit still active after 1 s of silence")
		}
		if err := checkPairs(evs, int64(len(pcm)+50*160)); err != nil {
			t.Fatal(err)
		}
	})
}

// The common case: PBX audio without digits (speech-like).
func BenchmarkInbandDetectorPush160Speech(b *testing.B) {
	pcm := voiced(4*InbandRate, func(t float64) float64 { return 120 + 20*math.Sin(2*math.Pi*3*t) },
		[]formant{{730, 90}, {1090, 110}, {2440, 170}}, 4, -15, rand.New(rand.NewPCG(1, 2)))
	benchPush(b, pcm)
}

// Back-to-back digits: every block is a candidate and validated pairs run often.
func BenchmarkInbandDetectorPush160Digits(b *testing.B) {
	benchPush(b, seq(b, "123456789*0#ABCD", 70, 50, -9, -7, rand.New(rand.NewPCG(1, 2))))
}

func benchPush(b *testing.B, pcm []int16) {
	d := NewInbandDetector()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		off := (i * 160) % (len(pcm) - 160)
		d.Push(pcm[off : off+160])
		i++
	}
}

// The worst case: a signal that passes every check but the last (a speech-like comb on
// '*'), so every block runs the full two-block validation.
func BenchmarkInbandDetectorPush160Worst(b *testing.B) {
	benchPush(b, mixdown(tones(InbandRate, -8, 948, 1185), tones(InbandRate, -22, 237, 711, 1422)))
}
