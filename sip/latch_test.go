package sip

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// rtpHdr is a 12-byte RTP fixed header with seq and ssrc.
func rtpHdr(seq uint16, ssrc uint32) []byte {
	b := make([]byte, 12)
	b[0] = 0x80
	binary.BigEndian.PutUint16(b[2:4], seq)
	binary.BigEndian.PutUint32(b[8:12], ssrc)
	return b
}

type pkt struct {
	from netip.AddrPort
	seq  uint16
	ssrc uint32
	want bool
}

func TestLatchAdmit(t *testing.T) {
	ap := netip.MustParseAddrPort
	sig := ap("10.0.0.2:4000")      // the PBX's c=: private, unreachable
	sigPort := ap("10.0.0.2:4010")  // the same host, NAT-rewritten port
	nat := ap("198.51.100.1:31000") // its NAT's public mapping
	natOther := ap("198.51.100.1:31002")
	foreign := ap("203.0.113.66:5000")
	foreign2 := ap("203.0.113.67:5000")
	cases := []struct {
		name   string
		sig    netip.AddrPort
		pkts   []pkt
		wantTo netip.AddrPort // where RTP goes at the end (zero: never latched)
	}{
		{"signalled host at once, any port", sig, []pkt{
			{sig, 1, 7, true}, {sigPort, 2, 7, true},
		}, sigPort},
		{"NAT learned after probation", sig, []pkt{
			{nat, 100, 9, false}, {nat, 101, 9, false}, {nat, 102, 9, true}, {nat, 103, 9, true},
		}, nat},
		{"no foreign latch once the signalled host spoke", sig, []pkt{
			{sig, 1, 7, true}, {foreign, 1, 5, false}, {foreign, 2, 5, false}, {foreign, 3, 5, false}, {foreign, 4, 5, false}, {sig, 2, 7, true},
		}, sig},
		{"no hijack after a NAT latch", sig, []pkt{
			{nat, 1, 9, false}, {nat, 2, 9, false}, {nat, 3, 9, true},
			{foreign, 50, 5, false}, {foreign, 51, 5, false}, {foreign, 52, 5, false}, {foreign, 53, 5, false},
			{natOther, 60, 6, false}, {natOther, 61, 6, false}, {natOther, 62, 6, false},
			{nat, 4, 9, true},
		}, nat},
		{"the signalled host still wins after a NAT latch", sig, []pkt{
			{nat, 1, 9, false}, {nat, 2, 9, false}, {nat, 3, 9, true}, {sig, 1, 7, true}, {nat, 4, 9, false},
		}, sig},
		{"a gap restarts probation", sig, []pkt{
			{nat, 1, 9, false}, {nat, 3, 9, false}, {nat, 4, 9, false}, {nat, 5, 9, true},
		}, nat},
		{"a new SSRC restarts probation", sig, []pkt{
			{nat, 1, 9, false}, {nat, 2, 9, false}, {nat, 3, 8, false}, {nat, 4, 8, false}, {nat, 5, 8, true},
		}, nat},
		{"interleaved sources never latch", sig, []pkt{
			{foreign, 1, 5, false}, {foreign2, 1, 6, false}, {foreign, 2, 5, false}, {foreign2, 2, 6, false}, {foreign, 3, 5, false}, {foreign2, 3, 6, false},
		}, netip.AddrPort{}},
		{"sequence wraps", sig, []pkt{
			{nat, 65534, 9, false}, {nat, 65535, 9, false}, {nat, 0, 9, true},
		}, nat},
		{"no SDP yet: everything, no latch", netip.AddrPort{}, []pkt{
			{foreign, 1, 5, true}, {nat, 9, 9, true},
		}, netip.AddrPort{}},
		{"c=0.0.0.0: any source", ap("0.0.0.0:4000"), []pkt{
			{foreign, 1, 5, true},
		}, foreign},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n natState
			var to netip.AddrPort
			for i, p := range tc.pkts {
				ok, nt := n.admit(tc.sig, p.from, rtpHdr(p.seq, p.ssrc))
				if ok != p.want {
					t.Fatalf("packet %d from %v seq %d: admitted %v, want %v", i, p.from, p.seq, ok, p.want)
				}
				if nt.IsValid() {
					to = nt
				}
			}
			if to != tc.wantTo {
				t.Fatalf("RTP goes to %v, want %v", to, tc.wantTo)
			}
		})
	}
}

// TestLatchNewSignalledAddress: a re-INVITE with a new c= forgets the latch.
func TestLatchNewSignalledAddress(t *testing.T) {
	ap := netip.MustParseAddrPort
	nat, nat2 := ap("198.51.100.1:31000"), ap("198.51.100.1:32000")
	var n natState
	for seq := uint16(1); seq <= 3; seq++ {
		n.admit(ap("10.0.0.2:4000"), nat, rtpHdr(seq, 9))
	}
	if !n.latched || n.to != nat {
		t.Fatalf("not latched: %+v", n)
	}
	sig2 := ap("10.0.0.2:4100")
	if ok, _ := n.admit(sig2, nat, rtpHdr(4, 9)); ok {
		t.Fatal("old latch survived a new signalled address")
	}
	n.admit(sig2, nat2, rtpHdr(1, 3))
	n.admit(sig2, nat2, rtpHdr(2, 3))
	if ok, to := n.admit(sig2, nat2, rtpHdr(3, 3)); !ok || to != nat2 {
		t.Fatalf("relatch: %v %v", ok, to)
	}
}

