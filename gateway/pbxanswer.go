package gateway

import (
	"strings"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sip"
)

// pbxMediaFromAnswer is chooseCodec for a PBX answer that lists several
// codecs and a ptime: ponte sends the first codec of the answer that the
// trunk allows (RFC 3264 §6.1: the answerer's order is its preference), and
// decodes every allowed codec of the answer, because the answerer may send
// any of them and switch between them at any packet (RFC 3264 §5.1). The
// answer's a=ptime (RFC 4566 §6) sets the packet size toward the PBX.
func pbxMediaFromAnswer(md *sip.MediaDesc, allowed []string) (pbxMedia, bool) {
	pm, ok := chooseCodec(md, allowed)
	if !ok {
		return pm, false
	}
	pm.Ptime = md.Ptime
	for _, cd := range md.Codecs {
		if cd.PT == pm.PT || cd.PT == cnPT {
			continue
		}
		for _, a := range allowed {
			if strings.EqualFold(cd.Name, a) {
				pm.Alt = append(pm.Alt, pbxCodec{Codec: a, PT: cd.PT})
				break
			}
		}
	}
	return pm, true
}

// pbxMediaFor is what the bridge needs from a PBX answer on trunk t: the
// codecs the trunk allows, and how DTMF travels on that leg.
func pbxMediaFor(md *sip.MediaDesc, t *config.Trunk) (pbxMedia, bool) {
	pm, ok := pbxMediaFromAnswer(md, t.Codecs)
	pm.DTMFMode = dtmfMode(t.DTMF, pm.DTMFPT)
	return pm, ok
}
