package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/metrics"
)

func TestOutcomeClass(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		rec  Record
		want string
		code int
	}{
		{Record{Outcome: "completed", EndedBy: "caller", Accepted: now, PBXAnswered: now}, metrics.OutcomeAnswered, 200},
		{Record{Outcome: "shutdown", EndedBy: "ponte", Accepted: now, PBXAnswered: now}, metrics.OutcomeAnswered, 200},
		{Record{Outcome: "media_failed", Accepted: now, PBXAnswered: now}, metrics.OutcomeAnswered, 200},
		{Record{Outcome: "completed", EndedBy: "caller"}, metrics.OutcomeAbandoned, -1}, // hung up while ringing
		{Record{Outcome: "target_486", EndedBy: "pbx"}, metrics.OutcomeMissed, 486},
		{Record{Outcome: "target_480", EndedBy: "pbx"}, metrics.OutcomeMissed, 480},
		{Record{Outcome: "no_answer", EndedBy: "ponte"}, metrics.OutcomeMissed, -1},
		{Record{Outcome: "target_603", EndedBy: "pbx"}, metrics.OutcomeRejected, 603},
		{Record{Outcome: "no_route", EndedBy: "ponte"}, metrics.OutcomeRejected, -1},
		{Record{Outcome: "target_503", EndedBy: "pbx"}, metrics.OutcomeFailed, 503},
		{Record{Outcome: "target_unreachable", EndedBy: "ponte"}, metrics.OutcomeFailed, 0},
		{Record{Outcome: "trunk_down"}, metrics.OutcomeFailed, -1},
		{Record{Outcome: "meta_failed", EndedBy: "meta"}, metrics.OutcomeFailed, -1},
		{Record{Outcome: "shutdown", EndedBy: "ponte"}, metrics.OutcomeFailed, -1}, // cut while ringing
	} {
		if got := outcomeClass(c.rec); got != c.want {
			t.Errorf("%s (accepted %v): class %q, want %q", c.rec.Outcome, !c.rec.Accepted.IsZero(), got, c.want)
		}
	}
}

type fixedLoad float64

func (l fixedLoad) Load() float64 { return float64(l) }

// Admit applies drain first, then max_calls, then max_cpu.
func TestAdmit(t *testing.T) {
	for _, c := range []struct {
		name     string
		maxCalls int
		maxCPU   float64
		load     fixedLoad
		running  int
		drain    bool
		want     string // "" admitted
	}{
		{"no limits", 0, 0, 0.99, 50, false, ""},
		{"under max_calls", 2, 0, 0, 1, false, ""},
		{"at max_calls", 2, 0, 0, 2, false, metrics.RefusedMaxCalls},
		{"under max_cpu", 0, 0.9, 0.89, 0, false, ""},
		{"at max_cpu", 0, 0.9, 0.9, 0, false, metrics.RefusedCPU},
		{"both over: calls first", 1, 0.5, 0.9, 1, false, metrics.RefusedMaxCalls},
		{"draining wins", 0, 0, 0, 0, true, metrics.RefusedDraining},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{Admission: config.Admission{MaxCalls: c.maxCalls, MaxCPU: c.maxCPU}}
			g := New(Deps{Config: cfg, CPU: c.load, Logger: slog.New(slog.DiscardHandler)})
			defer g.Close(context.Background())
			g.mu.Lock()
			for i := range c.running {
				g.calls[fmt.Sprint("wacid.", i)] = &call{}
			}
			g.mu.Unlock()
			if c.drain {
				g.Drain()
			}
			err := g.Admit()
			g.mu.Lock()
			clear(g.calls) // fake calls: nothing for Close to end
			g.mu.Unlock()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || RefusalReason(err) != c.want):
				t.Errorf("Admit = %v, want a %s refusal", err, c.want)
			}
		})
	}
}

func TestRefusalReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{ErrDraining, metrics.RefusedDraining},
		{&OverloadError{Limit: metrics.RefusedMaxCalls, Detail: "1 calls, max 1"}, metrics.RefusedMaxCalls},
		{&OverloadError{Limit: metrics.RefusedCPU, Detail: "load 0.95, max 0.90"}, metrics.RefusedCPU},
	} {
		if got := RefusalReason(c.err); got != c.want {
			t.Errorf("%v: %q, want %q", c.err, got, c.want)
		}
		if c.want != metrics.RefusedDraining && !errors.Is(c.err, ErrOverloaded) {
			t.Errorf("%v is not ErrOverloaded", c.err)
		}
	}
}
