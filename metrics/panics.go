package metrics

import "github.com/prometheus/client_golang/prometheus"

// Panics recovered by ponte (issue 8: nothing panics the process). A panic
// ends one call (media), one request (sip) or one webhook event (webhook),
// never the gateway; each is logged with its stack. The series always exist,
// at 0 until WatchPanics, so the alert's increase() sees the first one.
var panicsDesc = prometheus.NewDesc("ponte_panics_total",
	"Panics recovered, by component: media (one call ended), sip (one request answered 500), webhook (one event dropped). Each is a defect: the log has its stack.",
	[]string{"component"}, nil)

// panicComponents are the values of ponte_panics_total's component label.
var panicComponents = []string{"media", "sip", "webhook"}

// panicNames are panicCollector's families.
var panicNames = []string{"ponte_panics_total"}

// WatchPanics makes ponte_panics_total read f (counts by component) at each
// scrape.
func (m *Metrics) WatchPanics(f func() map[string]uint64) { m.panics.Store(&f) }

type panicCollector struct{ m *Metrics }

func (c panicCollector) Describe(ch chan<- *prometheus.Desc) { ch <- panicsDesc }

func (c panicCollector) Collect(ch chan<- prometheus.Metric) {
	var n map[string]uint64
	if f := c.m.panics.Load(); f != nil {
		n = (*f)()
	}
	for _, comp := range panicComponents {
		ch <- prometheus.MustNewConstMetric(panicsDesc, prometheus.CounterValue, float64(n[comp]), comp)
	}
}