func TestRTCPFromLatched(t *testing.T) {
	ap := netip.MustParseAddrPort
	sig, nat := ap("10.0.0.2:4000"), ap("198.51.100.1:31000")
	s := &RTPSession{signalled: sig}
	if !s.rtcpFromLocked(ap("10.0.0.2:4001")) || s.rtcpFromLocked(ap("198.51.100.1:31001")) {
		t.Fatal("before a latch: RTCP only from the signalled host")
	}
	for seq := uint16(1); seq <= latchProbation; seq++ {
		s.nat.admit(sig, nat, rtpHdr(seq, 9))
	}
	if !s.rtcpFromLocked(ap("198.51.100.1:31001")) || s.rtcpFromLocked(ap("203.0.113.66:31001")) {
		t.Fatal("after a NAT latch: RTCP from the NAT's host, not from others")
	}
}

func TestLatchShortPacket(t *testing.T) {
	var n natState
	sig := netip.MustParseAddrPort("10.0.0.2:4000")
	if ok, _ := n.admit(sig, netip.MustParseAddrPort("198.51.100.1:1"), []byte{0x80, 0, 0}); ok {
		t.Fatal("short datagram from a foreign host admitted")
	}
}

func TestLatchZeroAllocs(t *testing.T) {
	var n natState
	sig := netip.MustParseAddrPort("10.0.0.2:4000")
	nat := netip.MustParseAddrPort("198.51.100.1:31000")
	b := rtpHdr(1, 9)
	seq := uint16(1)
	allocs := testing.AllocsPerRun(500, func() {
		binary.BigEndian.PutUint16(b[2:4], seq)
		seq++
		n.admit(sig, nat, b)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per packet", allocs)
	}
}

// FuzzLatchAdmit drives the latch with arbitrary packets from a handful of
// sources. Invariants: a packet from a host other than the signalled one is
// admitted only when the latch holds exactly that source, and a latch onto
// such a source happens only after it sent latchProbation in-sequence
// packets of one SSRC with no other foreign packet in between.
func FuzzLatchAdmit(f *testing.F) {
	f.Add([]byte{2, 0, 1, 2, 0, 2, 2, 0, 3, 3, 0, 9, 2, 0, 4})
	f.Add([]byte{0, 0, 1, 3, 0, 1, 3, 0, 2, 3, 0, 3})
	f.Add([]byte{4, 1, 1, 4, 1, 2, 4, 1, 3, 5, 0, 0})
	f.Add([]byte{0x82, 0, 1, 2, 0, 2, 2, 0, 3, 2, 0, 4})
	sources := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.2:4000"), // signalled
		netip.MustParseAddrPort("10.0.0.2:4010"), // signalled host, other port
		netip.MustParseAddrPort("198.51.100.1:31000"),
		netip.MustParseAddrPort("198.51.100.1:31002"),
		netip.MustParseAddrPort("203.0.113.66:5000"),
		netip.MustParseAddrPort("203.0.113.67:5000"),
	}
	sig := sources[0]
	f.Fuzz(func(t *testing.T, in []byte) {
		var n natState
		// the shadow model: the current run of one foreign source
		var runFrom netip.AddrPort
		var runSSRC uint32
		var runSeq uint16
		runN := 0
		for i := 0; i+3 <= len(in); i += 3 {
			from := sources[int(in[i]&0x7f)%len(sources)]
			ssrc := uint32(in[i+1] % 2)
			seq := uint16(in[i+2])
			b := rtpHdr(seq, ssrc)
			if in[i]&0x80 != 0 {
				b = b[:int(in[i+2])%12] // a short datagram: ignored by the latch
			}
			if from.Addr() != sig.Addr() && len(b) >= 12 {
				if runN > 0 && from == runFrom && ssrc == runSSRC && seq == runSeq+1 {
					runN++
				} else {
					runFrom, runSSRC, runN = from, ssrc, 1
				}
				runSeq = seq
			}
			was := n.latched
			ok, _ := n.admit(sig, from, b)
			if ok && from.Addr() != sig.Addr() && (!n.latched || n.to != from) {
				t.Fatalf("packet %d: foreign %v admitted without a latch on it (%+v)", i/3, from, n)
			}
			if !was && n.latched && from.Addr() != sig.Addr() && (runFrom != from || runN < latchProbation) {
				t.Fatalf("packet %d: latched %v after a run of %d", i/3, from, runN)
			}
		}
	})
}

// TestLatchStaysOnSignalledPort: after a re-INVITE moves the PBX to another
// port on the same host, a packet still in flight from the old port does not
// pull RTP back there once the new port has sent.
func TestLatchStaysOnSignalledPort(t *testing.T) {
	var n natState
	host := netip.MustParseAddr("10.0.0.5")
	oldP, newP := netip.AddrPortFrom(host, 40000), netip.AddrPortFrom(host, 40002)
	pkt := make([]byte, 12)
	if ok, to := n.admit(oldP, oldP, pkt); !ok || to != oldP {
		t.Fatalf("old signalled port refused: %v %v", ok, to)
	}
	// re-INVITE: now newP is signalled.
	if ok, to := n.admit(newP, newP, pkt); !ok || to != newP {
		t.Fatalf("new signalled port refused: %v %v", ok, to)
	}
	if ok, _ := n.admit(newP, oldP, pkt); ok {
		t.Fatal("a late packet from the old port was taken after the new port sent")
	}
	if ok, to := n.admit(newP, newP, pkt); !ok || to != newP {
		t.Fatalf("the new port is no longer accepted: %v %v", ok, to)
	}
	// A PBX whose RTP comes from another port than its c= (no exact match
	// yet) is still followed on the signalled host.
	var m natState
	other := netip.AddrPortFrom(host, 41000)
	if ok, to := m.admit(newP, other, pkt); !ok || to != other {
		t.Fatalf("another port on the signalled host refused before any exact match: %v %v", ok, to)
	}
}
