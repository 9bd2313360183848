package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-autotune/eddy/dashboards"
	"github.com/eddy-autotune/eddy/dashboards/render"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/promserver"
)

// noData lists the panel queries and rules that cannot return data in this
// scenario, and why. Everything else must.
var noData = map[string]string{
	"eddy-cache/Cache workers set by eddy#1":                     "no ScaleCache recommendation: the local dataset has no cache workers",
	"eddy-cache/Evictions and restores#1":                        "no dataset goes idle within the test",
	"eddy-self/Webhook errors#1":                                 "no webhook error in a healthy run",
	"rule EddyWebhookErrors":                                     "no webhook error in a healthy run",
	"rule EddyRecommendationRolledBack":                          "nothing is rolled back: the Prefetch helps",
	"rule EddyEvictionBlocked":                                   "no eviction in the scenario",
	"eddy-self/Blocked by a stale analyzer#1":                    "the analyzer's heartbeat stays fresh",
	"eddy-self/Kernel program cost#1":                            "kernel.bpf_stats_enabled is 0 on the test node (enabling it slows every program)",
	"eddy-overview/Read wait before and after applied changes#2": "the measured read wait appears only once the Prefetch is verified, after the test's last run",
}

// startPrometheus runs a real Prometheus (Debian's package) on the host with
// eddy's rules, discovering eddy's pods and the injected prefetchers through
// the cluster's API server, as the PodMonitors of config/prometheus-operator
// do.
func startPrometheus(ctx context.Context, t *testing.T, c *node.Cluster) *promserver.Server {
	t.Helper()
	rules, err := filepath.Abs(filepath.Join("..", "..", dashboards.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	sd := func(namespaces ...string) []map[string]any {
		cfg := map[string]any{"role": "pod", "kubeconfig_file": c.Kubeconfig}
		if len(namespaces) > 0 {
			cfg["namespaces"] = map[string]any{"names": namespaces}
		}
		return []map[string]any{cfg}
	}
	p, err := promserver.Start(ctx, promserver.Options{Dir: t.TempDir(), RuleFiles: []string{rules}, Interval: 2 * time.Second,
		ScrapeConfigs: []map[string]any{{
			"job_name": "eddy", "honor_labels": true, "kubernetes_sd_configs": sd(node.EddySystem),
			"relabel_configs": []map[string]any{
				{"source_labels": []string{"__meta_kubernetes_pod_label_app_kubernetes_io_name"}, "regex": "eddy", "action": "keep"},
				{"source_labels": []string{"__meta_kubernetes_pod_container_port_name"}, "regex": "metrics", "action": "keep"},
				{"source_labels": []string{"__meta_kubernetes_pod_label_app_kubernetes_io_component"}, "target_label": "job", "replacement": "eddy-$1"},
			},
		}, {
			"job_name": "eddy-prefetch", "kubernetes_sd_configs": sd(),
			"relabel_configs": []map[string]any{
				{"source_labels": []string{"__meta_kubernetes_pod_container_port_name"}, "regex": "eddy-prefetch", "action": "keep"},
				{"source_labels": []string{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
				{"source_labels": []string{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
				{"source_labels": []string{"__meta_kubernetes_pod_annotation_eddy_io_recommendation"}, "target_label": "recommendation"},
			},
		}}})
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(p.Stop)
	t.Logf("prometheus at %s (log %s)", p.URL, p.Log)
	return p
}

// checkDashboards evaluates every panel query and rule expression against
// the run's Prometheus (c's eddy is what it scraped): each must return data, except those of noData. With
// EDDY_DASHBOARD_IMAGES=DIR it also draws each dashboard from the same data
// into DIR/<uid>.png (dashboards/img in the repository).
func checkDashboards(ctx context.Context, t *testing.T, c *node.Cluster, p *promserver.Server) {
	t.Helper()
	// Let the rules evaluate over the last run and the windows of rate() fill.
	time.Sleep(10 * time.Second)
	end := time.Now()
	targets, err := p.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		t.Logf("target %s %s: %s %s", tg.Job, tg.Instance, tg.Health, tg.LastError)
	}
	health, err := p.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range health {
		if r.LastError != "" {
			t.Errorf("rule %s: %s", r.Name, r.LastError)
		}
	}
	results, err := promserver.Evaluate(ctx, p, filepath.Join("..", "..", dashboards.RulesFile), p.Started, end, 5*time.Second, "30s")
	if err != nil {
		t.Fatal(err)
	}
	byWhere := map[string]promserver.Result{}
	withData := 0
	for _, r := range results {
		byWhere[r.Where] = r
		why, excepted := noData[r.Where]
		switch {
		case r.Err != nil:
			t.Errorf("%s: %v", r.Where, r.Err)
		case r.HasData():
			withData++
			if excepted {
				t.Logf("%s returned data though listed as an exception (%s): remove it from noData", r.Where, why)
			}
		case excepted:
			t.Logf("no data, as explained: %s: %s", r.Where, why)
		default:
			t.Errorf("%s returned no data: %s", r.Where, r.Expr)
		}
	}
	t.Logf("dashboards and rules: %d queries, %d returned data, %d exceptions listed", len(results), withData, len(noData))
	dir := os.Getenv("EDDY_DASHBOARD_IMAGES")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range dashboards.Dashboards() {
		panels := d.Panels()
		data := func(pi, qi int) []render.Series {
			r := byWhere[resultKey(d.UID, panels[pi].Title, qi)]
			out := make([]render.Series, 0, len(r.Series))
			for _, s := range r.Series {
				out = append(out, render.Series{Labels: s.Labels, Times: s.Times, Values: s.Values})
			}
			return out
		}
		path := filepath.Join(dir, d.UID+".png")
		if err := render.PNG(d, data, path); err != nil {
			t.Error(err)
		}
		t.Logf("wrote %s", path)
	}
}

func resultKey(uid, title string, q int) string {
	return uid + "/" + title + "#" + string(rune('1'+q))
}
