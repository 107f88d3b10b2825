package transcode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/hraban/opus"
)

// Ogg/Opus decoding for clips: an Ogg demuxer (RFC 3533) feeding the Opus header rules of
// RFC 7845 to libopus, which decodes directly at 8 kHz (libopus band-limits internally: CELT
// codes no band above the output's Nyquist frequency and SILK resamples with its own
// filters), so Ogg/Opus clips need no resampler of ours.

// Ogg page header (RFC 3533 §6): "OggS", version 0, header type flags, granule position
// (int64), bitstream serial, page sequence number, CRC, segment count, lacing values.
const (
	oggHeaderLen   = 27
	oggFlagCont    = 0x01 // first packet on the page continues one from the previous page
	oggFlagBOS     = 0x02 // first page of a logical bitstream
	oggFlagEOS     = 0x04 // last page of a logical bitstream
	oggNoGranule   = -1   // granule of a page on which no packet completes (RFC 3533 §6)
	opusSampleRate = 48000
	opusMaxFrame8k = 960 // 120 ms, the longest Opus packet (RFC 6716 §3.2.5), at 8 kHz
)

// oggCRCTable drives the Ogg page checksum: CRC-32 with generator 0x04c11db7, initial value
// 0, no bit reflection and no final XOR, over the whole page with the CRC field zeroed
// (RFC 3533 §6, and libogg's framing.c, which is normative in practice).
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

func oggCRC(crc uint32, b []byte) uint32 {
	for _, c := range b {
		crc = crc<<8 ^ oggCRCTable[byte(crc>>24)^c]
	}
	return crc
}

// oggPage is one parsed, checksum-verified page; its slices alias the file data.
type oggPage struct {
	flags   byte
	granule int64
	serial  uint32
	seq     uint32
	lacing  []byte
	body    []byte
}

// readOggPage parses the page at the start of b and returns it and its total length.
func readOggPage(b []byte, off int) (oggPage, int, error) {
	var p oggPage
	if len(b) < oggHeaderLen {
		return p, 0, fmt.Errorf("%w: Ogg page at offset %d truncated (%d bytes left)", ErrClipCorrupt, off, len(b))
	}
	if string(b[:4]) != "OggS" {
		return p, 0, fmt.Errorf("%w: no Ogg capture pattern at offset %d", ErrClipCorrupt, off)
	}
	if b[4] != 0 {
		return p, 0, fmt.Errorf("%w: Ogg page version %d at offset %d", ErrClipUnsupported, b[4], off)
	}
	le := binary.LittleEndian
	p.flags = b[5]
	p.granule = int64(le.Uint64(b[6:14]))
	p.serial = le.Uint32(b[14:18])
	p.seq = le.Uint32(b[18:22])
	nseg := int(b[26])
	if len(b) < oggHeaderLen+nseg {
		return p, 0, fmt.Errorf("%w: Ogg page at offset %d truncated in its lacing table", ErrClipCorrupt, off)
	}
	p.lacing = b[oggHeaderLen : oggHeaderLen+nseg]
	size := 0
	for _, l := range p.lacing {
		size += int(l)
	}
	total := oggHeaderLen + nseg + size
	if len(b) < total {
		return p, 0, fmt.Errorf("%w: Ogg page at offset %d truncated: %d body bytes, %d present",
			ErrClipCorrupt, off, size, len(b)-oggHeaderLen-nseg)
	}
	p.body = b[oggHeaderLen+nseg : total]
	crc := oggCRC(0, b[:22])
	crc = oggCRC(crc, []byte{0, 0, 0, 0})
	crc = oggCRC(crc, b[26:total])
	if want := le.Uint32(b[22:26]); crc != want {
		return p, 0, fmt.Errorf("%w: Ogg page at offset %d fails its CRC (0x%08x, computed 0x%08x)", ErrClipCorrupt, off, want, crc)
	}
	return p, total, nil
}

// oggPacket is a packet of the chosen logical stream with the page it completed on.
type oggPacket struct {
	data []byte
	page int // index into oggStream.granules
}

// oggStream is the demultiplexed first Opus logical stream of a file.
type oggStream struct {
	packets  []oggPacket
	granules []int64 // granule position of each page of the stream, in order
}

