package metrics

import (
	"strings"
	"testing"
)

// selector is one metric name in a PromQL expression with the label names
// its matchers use.
type selector struct {
	name   string
	labels []string
}

// promqlKeywords are identifiers that are not metric names.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// scanPromQL finds the metric selectors of a PromQL expression and the label
// names of its grouping clauses (by, without, on, ignoring, group_left,
// group_right). It is a scanner, not a parser: enough to tell a metric name
// from a function, keyword, label, string, number or duration, which is
// what checking the dashboard and alerts against the registry needs.
func scanPromQL(expr string) (sels []selector, grouping []string) {
	s := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(expr)
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	skipString := func(i int) int { // s[i] is the opening quote; returns the index after the closing one
		q := s[i]
		for i++; i < len(s); i++ {
			if s[i] == '\\' && q != '`' {
				i++
				continue
			}
			if s[i] == q {
				return i + 1
			}
		}
		return i
	}
	nextNonSpace := func(i int) int {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
		return i
	}
	// identList reads "( a, b, c )" at s[i] == '('.
	identList := func(i int) ([]string, int) {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return nil, len(s)
		}
		var out []string
		for _, f := range strings.Split(s[i+1:i+end], ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
		return out, i + end + 1
	}
	// matchers reads "{a="x", b=~"y"}" at s[i] == '{' and returns the label names.
	matchers := func(i int) ([]string, int) {
		var names []string
		want := true // expecting a label name
		for i++; i < len(s); {
			c := s[i]
			switch {
			case c == '}':
				return names, i + 1
			case c == '"' || c == '\'' || c == '`':
				i = skipString(i)
			case c == ',':
				want = true
				i++
			case want && isIdentStart(c):
				j := i
				for j < len(s) && isIdent(s[j]) {
					j++
				}
				names = append(names, s[i:j])
				want = false
				i = j
			default:
				i++
			}
		}
		return names, i
	}
	prevDigit := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i, prevDigit = skipString(i), false
		case c == '[':
			if end := strings.IndexByte(s[i:], ']'); end >= 0 {
				i += end + 1
			} else {
				i = len(s)
			}
			prevDigit = false
		case c == '{': // a selector without a name ({__name__=...}): not checked
			_, i = matchers(i)
		case isIdentStart(c) && !prevDigit:
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			tok := s[i:j]
			k := nextNonSpace(j)
			switch {
			case groupingKeywords[tok] && k < len(s) && s[k] == '(':
				ls, end := identList(k)
				grouping = append(grouping, ls...)
				i = end
			case groupingKeywords[tok] || promqlKeywords[tok]:
				i = j
			case k < len(s) && s[k] == '(', aggregationClause(s[k:]):
				i = j // a function, or an aggregation ("sum by (x) (...)")
			default:
				sel := selector{name: tok}
				if k < len(s) && s[k] == '{' {
					sel.labels, j = matchers(k)
				}
				sels = append(sels, sel)
				i = j
			}
			prevDigit = false
		default:
			prevDigit = (c >= '0' && c <= '9') || (c == '.' && prevDigit) || (isIdent(c) && prevDigit)
			i++
		}
	}
	return sels, grouping
}

// aggregationClause reports whether rest starts with "by" or "without" and a
// parenthesis: what follows an aggregation operator's name.
func aggregationClause(rest string) bool {
	for _, kw := range []string{"by", "without"} {
		if after, ok := strings.CutPrefix(rest, kw); ok && strings.HasPrefix(strings.TrimLeft(after, " \t\n"), "(") {
			return true
		}
	}
	return false
}

func TestScanPromQL(t *testing.T) {
	for _, c := range []struct {
		expr     string
		sels     string // name[labels] ...
		grouping string
	}{
		{`sum by (leg) (rate(ponte_rtp_lost_packets_total{instance=~"$instance"}[$__rate_interval])) / 1e3`,
			"ponte_rtp_lost_packets_total[instance]", "leg"},
		{`histogram_quantile(0.99, sum by (le, stage) (rate(x_bucket{a="}{[", b!~'q'}[5m] offset 1h)))`,
			"x_bucket[a b]", "le stage"},
		{`(sum(a) - sum(b{outcome="rejected"})) >= 3 and on (instance) sum by (instance) (c) == 0`,
			"a[] b[outcome] c[]", "instance instance"},
		{`up{job="ponte"} == 0 or vector(1) unless nan`, "up[job]", ""},
		{`max by (instance) (ponte_calls_limit > 0) * 60 + 0.5e-3`, "ponte_calls_limit[]", "instance"},
		{`rate(foo:bar_total[1m:30s])`, "foo:bar_total[]", ""},
	} {
		sels, grouping := scanPromQL(c.expr)
		var got []string
		for _, s := range sels {
			got = append(got, s.name+"["+strings.Join(s.labels, " ")+"]")
		}
		if g := strings.Join(got, " "); g != c.sels {
			t.Errorf("%s: selectors %q, want %q", c.expr, g, c.sels)
		}
		if g := strings.Join(grouping, " "); g != c.grouping {
			t.Errorf("%s: grouping %q, want %q", c.expr, g, c.grouping)
		}
	}
}
