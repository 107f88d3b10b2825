package webrtc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"

	"github.com/ponte-gw/ponte/webrtc"
)

// FuzzValidateOffer feeds arbitrary SDP to the offer validation that guards Answer. It must
// never panic, every rejection must wrap ErrBadOffer, and whatever it accepts must really have
// Meta's shape (one audio m-line with opus/48000, fingerprint, ICE credentials).
func FuzzValidateOffer(f *testing.F) {
	f.Add(metaOffer())
	f.Add(strings.ReplaceAll(metaOffer(), "\r\n", "\n"))
	video := "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n"
	for _, o := range badOffers(video) {
		f.Add(o.offer)
	}
	f.Fuzz(func(t *testing.T, offer string) {
		err := webrtc.ValidateOffer(offer)
		if err != nil {
			if !errors.Is(err, webrtc.ErrBadOffer) {
				t.Fatalf("error does not wrap ErrBadOffer: %v", err)
			}
			return
		}
		sd := &sdp.SessionDescription{}
		if perr := sd.UnmarshalString(offer); perr != nil {
			t.Fatalf("accepted an offer that does not parse: %v", perr)
		}
		if len(sd.MediaDescriptions) != 1 || sd.MediaDescriptions[0].MediaName.Media != "audio" {
			t.Fatalf("accepted %d m-lines", len(sd.MediaDescriptions))
		}
		md := sd.MediaDescriptions[0]
		hasOpus := false
		for _, a := range md.Attributes {
			if a.Key == "rtpmap" && strings.Contains(strings.ToLower(a.Value), "opus/48000") {
				hasOpus = true
			}
		}
		_, mfp := md.Attribute("fingerprint")
		_, sfp := sd.Attribute("fingerprint")
		if !hasOpus || !(mfp || sfp) {
			t.Fatalf("accepted an offer without opus (%v) or fingerprint", hasOpus)
		}
	})
}
