package dashboards_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/eddy-autotune/eddy/dashboards"
)

// TestCommittedJSONIsCurrent: the JSON under json/ is what the code builds
// (`make generate` rewrites it).
func TestCommittedJSONIsCurrent(t *testing.T) {
	for _, d := range dashboards.Dashboards() {
		want, err := d.JSON()
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join("json", d.UID+".json"))
		require.NoError(t, err, "run make generate")
		assert.True(t, bytes.Equal(want, got), "json/%s.json is stale: run make generate", d.UID)
	}
}

// TestDashboardModels: each dashboard's JSON reads back as a Grafana model
// with unique panel ids, a datasource variable, and on every panel a unit, a
// description, and the datasource variable on the panel and each query.
func TestDashboardModels(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	uids := map[string]bool{}
	for _, d := range dashboards.Dashboards() {
		assert.False(t, uids[d.UID], "duplicate uid %s", d.UID)
		uids[d.UID] = true
		b, err := d.JSON()
		require.NoError(t, err)
		var m dashboard.Dashboard //nolint:staticcheck // the v1 model Build produces
		require.NoError(t, json.Unmarshal(b, &m), d.UID)
		require.NotNil(t, m.Uid)
		assert.Equal(t, d.UID, *m.Uid)
		var vars []string
		for _, v := range m.Templating.List {
			vars = append(vars, v.Name)
		}
		require.Contains(t, vars, dashboards.DatasourceVariable, d.UID)
		var raw struct {
			Panels []struct {
				ID          int    `json:"id"`
				Type        string `json:"type"`
				Title       string `json:"title"`
				Description string `json:"description"`
				Datasource  struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				FieldConfig struct {
					Defaults struct {
						Unit string `json:"unit"`
					} `json:"defaults"`
				} `json:"fieldConfig"`
				Targets []struct {
					Expr       string `json:"expr"`
					Datasource struct {
						UID string `json:"uid"`
					} `json:"datasource"`
				} `json:"targets"`
			} `json:"panels"`
		}
		require.NoError(t, json.Unmarshal(b, &raw))
		ids := map[int]bool{}
		panels := 0
		for _, p := range raw.Panels {
			assert.False(t, ids[p.ID], "%s: duplicate panel id %d", d.UID, p.ID)
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			panels++
			assert.NotEmpty(t, p.FieldConfig.Defaults.Unit, "%s/%s: no unit", d.UID, p.Title)
			assert.NotEmpty(t, p.Description, "%s/%s: no description", d.UID, p.Title)
			assert.Equal(t, "${datasource}", p.Datasource.UID, "%s/%s: datasource", d.UID, p.Title)
			require.NotEmpty(t, p.Targets, "%s/%s: no query", d.UID, p.Title)
			for _, q := range p.Targets {
				assert.Equal(t, "${datasource}", q.Datasource.UID, "%s/%s: query datasource", d.UID, p.Title)
				assert.NotEmpty(t, q.Expr)
			}
		}
		assert.Equal(t, len(d.Panels()), panels, d.UID)
	}
}

// Expr is one PromQL expression of a dashboard or a rule, with where it comes from.
type Expr struct{ Where, Expr string }

// allExprs returns every query of every panel, every variable's metric
// selector and every rule's expression, as Prometheus would be sent them.
func allExprs(t *testing.T) []Expr {
	t.Helper()
	var out []Expr
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, d := range dashboards.Dashboards() {
		for _, p := range d.Panels() {
			for _, q := range p.Queries {
				out = append(out, Expr{d.UID + "/" + p.Title, dashboards.Expand(q.Expr, "1m")})
			}
		}
		for _, v := range d.Variables {
			m := labelValues.FindStringSubmatch(v.Query)
			require.NotNil(t, m, "variable %s: %s", v.Name, v.Query)
			out = append(out, Expr{d.UID + "/$" + v.Name, dashboards.Expand(m[1], "1m")})
		}
	}
	rules, err := dashboards.LoadRules("rules/eddy.rules.yaml")
	require.NoError(t, err)
	for _, r := range rules {
		out = append(out, Expr{"rule " + r.Name(), r.Expr})
	}
	return out
}

