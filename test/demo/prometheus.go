package demo

import (
	"context"
	"os"
	"path/filepath"

	"github.com/eddy-autotune/eddy/dashboards"
	"github.com/eddy-autotune/eddy/test/promserver"
)

// startPrometheus runs a real Prometheus with eddy's rules scraping the
// components (name → metrics address), when Debian's prometheus is
// installed, and says where to look. The demo does not depend on it: a
// failure is reported and the demo goes on.
func (r *run) startPrometheus(ctx context.Context, components map[string]string) {
	if _, err := os.Stat(promserver.Binary); err != nil {
		r.say("Prometheus not started: %s not installed (apt-get install prometheus)", promserver.Binary)
		return
	}
	dir := filepath.Join(r.o.Dir, "prometheus")
	rules := filepath.Join(dir, "eddy.rules.yaml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.say("Prometheus not started: %v", err)
		return
	}
	if err := os.WriteFile(rules, dashboards.RulesYAML, 0o644); err != nil {
		r.say("Prometheus not started: %v", err)
		return
	}
	var scrape []map[string]any
	for name, addr := range components {
		// honor_labels: the collector's series carry the workload's pod.
		scrape = append(scrape, map[string]any{"job_name": "eddy-" + name, "honor_labels": true,
			"static_configs": []map[string]any{{"targets": []string{addr}}}})
	}
	p, err := promserver.Start(ctx, promserver.Options{Dir: dir, RuleFiles: []string{rules}, ScrapeConfigs: scrape})
	if err != nil {
		r.say("Prometheus not started: %v", err)
		return
	}
	r.prom = p
	r.say("Prometheus with eddy's rules scrapes the components at %s: alerts at %s/alerts; for the dashboards, add it as a datasource of a Grafana and import dashboards/json/*.json", p.URL, p.URL)
}
