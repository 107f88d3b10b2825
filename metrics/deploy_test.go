package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"
)

// The dashboard, the alerts and their promtool fixtures may only use
// metrics and labels ponte exposes (issue 6: "no dead panels").

const deployDir = "../deploy"

// promOnly are series Prometheus itself adds for every target.
var promOnly = map[string][]string{"up": nil}

// labelSets maps every metric name ponte exposes (histogram series too) to
// its label names, from the registry with every family populated.
func labelSets(t *testing.T) map[string][]string {
	t.Helper()
	m := newTest()
	exercise(m)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		var ls []string
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if !slices.Contains(ls, l.GetName()) {
					ls = append(ls, l.GetName())
				}
			}
		}
		out[mf.GetName()] = ls
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			out[mf.GetName()+"_bucket"] = append(slices.Clone(ls), "le")
			out[mf.GetName()+"_sum"] = ls
			out[mf.GetName()+"_count"] = ls
		}
	}
	for n, ls := range promOnly {
		out[n] = ls
	}
	for _, n := range m.Names() {
		if _, ok := out[n]; !ok {
			t.Fatalf("Names lists %s but the registry has no such series", n)
		}
	}
	return out
}

// checkExpr reports the metrics and labels of expr that ponte does not
// expose. Prometheus adds instance and job to every series.
func checkExpr(known map[string][]string, expr string) (problems []string, used []string) {
	sels, grouping := scanPromQL(expr)
	avail := []string{"instance", "job"}
	for _, s := range sels {
		ls, ok := known[s.name]
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s does not exist", s.name))
			continue
		}
		used = append(used, s.name)
		avail = append(avail, ls...)
		for _, l := range s.labels {
			if l != "instance" && l != "job" && !slices.Contains(ls, l) {
				problems = append(problems, fmt.Sprintf("%s has no label %q", s.name, l))
			}
		}
	}
	for _, l := range grouping {
		if !slices.Contains(avail, l) {
			problems = append(problems, fmt.Sprintf("grouping by %q, which none of its metrics has", l))
		}
	}
	return problems, used
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name, Type string
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "ponte.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("ponte.json: %v", err)
	}
	return d
}

// dashboardExprs returns "panel title" -> its queries, rows flattened.
func dashboardExprs(t *testing.T, d grafanaDashboard) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the $datasource variable (import would break)", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has an empty query", p.Title)
				}
				out[p.Title] = append(out[p.Title], tg.Expr)
			}
		}
	}
	walk(d.Panels)
	return out
}

func TestDashboardUsesOnlyPonteMetrics(t *testing.T) {
	known := labelSets(t)
	d := loadDashboard(t)
	if d.UID == "" {
		t.Error("dashboard without a uid: provisioning and links need one")
	}
	used := map[string]bool{}
	for title, exprs := range dashboardExprs(t, d) {
		for _, e := range exprs {
			problems, names := checkExpr(known, e)
			for _, p := range problems {
				t.Errorf("panel %q: %s\n\t%s", title, p, e)
			}
			for _, n := range names {
				used[n] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// label_values(metric, label)
		args, ok := strings.CutPrefix(v.Definition, "label_values(")
		metric, label, ok2 := strings.Cut(strings.TrimSuffix(args, ")"), ",")
		metric, label = strings.TrimSpace(metric), strings.TrimSpace(label)
		if !ok || !ok2 || known[metric] == nil && metric != "up" {
			t.Errorf("variable %s: %q is not label_values of a ponte metric", v.Name, v.Definition)
		} else if label != "instance" && label != "job" && !slices.Contains(known[metric], label) {
			t.Errorf("variable %s: %s has no label %s", v.Name, metric, label)
		}
	}
	// Every ponte family appears on the dashboard (issue 6: a dashboard
	// "covering those metrics").
	m := newTest()
	for _, n := range m.Names() {
		if !strings.HasPrefix(n, "ponte_") || strings.HasSuffix(n, "_bucket") || strings.HasSuffix(n, "_sum") || strings.HasSuffix(n, "_count") {
			continue
		}
		if !used[n] && !used[n+"_bucket"] && !used[n+"_sum"] && !used[n+"_count"] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

type promRules struct {
	Groups []struct {
		Rules []struct {
			Alert, Record, Expr string
		}
	}
}

type promTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string
		InputSeries []struct{ Series string } `yaml:"input_series"`
		AlertTests  []struct {
			Alertname string
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestAlertsUseOnlyPonteMetrics(t *testing.T) {
	known := labelSets(t)
	var rules promRules
	readYAML(t, filepath.Join(deployDir, "prometheus", "alerts.yml"), &rules)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			problems, _ := checkExpr(known, r.Expr)
			for _, p := range problems {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
			alerts = append(alerts, r.Alert)
		}
	}
	// The alerts issue 6 asks for, by what they watch.
	for _, want := range []string{"PonteNoAnsweredCalls", "PonteGraphErrors", "PonteGraphAuthFailure", "PonteCallingRestricted",
		"PonteWebhookSignatureFailures", "PonteMOSDrop", "PonteTrunkDown", "PonteNearCapacity"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml has no %s", want)
		}
	}

	var tests promTests
	readYAML(t, filepath.Join(deployDir, "prometheus", "alerts_test.yml"), &tests)
	fired := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, in := range tc.InputSeries {
			problems, _ := checkExpr(known, in.Series)
			for _, p := range problems {
				t.Errorf("fixture %q: series %s: %s", tc.Name, in.Series, p)
			}
		}
		for _, at := range tc.AlertTests {
			if len(at.ExpAlerts) > 0 {
				fired[at.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fired[a] {
			t.Errorf("alert %s has no promtool fixture that fires it", a)
		}
	}
}

// The dashboard's queries are valid PromQL: promtool parses them as
// recording rules (Grafana's variables replaced by values).
func TestDashboardPromQLParses(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (scripts/deps.sh test)")
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, exprs := range dashboardExprs(t, loadDashboard(t)) {
		for _, e := range exprs {
			e = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(e)
			q, _ := json.Marshal(e) // a JSON string is a YAML double-quoted scalar
			n++
			fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", n, q)
		}
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules on the dashboard's %d queries: %v\n%s", n, err, out)
	}
}

// compose.yaml and prometheus.yml point at files that exist.
func TestDeployFilesReferenced(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Volumes []string
		}
	}
	readYAML(t, filepath.Join(deployDir, "compose.yaml"), &compose)
	for _, svc := range []string{"ponte", "prometheus", "grafana"} {
		if _, ok := compose.Services[svc]; !ok {
			t.Errorf("compose.yaml has no %s service", svc)
		}
	}
	mounted := map[string]bool{}
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") {
				continue // a named volume or an ${ENV} path
			}
			mounted[src] = true
			if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
	for _, want := range []string{"./grafana/ponte.json", "./prometheus", "./grafana/provisioning"} {
		if !mounted[want] {
			t.Errorf("compose.yaml does not mount %s", want)
		}
	}
	var prom struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus", "prometheus.yml"), &prom)
	if !slices.Contains(prom.RuleFiles, "alerts.yml") {
		t.Errorf("prometheus.yml rule_files %v lack alerts.yml", prom.RuleFiles)
	}
}
