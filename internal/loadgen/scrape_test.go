package loadgen

import (
	"strings"
	"testing"
)

const exposition = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 57
ponte_rtp_packets_total{direction="in",leg="sip"} 1500
ponte_rtp_packets_total{direction="in",leg="whatsapp"} 1498
ponte_rtp_packets_total{direction="out",leg="whatsapp"} 1502
ponte_rtp_lost_packets_total{leg="whatsapp"} 2
ponte_calls_active{direction="inbound"} 0
ponte_calls_active{direction="outbound"} 1
broken_line_without_value
bad_value{a="b"} x
`

func TestParseMetrics(t *testing.T) {
	m := parseMetrics(strings.NewReader(exposition))
	cases := []struct {
		name  string
		want  []string
		total float64
		found bool
	}{
		{"go_goroutines", nil, 57, true},
		{"ponte_rtp_packets_total", []string{`leg="whatsapp"`, `direction="in"`}, 1498, true},
		{"ponte_rtp_packets_total", []string{`leg="whatsapp"`}, 3000, true},
		{"ponte_rtp_lost_packets_total", []string{`leg="sip"`}, 0, false},
		{"ponte_calls_active", nil, 1, true},
		{"bad_value", nil, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name+strings.Join(c.want, ","), func(t *testing.T) {
			total, found := m.sum(c.name, c.want...)
			if total != c.total || found != c.found {
				t.Fatalf("got %v %v, want %v %v", total, found, c.total, c.found)
			}
		})
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(exposition)
	f.Add("x{ 1\n# c\n y 2e3")
	f.Fuzz(func(t *testing.T, s string) {
		for _, x := range parseMetrics(strings.NewReader(s)) {
			if x.name == "" && x.labels == "" {
				t.Fatalf("%q: sample with neither name nor labels", s)
			}
		}
	})
}
