package webrtc

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// ErrBadOffer means the offer cannot be answered with Meta's profile; the gateway should
// reject the call rather than pre_accept it.
var ErrBadOffer = errors.New("webrtc: offer not acceptable")

// maxSDPSize bounds the SDP we parse; Meta's offers are about 1.5 KB.
const maxSDPSize = 64 << 10

// ValidateOffer checks that offer is an SDP offer the leg can answer with Meta's profile
// (whatsapp-calling-api.md §5.1, §5.3): exactly one m-line, audio, not rejected, an
// RTP/SAVP(F) profile keyed by DTLS (fingerprint present), ICE credentials, Opus at 48 kHz,
// and a DTLS setup that lets us be the client. Errors wrap [ErrBadOffer].
func ValidateOffer(offer string) error {
	_, err := parseOffer(offer)
	return err
}

// offerInfo is what Answer needs from a validated offer.
type offerInfo struct {
	sd      *sdp.SessionDescription
	mid     string
	bundled bool
}

func badOffer(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadOffer, fmt.Sprintf(format, args...))
}

func parseOffer(offer string) (*offerInfo, error) {
	if len(offer) > maxSDPSize {
		return nil, badOffer("SDP too large (%d bytes)", len(offer))
	}
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(offer); err != nil {
		return nil, badOffer("parse: %v", err)
	}
	// Meta: "exactly one m-line and one audio track" (§5.3).
	if n := len(sd.MediaDescriptions); n != 1 {
		return nil, badOffer("want exactly one m-line, got %d", n)
	}
	md := sd.MediaDescriptions[0]
	if md.MediaName.Media != "audio" {
		return nil, badOffer("m-line is %q, want audio", md.MediaName.Media)
	}
	if md.MediaName.Port.Value == 0 {
		return nil, badOffer("audio m-line is rejected (port 0)")
	}
	proto := strings.Join(md.MediaName.Protos, "/")
	if !strings.Contains(proto, "RTP/SAVP") {
		return nil, badOffer("profile %q is not DTLS-SRTP", proto)
	}
	if !hasOpus(md) {
		return nil, badOffer("no opus/48000 in the m-line")
	}
	if attr(sd, md, "ice-ufrag") == "" || attr(sd, md, "ice-pwd") == "" {
		return nil, badOffer("missing ice-ufrag/ice-pwd")
	}
	if attr(sd, md, "fingerprint") == "" {
		return nil, badOffer("no fingerprint found in SDP")
	}
	// We answer a=setup:active ([IP]: the business is the DTLS client). An offer that wants to
	// be active itself cannot be answered that way (RFC 5763 §5).
	switch s := attr(sd, md, "setup"); s {
	case "actpass", "passive":
	default:
		return nil, badOffer("a=setup:%q, want actpass or passive", s)
	}
	info := &offerInfo{sd: sd}
	info.mid, _ = md.Attribute("mid")
	for _, a := range sd.Attributes {
		if a.Key == "group" {
			f := strings.Fields(a.Value)
			if len(f) > 1 && f[0] == "BUNDLE" {
				for _, m := range f[1:] {
					if m == info.mid {
						info.bundled = true
					}
				}
			}
		}
	}
	return info, nil
}

// attr returns a media-level attribute, falling back to the session level (RFC 8866 §5.13).
func attr(sd *sdp.SessionDescription, md *sdp.MediaDescription, key string) string {
	if v, ok := md.Attribute(key); ok {
		return strings.TrimSpace(v)
	}
	if v, ok := sd.Attribute(key); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// hasOpus reports whether the m-line lists a payload type mapped to opus/48000.
func hasOpus(md *sdp.MediaDescription) bool {
	formats := make(map[string]bool, len(md.MediaName.Formats))
	for _, f := range md.MediaName.Formats {
		formats[f] = true
	}
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, enc, ok := strings.Cut(strings.TrimSpace(a.Value), " ")
		if !ok || !formats[pt] {
			continue
		}
		parts := strings.Split(enc, "/")
		if len(parts) >= 2 && strings.EqualFold(parts[0], "opus") && parts[1] == "48000" {
			return true
		}
	}
	return false
}

// withBundle returns the offer with "a=group:BUNDLE <mid>" added when it has none. pion answers
// an un-bundled m-line with port 0 (sdp.go populateSDP); Meta always bundles, but SIP-side tools
// replaying its offers (rtpengine) may not.
func withBundle(offer string, info *offerInfo) (string, error) {
	if info.bundled || info.mid == "" {
		return offer, nil
	}
	info.sd.WithValueAttribute("group", "BUNDLE "+info.mid)
	b, err := info.sd.Marshal()
	if err != nil {
		return "", badOffer("re-marshal: %v", err)
	}
	info.bundled = true
	return string(b), nil
}

