package transcode

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestG711KnownCodes checks values printed in ITU-T G.711 tables 1 and 2 (decoder output
// scaled to 16 bits): the extremes and the codes for zero.
func TestG711KnownCodes(t *testing.T) {
	cases := []struct {
		name string
		alaw bool
		code byte
		want int16
	}{
		{"ulaw +0", false, 0xff, 0},
		{"ulaw -0", false, 0x7f, 0},
		{"ulaw +max", false, 0x80, 32124},
		{"ulaw -max", false, 0x00, -32124},
		{"ulaw +min step", false, 0xfe, 8},
		{"alaw +smallest", true, 0xd5, 8},
		{"alaw -smallest", true, 0x55, -8},
		{"alaw +max", true, 0xaa, 32256},
		{"alaw -max", true, 0x2a, -32256},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := make([]int16, 1)
			if c.alaw {
				ALawDecode(out, []byte{c.code})
			} else {
				ULawDecode(out, []byte{c.code})
			}
			if out[0] != c.want {
				t.Fatalf("decode(%#02x) = %d, want %d", c.code, out[0], c.want)
			}
		})
	}
}

// TestG711EncodeDecodeConsistent: every code survives decode->encode (except mu-law
// negative zero, which encodes as positive zero), and re-encoding any 16-bit sample lands
// within one quantisation step of it.
func TestG711EncodeDecodeConsistent(t *testing.T) {
	for _, law := range []struct {
		name string
		enc  func([]byte, []int16) int
		dec  func([]int16, []byte) int
	}{{"ulaw", ULawEncode, ULawDecode}, {"alaw", ALawEncode, ALawDecode}} {
		t.Run(law.name, func(t *testing.T) {
			codes := make([]byte, 256)
			for i := range codes {
				codes[i] = byte(i)
			}
			pcm := make([]int16, 256)
			law.dec(pcm, codes)
			back := make([]byte, 256)
			law.enc(back, pcm)
			for i := range 256 {
				if back[i] != codes[i] && !(law.name == "ulaw" && codes[i] == 0x7f && back[i] == 0xff) {
					t.Errorf("code %#02x -> %d -> %#02x", codes[i], pcm[i], back[i])
				}
			}
			// Segment step sizes: the error after a round trip is below the step of the
			// segment (G.711 quantiser interval), i.e. < |x|/16 + 64 covers both laws.
			x := make([]int16, 65536)
			for i := range x {
				x[i] = int16(i - 32768)
			}
			b := make([]byte, len(x))
			y := make([]int16, len(x))
			law.enc(b, x)
			law.dec(y, b)
			for i := range x {
				lim := math.Abs(float64(x[i]))/16 + 72
				if d := math.Abs(float64(x[i]) - float64(y[i])); d > lim {
					t.Fatalf("%d -> %d: error %v > %v", x[i], y[i], d, lim)
				}
			}
		})
	}
}

