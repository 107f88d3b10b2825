package metrics

import "testing"

// The spool's series exist at 0 before the store is wired (so increase()
// sees the first drop) and then read the spool at each scrape.
func TestStoreSpool(t *testing.T) {
	m := newTest()
	s := series(t, m)
	for _, k := range []string{"ponte_store_spool_records{}", "ponte_store_spool_dropped_total{}"} {
		if v, ok := s[k]; !ok || v != 0 {
			t.Errorf("before WatchStoreSpool %s = %v (present %v), want 0", k, v, ok)
		}
	}
	queued, dropped := 0, uint64(0)
	m.WatchStoreSpool(func() (int, uint64) { return queued, dropped })
	for _, tc := range []struct {
		queued  int
		dropped uint64
	}{{12, 0}, {10000, 3}, {0, 3}} {
		queued, dropped = tc.queued, tc.dropped
		s = series(t, m)
		if got := s["ponte_store_spool_records{}"]; got != float64(tc.queued) {
			t.Errorf("records = %v, want %d", got, tc.queued)
		}
		if got := s["ponte_store_spool_dropped_total{}"]; got != float64(tc.dropped) {
			t.Errorf("dropped = %v, want %d", got, tc.dropped)
		}
	}
}
