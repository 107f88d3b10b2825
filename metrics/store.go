package metrics

import "github.com/prometheus/client_golang/prometheus"

// The call-record spool (store.Spool, issue 8 item 5): records wait in
// memory while the store is unavailable and are written when it answers
// again. Both series always exist, at 0 until WatchStoreSpool, so the
// alerts' increase() sees the first drop.
var (
	spoolRecordsDesc = prometheus.NewDesc("ponte_store_spool_records",
		"Call records waiting in memory for the store (it failed or is being caught up); written in order when it answers.", nil, nil)
	spoolDroppedDesc = prometheus.NewDesc("ponte_store_spool_dropped_total",
		"Call records given up: the spool was full, the store refused a spooled record, or the store was still down at stop.", nil, nil)
)

// spoolNames are spoolCollector's families.
var spoolNames = []string{"ponte_store_spool_records", "ponte_store_spool_dropped_total"}

// WatchStoreSpool makes ponte_store_spool_records and
// ponte_store_spool_dropped_total read f (store.Spool.Stats) at each scrape.
func (m *Metrics) WatchStoreSpool(f func() (queued int, dropped uint64)) { m.spool.Store(&f) }

type spoolCollector struct{ m *Metrics }

func (c spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spoolRecordsDesc
	ch <- spoolDroppedDesc
}

func (c spoolCollector) Collect(ch chan<- prometheus.Metric) {
	var queued int
	var dropped uint64
	if f := c.m.spool.Load(); f != nil {
		queued, dropped = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(spoolRecordsDesc, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(spoolDroppedDesc, prometheus.CounterValue, float64(dropped))
}
