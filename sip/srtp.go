package sip

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SRTPMode is a trunk's SDES-SRTP policy (RFC 4568).
type SRTPMode string

// SRTP policies.
const (
	// SRTPOff offers plain RTP/AVP without keys.
	SRTPOff SRTPMode = "off"
	// SRTPOptional offers RTP/AVP with a=crypto lines ("best-effort SDES",
	// as Asterisk's media_encryption_optimistic and FreeSWITCH's optional
	// SRTP do): a PBX that answers with a crypto line gets SRTP, one that
	// ignores it gets plain RTP. RFC 4568 defines crypto only for RTP/SAVP,
	// but an RTP/SAVP offer is refused outright by a PBX without SRTP
	// (RFC 3264 §6: unknown transport -> port 0), which would make the
	// policy "required" in practice.
	SRTPOptional SRTPMode = "optional"
	// SRTPRequired offers RTP/SAVP with a=crypto and refuses an answer
	// without a usable crypto line (ErrSRTPRequired). Media never flows in
	// clear: until keys are agreed, nothing is sent and nothing is accepted.
	SRTPRequired SRTPMode = "required"
)

// SRTP protocol names of the m= line (RFC 3711 §12, RFC 4568).
const (
	ProtoAVP  = "RTP/AVP"
	ProtoSAVP = "RTP/SAVP"
)

// srtpReplayWindow tolerates the reordering seen on real networks while
// still rejecting replays (RFC 3711 §3.3.2: at least 64).
const srtpReplayWindow = 128

// srtpOverhead is the most SRTP adds to an RTP packet: 10-byte tag plus an
// MKI is never used on our own stream.
const srtpOverhead = 10

// errClearRefused: a strict (required) session has no keys yet.
var errClearRefused = errors.New("sip: clear media refused on an SRTP-required session")

// srtpSec is the SRTP state of one RTPSession. The transmit RTP context is
// guarded by the session's wmu (WriteRTP's lock), the receive RTP context by
// rxMu and both RTCP contexts by rtcpMu, so that the reader, the writer and
// the RTCP goroutine never share a pion context (they are not safe for
// concurrent use).
type srtpSec struct {
	strict atomic.Bool // required mode: no clear media either way
	keyed  atomic.Bool // contexts installed

	mu      sync.Mutex // offered, local, remote, mode
	mode    SRTPMode
	proto   string
	offered []Crypto
	local   *Crypto // our line in use: we encrypt with its key
	remote  *Crypto // theirs: we decrypt with its key

	txRTP *srtp.Context // under RTPSession.wmu
	txHdr rtp.Header
	ebuf  []byte

	rxMu  sync.Mutex
	rxRTP *srtp.Context
	rxHdr rtp.Header

	rtcpMu sync.Mutex
	txRTCP *srtp.Context
	rxRTCP *srtp.Context
	rtcpTx []byte
}

// SDES is what an SDP body says about SRTP: the m= transport and the
// a=crypto lines (ours, keys included).
type SDES struct {
	Proto  string
	Crypto []Crypto
}

// Apply puts the SDES into an SDP spec.
func (x SDES) Apply(spec *SDPSpec) {
	spec.Proto = x.Proto
	spec.Crypto = append([]Crypto(nil), x.Crypto...)
}

// OfferSRTP prepares the session for an offer under mode and returns what
// the offer carries: nothing for off; for optional RTP/AVP with crypto
// lines; for required RTP/SAVP with crypto lines, and the session is strict
// from now on (WriteRTP drops, ReadRTP ignores media until AcceptSRTP has
// keys). Tags 1 and 2 are AES_CM_128_HMAC_SHA1_80 and _32, each with its
// own fresh key.
func (s *RTPSession) OfferSRTP(mode SRTPMode) (SDES, error) {
	mode, err := ParseSRTPMode(string(mode))
	if err != nil {
		return SDES{}, err
	}
	x := SDES{Proto: ProtoAVP}
	if mode == SRTPOff {
		return x, nil
	}
	for i, suite := range OfferedSuites {
		c, err := newCrypto(i+1, suite)
		if err != nil {
			return SDES{}, err
		}
		x.Crypto = append(x.Crypto, c)
	}
	if mode == SRTPRequired {
		x.Proto = ProtoSAVP
		s.sec.strict.Store(true)
	}
	s.sec.mu.Lock()
	s.sec.mode, s.sec.proto, s.sec.offered = mode, x.Proto, x.Crypto
	s.sec.mu.Unlock()
	return x, nil
}

