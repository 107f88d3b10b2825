package sip_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ponte-gw/ponte/sip"
)

// RFC 4568 §4's example key (40 base64 characters = 30 bytes).
const rfcKey = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"

func TestParseCrypto(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString(rfcKey)
	tests := []struct {
		name string
		in   string
		want sip.Crypto
		err  bool
	}{
		{name: "plain", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey,
			want: sip.Crypto{Tag: 1, Suite: sip.SuiteAES128SHA1_80, Keys: []sip.CryptoKey{{KeySalt: key}}}},
		{name: "RFC 4568 §4 example with lifetime and MKI", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4",
			want: sip.Crypto{Tag: 1, Suite: sip.SuiteAES128SHA1_80, Keys: []sip.CryptoKey{{KeySalt: key, Lifetime: 1 << 20, MKI: 1, MKILen: 4}}}},
		{name: "decimal lifetime, lower-case suite, session param", in: "2 aes_cm_128_hmac_sha1_32 inline:" + rfcKey + "|1000 WSH=64",
			want: sip.Crypto{Tag: 2, Suite: sip.SuiteAES128SHA1_32, Keys: []sip.CryptoKey{{KeySalt: key, Lifetime: 1000}}, SessionParams: []string{"WSH=64"}}},
		{name: "two keys with MKIs", in: "3 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4;inline:" + rfcKey + "|2^20|2:4",
			want: sip.Crypto{Tag: 3, Suite: sip.SuiteAES128SHA1_80, Keys: []sip.CryptoKey{
				{KeySalt: key, Lifetime: 1 << 20, MKI: 1, MKILen: 4}, {KeySalt: key, Lifetime: 1 << 20, MKI: 2, MKILen: 4}}}},
		{name: "unpadded base64", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + strings.TrimRight(base64.StdEncoding.EncodeToString(key[:29]), "="),
			want: sip.Crypto{Tag: 1, Suite: sip.SuiteAES128SHA1_80, Keys: []sip.CryptoKey{{KeySalt: key[:29]}}}},
		{name: "unknown suite parses", in: "9 F8_128_HMAC_SHA1_80 inline:" + rfcKey,
			want: sip.Crypto{Tag: 9, Suite: "F8_128_HMAC_SHA1_80", Keys: []sip.CryptoKey{{KeySalt: key}}}},
		{name: "no key", in: "1 AES_CM_128_HMAC_SHA1_80", err: true},
		{name: "tag not a number", in: "x AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey, err: true},
		{name: "tag too long", in: "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey, err: true},
		{name: "not inline", in: "1 AES_CM_128_HMAC_SHA1_80 uri:" + rfcKey, err: true},
		{name: "bad base64", in: "1 AES_CM_128_HMAC_SHA1_80 inline:***", err: true},
		{name: "empty key", in: "1 AES_CM_128_HMAC_SHA1_80 inline:|2^20", err: true},
		{name: "lifetime too big", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^64", err: true},
		{name: "lifetime zero", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|0", err: true},
		{name: "MKI length zero", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|1:0", err: true},
		{name: "MKI length 129", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|1:129", err: true},
		{name: "MKI value too big for length", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|256:1", err: true},
		{name: "lifetime after MKI", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|1:4|2^20", err: true},
		{name: "too many parts", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4|x", err: true},
		{name: "bad session param", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " KDR=<1>", err: true},
		{name: "too long", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + strings.Repeat(" WSH=64", 200), err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sip.ParseCrypto(tc.in)
			if tc.err {
				if !errors.Is(err, sip.ErrCryptoInvalid) {
					t.Fatalf("ParseCrypto(%q) = %v, %v; want ErrCryptoInvalid", tc.in, got, err)
				}
				if strings.Contains(err.Error(), rfcKey) {
					t.Fatalf("error leaks the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestCryptoRedactedAndRoundTrip(t *testing.T) {
	c, err := sip.ParseCrypto("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^31|7:2 WSH=64")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.String(); strings.Contains(s, rfcKey) || !strings.Contains(s, "redacted") {
		t.Fatalf("String() = %q must not carry the key", s)
	}
	want := "1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^31|7:2 WSH=64"
	if got := c.SDPValue(); got != want {
		t.Fatalf("SDPValue() = %q, want %q", got, want)
	}
}

func TestCryptoUsable(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey, true},
		{"2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey + "|2^31", true},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " WSH=128 KDR=0", true},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|1:4;inline:" + rfcKey + "|2:4", true},
		{"1 AES_256_CM_HMAC_SHA1_80 inline:" + rfcKey, false},                                    // suite not offered
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey[:36], false},                               // 27-byte key
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " UNENCRYPTED_SRTP", false},              // media in clear
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " UNAUTHENTICATED_SRTP", false},          // unauthenticated
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " KDR=24", false},                        // key derivation rate
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + ";inline:" + rfcKey, false},              // two keys, no MKI
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|1:4;inline:" + rfcKey + "|2:2", false}, // MKI lengths differ
	}
	for _, tc := range tests {
		c, err := sip.ParseCrypto(tc.line)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if got := c.Usable(); got != tc.want {
			t.Errorf("Usable(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestSDPCryptoRoundTrip(t *testing.T) {
	c, _ := sip.ParseCrypto("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey)
	c2, _ := sip.ParseCrypto("2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey)
	spec := sip.OfferSpec(mustAP("127.0.0.1:4000"), []string{"PCMU"}, 101, 7)
	spec.Proto, spec.Crypto = sip.ProtoSAVP, []sip.Crypto{c, c2}
	body := sip.BuildSDP(spec)
	if !bytes.Contains(body, []byte("m=audio 4000 RTP/SAVP 0 101\r\n")) ||
		!bytes.Contains(body, []byte("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+rfcKey+"\r\n")) ||
		!bytes.Contains(body, []byte("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"+rfcKey+"\r\n")) {
		t.Fatalf("offer:\n%s", body)
	}
	md, err := sip.ParseSDP(body)
	if err != nil {
		t.Fatal(err)
	}
	if md.Proto != sip.ProtoSAVP || len(md.Crypto) != 2 || !reflect.DeepEqual(md.Crypto[0], c) || !reflect.DeepEqual(md.Crypto[1], c2) {
		t.Fatalf("parsed %+v", md)
	}
	// A crypto line of another m= section or a broken one is not taken.
	other := "v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 5000 RTP/SAVP 96\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey +
		"\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey + "\r\n"
	md, err = sip.ParseSDP([]byte(other))
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Crypto) != 1 || md.Crypto[0].Tag != 2 {
		t.Fatalf("crypto lines %v, want only the audio section's valid tag 2", md.Crypto)
	}
}

// FuzzParseCrypto: never panics, never accepts what it cannot render back
// to an equal value, and errors never carry the input.
func FuzzParseCrypto(f *testing.F) {
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey)
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4;inline:" + rfcKey + "|2^20|2:4 WSH=64")
	f.Add("2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey + "|1000 KDR=0 UNENCRYPTED_SRTCP")
	f.Add("1 x inline:a|b:c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := sip.ParseCrypto(s)
		if err != nil {
			if !errors.Is(err, sip.ErrCryptoInvalid) {
				t.Fatalf("error %v is not ErrCryptoInvalid", err)
			}
			return
		}
		if c.Tag < 0 || len(c.Keys) == 0 || len(c.Keys) > 8 {
			t.Fatalf("out of range: %v", c)
		}
		back, err := sip.ParseCrypto(c.SDPValue())
		if err != nil {
			t.Fatalf("rendered value does not parse: %v", err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the value:\n%#v\n%#v", c, back)
		}
		if want := fmt.Sprintf("%d %s inline:[%d key(s) redacted]", c.Tag, c.Suite, len(c.Keys)); c.String() != want {
			t.Fatalf("String() = %q, want %q (no key material)", c.String(), want)
		}
	})
}
