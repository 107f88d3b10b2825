package loadgen

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/sim/pbx"
)

// The matcher pairs a PBX call with its WACID whichever side arrives first.
func TestMatcherOrder(t *testing.T) {
	m := newMatcher()
	a, b := &pbx.Call{}, &pbx.Call{}
	m.slot("wacid.A") <- a // the INVITE arrives before the load call waits
	done := make(chan *pbx.Call)
	go func() {
		c, _ := m.wait(context.Background(), "wacid.B") // waits before the INVITE
		done <- c
	}()
	time.Sleep(10 * time.Millisecond)
	m.slot("wacid.B") <- b
	if got, err := m.wait(context.Background(), "wacid.A"); err != nil || got != a {
		t.Fatalf("A: got %p, %v; want %p", got, err, a)
	}
	if got := <-done; got != b {
		t.Fatalf("B: got %p, want %p", got, b)
	}
	m.mu.Lock()
	n := len(m.slots)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d slots left after both waits", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := m.wait(ctx, "wacid.C"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no call: err = %v", err)
	}
}
