package sip

import (
	"testing"

	"github.com/pion/rtp"
)

// BenchmarkSRTPProtectUnprotect measures the SRTP cost alone (no sockets):
// encrypt one 20 ms PCMU packet with our key and decrypt it with the
// peer's view of the same key, per suite.
func BenchmarkSRTPProtectUnprotect(b *testing.B) {
	for _, suite := range OfferedSuites {
		b.Run(string(suite), func(b *testing.B) {
			c, err := newCrypto(1, suite)
			if err != nil {
				b.Fatal(err)
			}
			tx, rx := &RTPSession{}, &RTPSession{}
			if err := tx.installSRTP(c, c); err != nil {
				b.Fatal(err)
			}
			if err := rx.installSRTP(c, c); err != nil {
				b.Fatal(err)
			}
			h := rtp.Header{Version: 2, SSRC: 42}
			pkt := make([]byte, 12+160)
			buf := make([]byte, maxRTPPacket)
			b.ReportAllocs()
			for b.Loop() {
				h.SequenceNumber++
				n, _ := h.MarshalTo(pkt)
				tx.wmu.Lock()
				out, err := tx.protectRTP(pkt[:n+160])
				tx.wmu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				m := copy(buf, out)
				if _, ok := rx.unprotectRTP(buf[:m]); !ok {
					b.Fatal("decrypt failed")
				}
			}
		})
	}
}