// TestQueriesUseWhatEddyExports: every query parses with Prometheus's own
// parser; every metric it names is one an eddy component registers (or a
// recording rule of ours, or controller-runtime's reconcile errors);
// selectors match only labels the metric has or the scrape adds; no query
// names a file path, a UID or a container id.
func TestQueriesUseWhatEddyExports(t *testing.T) {
	metrics := exported(t)
	rules, err := dashboards.LoadRules("rules/eddy.rules.yaml")
	require.NoError(t, err)
	for _, r := range rules {
		if r.Record != "" {
			metrics[r.Record] = []string{"namespace", "workload_kind", "workload", "dataset", "webhook"}
		}
	}
	// Not eddy's own, served by the operator through controller-runtime.
	metrics["controller_runtime_reconcile_errors_total"] = []string{"controller"}
	// What the scrape adds (see config/prometheus and the e2e's scrape config).
	targetLabels := []string{"instance", "job", "namespace", "pod", "recommendation"}
	forbidden := regexp.MustCompile(`(?i)path|uid|file|inode|container_id`)

	for name, labels := range metrics {
		for _, l := range labels {
			assert.False(t, forbidden.MatchString(l), "%s exports the high-cardinality label %s", name, l)
		}
	}
	used := map[string]bool{}
	for _, e := range allExprs(t) {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(e.Expr)
		if !assert.NoError(t, err, "%s: %s", e.Where, e.Expr) {
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.VectorSelector:
				name := n.Name
				labels, ok := metrics[name]
				if !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, cut := strings.CutSuffix(name, suffix); cut {
							labels, ok = metrics[base]
							labels = append(slices.Clone(labels), "le")
							break
						}
					}
				}
				used[name] = true
				if !assert.True(t, ok, "%s: %s is not a metric eddy exports", e.Where, name) {
					return nil
				}
				for _, m := range n.LabelMatchers {
					if m.Name == "__name__" {
						continue
					}
					assert.True(t, slices.Contains(labels, m.Name) || slices.Contains(targetLabels, m.Name),
						"%s: %s has no label %s (it has %v)", e.Where, name, m.Name, labels)
				}
			case *parser.AggregateExpr:
				for _, l := range n.Grouping {
					assert.False(t, forbidden.MatchString(l), "%s: groups by %s", e.Where, l)
				}
			}
			return nil
		})
	}
	assert.NotEmpty(t, used)
}

// TestRulesWithPromtool runs the rules' unit tests with Prometheus's promtool
// (Debian's prometheus package, installed by hack/install-deps.sh).
func TestRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found: apt-get install prometheus (hack/install-deps.sh installs it)")
	}
	out, err := exec.Command(promtool, "check", "rules", "rules/eddy.rules.yaml").CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(promtool, "test", "rules", "rules/eddy.rules_test.yaml").CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// TestEveryAlertHasARunbook: each alert links a section of docs/runbooks.md
// that exists, and every alert has a test case in the promtool tests.
func TestEveryAlertHasARunbook(t *testing.T) {
	rules, err := dashboards.LoadRules("rules/eddy.rules.yaml")
	require.NoError(t, err)
	doc, err := os.ReadFile("../docs/runbooks.md")
	require.NoError(t, err)
	tests, err := os.ReadFile("rules/eddy.rules_test.yaml")
	require.NoError(t, err)
	var parsedTests struct {
		Tests []struct {
			Alerts []struct {
				Alertname string `json:"alertname"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(tests, &parsedTests))
	tested := map[string]bool{}
	for _, tc := range parsedTests.Tests {
		for _, a := range tc.Alerts {
			tested[a.Alertname] = true
		}
	}
	alerts := 0
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		alerts++
		anchor := strings.ToLower(r.Alert)
		assert.True(t, strings.HasSuffix(r.Annotations["runbook_url"], "docs/runbooks.md#"+anchor), "%s: runbook_url %q", r.Alert, r.Annotations["runbook_url"])
		assert.Contains(t, string(doc), "\n## "+r.Alert+"\n", "%s: no runbook section", r.Alert)
		assert.True(t, tested[r.Alert], "%s: no promtool test", r.Alert)
	}
	assert.GreaterOrEqual(t, alerts, 8)
}
