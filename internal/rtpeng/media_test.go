package rtpeng

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/transcode"
)

// An rtpengine 10.5 WebRTC offer as the reference probe saw it: a mid, no BUNDLE group.
const rtpeOffer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"m=audio 30000 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 127.0.0.1\r\n" +
	"a=mid:1\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\na=rtcp-mux\r\n"

func TestWithBundle(t *testing.T) {
	got, err := withBundle(rtpeOffer)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(rtpeOffer, "t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 1\r\n", 1)
	if got != want {
		t.Fatalf("withBundle:\n%q\nwant\n%q", got, want)
	}
	// Already bundled: unchanged.
	if again, err := withBundle(got); err != nil || again != got {
		t.Fatalf("second withBundle changed the offer or failed: %v", err)
	}
	// LF-only SDP keeps LF.
	lf := strings.ReplaceAll(rtpeOffer, "\r\n", "\n")
	if got, err := withBundle(lf); err != nil || !strings.Contains(got, "t=0 0\na=group:BUNDLE 1\nm=audio") {
		t.Fatalf("LF offer: %q, %v", got, err)
	}
	for name, bad := range map[string]string{
		"no mid":   strings.Replace(rtpeOffer, "a=mid:1\r\n", "", 1),
		"not sdp":  "hello",
		"two m":    rtpeOffer + "m=audio 30002 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n",
		"no media": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
	} {
		if _, err := withBundle(bad); !errors.Is(err, ErrSDP) {
			t.Errorf("%s: err = %v, want ErrSDP", name, err)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name string
		sdp  string
		want remoteMedia
		err  bool
	}{
		{"session c=", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30010 RTP/AVP 0\r\n",
			remoteMedia{Addr: "127.0.0.1:30010", PT: 0}, false},
		{"media c= wins", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 30012 RTP/AVP 111 0\r\nc=IN IP4 127.0.0.1\r\n",
			remoteMedia{Addr: "127.0.0.1:30012", PT: 111}, false},
		{"not loopback", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 192.168.1.5\r\nt=0 0\r\nm=audio 30010 RTP/AVP 0\r\n", remoteMedia{}, true},
		{"no c=", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 30010 RTP/AVP 0\r\n", remoteMedia{}, true},
		{"port 0", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n", remoteMedia{}, true},
		{"bad pt", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 3 RTP/AVP 200\r\n", remoteMedia{}, true},
		{"garbage", "nope", remoteMedia{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAnswer(tc.sdp)
			if tc.err {
				if !errors.Is(err, ErrSDP) {
					t.Fatalf("err = %v, want ErrSDP", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseAnswer = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// The plain offer is valid SDP that parseAnswer's reader (pion/sdp) accepts, with the codec
// and port asked for.
func TestPlainOffer(t *testing.T) {
	for _, tc := range []struct {
		codec  string
		pt     uint8
		rtpmap string
	}{{transcode.CodecPCMU, 0, "a=rtpmap:0 PCMU/8000"}, {transcode.CodecOpus, 111, "a=rtpmap:111 opus/48000/2"}} {
		s := plainOffer(40123, tc.codec, 7)
		rm, err := parseAnswer(s)
		if err != nil {
			t.Fatalf("%s: %v", tc.codec, err)
		}
		if rm.Addr != "127.0.0.1:40123" || rm.PT != tc.pt || !strings.Contains(s, tc.rtpmap+"\r\n") {
			t.Fatalf("%s: %+v in\n%s", tc.codec, rm, s)
		}
	}
}

// The pre-encoded loops decode back to their tone at the expected level in every window, across
// the loop's wrap-around (frame 49 -> frame 0), which is what the audio check will demand.
func TestEncodeLoop(t *testing.T) {
	for _, tc := range []struct {
		codec string
		hz    float64
		step  uint32
	}{{transcode.CodecOpus, webrtcHz, 960}, {transcode.CodecPCMU, plainHz, 160}, {transcode.CodecOpus, plainHz, 960}} {
		l, err := encodeLoop(tc.codec, tc.hz)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.frames) != loopLen || l.step != tc.step {
			t.Fatalf("%s: %d frames, step %d", tc.codec, len(l.frames), l.step)
		}
		dec, err := transcode.NewDecoder(tc.codec, pcmRate)
		if err != nil {
			t.Fatal(err)
		}
		a := audio.NewAnalyzer(pcmRate, tc.hz, toneDBFS)
		pcm := make([]int16, 960)
		t0 := time.Unix(0, 0)
		const n = 3 * loopLen
		for i := range n {
			k, err := dec.Decode(l.frames[i%loopLen], pcm)
			if err != nil || k != frameSamp {
				t.Fatalf("%s frame %d: %d samples, %v", tc.codec, i, k, err)
			}
			a.Add(pcm[:k], t0.Add(time.Duration(i)*frameDur))
		}
		// Skip the decoder's first 200 ms: Opus starts up (level ramp) over its first ~9 frames.
		rp := a.Report(t0.Add(200*time.Millisecond), t0.Add(n*frameDur))
		if rp.Windows != n-10 || rp.ToneWindows != rp.Windows {
			t.Fatalf("%s %g Hz: %d of %d windows had the tone", tc.codec, tc.hz, rp.ToneWindows, rp.Windows)
		}
	}
}

func TestOfferFlags(t *testing.T) {
	f := offerFlags(transcode.CodecPCMU)
	c, ok := f["codec"].(Dict)
	if !ok {
		t.Fatal("transcoding offer without codec flags")
	}
	b, err := Encode(c)
	if err != nil || string(b) != "d4:maskl4:PCMUe9:transcodel12:opus/48000/2ee" {
		t.Fatalf("codec flags %q, %v", b, err)
	}
	if _, ok := offerFlags(transcode.CodecOpus)["codec"]; ok {
		t.Fatal("passthrough offer asks for transcoding")
	}
}

// pion's answer must reach rtpengine with a real address: with c=0.0.0.0 rtpengine answered
// the plain side "c=IN IP4 0.0.0.0" and a=sendonly (hold), and no media flowed to it.
func TestPionAnswerForRtpengine(t *testing.T) {
	in := "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 1\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 37998 typ host\r\n"
	got := pionAnswerForRtpengine(in, 37998)
	want := "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 1\r\n" +
		"m=audio 37998 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 37998 typ host\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	rm, err := parseAnswer(got)
	if err != nil || rm.Addr != "127.0.0.1:37998" || rm.PT != 96 {
		t.Fatalf("parseAnswer(rewritten) = %+v, %v", rm, err)
	}
}