// offerSDP builds the INVITE's offer for trunk t: the codecs and
// telephone-event of OfferSpec plus the trunk's SDES offer.
func (u *UA) offerSDP(media *RTPSession, t *Trunk, sessID uint64) ([]byte, error) {
	spec := OfferSpec(u.sdpAddr(media), t.Codecs, t.DTMFPT, sessID)
	if t.NoTelephoneEvent {
		spec.DTMFPT = -1 // DTMF by INFO or in-band: offer no telephone-event
	}
	x, err := media.OfferSRTP(t.SRTP)
	if err != nil {
		return nil, err
	}
	x.Apply(&spec)
	return BuildSDP(spec), nil
}

// acceptSRTP applies the 2xx answer's SDES to the dialog's media.
func (d *Dialog) acceptSRTP(md *MediaDesc) error {
	if d.media == nil {
		return nil
	}
	return d.media.AcceptSRTP(md)
}

// ParseSRTPMode accepts off, optional, required (and "" for off).
func ParseSRTPMode(s string) (SRTPMode, error) {
	switch m := SRTPMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "", SRTPOff:
		return SRTPOff, nil
	case SRTPOptional, SRTPRequired:
		return m, nil
	}
	return "", fmt.Errorf("%w: srtp %q is not one of off, optional, required", ErrConfig, s)
}

// AcceptSRTP applies the answer to our OfferSRTP (RFC 4568 §7.1.3 and
// §7.2): the answer's crypto line must carry one of our offered tags with
// the same suite; we then encrypt with our key of that tag and decrypt with
// theirs. Without a usable line a required session returns ErrSRTPRequired
// (the caller refuses the call); an optional one stays plain RTP, unless the
// answer insists on RTP/SAVP, which it cannot have without keys.
func (s *RTPSession) AcceptSRTP(answer *MediaDesc) error {
	s.sec.mu.Lock()
	mode, offered := s.sec.mode, s.sec.offered
	s.sec.mu.Unlock()
	if mode == "" || mode == SRTPOff {
		return nil
	}
	local, remote, ok := selectCrypto(offered, answer.Crypto)
	if !ok {
		switch {
		case mode == SRTPRequired:
			return fmt.Errorf("%w (answer %s with %d crypto line(s))", ErrSRTPRequired, answer.Proto, len(answer.Crypto))
		case strings.Contains(answer.Proto, "SAVP"):
			return fmt.Errorf("%w: answer is %s without a usable crypto line", ErrSRTPRequired, answer.Proto)
		}
		return nil // optional: the PBX chose plain RTP
	}
	return s.installSRTP(local, remote)
}

// AnswerSRTP answers an SDES offer from the PBX (a re-INVITE or UPDATE in a
// call, or a PBX-originated INVITE) under mode: it keeps our key when the
// suite is unchanged (RFC 4568 §7.1.4 lets each side keep its key on a
// re-offer) and re-keys decryption when theirs changed. An offer without
// a usable line is refused with ErrSRTPRequired when mode is required or
// the call already runs SRTP and the offer is RTP/SAVP; under optional a
// plain re-offer turns SRTP off (the PBX chose to drop it).
func (s *RTPSession) AnswerSRTP(offer *MediaDesc, mode SRTPMode) (SDES, error) {
	mode, err := ParseSRTPMode(string(mode))
	if err != nil {
		return SDES{}, err
	}
	if mode == SRTPOff {
		if strings.Contains(offer.Proto, "SAVP") {
			return SDES{}, fmt.Errorf("%w: offer is %s and the trunk has srtp off", ErrSRTPRequired, offer.Proto)
		}
		return SDES{Proto: ProtoAVP}, nil
	}
	var theirs *Crypto
	for i := range offer.Crypto {
		if offer.Crypto[i].Usable() {
			theirs = &offer.Crypto[i]
			break
		}
	}
	if theirs == nil {
		if mode == SRTPRequired || strings.Contains(offer.Proto, "SAVP") {
			return SDES{}, fmt.Errorf("%w (offer %s with %d crypto line(s))", ErrSRTPRequired, offer.Proto, len(offer.Crypto))
		}
		s.clearSRTP()
		return SDES{Proto: ProtoAVP}, nil
	}
	s.sec.mu.Lock()
	cur := s.sec.local
	s.sec.mu.Unlock()
	var ours Crypto
	if cur != nil && cur.Suite == theirs.Suite {
		ours = Crypto{Tag: theirs.Tag, Suite: cur.Suite, Keys: cur.Keys}
	} else if ours, err = newCrypto(theirs.Tag, theirs.Suite); err != nil {
		return SDES{}, err
	}
	if mode == SRTPRequired {
		s.sec.strict.Store(true)
	}
	proto := offer.Proto
	if proto == "" {
		proto = ProtoAVP
	}
	s.sec.mu.Lock()
	s.sec.mode, s.sec.proto = mode, proto
	s.sec.mu.Unlock()
	if err := s.installSRTP(ours, *theirs); err != nil {
		return SDES{}, err
	}
	return SDES{Proto: proto, Crypto: []Crypto{ours}}, nil
}

