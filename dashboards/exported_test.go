package dashboards_test

import (
	"bufio"
	"context"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/eddy-autotune/eddy/analyzer/service"
	"github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/internal/scheme"
	"github.com/eddy-autotune/eddy/operator"
	"github.com/eddy-autotune/eddy/prefetch"
	"github.com/eddy-autotune/eddy/webhook"
)

// describer is a prometheus.Registerer that keeps what each collector
// describes instead of registering it.
type describer struct{ descs []*prometheus.Desc }

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		d.descs = append(d.descs, desc)
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return true }

var descName = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// exported returns every metric eddy's components export, with its label
// names, taken from the components' own registries: the collector's
// metrics, the analyzer's service (with a fake API client: only its
// registrations matter here), the webhook's, the operator's, and a
// prefetcher's /metrics.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	d := &describer{}
	d.MustRegister(collector.NewMetrics(0))
	webhook.NewMetrics(d)
	d.MustRegister(operator.Collectors()...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := service.New(ctx, service.Options{
		Client: fake.NewClientBuilder().WithScheme(scheme.New()).Build(), Log: logr.Discard(), Registry: d,
		GRPCAddr: "127.0.0.1:0", StateDir: t.TempDir(),
	})
	require.NoError(t, err)
	svc.Stop()

	out := map[string][]string{}
	for _, desc := range d.descs {
		m := descName.FindStringSubmatch(desc.String())
		require.NotNil(t, m, "desc %s", desc)
		var labels []string
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		out[m[1]] = labels
	}

	p, err := prefetch.New(prefetch.Options{Strategy: v1alpha1.StrategyWholeDataset, Roots: []string{t.TempDir()}}, logr.Discard())
	require.NoError(t, err)
	defer p.Close()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[1] == "TYPE" && strings.HasPrefix(f[2], "eddy_") {
			out[f[2]] = nil
		}
	}
	return out
}