// TestG711DecodeMatchesSox: our decoders are bit-exact with sox for all 256 codes, and our
// encoders differ from sox (which rounds where G.191 truncates) by at most one code step.
func TestG711DecodeMatchesSox(t *testing.T) {
	sox, err := exec.LookPath("sox")
	if err != nil {
		t.Fatal("sox not found: `make test` installs it (scripts/deps.sh test): ", err)
	}
	dir := t.TempDir()
	for _, law := range []struct {
		typ string
		dec func([]int16, []byte) int
		enc func([]byte, []int16) int
	}{{"ul", ULawDecode, ULawEncode}, {"al", ALawDecode, ALawEncode}} {
		t.Run(law.typ, func(t *testing.T) {
			codes := make([]byte, 256)
			for i := range codes {
				codes[i] = byte(i)
			}
			in := filepath.Join(dir, law.typ+".raw")
			out := filepath.Join(dir, law.typ+".s16")
			if err := os.WriteFile(in, codes, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sox, "-D", "-t", law.typ, "-r", "8000", "-c", "1", in,
				"-t", "raw", "-e", "signed-integer", "-b", "16", "-L", out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sox: %v: %s", err, b)
			}
			raw, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != 512 {
				t.Fatalf("sox wrote %d bytes, want 512", len(raw))
			}
			ref := make([]int16, 256)
			if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, ref); err != nil {
				t.Fatal(err)
			}
			ours := make([]int16, 256)
			law.dec(ours, codes)
			for i := range ref {
				if ours[i] != ref[i] {
					t.Errorf("code %#02x: ours %d, sox %d", i, ours[i], ref[i])
				}
			}

			// Encoder: every 16-bit value through sox.
			pcm := make([]int16, 65536)
			for i := range pcm {
				pcm[i] = int16(i - 32768)
			}
			var buf bytes.Buffer
			_ = binary.Write(&buf, binary.LittleEndian, pcm)
			pin := filepath.Join(dir, law.typ+"-in.s16")
			pout := filepath.Join(dir, law.typ+"-out.raw")
			if err := os.WriteFile(pin, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd = exec.Command(sox, "-D", "-t", "raw", "-e", "signed-integer", "-b", "16", "-L",
				"-r", "8000", "-c", "1", pin, "-t", law.typ, pout)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sox: %v: %s", err, b)
			}
			soxEnc, err := os.ReadFile(pout)
			if err != nil {
				t.Fatal(err)
			}
			if len(soxEnc) != len(pcm) {
				t.Fatalf("sox wrote %d codes, want %d", len(soxEnc), len(pcm))
			}
			ourEnc := make([]byte, len(pcm))
			law.enc(ourEnc, pcm)
			diff := 0
			for i := range pcm {
				if soxEnc[i] == ourEnc[i] {
					continue
				}
				diff++
				// Compare as decoded levels: neighbours in the quantiser.
				a, b := ref[soxEnc[i]], ref[ourEnc[i]]
				if !adjacentLevels(ref, a, b) {
					t.Fatalf("sample %d: sox %#02x (%d), ours %#02x (%d): not adjacent", pcm[i], soxEnc[i], a, ourEnc[i], b)
				}
			}
			t.Logf("%s: encoder differs from sox on %d of 65536 inputs (rounding vs truncation), all by one step", law.typ, diff)
		})
	}
}

// adjacentLevels reports whether a and b are equal or neighbouring decoder output levels.
func adjacentLevels(levels []int16, a, b int16) bool {
	if a == b {
		return true
	}
	lo, hi := min(a, b), max(a, b)
	for _, l := range levels {
		if l > lo && l < hi {
			return false
		}
	}
	return true
}

func TestG711ToneRoundTrip(t *testing.T) {
	for _, law := range []string{"PCMU", "pcma"} {
		for _, tc := range []struct{ freq, dbfs float64 }{{440, -10}, {1004, -20}, {2600, -6}, {300, -30}} {
			enc, err := NewEncoder(law, 8000, EncoderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dec, err := NewDecoder(law, 8000)
			if err != nil {
				t.Fatal(err)
			}
			g := NewToneGen(tc.freq, 8000, AmpForDBFS(tc.dbfs))
			in := make([]int16, 160)
			pay := make([]byte, 160)
			out := make([]int16, 1600)
			pos := 0
			for range 10 {
				g.Fill(in)
				n, err := enc.Encode(in, pay)
				if err != nil || n != 160 {
					t.Fatalf("encode: %d %v", n, err)
				}
				m, err := dec.Decode(pay[:n], out[pos:])
				if err != nil || m != 160 {
					t.Fatalf("decode: %d %v", m, err)
				}
				pos += m
			}
			lvl := ToneLevelDBFS(out, 8000, tc.freq)
			if math.Abs(lvl-tc.dbfs) > 0.5 {
				t.Errorf("%s %v Hz: tone level %.2f dBFS, want %.2f ±0.5", law, tc.freq, lvl, tc.dbfs)
			}
			tot := LevelDBFS(out)
			if math.Abs(tot-tc.dbfs) > 0.5 {
				t.Errorf("%s %v Hz: total level %.2f dBFS, want %.2f ±0.5", law, tc.freq, tot, tc.dbfs)
			}
			// The tone must dominate: off-frequency components are quantisation noise only.
			if off := ToneLevelDBFS(out, 8000, tc.freq+400); off > lvl-25 {
				t.Errorf("%s %v Hz: component at +400 Hz is %.1f dBFS vs tone %.1f", law, tc.freq, off, lvl)
			}
		}
	}
}
