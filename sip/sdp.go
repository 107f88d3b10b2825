package sip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// SDP errors.
var (
	ErrSDPNoAudio = errors.New("sip: sdp has no audio m-line")
	ErrSDPInvalid = errors.New("sip: invalid sdp")
)

// CodecDesc is one payload format of an audio m-line (RFC 4566 §6 rtpmap/fmtp).
type CodecDesc struct {
	PT       uint8
	Name     string // as in rtpmap, e.g. "PCMU", "opus"
	Rate     int    // RTP clock rate
	Channels int    // 1 unless rtpmap says otherwise
	Fmtp     string
}

// MediaDesc is what we need from the first audio m-line of an SDP.
type MediaDesc struct {
	Addr      netip.AddrPort // c= address (media level wins) and m= port; port 0 = stream rejected
	Codecs    []CodecDesc    // audio codecs in m-line preference order (no telephone-event, no CN)
	DTMFPT    int            // telephone-event PT, -1 if none (8 kHz preferred when several)
	DTMFRate  int
	Ptime     int    // a=ptime in ms, 0 if absent
	Direction string // sendrecv (default), sendonly, recvonly, inactive
	RTCPMux   bool
	// H-TLS: SDES-SRTP (RFC 4568). Proto is the m= line's transport
	// ("RTP/AVP", "RTP/SAVP"); Crypto the valid a=crypto lines in order
	// (malformed ones are skipped).
	Proto  string
	Crypto []Crypto
}

// Codec returns the first codec with the given name (case-insensitive).
func (m *MediaDesc) Codec(name string) (CodecDesc, bool) {
	for _, c := range m.Codecs {
		if strings.EqualFold(c.Name, name) {
			return c, true
		}
	}
	return CodecDesc{}, false
}

// Negotiate picks the first codec of prefs that the remote also offers
// (our preference order; RFC 3264 §6.1 lets the answerer choose).
func (m *MediaDesc) Negotiate(prefs []string) (CodecDesc, bool) {
	for _, p := range prefs {
		if c, ok := m.Codec(p); ok {
			return c, true
		}
	}
	return CodecDesc{}, false
}

// maxSDPCodecs bounds the work done on hostile SDP.
const maxSDPCodecs = 64

