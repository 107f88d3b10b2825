package pbx

// Digest credentials for the calls the simulator places (dial.go): the
// answer to a 401/407 (RFC 3261 §22.2, RFC 7616, RFC 8760).

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// ErrNoChallenge reports a 401/407 without a digest challenge the
// simulator can answer.
var ErrNoChallenge = errors.New("pbx: no usable digest challenge")

// supportedAlgorithms are the digest algorithms the simulator answers.
var supportedAlgorithms = map[string]bool{"": true, "MD5": true, "SHA-256": true}

// credentials answers a 401/407 (RFC 3261 §22.2) with the topmost
// challenge it supports (RFC 8760 §2.4: the UAS lists them by preference):
// MD5 or SHA-256, qop=auth or none (RFC 7616 §3.4).
func credentials(req *sip.Request, res *sip.Response, a *Auth) (sip.Header, error) {
	chName, crName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, crName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	chal, ok := pickChallenge(res.GetHeaders(chName))
	if !ok {
		return nil, fmt.Errorf("%w in %d", ErrNoChallenge, res.StatusCode)
	}
	cred, err := digest.Digest(chal, digest.Options{
		Method: string(req.Method), URI: req.Recipient.String(),
		Username: a.Username, Password: a.Password, Count: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoChallenge, err)
	}
	return sip.NewHeader(crName, cred.String()), nil
}

// pickChallenge returns the first digest challenge with a supported
// algorithm and qop (auth, or none for RFC 2069 servers).
func pickChallenge(hs []sip.Header) (*digest.Challenge, bool) {
	for _, h := range hs {
		chal, err := digest.ParseChallenge(h.Value())
		if err != nil || chal.Nonce == "" {
			continue
		}
		chal.Algorithm = strings.ToUpper(strings.TrimSpace(chal.Algorithm))
		if !supportedAlgorithms[chal.Algorithm] {
			continue
		}
		var qops []string
		for _, q := range chal.QOP {
			if q = strings.TrimSpace(q); q != "" {
				qops = append(qops, q)
			}
		}
		chal.QOP = qops
		if len(qops) > 0 && !chal.SupportsQOP("auth") {
			continue // auth-int only: the simulator does not hash bodies
		}
		if len(qops) > 0 {
			chal.QOP = []string{"auth"}
		}
		return chal, true
	}
	return nil, false
}
