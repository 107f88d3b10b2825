package gateway

import "sync/atomic"

// MediaFault is a test seam for issue 8 ("a test injects a panic in one
// call's goroutine and the gateway and other calls survive"). When set,
// every call's playout goroutine calls it once per 20 ms frame with an
// ordinal telling the calls apart (the order their playout started in,
// process-wide, from 1) and the number of frames it has seen for that call.
// Whatever it does runs on that call's media goroutine: a panic there is a
// panic in the call's media, recovered by Bridge.goSafe.
type MediaFault func(call, frame uint64)

var (
	mediaFault    atomic.Pointer[MediaFault]
	bridgeOrdinal atomic.Uint64
)

// SetMediaFault installs f (nil removes it) for every call, running and
// new. Production code never sets it.
func SetMediaFault(f MediaFault) {
	if f == nil {
		mediaFault.Store(nil)
		return
	}
	mediaFault.Store(&f)
}

// faultTicker is called once when a call's playout starts; the function it
// returns once per frame. Without a fault that is one atomic load: no lock,
// no allocation on the media path.
func faultTicker() func() {
	id := bridgeOrdinal.Add(1)
	var frame uint64
	return func() {
		if f := mediaFault.Load(); f != nil {
			frame++
			(*f)(id, frame)
		}
	}
}