// SDES returns what our next SDP for this session must say: the line in use
// once keyed (same tag, suite and key: RFC 4568 §7.1.4 re-offers may keep
// keys), the offered lines before that, nothing for a plain session.
func (s *RTPSession) SDES() SDES {
	s.sec.mu.Lock()
	defer s.sec.mu.Unlock()
	switch {
	case s.sec.local != nil:
		return SDES{Proto: s.sec.proto, Crypto: []Crypto{*s.sec.local}}
	case len(s.sec.offered) > 0:
		return SDES{Proto: s.sec.proto, Crypto: append([]Crypto(nil), s.sec.offered...)}
	}
	return SDES{Proto: ProtoAVP}
}

// SRTP reports whether media is encrypted, and with which suite.
func (s *RTPSession) SRTP() (bool, CryptoSuite) {
	s.sec.mu.Lock()
	defer s.sec.mu.Unlock()
	if s.sec.local == nil {
		return false, ""
	}
	return true, s.sec.local.Suite
}

// selectCrypto finds the answer's usable line that matches an offered tag
// and suite (RFC 4568 §7.1.3: the answer's tag identifies the offer line).
func selectCrypto(offered, answer []Crypto) (local, remote Crypto, ok bool) {
	for _, a := range answer {
		if !a.Usable() {
			continue
		}
		for _, o := range offered {
			if o.Tag == a.Tag && o.Suite == a.Suite {
				return o, a, true
			}
		}
	}
	return Crypto{}, Crypto{}, false
}

func profileOf(s CryptoSuite) (srtp.ProtectionProfile, error) {
	switch s {
	case SuiteAES128SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case SuiteAES128SHA1_32:
		return srtp.ProtectionProfileAes128CmHmacSha1_32, nil
	}
	return 0, fmt.Errorf("%w: unsupported suite %s", ErrCryptoInvalid, s)
}

// newSRTPContext builds a pion context for one direction. For a receive
// context with MKIs (RFC 3711 §3.1) every key of the line is installed
// under its MKI; our own lines carry no MKI.
func newSRTPContext(c Crypto, rx bool) (*srtp.Context, error) {
	prof, err := profileOf(c.Suite)
	if err != nil {
		return nil, err
	}
	k0 := c.Keys[0]
	opts := []srtp.ContextOption{}
	if rx {
		opts = append(opts, srtp.SRTPReplayProtection(srtpReplayWindow), srtp.SRTCPReplayProtection(srtpReplayWindow))
	}
	if k0.MKILen > 0 {
		opts = append(opts, srtp.MasterKeyIndicator(mkiBytes(k0.MKI, k0.MKILen)))
	}
	ctx, err := srtp.CreateContext(k0.KeySalt[:16], k0.KeySalt[16:], prof, opts...)
	if err != nil {
		return nil, fmt.Errorf("sip: SRTP context: %w", err)
	}
	for _, k := range c.Keys[1:] {
		if err := ctx.AddCipherForMKI(mkiBytes(k.MKI, k.MKILen), k.KeySalt[:16], k.KeySalt[16:]); err != nil {
			return nil, fmt.Errorf("sip: SRTP context: %w", err)
		}
	}
	return ctx, nil
}