// staticPT are the RFC 3551 §6 static audio payload types, used when an
// m-line lists a static PT without an rtpmap.
var staticPT = map[uint8]CodecDesc{
	0:  {PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
	3:  {PT: 3, Name: "GSM", Rate: 8000, Channels: 1},
	4:  {PT: 4, Name: "G723", Rate: 8000, Channels: 1},
	8:  {PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
	9:  {PT: 9, Name: "G722", Rate: 8000, Channels: 1},
	13: {PT: 13, Name: "CN", Rate: 8000, Channels: 1},
	18: {PT: 18, Name: "G729", Rate: 8000, Channels: 1},
}

// KnownCodec returns our payload description for a codec name:
// PCMU 0, PCMA 8 (static), opus 111 opus/48000/2 with minptime=10;useinbandfec=1
// (RFC 7587 §7: always 48000/2 in SDP).
func KnownCodec(name string) (CodecDesc, bool) {
	switch strings.ToUpper(name) {
	case "PCMU":
		return staticPT[0], true
	case "PCMA":
		return staticPT[8], true
	case "OPUS":
		return CodecDesc{PT: 111, Name: "opus", Rate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"}, true
	}
	return CodecDesc{}, false
}

// ParseSDP extracts the first audio m-line of an SDP body. It is tolerant
// (any line order, LF or CRLF, unknown lines ignored, bad attributes skipped)
// and never panics on hostile input.
func ParseSDP(b []byte) (*MediaDesc, error) {
	var (
		sessAddr, mediaAddr netip.Addr
		sessDir, mediaDir   string
		inAudio, seenAudio  bool
		inMedia             bool // inside any m= section
		port                int
		fmts                []uint8
		rtpmap              = map[uint8]CodecDesc{}
		fmtp                = map[uint8]string{}
		md                  = &MediaDesc{DTMFPT: -1}
	)
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrSDPInvalid)
	}
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimRight(line, "\r \t")
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		typ, val := line[0], string(line[2:])
		if typ == 'm' {
			if seenAudio {
				break // only the first audio m-line matters
			}
			inAudio, inMedia = false, true
			f := strings.Fields(val)
			if len(f) >= 3 && strings.EqualFold(f[0], "audio") {
				p, err := strconv.Atoi(strings.SplitN(f[1], "/", 2)[0])
				if err != nil || p < 0 || p > 65535 {
					return nil, fmt.Errorf("%w: bad m= port %q", ErrSDPInvalid, f[1])
				}
				inAudio, seenAudio, port = true, true, p
				md.Proto = strings.ToUpper(f[2])
				for _, s := range f[3:] {
					pt, err := strconv.Atoi(s)
					if err != nil || pt < 0 || pt > 127 {
						continue
					}
					if len(fmts) < maxSDPCodecs {
						fmts = append(fmts, uint8(pt))
					}
				}
			}
			continue
		}
		if inMedia && !inAudio {
			continue // attributes of a non-audio m-line
		}
		switch typ {
		case 'c':
			if a, ok := parseConnection(val); ok {
				if inAudio {
					mediaAddr = a
				} else {
					sessAddr = a
				}
			}
		case 'a':
			name, rest, _ := strings.Cut(val, ":")
			switch strings.ToLower(name) {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				if inAudio {
					mediaDir = strings.ToLower(name)
				} else {
					sessDir = strings.ToLower(name)
				}
			case "crypto": // H-TLS: RFC 4568 §9.1
				if c, err := ParseCrypto(rest); err == nil && inAudio && len(md.Crypto) < maxCryptoAttrs {
					md.Crypto = append(md.Crypto, c)
				}
			case "rtcp-mux":
				if inAudio {
					md.RTCPMux = true
				}
			case "ptime":
				if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil && n > 0 && n <= 1000 && inAudio {
					md.Ptime = n
				}
			case "rtpmap":
				if c, ok := parseRtpmap(rest); ok && inAudio {
					rtpmap[c.PT] = c
				}
			case "fmtp":
				ptStr, params, _ := strings.Cut(rest, " ")
				if pt, err := strconv.Atoi(ptStr); err == nil && pt >= 0 && pt <= 127 && inAudio {
					fmtp[uint8(pt)] = strings.TrimSpace(params)
				}
			}
		}
	}
	if !seenAudio {
		return nil, ErrSDPNoAudio
	}
	addr := mediaAddr
	if !addr.IsValid() {
		addr = sessAddr
	}
	if addr.IsValid() {
		md.Addr = netip.AddrPortFrom(addr, uint16(port))
	}
	md.Direction = "sendrecv"
	if sessDir != "" {
		md.Direction = sessDir
	}
	if mediaDir != "" {
		md.Direction = mediaDir
	}
	seen := map[uint8]bool{}
	for _, pt := range fmts {
		if seen[pt] {
			continue
		}
		seen[pt] = true
		c, ok := rtpmap[pt]
		if !ok {
			if c, ok = staticPT[pt]; !ok {
				continue // dynamic PT without rtpmap: unusable
			}
		}
		c.Fmtp = fmtp[pt]
		switch {
		case strings.EqualFold(c.Name, "telephone-event"):
			// Prefer the 8 kHz event clock (Meta and most PBXs use it).
			if md.DTMFPT < 0 || (md.DTMFRate != 8000 && c.Rate == 8000) {
				md.DTMFPT, md.DTMFRate = int(pt), c.Rate
			}
		case strings.EqualFold(c.Name, "CN"):
		default:
			md.Codecs = append(md.Codecs, c)
		}
	}
	return md, nil
}

