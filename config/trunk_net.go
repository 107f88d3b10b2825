package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// TrunkAdvertise is what ponte tells one trunk about its own addresses:
// split horizon, e.g. its public IP toward a cloud PBX and its private IP
// toward the PBX on the LAN, from the same process. Both keys are optional.
//
//	advertise:
//	  sip_host: 203.0.113.10        # or 203.0.113.10:5080 behind a port forward
//	  media_ip: 203.0.113.10
type TrunkAdvertise struct {
	// SIPHost goes in Via sent-by and Contact toward this trunk: a host or
	// host:port ([v6]:port) the trunk can reach ponte at. Without a port,
	// the SIP listener's port. Default: sip.advertise_host.
	SIPHost string `yaml:"sip_host"`
	// MediaIP goes in SDP c= toward this trunk. RTP ports are not
	// translated: a NAT in front of ponte must forward media.rtp_ports
	// unchanged. Default: media.rtp_ip (or sip.advertise_host).
	MediaIP string `yaml:"media_ip"`
}

// MediaAddr is media_ip parsed; the zero Addr when it is not set.
func (a TrunkAdvertise) MediaAddr() netip.Addr {
	ip, err := netip.ParseAddr(strings.TrimSpace(a.MediaIP))
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// validateTrunkNet checks every trunk's advertise block.
func (c *Config) validateTrunkNet(add func(path, format string, a ...any)) {
	for i, t := range c.SIP.Trunks {
		p := fmt.Sprintf("sip.trunks[%d].advertise", i)
		if t.Advertise.SIPHost != "" {
			if err := checkSIPHost(t.Advertise.SIPHost); err != nil {
				add(p+".sip_host", "%q: %v", t.Advertise.SIPHost, err)
			}
		}
		if t.Advertise.MediaIP != "" {
			ip, err := netip.ParseAddr(strings.TrimSpace(t.Advertise.MediaIP))
			switch {
			case err != nil:
				add(p+".media_ip", "%q is not an IP address", t.Advertise.MediaIP)
			case ip.IsUnspecified() || ip.IsMulticast():
				add(p+".media_ip", "%q cannot receive RTP: give the address the trunk sends media to", t.Advertise.MediaIP)
			}
		}
	}
}

// checkSIPHost accepts "host" or "host:port", where host is an IP literal
// (IPv6 in brackets when a port follows) or a DNS name (RFC 3261 §25.1
// hostname), and port is 1..65535.
func checkSIPHost(s string) error {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("%s is not reachable: give the address the trunk sends to", host)
		}
	} else if !validHostname(host) {
		return fmt.Errorf("want an IP address or a host name, optionally with :port")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("want an IP address or a host name, optionally with :port")
		}
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not 1..65535", port)
		}
	}
	return nil
}

// validHostname: dot-separated labels of letters, digits and inner hyphens.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