// installSRTP creates the four contexts and swaps them in. Only the receive
// side is replaced when our key is unchanged, so that our outgoing rollover
// counter state survives a re-offer.
func (s *RTPSession) installSRTP(local, remote Crypto) error {
	if !local.Usable() || !remote.Usable() {
		return fmt.Errorf("%w: unusable crypto line", ErrCryptoInvalid)
	}
	s.sec.mu.Lock()
	sameLocal := s.sec.local != nil && sameKeys(*s.sec.local, local)
	sameRemote := s.sec.remote != nil && sameKeys(*s.sec.remote, remote)
	s.sec.mu.Unlock()
	if sameLocal && sameRemote {
		return nil // e.g. the 200 repeats the 183's answer: keep the replay and rollover state
	}
	rxRTP, err := newSRTPContext(remote, true)
	if err != nil {
		return err
	}
	rxRTCP, err := newSRTPContext(remote, true)
	if err != nil {
		return err
	}
	var txRTP, txRTCP *srtp.Context
	if !sameLocal {
		if txRTP, err = newSRTPContext(local, false); err != nil {
			return err
		}
		if txRTCP, err = newSRTPContext(local, false); err != nil {
			return err
		}
	}
	s.sec.rxMu.Lock()
	s.sec.rxRTP = rxRTP
	s.sec.rxMu.Unlock()
	s.sec.rtcpMu.Lock()
	s.sec.rxRTCP = rxRTCP
	if txRTCP != nil {
		s.sec.txRTCP = txRTCP
	}
	if s.sec.rtcpTx == nil {
		s.sec.rtcpTx = make([]byte, maxRTPPacket+srtpOverhead+4+maxMKILen)
	}
	s.sec.rtcpMu.Unlock()
	if txRTP != nil {
		s.wmu.Lock()
		s.sec.txRTP = txRTP
		if s.sec.ebuf == nil {
			s.sec.ebuf = make([]byte, maxRTPPacket+srtpOverhead)
		}
		s.wmu.Unlock()
	}
	l, r := local, remote
	s.sec.mu.Lock()
	s.sec.local, s.sec.remote = &l, &r
	s.sec.mu.Unlock()
	s.sec.keyed.Store(true)
	return nil
}

func sameKeys(a, b Crypto) bool {
	if a.Suite != b.Suite || len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Keys {
		if string(a.Keys[i].KeySalt) != string(b.Keys[i].KeySalt) {
			return false
		}
	}
	return true
}

// clearSRTP turns SRTP off (optional mode, the PBX re-offered plain RTP).
func (s *RTPSession) clearSRTP() {
	s.sec.keyed.Store(false)
	s.wmu.Lock()
	s.sec.txRTP = nil
	s.wmu.Unlock()
	s.sec.rxMu.Lock()
	s.sec.rxRTP = nil
	s.sec.rxMu.Unlock()
	s.sec.rtcpMu.Lock()
	s.sec.txRTCP, s.sec.rxRTCP = nil, nil
	s.sec.rtcpMu.Unlock()
	s.sec.mu.Lock()
	s.sec.local, s.sec.remote = nil, nil
	s.sec.mu.Unlock()
}

// secured reports whether packets go through SRTP (keyed or strict).
func (x *srtpSec) secured() bool { return x.keyed.Load() || x.strict.Load() }

// protectRTP encrypts one marshalled packet; the caller holds s.wmu. It
// returns pkt itself for a plain session, and errClearRefused for a strict
// session without keys. No allocation: ebuf is reused.
func (s *RTPSession) protectRTP(pkt []byte) ([]byte, error) {
	x := &s.sec
	if x.txRTP == nil {
		if x.strict.Load() {
			return nil, errClearRefused
		}
		return pkt, nil
	}
	return x.txRTP.EncryptRTP(x.ebuf[:0], pkt, &x.txHdr)
}

// unprotectRTP authenticates and decrypts pkt in place (RFC 3711 §3.3);
// false for a forged, replayed or undecryptable packet, or clear media on a
// strict session.
func (s *RTPSession) unprotectRTP(pkt []byte) ([]byte, bool) {
	x := &s.sec
	x.rxMu.Lock()
	defer x.rxMu.Unlock()
	if x.rxRTP == nil {
		return pkt, !x.strict.Load()
	}
	out, err := x.rxRTP.DecryptRTP(pkt, pkt, &x.rxHdr)
	if err != nil {
		return nil, false
	}
	return out, true
}

// protectRTCP encrypts a compound RTCP packet (SRTCP, RFC 3711 §3.4); ok
// false when nothing may be sent.
func (s *RTPSession) protectRTCP(b []byte) ([]byte, bool) {
	x := &s.sec
	if !x.secured() {
		return b, true
	}
	x.rtcpMu.Lock()
	defer x.rtcpMu.Unlock()
	if x.txRTCP == nil {
		return nil, false
	}
	out, err := x.txRTCP.EncryptRTCP(x.rtcpTx[:0], b, nil)
	if err != nil {
		return nil, false
	}
	return out, true
}

// unprotectRTCP authenticates and decrypts an SRTCP packet in place.
func (s *RTPSession) unprotectRTCP(b []byte) ([]byte, bool) {
	x := &s.sec
	if !x.secured() {
		return b, true
	}
	x.rtcpMu.Lock()
	defer x.rtcpMu.Unlock()
	if x.rxRTCP == nil {
		return nil, false
	}
	out, err := x.rxRTCP.DecryptRTCP(b, b, nil)
	if err != nil {
		return nil, false
	}
	return out, true
}
