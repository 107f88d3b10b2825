package metrics

import (
	"math"
	"testing"
)

// Expected values are derived by hand from the formulas in emodel.go (the
// derivation is in each row's comment) and, for the R->MOS mapping, from the
// published table of ITU-T G.109 (Table 1: R 90, 80, 70, 60, 50 map to MOS
// 4.34, 4.03, 3.60, 3.10, 2.58).
func TestEModel(t *testing.T) {
	cases := []struct {
		name    string
		in      Conditions
		r, mos  float64
		comment string
	}{
		{"G.711 clean", Conditions{Codec: G711}, 93.2, 4.4093,
			"R = 93.2; MOS = 1 + 3.262 + 7e-6*93.2*33.2*6.8 = 4.4093 (G.107's default R 93.2 -> MOS 4.41)"},
		{"G.711 no PLC 1% random", Conditions{Codec: G711, LossPct: 1}, 75.2755, 3.8337,
			"Ie,eff = 95*1/(1+4.3) = 17.9245; R = 75.2755"},
		{"G.711 PLC 2% random", Conditions{Codec: G711PLC, LossPct: 2}, 86.1889, 4.2348,
			"Ie,eff = 95*2/(2+25.1) = 7.0111; R = 86.1889"},
		{"G.711 PLC 2% bursty", Conditions{Codec: G711PLC, LossPct: 2, BurstR: 2}, 85.9203, 4.2267,
			"Ie,eff = 95*2/(2/2+25.1) = 7.2797; R = 85.9203"},
		{"delay 150 ms", Conditions{Codec: G711, DelayMs: 150}, 89.6, 4.3291,
			"Id = 0.024*150 = 3.6 (below the 177.3 ms knee)"},
		{"delay 300 ms", Conditions{Codec: G711, DelayMs: 300}, 72.503, 3.7121,
			"Id = 7.2 + 0.11*(300-177.3) = 20.697"},
		{"opus 5% 200 ms", Conditions{Codec: Opus, LossPct: 5, DelayMs: 200}, 70.1223, 3.6027,
			"Id = 4.8 + 0.11*22.7 = 7.297; Ie,eff = 95*5/30.1 = 15.7807"},
		{"unusable", Conditions{Codec: G711, LossPct: 20, DelayMs: 600}, -45.8863, 1,
			"Id = 14.4 + 46.497; Ie,eff = 95*20/24.3 = 78.189; R < 0 -> MOS 1"},
	}
	for _, tc := range cases {
		r, mos := EstimateMOS(tc.in)
		if math.Abs(r-tc.r) > 5e-4 || math.Abs(mos-tc.mos) > 5e-4 {
			t.Errorf("%s: R %.4f MOS %.4f, want R %.4f MOS %.4f (%s)", tc.name, r, mos, tc.r, tc.mos, tc.comment)
		}
	}
}

func TestMOSFromRMatchesG109(t *testing.T) {
	for _, tc := range []struct{ r, mos, tol float64 }{
		{90, 4.34, 0.005}, {80, 4.03, 0.01}, {70, 3.60, 0.005}, {60, 3.10, 0.005}, {50, 2.58, 0.005},
		{0, 1, 0}, {-3, 1, 0}, {100, 4.5, 0}, {130, 4.5, 0}, {math.NaN(), 1, 0},
	} {
		if got := MOSFromR(tc.r); math.Abs(got-tc.mos) > tc.tol {
			t.Errorf("MOSFromR(%v) = %.4f, want %.2f", tc.r, got, tc.mos)
		}
	}
	// Monotonic over the model's range: more R never means a worse MOS.
	prev := MOSFromR(0)
	for r := 0.5; r <= 100; r += 0.5 {
		m := MOSFromR(r)
		if m < prev {
			t.Fatalf("MOS falls from %.4f to %.4f at R %.1f", prev, m, r)
		}
		prev = m
	}
}

func TestHelpers(t *testing.T) {
	if d := OneWayDelay(100, 40, 20); d != 110 {
		t.Errorf("OneWayDelay(100,40,20) = %v, want 50+40+20", d)
	}
	if d := OneWayDelay(-1, 0, 20); d != 20 {
		t.Errorf("negative RTT: %v", d)
	}
	for _, tc := range []struct{ p, q, want float64 }{{0.1, 0.9, 1}, {0.05, 0.45, 2}, {0, 0, 1}} {
		if got := BurstRatio(tc.p, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("BurstRatio(%v,%v) = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		want Codec
	}{{"PCMU", G711PLC}, {"pcma", G711PLC}, {"opus", Opus}, {"G729", G711}} {
		if got := CodecParams(tc.name); got != tc.want {
			t.Errorf("CodecParams(%q) = %+v", tc.name, got)
		}
	}
	// Loss is clamped to 0..100 and never improves on no loss.
	if EffectiveIe(G711, -5, 1) != 0 || EffectiveIe(G711, 150, 1) != EffectiveIe(G711, 100, 1) {
		t.Error("loss not clamped")
	}
}
