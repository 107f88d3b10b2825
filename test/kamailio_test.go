package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/scenario"
	"github.com/ponte-gw/ponte/sim/wasim"
)

// kamailioCfg is a minimal record-routing proxy in front of the PBX (sipp):
// it logs every request and reply it handles (xlog to stderr) so the test
// can see what traversed it. Initial INVITEs are record-routed and sent on
// to the PBX; in-dialog requests follow their Route (loose_route, RFC 3261
// §16.12). It listens on UDP loopback only.
const kamailioCfg = `#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:127.0.0.1:%[1]d
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
request_route {
	xlog("L_NOTICE", "PONTE-LOG req $rm src=$si:$sp ruri=$ru route=[$hdr(Route)] ci=$ci\n");
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (has_totag()) {
		if (loose_route()) { t_relay(); exit; }
		if (is_method("ACK") && t_check_trans()) { t_relay(); exit; }
		xlog("L_NOTICE", "PONTE-LOG stray $rm src=$si:$sp ci=$ci\n");
		sl_send_reply("404", "Not Here");
		exit;
	}
	if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
	if (is_method("INVITE")) { record_route(); $du = "sip:127.0.0.1:%[2]d"; }
	if (!t_relay()) { sl_reply_error(); }
}
onreply_route {
	xlog("L_NOTICE", "PONTE-LOG rpl $rs $rm src=$si:$sp ci=$ci\n");
}
`

// sippRouteUAS answers through the proxy and copies its Record-Route
// (RFC 3261 §12.1.1); rrs="true" makes sipp keep the route set for [routes]
// and the INVITE's Contact for [next_url]. The tail (from the ACK on) is
// either the caller's BYE or the PBX's own BYE, sent with the route set.
const sippRouteUAS = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="PBX behind a record-routing proxy">
  <recv request="INVITE" crlf="true" rrs="true"/>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:pbx@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:pbx@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
