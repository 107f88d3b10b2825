package config

import (
	"fmt"
	"path"
	"strings"
)

// Transfer is a trunk's policy for blind transfers (REFER, RFC 3515) that
// its PBX or callbot asks of ponte.
type Transfer struct {
	// Allow lists the targets a transfer may go to, as shell patterns on
	// "user@host" of the Refer-To URI ("*@pbx.example.com", "2???@*").
	// Empty: any SIP target that is not a telephone number.
	Allow []string `yaml:"allow"`
	// AllowPSTN lets transfers go to telephone numbers (tel: URIs, or a
	// user part of 7+ digits). Off by default: Meta's terms forbid bridging
	// WhatsApp calls to the PSTN.
	AllowPSTN bool `yaml:"allow_pstn"`
	// OnFailure: transferor (default: the caller stays with, or returns to,
	// whoever transferred) or default_department (the route's).
	OnFailure string `yaml:"on_failure"`
	// RingTimeout for the transfer target (default 30s).
	RingTimeout Duration `yaml:"ring_timeout"`
}

// Transfer failure actions.
const (
	TransferBackToTransferor = "transferor"
	TransferToDefault        = "default_department"
)

func (t *Trunk) transferDefaults() {
	if t.Transfer.OnFailure == "" {
		t.Transfer.OnFailure = TransferBackToTransferor
	}
	if t.Transfer.RingTimeout == 0 {
		t.Transfer.RingTimeout = Duration(30e9)
	}
}

func (c *Config) validateTransfers(add func(path, format string, a ...any)) {
	for i, t := range c.SIP.Trunks {
		p := fmt.Sprintf("sip.trunks[%d].transfer", i)
		switch t.Transfer.OnFailure {
		case TransferBackToTransferor, TransferToDefault:
		default:
			add(p+".on_failure", "%q is not one of transferor, default_department", t.Transfer.OnFailure)
		}
		for j, pat := range t.Transfer.Allow {
			if _, err := path.Match(pat, ""); err != nil || !strings.Contains(pat, "@") {
				add(fmt.Sprintf("%s.allow[%d]", p, j), "%q: want a pattern on user@host, e.g. *@pbx.example.com", pat)
			}
		}
	}
}

// TransferAllowed reports whether a Refer-To URI may be dialled, and why not.
func (t *Trunk) TransferAllowed(uri string) (bool, string) {
	scheme, rest, _ := strings.Cut(uri, ":")
	scheme = strings.ToLower(scheme)
	if scheme == "tel" {
		if !t.Transfer.AllowPSTN {
			return false, "telephone numbers are not allowed (allow_pstn is off)"
		}
		return true, ""
	}
	if scheme != "sip" && scheme != "sips" {
		return false, "not a SIP URI"
	}
	userHost, _, _ := strings.Cut(rest, ";")
	user, host, ok := strings.Cut(userHost, "@")
	if !ok {
		user, host = "", userHost
	}
	if !t.Transfer.AllowPSTN && isPhoneNumber(user) {
		return false, "telephone numbers are not allowed (allow_pstn is off)"
	}
	if len(t.Transfer.Allow) == 0 {
		return true, ""
	}
	for _, pat := range t.Transfer.Allow {
		if ok, _ := path.Match(strings.ToLower(pat), strings.ToLower(user+"@"+host)); ok {
			return true, ""
		}
	}
	return false, "not in the trunk's transfer allow-list"
}

// isPhoneNumber: a user part that dials out: 7 or more digits, with an
// optional leading + or 00 (extensions are shorter).
func isPhoneNumber(user string) bool {
	u := strings.TrimPrefix(user, "+")
	digits := 0
	for _, r := range u {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '-' || r == '.' || r == ' ' || r == '(' || r == ')':
		default:
			return false
		}
	}
	return digits >= 7
}