// parseConnection parses "IN IP4 1.2.3.4" (RFC 4566 §5.7); a multicast
// "/ttl" suffix is ignored.
func parseConnection(v string) (netip.Addr, bool) {
	f := strings.Fields(v)
	if len(f) < 3 || !strings.EqualFold(f[0], "IN") {
		return netip.Addr{}, false
	}
	host, _, _ := strings.Cut(f[2], "/")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// parseRtpmap parses "<pt> <name>/<rate>[/<channels>]".
func parseRtpmap(v string) (CodecDesc, bool) {
	ptStr, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return CodecDesc{}, false
	}
	pt, err := strconv.Atoi(ptStr)
	if err != nil || pt < 0 || pt > 127 {
		return CodecDesc{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 || parts[0] == "" {
		return CodecDesc{}, false
	}
	rate, err := strconv.Atoi(parts[1])
	if err != nil || rate <= 0 {
		return CodecDesc{}, false
	}
	ch := 1
	if len(parts) >= 3 {
		if n, err := strconv.Atoi(parts[2]); err == nil && n > 0 && n < 256 {
			ch = n
		}
	}
	return CodecDesc{PT: uint8(pt), Name: parts[0], Rate: rate, Channels: ch}, true
}

// SDPSpec describes an SDP body we generate (offer or answer).
type SDPSpec struct {
	Addr      netip.AddrPort
	Codecs    []CodecDesc
	DTMFPT    int // -1: no telephone-event
	DTMFRate  int // default 8000
	Ptime     int // default 20
	Direction string
	SessID    uint64
	Version   uint64
	// H-TLS: Proto is the m= transport (default RTP/AVP; RTP/SAVP for
	// required SRTP) and Crypto the a=crypto lines (RFC 4568).
	Proto  string
	Crypto []Crypto
}

// BuildSDP renders an RFC 4566 body with one audio m-line.
func BuildSDP(s SDPSpec) []byte {
	ip := s.Addr.Addr().Unmap()
	fam := "IP4"
	if ip.Is6() {
		fam = "IP6"
	}
	if s.Ptime <= 0 {
		s.Ptime = 20
	}
	if s.DTMFRate <= 0 {
		s.DTMFRate = 8000
	}
	if s.Direction == "" {
		s.Direction = "sendrecv"
	}
	var b strings.Builder
	b.WriteString("v=0\r\n")
	fmt.Fprintf(&b, "o=ponte %d %d IN %s %s\r\n", s.SessID, s.Version, fam, ip)
	b.WriteString("s=ponte\r\n")
	fmt.Fprintf(&b, "c=IN %s %s\r\n", fam, ip)
	b.WriteString("t=0 0\r\n")
	if s.Proto == "" {
		s.Proto = "RTP/AVP"
	}
	fmt.Fprintf(&b, "m=audio %d %s", s.Addr.Port(), s.Proto)
	for _, c := range s.Codecs {
		fmt.Fprintf(&b, " %d", c.PT)
	}
	if s.DTMFPT >= 0 {
		fmt.Fprintf(&b, " %d", s.DTMFPT)
	}
	b.WriteString("\r\n")
	for _, c := range s.Codecs {
		if c.Channels > 1 {
			fmt.Fprintf(&b, "a=rtpmap:%d %s/%d/%d\r\n", c.PT, c.Name, c.Rate, c.Channels)
		} else {
			fmt.Fprintf(&b, "a=rtpmap:%d %s/%d\r\n", c.PT, c.Name, c.Rate)
		}
		if c.Fmtp != "" {
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", c.PT, c.Fmtp)
		}
	}
	if s.DTMFPT >= 0 {
		fmt.Fprintf(&b, "a=rtpmap:%d telephone-event/%d\r\n", s.DTMFPT, s.DTMFRate)
		fmt.Fprintf(&b, "a=fmtp:%d 0-16\r\n", s.DTMFPT)
	}
	fmt.Fprintf(&b, "a=ptime:%d\r\n", s.Ptime)
	fmt.Fprintf(&b, "a=%s\r\n", s.Direction)
	for _, c := range s.Crypto {
		b.WriteString("a=crypto:" + c.SDPValue() + "\r\n")
	}
	return []byte(b.String())
}

// BuildOfferSDP builds our offer: the codecs we know from codecs (in order;
// unknown names are skipped), telephone-event/8000 at dtmfPT, a=ptime:20,
// a=sendrecv.
func BuildOfferSDP(addr netip.AddrPort, codecs []string, dtmfPT uint8, sessID uint64) []byte {
	return BuildSDP(OfferSpec(addr, codecs, dtmfPT, sessID))
}

// OfferSpec is BuildOfferSDP's spec, for callers that add to it (SRTP).
func OfferSpec(addr netip.AddrPort, codecs []string, dtmfPT uint8, sessID uint64) SDPSpec {
	spec := SDPSpec{Addr: addr, DTMFPT: int(dtmfPT), SessID: sessID, Version: sessID}
	seen := map[uint8]bool{}
	for _, name := range codecs {
		if c, ok := KnownCodec(name); ok && !seen[c.PT] && c.PT != dtmfPT {
			seen[c.PT] = true
			spec.Codecs = append(spec.Codecs, c)
		}
	}
	return spec
}

// AnswerDirection is the direction an answerer uses for an offered one
// (RFC 3264 §6.1).
func AnswerDirection(offered string) string {
	switch offered {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}
