package e2e_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/dashboards"
	"github.com/eddy-autotune/eddy/dashboards/render"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/promserver"
	"github.com/eddy-autotune/eddy/webhook"
)

// noData lists the panel queries and rules that cannot return data in this
// scenario, and why. Everything else must.
var noData = map[string]string{
	"eddy-cache/Cache workers set by eddy#1":  "no ScaleCache recommendation is applied: the datasets have no cache workers to scale",
	"eddy-cache/Evictions and restores#1":     "no dataset goes idle within the test",
	"eddy-self/Webhook errors#1":              "no webhook error in a healthy run",
	"rule EddyWebhookErrors":                  "no webhook error in a healthy run",
	"rule EddyRecommendationRolledBack":       "nothing is rolled back: the Prefetch helps",
	"rule EddyEvictionBlocked":                "no eviction in the scenario",
	"eddy-self/Blocked by a stale analyzer#1": "the analyzer's heartbeat stays fresh",
	"eddy-workload/Prefetch warm-up#1":        "the prefetcher reads the 32 MiB dataset in about 2 s and its pod ends with the trainer's: no 2 s scrape reliably reaches it",
	"eddy-workload/Prefetch planned bytes#1":  "as Prefetch warm-up",
	"eddy-self/Records rejected#1":            "the collector reports only what it may: nothing is rejected",
}

// startPrometheus runs a real Prometheus (Debian's package) on the host with
// eddy's rules, scraping eddy's pods and the prefetchers the webhook injects
// (container port eddy-prefetch), as the PodMonitors of
// config/prometheus-operator do. Debian builds Prometheus without Kubernetes
// service discovery, so the test discovers the pods itself every second and
// hands them over as file_sd targets. Call stop before the cluster stops.
func startPrometheus(ctx context.Context, t *testing.T, c *node.Cluster) (p *promserver.Server, stop func()) {
	t.Helper()
	rules, err := filepath.Abs(filepath.Join("..", "..", dashboards.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	jobs := []string{"eddy-analyzer", "eddy-collector", "eddy-webhook", "eddy-operator", "eddy-prefetch"}
	var scrape []map[string]any
	for _, job := range jobs {
		scrape = append(scrape, map[string]any{"job_name": job, "honor_labels": job != "eddy-prefetch",
			"file_sd_configs": []map[string]any{{"files": []string{filepath.Join(dir, job+".json")}, "refresh_interval": "1s"}}})
	}
	discover := func() {
		targets := map[string][]map[string]any{}
		var pods corev1.PodList
		if err := c.Env.Client.List(ctx, &pods); err != nil {
			return
		}
		for _, p := range pods.Items {
			if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
				continue
			}
			for _, ctr := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
				for _, port := range ctr.Ports {
					addr := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort)))
					switch {
					case port.Name == "metrics" && p.Namespace == node.EddySystem && p.Labels["app.kubernetes.io/name"] == "eddy":
						job := "eddy-" + p.Labels["app.kubernetes.io/component"]
						targets[job] = append(targets[job], map[string]any{"targets": []string{addr}})
					case port.Name == webhook.StatusPortName:
						targets["eddy-prefetch"] = append(targets["eddy-prefetch"], map[string]any{"targets": []string{addr},
							"labels": map[string]string{"namespace": p.Namespace, "pod": p.Name, "recommendation": p.Annotations[v1.RecommendationAnnotation]}})
					}
				}
			}
		}
		for _, job := range jobs {
			b, _ := json.Marshal(append([]map[string]any{}, targets[job]...))
			tmp := filepath.Join(dir, job+".json.tmp")
			if os.WriteFile(tmp, b, 0o644) == nil {
				_ = os.Rename(tmp, filepath.Join(dir, job+".json"))
			}
		}
	}
	discover()
	p, err = promserver.Start(ctx, promserver.Options{Dir: dir, RuleFiles: []string{rules}, Interval: 2 * time.Second, ScrapeConfigs: scrape})
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Second):
				discover()
			}
		}
	}()
	t.Logf("prometheus at %s (log %s)", p.URL, p.Log)
	return p, func() { close(done); <-stopped; p.Stop() }
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
