package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// metricName finds the metric names in a PromQL expression: the ones of
// the prefixes the service serves (sandboxapi_, and the gateway's Caddy,
// Go and process metrics).
var metricName = regexp.MustCompile(`\b(?:sandboxapi|caddy|go|process)_[a-zA-Z0-9_]+\b`)

// served is every metric name a node or a gateway serves.
func served() []string {
	return slices.Concat(NodeNames, GatewayNames, ExternalNames)
}

// checkExpr fails t for an expression that names a metric nothing serves,
// or none at all. A histogram's series are its name with _bucket, _count
// or _sum.
func checkExpr(t *testing.T, where, expr string) {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	// up is Prometheus's own, of every target.
	if len(names) == 0 && !strings.HasPrefix(strings.TrimSpace(expr), "up{") {
		t.Errorf("%s: %q names no metric of the service", where, expr)
	}
	for _, n := range names {
		base := n
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && slices.Contains(served(), b) {
				base = b
			}
		}
		if !slices.Contains(served(), base) {
			t.Errorf("%s: %q names %s, which no node or gateway serves (package metrics)", where, expr, n)
		}
	}
}

// TestDashboard: ops/dashboards/sandboxapi.json is a Grafana dashboard
// whose every query names only metrics the service serves.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("../../ops/dashboards/sandboxapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("the dashboard has no title or no panels")
	}
	seen := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, q := range p.Targets {
			checkExpr(t, "panel "+p.Title, q.Expr)
			for _, n := range metricName.FindAllString(q.Expr, -1) {
				seen[n] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && strings.Contains(q, "label_values") {
			checkExpr(t, "variable "+v.Name, q)
		}
	}
	// What the issue asks the dashboard to show.
	for _, n := range []string{ExecutionsTotal, ExecutionDuration + "_bucket", ExecutionQueueWait + "_bucket", WarmSandboxes,
		SessionsOpen, Jobs, WebhookAttempts, GatewayRefusals, RaftState} {
		if !seen[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

// TestAlertRules: ops/alerts/sandboxapi.rules.yml is Prometheus rules
// whose every expression names only metrics the service serves.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("../../ops/alerts/sandboxapi.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("the rules do not parse: %v", err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	alerts := map[string]string{}
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: no name or no rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: alert, expr, a summary and a severity are required", r.Alert)
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s twice", r.Alert)
			}
			alerts[r.Alert] = r.Expr
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			checkExpr(t, "alert "+r.Alert, r.Expr)
		}
	}
	// What the issue asks to be alerted of.
	for alert, metric := range map[string]string{
		"SandboxAPINoWarmSandboxes": WarmSandboxes, "SandboxAPIRaftLeaderless": RaftState,
		"SandboxAPIWebhookFailures": WebhookAttempts, "SandboxAPIGatewayErrors": "caddy_http_request_duration_seconds_count",
	} {
		if !strings.Contains(alerts[alert], metric) {
			t.Errorf("no alert %s over %s", alert, metric)
		}
	}
}

// TestNames: what NewNode and NewGateway register is what NodeNames and
// GatewayNames say, each metric labelled with its cell; the gauges the
// node registers from its parts are checked against a running one
// (cmd/sandboxapi's TestMetrics).
func TestNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	n, err := NewNode(reg, "cell-1")
	if err != nil {
		t.Fatal(err)
	}
	n.Execution("python3", "completed", time.Millisecond, time.Second, time.Second)
	n.WebhookAttempt(false, true)
	if err := n.Gauge(SessionsOpen, "test", func() float64 { return 3 }); err != nil {
		t.Fatal(err)
	}
	if err := n.LabelledGauge(RaftState, "test", "state", func() map[string]float64 { return map[string]float64{"leader": 1} }); err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(reg)
	if err != nil {
		t.Fatal(err)
	}
	// A second module finds the first's counter.
	g2, err := NewGateway(reg)
	if err != nil {
		t.Fatalf("a second NewGateway on the registry: %v", err)
	}
	g.Refusal("limits", "rate_limit_exceeded")
	g2.Refusal("limits", "rate_limit_exceeded")
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range fams {
		got[f.GetName()] = true
		name := f.GetName()
		switch {
		case name == GatewayRefusals:
			if v := f.GetMetric()[0].GetCounter().GetValue(); v != 2 {
				t.Errorf("%s = %v after two refusals through two modules, want 2", name, v)
			}
		case slices.Contains(NodeNames, name):
			for _, m := range f.GetMetric() {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "cell" && l.GetValue() == "cell-1" }) {
					t.Errorf("%s has no cell label: %v", name, m.GetLabel())
				}
			}
		default:
			t.Errorf("%s is registered but not in NodeNames or GatewayNames", name)
		}
	}
	for _, name := range []string{ExecutionsTotal, ExecutionDuration, ExecutionQueueWait, ExecutionCPUSeconds, WebhookAttempts, WebhookGaveUp, SessionsOpen, RaftState, GatewayRefusals} {
		if !got[name] {
			t.Errorf("%s was not gathered", name)
		}
	}
	var none *Node
	none.Execution("python3", "completed", 0, 0, 0) // a nil *Node counts nothing
	if n, err := NewNode(nil, "x"); n != nil || err != nil {
		t.Errorf("NewNode(nil) = %v, %v; want nil, nil", n, err)
	}
	var nilReg *prometheus.Registry
	if g, err := NewGateway(nilReg); g != nil || err != nil {
		t.Errorf("NewGateway(a nil *Registry) = %v, %v; want nil, nil", g, err)
	}
}

// TestDocumented: docs/cluster.md's Metrics section names every metric.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Metrics\n")
	if !ok {
		t.Fatal(`docs/cluster.md has no "## Metrics" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, name := range slices.Concat(NodeNames, GatewayNames) {
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("docs/cluster.md, Metrics, does not list %s", name)
		}
	}
}