// demuxOpus extracts the packets of the first logical stream whose BOS page starts with an
// OpusHead (RFC 7845 §3). Pages of other streams — multiplexed (grouped, RFC 3533 §4) or
// chained before it — are checked and skipped; the stream ends at its EOS page, so later
// chain links are ignored.
func demuxOpus(data []byte) (*oggStream, error) {
	var (
		s        oggStream
		found    bool
		serial   uint32
		lastSeq  uint32
		partial  []byte // packet continued on the next page
		inPacket bool
	)
	for pos := 0; pos < len(data); {
		p, n, err := readOggPage(data[pos:], pos)
		if err != nil {
			return nil, err
		}
		off := pos
		pos += n
		if !found {
			if p.flags&oggFlagBOS == 0 || !bytes.HasPrefix(p.body, []byte("OpusHead")) {
				continue
			}
			found, serial = true, p.serial
		} else {
			if p.serial != serial {
				continue
			}
			if p.seq != lastSeq+1 {
				return nil, fmt.Errorf("%w: Ogg page sequence jumps from %d to %d at offset %d (lost page)",
					ErrClipCorrupt, lastSeq, p.seq, off)
			}
		}
		lastSeq = p.seq
		if cont := p.flags&oggFlagCont != 0; cont != inPacket {
			return nil, fmt.Errorf("%w: Ogg page at offset %d: continuation flag %v but a packet is %s",
				ErrClipCorrupt, off, cont, map[bool]string{true: "pending", false: "not pending"}[inPacket])
		}
		pageIdx := len(s.granules)
		s.granules = append(s.granules, p.granule)
		// Lacing (RFC 3533 §5): a packet is a run of 255-byte segments closed by one shorter
		// than 255 (possibly 0); a run still open at the end of the page continues on the
		// next page of the stream.
		start, cur := 0, 0
		for _, l := range p.lacing {
			cur += int(l)
			if l == 255 {
				continue
			}
			pkt := p.body[start:cur]
			if inPacket {
				pkt = append(partial, pkt...)
				partial, inPacket = nil, false
			}
			s.packets = append(s.packets, oggPacket{data: pkt, page: pageIdx})
			start = cur
		}
		if start < cur {
			partial = append(partial, p.body[start:cur]...)
			inPacket = true
		}
		if p.flags&oggFlagEOS != 0 {
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: Ogg file without an Opus stream (no OpusHead)", ErrClipUnsupported)
	}
	return &s, nil
}

// opusHead is the identification header (RFC 7845 §5.1).
type opusHead struct {
	channels   int
	preSkip    int // samples at 48 kHz to discard from the decoder output
	inputRate  uint32
	gainQ8     int16 // output gain, dB in Q7.8
	mapFamily  byte
	versionRaw byte
}

func parseOpusHead(b []byte) (opusHead, error) {
	var h opusHead
	if len(b) < 19 || string(b[:8]) != "OpusHead" {
		return h, fmt.Errorf("%w: OpusHead is %d bytes, need at least 19", ErrClipCorrupt, len(b))
	}
	h.versionRaw = b[8]
	// §5.1 item 2: a decoder handles every version whose major (upper 4 bits) is 0.
	if h.versionRaw>>4 != 0 {
		return h, fmt.Errorf("%w: Ogg Opus version %d (only major version 0)", ErrClipUnsupported, h.versionRaw)
	}
	le := binary.LittleEndian
	h.channels = int(b[9])
	h.preSkip = int(le.Uint16(b[10:12]))
	h.inputRate = le.Uint32(b[12:16])
	h.gainQ8 = int16(le.Uint16(b[16:18]))
	h.mapFamily = b[18]
	if h.mapFamily != 0 {
		// Family 1 and 255 need libopus's multistream decoder, which the Go binding does
		// not expose; real mono/stereo files use family 0 (§5.1.1.1).
		return h, fmt.Errorf("%w: Opus channel mapping family %d (%d channels); only mono/stereo family 0",
			ErrClipUnsupported, h.mapFamily, h.channels)
	}
	if h.channels != 1 && h.channels != 2 {
		return h, fmt.Errorf("%w: OpusHead with %d channels in mapping family 0", ErrClipCorrupt, h.channels)
	}
	return h, nil
}

// parseOggOpus demuxes the first Opus stream of an Ogg file and decodes it to 8 kHz mono.
func parseOggOpus(data []byte) (*Clip, error) {
	s, err := demuxOpus(data)
	if err != nil {
		return nil, err
	}
	if len(s.packets) == 0 {
		return nil, fmt.Errorf("%w: Ogg Opus stream with no complete packet", ErrClipCorrupt)
	}
	h, err := parseOpusHead(s.packets[0].data)
	if err != nil {
		return nil, err
	}
	// §3: the second packet is the comment header. Its content (tags, maybe cover art)
	// is of no use here; only its presence is checked.
	if len(s.packets) < 2 || !bytes.HasPrefix(s.packets[1].data, []byte("OpusTags")) {
		return nil, fmt.Errorf("%w: Ogg Opus stream without an OpusTags header", ErrClipCorrupt)
	}
	audio := s.packets[2:]
	chName := map[int]string{1: "mono", 2: "stereo"}[h.channels]
	format := fmt.Sprintf("Ogg/Opus %s (input %d Hz), pre-skip %d, gain %.2f dB",
		chName, h.inputRate, h.preSkip, float64(h.gainQ8)/256)
	if len(audio) == 0 {
		return &Clip{Format: format}, nil
	}

	dec, err := opus.NewDecoder(ClipRate, h.channels)
	if err != nil {
		return nil, fmt.Errorf("%w: opus decoder: %w", ErrCodecInternal, err)
	}
	const ratio = opusSampleRate / ClipRate // granules and pre-skip count 48 kHz samples
	preSkip := (h.preSkip + ratio/2) / ratio
	// Size the output from the packets' own TOC bytes, not from header fields, so a lying
	// granule position cannot make us reserve memory, and refuse an over-long clip before
	// spending time decoding it.
	var est int64
	for _, pk := range audio {
		est += int64(opusPacketSamples8k(pk.data))
	}
	if est-int64(preSkip) > maxClipSamples {
		return nil, fmt.Errorf("%w: Ogg Opus clip is %v long, limit %v", ErrClipTooLarge,
			time.Duration(est*int64(time.Second)/ClipRate).Round(time.Second), MaxClipDuration)
	}
	out := make([]int16, 0, est)
	buf := make([]int16, opusMaxFrame8k*h.channels)
	durs := make([]int, len(audio)) // decoded samples per packet, at 8 kHz
	gain := math.Pow(10, float64(h.gainQ8)/(256*20))
	for i, pk := range audio {
		if len(pk.data) == 0 {
			continue // a zero-length packet carries no audio (and libopus would treat it as loss)
		}
		n, err := dec.Decode(pk.data, buf)
		if err != nil {
			return nil, fmt.Errorf("%w: Opus packet %d does not decode: %w", ErrClipCorrupt, i, err)
		}
		durs[i] = n
		for j := range n {
			var v float64
			if h.channels == 2 {
				v = (float64(buf[2*j]) + float64(buf[2*j+1])) / 2
			} else {
				v = float64(buf[j])
			}
			out = append(out, clampRound(v*gain))
		}
		if int64(len(out)-preSkip) > maxClipSamples {
			return nil, fmt.Errorf("%w: Ogg Opus clip longer than %v", ErrClipTooLarge, MaxClipDuration)
		}
	}
	out = out[min(preSkip, len(out)):]
	if n, ok := playableSamples(s, audio, durs, h.preSkip); ok && n < int64(len(out)) {
		out = out[:max(0, n)]
	}
	return &Clip{PCM: out, Format: format}, nil
}

// opusPacketSamples8k is the duration of an Opus packet at 8 kHz from its TOC byte (RFC 6716
// §3.1): the frame size of its configuration times its frame count; 0 if malformed.
func opusPacketSamples8k(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	cfg := int(p[0] >> 3)
	var frame int // samples at 8 kHz
	switch {
	case cfg < 12: // SILK-only: 10, 20, 40, 60 ms
		frame = [4]int{80, 160, 320, 480}[cfg%4]
	case cfg < 16: // hybrid: 10, 20 ms
		frame = [2]int{80, 160}[cfg%2]
	default: // CELT-only: 2.5, 5, 10, 20 ms
		frame = [4]int{20, 40, 80, 160}[cfg%4]
	}
	switch p[0] & 3 {
	case 0:
		return frame
	case 1, 2:
		return 2 * frame
	default:
		if len(p) < 2 {
			return 0
		}
		return min(int(p[1]&0x3f)*frame, opusMaxFrame8k) // §3.2.5: at most 120 ms
	}
}

// playableSamples is the clip length at 8 kHz that the granule positions describe (RFC 7845
// §4): the last granule minus the stream's starting granule minus the pre-skip. The
// starting granule is the first audio page's granule less the duration of the packets
// completed on it (§4.5). The last page's granule may stop short of what its packets decode
// to: that is end trimming (§4.4), cutting the padding of the final frame. ok is false when
// no granule is usable.
func playableSamples(s *oggStream, audio []oggPacket, durs []int, preSkip int) (int64, bool) {
	const ratio = opusSampleRate / ClipRate
	first := audio[0].page
	var firstDur int64
	for i, pk := range audio {
		if pk.page == first {
			firstDur += int64(durs[i]) * ratio
		}
	}
	startGP := s.granules[first] - firstDur
	if s.granules[first] == oggNoGranule || startGP < 0 {
		// Negative only when the first audio page is also the last (a very short stream
		// trimmed at its end, §4.5); the stream then starts at 0.
		startGP = 0
	}
	endGP := int64(oggNoGranule)
	for _, g := range s.granules[first:] {
		if g != oggNoGranule {
			endGP = g
		}
	}
	if endGP == oggNoGranule {
		return 0, false
	}
	return (endGP - startGP - int64(preSkip)) / ratio, true
}
