package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

// yamlBlocks returns the ```yaml fenced blocks of a Markdown file.
func yamlBlocks(md string) []string {
	var out []string
	for {
		i := strings.Index(md, "```yaml\n")
		if i < 0 {
			return out
		}
		md = md[i+len("```yaml\n"):]
		j := strings.Index(md, "```")
		if j < 0 {
			return out
		}
		out = append(out, md[:j])
		md = md[j:]
	}
}

// TestRoutingDoc keeps docs/routing.md honest: its complete example loads
// as check-config loads it, and the accept-window error it quotes is the one
// the code prints.
func TestRoutingDoc(t *testing.T) {
	b, err := os.ReadFile("../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	var full []string
	for _, y := range yamlBlocks(md) {
		if strings.Contains(y, "node_id:") {
			full = append(full, y)
		}
	}
	if len(full) != 1 {
		t.Fatalf("want one complete example in docs/routing.md, found %d", len(full))
	}
	envs := env(map[string]string{"WA_ACCESS_TOKEN": "t", "WA_APP_SECRET": "s", "WA_VERIFY_TOKEN": "v", "ROUTE_HOOK_SECRET": "h"})
	c, err := Parse("docs/routing.md", []byte(full[0]), envs)
	if err != nil {
		t.Fatalf("the documented example does not pass check-config:\n%v", err)
	}
	s, q := c.Routes["support"], c.Routes["sales"]
	if s == nil || q == nil || s.Hours == nil || s.Closed.Action != ClosedTarget || s.StickyAgent == nil || s.Hook == nil ||
		s.DefaultDepartment == nil || len(s.Hours.Holidays) != 4 || q.Mode != ModeAnswerThenHunt || q.Queue.MaxWait.D() != 5*time.Minute {
		t.Fatalf("the example lost part of the schema it documents: %+v %+v", s, q)
	}

	_, err = parseRoute(t, `  support:
    targets: [ { uri: "sip:a@pbx.example.com", trunk: pbx, ring_timeout: 25s } ]
    default_department: { uri: "sip:b@pbx.example.com", trunk: pbx, ring_timeout: 30s }
`)
	if err == nil {
		t.Fatal("25s + 30s accepted")
	}
	msg := err.(*Error).Problems[0]
	if !strings.Contains(md, "    "+msg+"\n") {
		t.Fatalf("docs/routing.md does not quote the current message:\n    %s", msg)
	}
}

// FuzzParseRoutes runs the whole loader on mutations of the documented
// example: route validation must never panic, and a config it accepts must
// satisfy the accept-window rule it promises.
func FuzzParseRoutes(f *testing.F) {
	b, err := os.ReadFile("../docs/routing.md")
	if err != nil {
		f.Fatal(err)
	}
	for _, y := range yamlBlocks(string(b)) {
		f.Add([]byte(y))
	}
	f.Add([]byte(routeYAML("  support:\n    mode: answer_then_hunt\n    targets: [ { uri: \"sip:a@b\", trunk: pbx } ]\n    hours: { timezone: UTC, holidays: [ ~, {}, 12-25 ], weekly: { daily: ~ } }\n")))
	envs := env(map[string]string{"WA_ACCESS_TOKEN": "t", "WA_APP_SECRET": "s", "WA_VERIFY_TOKEN": "v", "ROUTE_HOOK_SECRET": "h"})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse("f.yaml", in, envs)
		if err != nil {
			return
		}
		for name, r := range c.Routes {
			if r.Mode != ModeRingThenAnswer {
				continue
			}
			// Recomputed here rather than by calling fitProblem.
			n, sum, budget := len(r.Targets), time.Duration(0), c.WhatsApp.AcceptDeadline.D()-AcceptMargin
			for _, tg := range r.Targets {
				sum += tg.RingTimeout.D()
			}
			if d := r.DefaultDepartment; d != nil {
				n, sum = n+1, sum+d.RingTimeout.D()
			}
			if s := r.StickyAgent; s != nil {
				n, sum = n+1, sum+s.RingTimeout.D()
			}
			if r.Hook != nil {
				budget -= r.Hook.Timeout.D()
			}
			if n > 1 && sum > budget {
				t.Fatalf("route %s accepted with %d attempts ringing %s in %s", name, n, sum, budget)
			}
		}
	})
}
