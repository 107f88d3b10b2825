package test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/sim/audio"
	"github.com/ponte-gw/ponte/sim/pbx"
	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

func secureOutboundEnv(t *testing.T) *scenario.Env {
	t.Helper()
	env, _ := secureEnvWith(t, pbx.SRTPAccept, func(c *config.Config) {
		// Digest required, from any source.
		c.SIP.Trunks[0].Inbound = &config.TrunkInbound{Username: "agent-pbx", Password: "s3cret-Pw"}
	})
	return env
}

// TestOutboundTLSDigestCall: the PBX places the call over TLS to ponte's
// tls: listener with SDES-SRTP, and must answer ponte's digest challenge: a
// wrong password gets 403 and nothing reaches Meta; the right one connects
// with tones both ways and DTMF both ways.
func TestOutboundTLSDigestCall(t *testing.T) {
	w := startStallWatch(t)
	env := secureOutboundEnv(t)
	outboundUser(env, bicUserTLS, wasim.UserOptions{})
	target := env.SIPTarget("+"+bicUserTLS, "tls")

	// Wrong password: 403, and Meta hears nothing.
	_, err := env.PBX.Dial(ctxT(t, 10*time.Second), pbx.DialOptions{Target: target, Transport: "tls", SRTP: true,
		Auth: &pbx.Auth{Username: "agent-pbx", Password: "wrong"}})
	var de *pbx.DialError
	if !errors.As(err, &de) || de.Code != 403 {
		t.Fatalf("wrong password: %v, want 403", err)
	}
	if n := len(env.Meta.Requests()); n != 0 {
		t.Errorf("%d Graph requests after a failed authentication, want none", n)
	}

	pc, callee := dialUser(t, env, bicUserTLS, pbx.DialOptions{Target: target, Transport: "tls", SRTP: true,
		Auth: &pbx.Auth{Username: "agent-pbx", Password: "s3cret-Pw"}})
	if inv := pc.Invite(); inv == nil || !strings.EqualFold(inv.Transport(), "TLS") || inv.GetHeader("Authorization") == nil {
		t.Fatalf("the answered INVITE did not go over TLS with credentials: %v", inv)
	}
	listen(t, w, time.Now().Add(700*time.Millisecond), 4*time.Second, func(from, to time.Time, skip []audio.Span) string {
		var msg []string
		heard := callee.Heard().Report(from, to, skip...)
		if heard.ToneRatio < 0.98 || heard.MaxGap > 40*time.Millisecond {
			msg = append(msg, fmt.Sprintf("user heard the agent in %.1f%% of %d windows, longest gap %v", heard.ToneRatio*100, heard.Windows, heard.MaxGap))
		}
		got := pc.Received().Report(from, to, skip...)
		if got.ToneRatio < 0.98 || got.MaxGap > 40*time.Millisecond {
			msg = append(msg, fmt.Sprintf("agent heard the user in %.1f%% of %d windows, longest gap %v", got.ToneRatio*100, got.Windows, got.MaxGap))
		}
		return strings.Join(msg, "; ")
	})
	if on, suite, in, failed := pc.SRTP(); !on || in < 150 || failed != 0 {
		t.Errorf("agent side SRTP on=%v suite=%s decrypted=%d failed=%d", on, suite, in, failed)
	}
	pc.SendDTMF("42", 100*time.Millisecond, 100*time.Millisecond)
	callee.SendDTMF("7", 100*time.Millisecond, 0)
	if !waitFor(5*time.Second, func() bool {
		return callerDigitString(callee.Digits()) == "42" && digitString(pc.Digits()) == "7"
	}) {
		t.Errorf("digits over TLS/SRTP: user got %q (want 42), agent got %q (want 7)", callerDigitString(callee.Digits()), digitString(pc.Digits()))
	}
	ctx := ctxT(t, 10*time.Second)
	_ = pc.Hangup(ctx)
	<-callee.Ended()
}

// TestOutboundNoSDP: an INVITE without SDP gets ponte's offer in the 200
// and its answer from the ACK (RFC 3261 §13.2.1); audio flows both ways.
func TestOutboundNoSDP(t *testing.T) {
	w := startStallWatch(t)
	env := startEnv(t, scenario.Options{Codecs: []string{"PCMA", "PCMU"}})
	outboundUser(env, bicUser, wasim.UserOptions{})
	pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{NoSDP: true})
	listen(t, w, time.Now().Add(time.Second), time.Second, bothWays(callee, pc, atLeast(0.95), atLeast(0.95)))
	_ = pc.Hangup(ctxT(t, 5*time.Second))
	<-callee.Ended()
}

// TestOutboundEarlyMedia: the user's side sends media before ACCEPTED.
// By default that is a 183 with SDP (the agent hears it) and the 200 waits
// for ACCEPTED; with outbound.early_media_answers the media is the answer.
func TestOutboundEarlyMedia(t *testing.T) {
	for _, answers := range []bool{false, true} {
		t.Run(fmt.Sprintf("answers=%v", answers), func(t *testing.T) {
			env := startEnv(t, scenario.Options{Configure: func(c *config.Config) { c.Outbound.EarlyMediaAnswers = answers }})
			outboundUser(env, bicUser, wasim.UserOptions{EarlyMedia: true, AnswerAfter: 3 * time.Second})
			start := time.Now()
			pc, callee := dialUser(t, env, bicUser, pbx.DialOptions{ExpectEarlyHz: 440})
			answeredAfter := pc.AnsweredAt().Sub(start)
			r := func() string {
				for _, rec := range env.Server.Gateway.Records() {
					return rec.AnswerSignal
				}
				return ""
			}
			var had183 bool
			for _, p := range pc.Provisionals() {
				had183 = had183 || (p.Code == 183 && p.HadSDP)
			}
			if answers {
				if answeredAfter > 2500*time.Millisecond {
					t.Errorf("200 after %v: with early_media_answers the user's media is the answer", answeredAfter)
				}
			} else {
				if !had183 || answeredAfter < 2500*time.Millisecond {
					t.Errorf("183 with SDP %v, 200 after %v; want the 183 and the 200 only on ACCEPTED (~3 s)", had183, answeredAfter)
				}
				if e := pc.EarlyReceived(); e == nil || e.Report(start, start.Add(answeredAfter)).ToneRatio < 0.3 {
					t.Errorf("the agent did not hear the user's early media")
				}
			}
			_ = pc.Hangup(ctxT(t, 5*time.Second))
			<-callee.Ended()
			waitRecords(t, env, 1)
			want := "accepted"
			if answers {
				want = "media"
			}
			if got := r(); got != want {
				t.Errorf("record answer_signal %q, want %q", got, want)
			}
		})
	}
}
