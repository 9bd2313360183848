package promserver_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/test/promserver"
	"github.com/eddy-autotune/eddy/webhook"
)

// TestPrometheusScrapesAndEvaluatesRules: a real Prometheus loads eddy's
// rules (all healthy), scrapes a webhook registry and answers range queries.
func TestPrometheusScrapesAndEvaluatesRules(t *testing.T) {
	if _, err := os.Stat(promserver.Binary); err != nil {
		t.Skip("prometheus not installed: apt-get install prometheus (hack/install-deps.sh installs it)")
	}
	reg := prometheus.NewRegistry()
	m := webhook.NewMetrics(reg)
	m.Uninjected.Set(3)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	rules, err := filepath.Abs("../../dashboards/rules/eddy.rules.yaml")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	s, err := promserver.Start(ctx, promserver.Options{Dir: t.TempDir(), RuleFiles: []string{rules}, Interval: time.Second,
		ScrapeConfigs: []map[string]any{{"job_name": "eddy-webhook", "static_configs": []map[string]any{{"targets": []string{strings.TrimPrefix(srv.URL, "http://")}}}}}})
	require.NoError(t, err)
	defer s.Stop()
	require.Eventually(t, func() bool {
		series, err := s.QueryRange(ctx, "max(eddy_webhook_uninjected_pods)", start, time.Now(), time.Second)
		return err == nil && len(series) == 1 && series[0].Values[len(series[0].Values)-1] == 3
	}, 30*time.Second, 500*time.Millisecond)
	health, err := s.Rules(ctx)
	require.NoError(t, err)
	assert.Len(t, health, 11)
	for _, r := range health {
		assert.Empty(t, r.LastError, r.Name)
	}
	w, err := promserver.Watched("max(x) > 0.3 unless on (a) max(y)")
	require.NoError(t, err)
	assert.Equal(t, "max(x)", w)
}
