package dashboards_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/eddy-autotune/eddy/dashboards"
)

// TestPrometheusOperatorComponents: `kubectl kustomize
// config/prometheus-operator` gives PodMonitors and a PrometheusRule that
// read strictly as prometheus-operator's own types, the rule groups of
// dashboards/rules, and one ConfigMap per dashboard, labelled for Grafana's
// sidecar, holding exactly the committed JSON.
func TestPrometheusOperatorComponents(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found: make tools links it into bin/")
	}
	out, err := exec.Command(kubectl, "kustomize", "../config/prometheus-operator").Output()
	require.NoError(t, err)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	kinds := map[string]int{}
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		kinds[u.GetKind()]++
		raw, err := json.Marshal(u.Object)
		require.NoError(t, err)
		switch u.GetKind() {
		case "PodMonitor":
			var pm monitoringv1.PodMonitor
			require.NoError(t, yaml.UnmarshalStrict(raw, &pm), u.GetName())
			require.NotEmpty(t, pm.Spec.PodMetricsEndpoints)
		case "PrometheusRule":
			var pr monitoringv1.PrometheusRule
			require.NoError(t, yaml.UnmarshalStrict(raw, &pr))
			groups, err := dashboards.LoadRuleGroups("rules/eddy.rules.yaml")
			require.NoError(t, err)
			require.Len(t, pr.Spec.Groups, len(groups))
			for i, g := range groups {
				require.Len(t, pr.Spec.Groups[i].Rules, len(g.Rules), g.Name)
				for j, r := range g.Rules {
					assert.Equal(t, r.Expr, pr.Spec.Groups[i].Rules[j].Expr.String(), r.Name())
				}
			}
		case "ConfigMap":
			var cm corev1.ConfigMap
			require.NoError(t, yaml.UnmarshalStrict(raw, &cm))
			assert.Equal(t, "1", cm.Labels["grafana_dashboard"], cm.Name)
			found := false
			for _, d := range dashboards.Dashboards() {
				if js, ok := cm.Data[d.UID+".json"]; ok {
					want, err := d.JSON()
					require.NoError(t, err)
					assert.Equal(t, string(want), js, "%s is stale: run make generate", cm.Name)
					found = true
				}
			}
			assert.True(t, found, "%s holds no dashboard", cm.Name)
		default:
			t.Errorf("unexpected %s %s", u.GetKind(), u.GetName())
		}
	}
	assert.Equal(t, map[string]int{"PodMonitor": 2, "PrometheusRule": 1, "ConfigMap": len(dashboards.Dashboards())}, kinds)
}