// validateAnswer checks Meta's answer to our offer: one audio m-line, not rejected, Opus,
// fingerprint and ICE credentials. Errors wrap ErrBadAnswer.
func validateAnswer(answer string) error {
	if len(answer) > maxSDPSize {
		return fmt.Errorf("%w: SDP too large", ErrBadAnswer)
	}
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(answer); err != nil {
		return fmt.Errorf("%w: parse: %v", ErrBadAnswer, err)
	}
	if len(sd.MediaDescriptions) != 1 {
		return fmt.Errorf("%w: want exactly one m-line, got %d", ErrBadAnswer, len(sd.MediaDescriptions))
	}
	md := sd.MediaDescriptions[0]
	switch {
	case md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0:
		return fmt.Errorf("%w: no active audio m-line", ErrBadAnswer)
	case !hasOpus(md):
		return fmt.Errorf("%w: no opus/48000", ErrBadAnswer)
	case attr(sd, md, "fingerprint") == "":
		return fmt.Errorf("%w: no fingerprint", ErrBadAnswer)
	case attr(sd, md, "ice-ufrag") == "" || attr(sd, md, "ice-pwd") == "":
		return fmt.Errorf("%w: missing ice-ufrag/ice-pwd", ErrBadAnswer)
	}
	return nil
}

// shapeSDP adds what pion does not emit but Meta requires: a=ptime:20 (§5.3).
func shapeSDP(local string) (string, error) {
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(local); err != nil {
		return "", fmt.Errorf("webrtc: parse own SDP: %w", err)
	}
	for _, md := range sd.MediaDescriptions {
		if _, ok := md.Attribute("ptime"); !ok {
			md.WithValueAttribute("ptime", "20")
		}
	}
	b, err := sd.Marshal()
	if err != nil {
		return "", fmt.Errorf("webrtc: marshal own SDP: %w", err)
	}
	return string(b), nil
}

// localProfile is what checkLocal found in our own SDP.
type localProfile struct {
	OpusPT, TelephoneEventPT int // -1 when absent
	SSRCs                    []uint32
	Candidates               int
}

// checkLocal verifies that our own SDP has Meta's shape (§5.3) before it leaves the leg: one
// audio m-line that is not rejected, the given a=setup (active in answers, actpass in offers),
// no a=ice-lite, a fingerprint, opus/48000, ptime 20, rtcp-mux, sendrecv and exactly one SSRC.
// A pion upgrade that changes any of these then fails loudly instead of failing the call at Meta.
func checkLocal(local, setup string) (localProfile, error) {
	p := localProfile{OpusPT: -1, TelephoneEventPT: -1}
	sd := &sdp.SessionDescription{}
	if err := sd.UnmarshalString(local); err != nil {
		return p, fmt.Errorf("parse: %w", err)
	}
	if n := len(sd.MediaDescriptions); n != 1 {
		return p, fmt.Errorf("want exactly one m-line, got %d", n)
	}
	md := sd.MediaDescriptions[0]
	if md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0 {
		return p, fmt.Errorf("m-line %q port %d is not an active audio line", md.MediaName.Media, md.MediaName.Port.Value)
	}
	if _, lite := sd.Attribute("ice-lite"); lite {
		return p, errors.New("ice-lite; Meta wants an ICE-full business side")
	}
	if s := attr(sd, md, "setup"); s != setup {
		return p, fmt.Errorf("a=setup:%s, want %s", s, setup)
	}
	if attr(sd, md, "fingerprint") == "" {
		return p, errors.New("no fingerprint found in SDP")
	}
	if v := attr(sd, md, "ptime"); v != "20" {
		return p, fmt.Errorf("a=ptime:%q, want 20", v)
	}
	if _, ok := md.Attribute("rtcp-mux"); !ok {
		return p, errors.New("no a=rtcp-mux")
	}
	if _, ok := md.Attribute("sendrecv"); !ok {
		return p, errors.New("not sendrecv")
	}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			pt, enc, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			n, err := strconv.Atoi(pt)
			if err != nil {
				return p, fmt.Errorf("bad rtpmap %q", a.Value)
			}
			switch {
			case strings.EqualFold(enc, "opus/48000/2") || strings.EqualFold(enc, "opus/48000"):
				p.OpusPT = n
			case strings.EqualFold(enc, "telephone-event/8000"):
				p.TelephoneEventPT = n
			}
		case "ssrc":
			s, _, _ := strings.Cut(a.Value, " ")
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return p, fmt.Errorf("bad a=ssrc %q", a.Value)
			}
			if !slices.Contains(p.SSRCs, uint32(v)) {
				p.SSRCs = append(p.SSRCs, uint32(v))
			}
		case "candidate":
			p.Candidates++
		}
	}
	if p.OpusPT < 0 {
		return p, errors.New("no opus/48000")
	}
	if len(p.SSRCs) != 1 {
		return p, fmt.Errorf("want one SSRC, got %d", len(p.SSRCs))
	}
	return p, nil
}
