package transcode

// G.711 (ITU-T G.711, 11/1988) mu-law and A-law with our own tables.
//
// The decoders follow the reference expansion of ITU-T G.191 (g711.c) / the Sun
// reference implementation, which is also what sox uses: they are bit-exact with
// `sox -D -t ul|al ... -t s16` (checked by TestG711DecodeMatchesSox).
// The encoders truncate 16-bit input to 14 bits (mu-law) or 13 bits (A-law) before
// segment search, like G.191; sox rounds instead, so encodings may differ from sox by
// one quantisation step (never more).

var (
	ulawDec [256]int16
	alawDec [256]int16
	// Encoders are indexed by the truncated code: mu-law uses the top 14 bits of the
	// sample (uint16(x)>>2), A-law the top 13 bits (uint16(x)>>3).
	ulawEnc [1 << 14]byte
	alawEnc [1 << 13]byte
)

func init() {
	for i := range 256 {
		ulawDec[i] = ulawExpand(byte(i))
		alawDec[i] = alawExpand(byte(i))
	}
	for i := range len(ulawEnc) {
		// Sign-extend the 14-bit index back to the arithmetic shift of the sample.
		v := int(int16(uint16(i)<<2)) >> 2
		ulawEnc[i] = ulawCompress(v)
	}
	for i := range len(alawEnc) {
		v := int(int16(uint16(i)<<3)) >> 3
		alawEnc[i] = alawCompress(v)
	}
}

const (
	g711SignBit   = 0x80
	g711QuantMask = 0x0f
	g711SegShift  = 4
	g711SegMask   = 0x70
	ulawBias      = 0x84 // bias of 132 added before segment search (G.711 Table 2a)
	ulawClip      = 8159 // 14-bit magnitude clip
)

// ulawExpand is the G.711 mu-law expansion (G.191 ulaw_expand), output scaled to 16 bits.
func ulawExpand(u byte) int16 {
	u = ^u
	t := (int(u&g711QuantMask) << 3) + ulawBias
	t <<= (u & g711SegMask) >> g711SegShift
	if u&g711SignBit != 0 {
		return int16(ulawBias - t)
	}
	return int16(t - ulawBias)
}

// alawExpand is the G.711 A-law expansion (G.191 alaw_expand), output scaled to 16 bits.
func alawExpand(a byte) int16 {
	a ^= 0x55 // even-bit inversion (G.711 §2 Note)
	t := int(a&g711QuantMask) << 4
	seg := int(a&g711SegMask) >> g711SegShift
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&g711SignBit != 0 {
		return int16(t)
	}
	return int16(-t)
}

// ulawCompress encodes a 14-bit sample (already shifted right by 2).
func ulawCompress(v int) byte {
	mask := byte(0xff)
	if v < 0 {
		v = -v
		mask = 0x7f
	}
	if v > ulawClip {
		v = ulawClip
	}
	v += ulawBias >> 2
	seg := 0
	for end := 0x3f; seg < 8 && v > end; end = end<<1 | 1 {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	return byte(seg<<4|(v>>(seg+1))&0xf) ^ mask
}

// alawCompress encodes a 13-bit sample (already shifted right by 3).
func alawCompress(v int) byte {
	mask := byte(0xd5)
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	seg := 0
	for end := 0x1f; seg < 8 && v > end; end = end<<1 | 1 {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	a := seg << 4
	if seg < 2 {
		a |= (v >> 1) & 0xf
	} else {
		a |= (v >> seg) & 0xf
	}
	return byte(a) ^ mask
}

// ULawEncode encodes min(len(dst), len(src)) samples to mu-law and returns the count.
func ULawEncode(dst []byte, src []int16) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, s := range src {
		dst[i] = ulawEnc[uint16(s)>>2]
	}
	return n
}

// ULawDecode decodes min(len(dst), len(src)) mu-law bytes and returns the count.
func ULawDecode(dst []int16, src []byte) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, c := range src {
		dst[i] = ulawDec[c]
	}
	return n
}

// ALawEncode encodes min(len(dst), len(src)) samples to A-law and returns the count.
func ALawEncode(dst []byte, src []int16) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, s := range src {
		dst[i] = alawEnc[uint16(s)>>3]
	}
	return n
}

// ALawDecode decodes min(len(dst), len(src)) A-law bytes and returns the count.
func ALawDecode(dst []int16, src []byte) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, c := range src {
		dst[i] = alawDec[c]
	}
	return n
}

// ULawSilence and ALawSilence are the codes for a zero sample, for comfort/hold frames.
const (
	ULawSilence byte = 0xff
	ALawSilence byte = 0xd5
)
