package gateway

import (
	"reflect"
	"testing"

	"github.com/ponte-gw/ponte/sip"
)

func TestPBXMediaFromAnswer(t *testing.T) {
	const head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	for _, c := range []struct {
		name    string
		sdp     string
		allowed []string
		want    pbxMedia
		ok      bool
	}{
		{"pcmu and pcma, ptime 30",
			head + "m=audio 4000 RTP/AVP 0 8 13 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\n",
			[]string{"PCMU", "PCMA"},
			pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: 101, Alt: []pbxCodec{{"PCMA", 8}}, Ptime: 30}, true},
		{"pcma first, trunk order ignored",
			head + "m=audio 4000 RTP/AVP 8 0\r\n",
			[]string{"PCMU", "PCMA"},
			pbxMedia{Codec: "PCMA", PT: 8, DTMFPT: -1, Alt: []pbxCodec{{"PCMU", 0}}}, true},
		{"codec the trunk does not allow is not decoded",
			head + "m=audio 4000 RTP/AVP 0 8\r\na=ptime:10\r\n",
			[]string{"PCMU"},
			pbxMedia{Codec: "PCMU", PT: 0, DTMFPT: -1, Ptime: 10}, true},
		{"nothing allowed",
			head + "m=audio 4000 RTP/AVP 8\r\n",
			[]string{"PCMU"},
			pbxMedia{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			md, err := sip.ParseSDP([]byte(c.sdp))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := pbxMediaFromAnswer(md, c.allowed)
			if ok != c.ok || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, c.want, c.ok)
			}
		})
	}
}