%s
</scenario>
`

// The caller hangs up: ponte's BYE arrives through the proxy.
const sippTailCallerBye = `  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>`

// The PBX hangs up: a BYE to ponte's Contact with Route set to the proxy.
const sippTailPBXBye = `  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="rfrom"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="rto"/>
    </action>
  </recv>
  <pause milliseconds="1500"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From:[$rto]
      To:[$rfrom]
      [last_Call-ID:]
      CSeq: 1 BYE
      Contact: <sip:pbx@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>`

// kamLine is one PONTE-LOG line of kamailio's log.
var kamLine = regexp.MustCompile(`PONTE-LOG (req|rpl|stray) (\S+)(?: (\S+))? src=(\S+)(?: ruri=(\S+) route=\[([^\]]*)\])? ci=(\S+)`)

type kamEvent struct {
	kind, method, code, src, ruri, route, callID string
}

func (e kamEvent) String() string {
	if e.kind == "rpl" {
		return fmt.Sprintf("reply %s %s from %s", e.code, e.method, e.src)
	}
	return fmt.Sprintf("%s %s from %s (Route %q)", e.kind, e.method, e.src, e.route)
}

func kamEvents(log, callID string) []kamEvent {
	var evs []kamEvent
	for _, m := range kamLine.FindAllStringSubmatch(log, -1) {
		e := kamEvent{kind: m[1], src: m[4], ruri: m[5], route: m[6], callID: m[7]}
		if e.kind == "rpl" {
			e.code, e.method = m[2], m[3]
		} else {
			e.method = m[2]
		}
		if e.callID == callID {
			evs = append(evs, e)
		}
	}
	return evs
}

// startKamailio runs the record-routing proxy config toward pbxPort
// (runKamailio: checked, foreground, own process group, stopped by PID).
func startKamailio(t *testing.T, dir string, port, pbxPort int) *peer {
	t.Helper()
	return runKamailio(t, dir, fmt.Sprintf(kamailioCfg, port, pbxPort), port)
}

// TestKamailioRouteSet is the route-set acceptance test (issue 3, Scope 2):
// the trunk points at kamailio, which record-routes the INVITE to the PBX
// (sipp). In one call the caller hangs up, in the other the PBX does; in
// both, ponte's ACK and BYE and the PBX's BYE go through kamailio (ponte
// honours the route set, RFC 3261 §12.2.1.1), as do the 200s to the BYEs.
func TestKamailioRouteSet(t *testing.T) {
	sippBin := needBin(t, "sipp", "sip-tester")
	needBin(t, "kamailio", "kamailio")
	for _, tc := range []struct {
		name   string
		tail   string
		pbxBye bool
	}{
		{"caller hangs up", sippTailCallerBye, false},
		{"PBX hangs up", sippTailPBXBye, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			dir := t.TempDir()
			// kamailio, sipp's SIP port, sipp's RTP echo port (+2 for video).
			base := freePorts(t, 6)
			kamPort, sippPort, mediaPort := base, base+1, base+2
			scen := filepath.Join(dir, "uas.xml")
			if err := os.WriteFile(scen, []byte(fmt.Sprintf(sippRouteUAS, tc.tail)), 0o644); err != nil {
				t.Fatal(err)
			}
			sipp := startPeer(t, "sipp", dir, sippBin,
				"-sf", scen, "-i", "127.0.0.1", "-p", fmt.Sprint(sippPort), "-mp", fmt.Sprint(mediaPort), "-rtp_echo",
				"-m", "1", "-nostdin", "-timeout", "60s",
				"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"))
			sipp.waitListening(t, sippPort, 10*time.Second)
			kam := startKamailio(t, dir, kamPort, sippPort)

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			env, err := scenario.Start(ctx, scenario.Options{
				PBXAddr: fmt.Sprintf("127.0.0.1:%d", kamPort), Codecs: []string{"PCMU"}, TargetUser: "agent", Logger: testLogger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer env.Close()
			caller, err := env.Meta.Call(ctx, wasim.CallOptions{ToneHz: 440, ToneDBFS: toneDBFS, ExpectHz: 440, ExpectDBFS: toneDBFS})
			if err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, setupTimeout)
			defer wcancel()
			if err := caller.WaitAccepted(wctx); err != nil {
				t.Fatalf("call not accepted: %v", err)
			}
			if tc.pbxBye {
				select {
				case <-caller.Ended():
				case <-time.After(15 * time.Second):
					t.Fatal("the PBX's BYE did not end the call")
				}
			} else {
				time.Sleep(time.Second)
				if err := caller.Hangup(ctx); err != nil {
					t.Fatalf("hangup: %v", err)
				}
			}
			exited, werr := sipp.wait(15 * time.Second)
			if !exited {
				t.Fatal("sipp still running 15 s after the hang-up: its scenario did not complete")
			}
			if werr != nil {
				t.Fatalf("sipp exited with %v (0 means its one call completed the scenario)", werr)
			}
			rec := finishedRecord(ctx, t, env)
			want := map[bool]string{false: "caller", true: "pbx"}[tc.pbxBye]
			if rec.EndedBy != want {
				t.Errorf("record: ended_by=%q, want %s", rec.EndedBy, want)
			}

			ponte := env.Server.UA.ListenAddr("udp").String()
			pbx := fmt.Sprintf("127.0.0.1:%d", sippPort)
			proxy := fmt.Sprintf("127.0.0.1:%d", kamPort)
			// ponte's 200 to the PBX's BYE is logged once kamailio relays it.
			var evs []kamEvent
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if evs = kamEvents(kam.out.String(), rec.SIPCallID); hasEvent(evs, "rpl", "BYE", "200", "") {
					break
				}
			}
			var got []string
			for _, e := range evs {
				got = append(got, e.String())
			}
			t.Logf("kamailio saw, for Call-ID %s (ponte %s, PBX %s):\n  %s", rec.SIPCallID, ponte, pbx, strings.Join(got, "\n  "))
			// Who sends the BYE and who answers it.
			byer, byee := ponte, pbx
			if tc.pbxBye {
				byer, byee = pbx, ponte
			}
			checks := []kamCheck{
				{"req", "INVITE", "", ponte, false},
				{"rpl", "INVITE", "200", pbx, false},
				{"req", "ACK", "", ponte, true},
				{"req", "BYE", "", byer, true},
				{"rpl", "BYE", "200", byee, false},
			}
			for _, c := range checks {
				e, ok := findEvent(evs, c.kind, c.method, c.code, c.src)
				if !ok {
					t.Errorf("kamailio did not see %s %s %s from %s", c.kind, c.method, c.code, c.src)
					continue
				}
				// An in-dialog request sent through the proxy carries the
				// route set: kamailio's own Record-Route URI.
				if c.route && !strings.Contains(e.route, proxy) {
					t.Errorf("%s: Route %q lacks the proxy %s", e, e.route, proxy)
				}
			}
			for _, e := range evs {
				if e.kind == "stray" {
					t.Errorf("kamailio got an in-dialog request without a route it could follow: %s", e)
				}
			}
			if _, ok := findEvent(evs, "req", "BYE", "", byee); ok {
				t.Errorf("a BYE came from the side that did not hang up")
			}
		})
	}
}

// kamCheck is one message kamailio must have relayed.
type kamCheck struct {
	kind, method, code, src string
	route                   bool // an in-dialog request: must carry the proxy's Route
}

func findEvent(evs []kamEvent, kind, method, code, src string) (kamEvent, bool) {
	for _, e := range evs {
		if e.kind == kind && e.method == method && (code == "" || e.code == code) && (src == "" || e.src == src) {
			return e, true
		}
	}
	return kamEvent{}, false
}

func hasEvent(evs []kamEvent, kind, method, code, src string) bool {
	_, ok := findEvent(evs, kind, method, code, src)
	return ok
}
