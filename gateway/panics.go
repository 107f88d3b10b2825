package gateway

import "sync/atomic"

// mediaPanics counts media goroutine panics recovered by the bridges of
// every gateway in the process (Bridge.goSafe): each ended one call.
var mediaPanics atomic.Uint64

// MediaPanics is how many media goroutine panics were recovered, each
// ending its call only (ponte_panics_total{component="media"}).
func MediaPanics() uint64 { return mediaPanics.Load() }
