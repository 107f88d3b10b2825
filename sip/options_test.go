package sip_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sip"
)

// TestPingLiveAndDead: OPTIONS to a live UA gets its 200; to an address that
// swallows everything, Ping fails by the context's deadline.
func TestPingLiveAndDead(t *testing.T) {
	a, b := newUA(t), newUA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	code, err := a.Ping(ctx, &sip.Trunk{Name: "b", Address: b.ListenAddr("udp").String(), Transport: "udp"})
	if err != nil || code != 200 {
		t.Fatalf("ping a live UA: %d, %v", code, err)
	}
	dead, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	dctx, dcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer dcancel()
	if code, err := a.Ping(dctx, &sip.Trunk{Name: "dead", Address: dead.LocalAddr().String(), Transport: "udp"}); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping a dead address: %d, %v", code, err)
	}
}
