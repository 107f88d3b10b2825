package gateway

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// The fault seam costs the media path one atomic load per frame and no
// allocation, with or without a fault set.
func TestFaultTickerAllocs(t *testing.T) {
	tick := faultTicker()
	if n := testing.AllocsPerRun(1000, tick); n != 0 {
		t.Errorf("no fault: %v allocations per frame", n)
	}
	var frames atomic.Uint64
	SetMediaFault(func(_, frame uint64) { frames.Store(frame) })
	defer SetMediaFault(nil)
	if n := testing.AllocsPerRun(1000, tick); n != 0 {
		t.Errorf("with a fault: %v allocations per frame", n)
	}
	if frames.Load() != 1001 { // AllocsPerRun runs once more to warm up
		t.Errorf("the fault saw %d frames, want 1001", frames.Load())
	}
}

// A panic injected through the seam happens on the call's playout
// goroutine: the bridge recovers it and ends only that call with
// ErrMediaPanic; a bridge the fault spares runs on.
func TestMediaFaultPanicsOneBridge(t *testing.T) {
	newB := func(failed chan error) *Bridge {
		return newBridge(slog.New(slog.DiscardHandler), mediaParams{Complexity: 5, Bitrate: 24000},
			&discardLeg{}, &discardLeg{}, func(err error) { failed <- err })
	}
	var victim atomic.Uint64
	SetMediaFault(func(call, frame uint64) {
		// The first call to reach frame 3 is the victim.
		if frame == 3 && victim.CompareAndSwap(0, call) || victim.Load() == call && frame > 3 {
			panic("injected media fault")
		}
	})
	defer SetMediaFault(nil)
	failA, failB := make(chan error, 1), make(chan error, 1)
	ctx, cancel := testContext()
	defer cancel()
	a := newB(failA)
	a.Start(ctx)
	var err error
	select {
	case err = <-failA:
	case <-time.After(5 * time.Second):
		t.Fatal("the injected panic was not reported")
	}
	if !errors.Is(err, ErrMediaPanic) {
		t.Fatalf("fail got %v, want ErrMediaPanic", err)
	}
	// A second bridge is another call: the fault spares it.
	b := newB(failB)
	b.Start(ctx)
	select {
	case err := <-failB:
		t.Fatalf("the spared call failed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	a.Stop()
	b.Stop()
	a.Wait()
	b.Wait()
}
