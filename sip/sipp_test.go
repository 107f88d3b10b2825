package sip_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sip"
)

// TestSippInterop dials sipp's built-in UAS with RTP echo: the 1 kHz tone we
// send must come back, then our BYE ends sipp's single call (exit 0).
func TestSippInterop(t *testing.T) {
	bin, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("sipp not found: `make test` installs Debian's sip-tester (scripts/deps.sh test): ", err)
	}
	sipPort := freeUDPPort(t)
	mediaPort := freeUDPPort(t)
	for mediaPort == sipPort || mediaPort == sipPort+1 {
		mediaPort = freeUDPPort(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1",
		"-p", fmt.Sprint(sipPort), "-mp", fmt.Sprint(mediaPort), "-m", "1", "-nostdin", "-timeout", "30s")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		exited <- err
		close(waited)
	}()
	defer func() {
		select {
		case <-waited:
		default:
			cmd.Process.Kill()
			<-waited
		}
	}()
	time.Sleep(300 * time.Millisecond) // let sipp bind

	u := newUA(t)
	media := newRTP(t, u)
	trunk := &sip.Trunk{Name: "sipp", Address: fmt.Sprintf("127.0.0.1:%d", sipPort), Transport: "udp", Codecs: []string{"PCMU"}}
	d, err := u.Dial(ctx, sip.DialRequest{Trunk: trunk, Target: "service", FromUser: "+5511999990000", Media: media})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	ans, err := d.WaitAnswer(wctx)
	if err != nil {
		t.Fatalf("WaitAnswer: %v\nsipp: %s", err, out.String())
	}
	if d.AckedAt().IsZero() {
		t.Fatal("ACK not sent before WaitAnswer returned")
	}
	if c, ok := ans.Codec("PCMU"); !ok || c.PT != 0 || ans.Addr.Port() != uint16(mediaPort) {
		t.Fatalf("unexpected answer %+v", ans)
	}

	recv := make(chan []int16, 1)
	go func() {
		pcm, _ := receiveAudio(media, 8000, 5*time.Second)
		recv <- pcm
	}()
	if err := sendTone(ctx, media, 1000, 60, 0x1234); err != nil {
		t.Fatal(err)
	}
	pcm := <-recv
	assertTone(t, pcm, 1000)

	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	if err := d.Bye(bctx, sip.Reason{Protocol: "Q.850", Cause: 16, Text: "Normal call clearing"}); err != nil {
		t.Fatalf("Bye: %v", err)
	}
	select {
	case <-d.Done():
	case <-time.After(time.Second):
		t.Fatal("dialog not done after BYE")
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sipp exited with %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("sipp did not exit after BYE\n%s", out.String())
	}
}
