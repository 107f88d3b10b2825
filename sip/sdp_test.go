package sip_test

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ponte-gw/ponte/sip"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func TestParseSDP(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    *sip.MediaDesc
		wantErr bool
	}{
		{
			name: "asterisk pcmu pcma with telephone-event",
			in: crlf(`v=0
o=- 1 2 IN IP4 10.0.0.5
s=Asterisk
c=IN IP4 10.0.0.5
t=0 0
m=audio 18000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
`),
			want: &sip.MediaDesc{Proto: "RTP/AVP",
				Addr: netip.MustParseAddrPort("10.0.0.5:18000"),
				Codecs: []sip.CodecDesc{
					{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
					{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
				},
				DTMFPT: 101, DTMFRate: 8000, Ptime: 20, Direction: "sendrecv",
			},
		},
		{
			name: "static PTs without rtpmap, LF only, media c= overrides session",
			in:   []byte("v=0\nc=IN IP4 1.1.1.1\nm=audio 4000 RTP/AVP 8 0 13\nc=IN IP4 2.2.2.2\na=recvonly\n"),
			want: &sip.MediaDesc{Proto: "RTP/AVP",
				Addr: netip.MustParseAddrPort("2.2.2.2:4000"),
				Codecs: []sip.CodecDesc{
					{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
					{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
				},
				DTMFPT: -1, Direction: "recvonly",
			},
		},
		{
			name: "opus first with fmtp, two telephone-events prefer 8k, rtcp-mux, session-level inactive",
			in: crlf(`v=0
o=- 1 2 IN IP6 ::1
c=IN IP6 ::1
a=inactive
m=audio 5004 RTP/AVP 111 110 126
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=rtcp-mux
`),
			want: &sip.MediaDesc{Proto: "RTP/AVP",
				Addr:   netip.MustParseAddrPort("[::1]:5004"),
				Codecs: []sip.CodecDesc{{PT: 111, Name: "opus", Rate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"}},
				DTMFPT: 126, DTMFRate: 8000, Direction: "inactive", RTCPMux: true,
			},
		},
		{
			name: "video first, audio second; video attributes ignored",
			in: crlf(`v=0
c=IN IP4 3.3.3.3
m=video 6000 RTP/AVP 96
a=rtpmap:96 H264/90000
a=sendonly
m=audio 7000 RTP/AVP 96
a=rtpmap:96 PCMU/8000
`),
			want: &sip.MediaDesc{Proto: "RTP/AVP",
				Addr:   netip.MustParseAddrPort("3.3.3.3:7000"),
				Codecs: []sip.CodecDesc{{PT: 96, Name: "PCMU", Rate: 8000, Channels: 1}},
				DTMFPT: -1, Direction: "sendrecv",
			},
		},
		{
			name: "rejected stream, dynamic PT without rtpmap dropped, garbage lines",
			in:   []byte("garbage\nv=0\nc=IN IP4 4.4.4.4\nm=audio 0 RTP/AVP 0 97 abc 300\na=rtpmap:zz bad\na=ptime:x\n"),
			want: &sip.MediaDesc{Proto: "RTP/AVP",
				Addr:   netip.MustParseAddrPort("4.4.4.4:0"),
				Codecs: []sip.CodecDesc{{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}},
				DTMFPT: -1, Direction: "sendrecv",
			},
		},
		{name: "no audio", in: crlf("v=0\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\n"), wantErr: true},
		{name: "empty", in: nil, wantErr: true},
		{name: "bad port", in: []byte("m=audio 99999 RTP/AVP 0\n"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sip.ParseSDP(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestBuildOfferSDP(t *testing.T) {
	got := string(sip.BuildOfferSDP(netip.MustParseAddrPort("127.0.0.1:40000"), []string{"opus", "PCMU", "pcma", "G729"}, 101, 42))
	want := "v=0\r\n" +
		"o=ponte 42 42 IN IP4 127.0.0.1\r\n" +
		"s=ponte\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio 40000 RTP/AVP 111 0 8 101\r\n" +
		"a=rtpmap:111 opus/48000/2\r\n" +
		"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\n" +
		"a=fmtp:101 0-16\r\n" +
		"a=ptime:20\r\n" +
		"a=sendrecv\r\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// Round trip through our parser.
	md, err := sip.ParseSDP([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	if md.DTMFPT != 101 || len(md.Codecs) != 3 || md.Codecs[0].Name != "opus" || md.Codecs[0].Channels != 2 ||
		md.Addr != netip.MustParseAddrPort("127.0.0.1:40000") {
		t.Fatalf("round trip: %+v", md)
	}
	if c, ok := md.Negotiate([]string{"PCMA", "PCMU"}); !ok || c.PT != 8 {
		t.Fatalf("negotiate: %+v %v", c, ok)
	}
}

func FuzzParseSDP(f *testing.F) {
	f.Add(crlf("v=0\nc=IN IP4 10.0.0.5\nm=audio 18000 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\na=ptime:20\n"))
	f.Add([]byte("m=audio 1 RTP/AVP 96\na=rtpmap:96 opus/48000/2\na=fmtp:96 x\nc=IN IP6 ::1/5\n"))
	f.Add([]byte("m=audio 0/2 RTP/AVP\nc=IN\na=rtpmap:\n"))
	f.Add(crlf("v=0\nc=IN IP4 10.0.0.5\nm=audio 18000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR WSH=64\n")) // H-TLS
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := sip.ParseSDP(b)
		if err != nil {
			return
		}
		if md.DTMFPT < -1 || md.DTMFPT > 127 || len(md.Codecs) > 64 || len(md.Crypto) > 16 {
			t.Fatalf("out of range: %+v", md)
		}
		for _, c := range md.Codecs {
			if c.PT > 127 || c.Rate <= 0 || strings.EqualFold(c.Name, "telephone-event") {
				t.Fatalf("bad codec %+v", c)
			}
		}
	})
}
