package operator_test

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// TestStateMetrics: what the dashboards and alerts read from the operator —
// each profile's class and features, recommendations by phase, the read
// wait before, expected and measured of one in force, the change budget in
// use, the heartbeat's age and the actions taken — follows the objects of a
// real API server through a change that helped.
func TestStateMetrics(t *testing.T) {
	ns := newNamespace(t, "metrics")
	createPolicy(t, ns, autoPolicy(eddyv1alpha1.ActionScaleCache))
	createStatefulSet(t, ns, "cache", 1)
	createPVC(t, ns, "data", "StatefulSet/cache")
	setProfile(t, ns, "train-data", "StatefulSet", "train", "data", features(0.4, 100<<20))
	startOperator(t, testOptions(), nil)
	time.Sleep(1100 * time.Millisecond) // profile times have second resolution: the run above ended before the change

	create(t, scaleRec(ns, "grow", "data", 3, withTarget("StatefulSet", "train"), withProfile("train-data")))
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	time.Sleep(1100 * time.Millisecond) // profile times have second resolution
	setProfile(t, ns, "train-data", "StatefulSet", "train", "data", features(0.1, 300<<20))
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseVerified, 30*time.Second)

	profile := map[string]string{"namespace": ns, "workload_kind": "StatefulSet", "workload": "train", "dataset": "data"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range profile {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	eventually(t, 10*time.Second, "state metrics", func() (bool, string) {
		got := gather(t)
		v, ok := got.value("eddy_operator_profile_read_wait_ratio", profile)
		return ok && v == 0.1, "profile read wait after the change"
	})
	got := gather(t)
	got.assert(t, "eddy_operator_profile_info", with(map[string]string{"class": string(eddyv1alpha1.ClassShuffledEpochs)}), 1)
	got.assert(t, "eddy_operator_profile_confidence_ratio", profile, 0.9)
	got.assert(t, "eddy_operator_profile_throughput_bytes_per_second", profile, 300<<20)
	got.assert(t, "eddy_operator_profile_working_set_bytes", profile, 10<<30)
	got.assert(t, "eddy_operator_recommendations", map[string]string{"namespace": ns, "action": "ScaleCache", "phase": "Verified"}, 1)
	rec := with(map[string]string{"action": "ScaleCache"})
	rec["basis"] = "measured"
	v, ok := got.value("eddy_operator_recommendation_read_wait_ratio", rec)
	require.True(t, ok, "measured read wait of the verified recommendation")
	assert.InDelta(t, 0.1, v, 1e-9)
	got.assert(t, "eddy_operator_recommendation_cache_workers", map[string]string{"namespace": ns, "dataset": "data"}, 3)
	got.assert(t, "eddy_operator_open_recommendations", with(map[string]string{"action": "ScaleCache"}), 1)
	got.assert(t, "eddy_operator_change_budget_used", map[string]string{"namespace": ns}, 1)
	got.assert(t, "eddy_operator_change_budget_max", map[string]string{"namespace": ns}, 100)
	age, ok := got.value("eddy_operator_analyzer_heartbeat_age_seconds", nil)
	require.True(t, ok, "heartbeat age exported")
	assert.Less(t, age, 60.0)
	applied, _ := got.value("eddy_operator_actions_total", map[string]string{"step": "Apply", "action": "ScaleCache", "type": "Normal"})
	verified, _ := got.value("eddy_operator_actions_total", map[string]string{"step": "Verify", "reason": "Verified", "action": "ScaleCache"})
	assert.GreaterOrEqual(t, applied, 1.0, "the apply was counted")
	assert.GreaterOrEqual(t, verified, 1.0, "the verification was counted")
	errs, _ := got.value("eddy_operator_state_errors", nil)
	assert.Zero(t, errs)
	for name := range got {
		for _, m := range got[name] {
			for _, l := range m.GetLabel() {
				assert.NotContains(t, []string{"uid", "pod_uid", "path", "file"}, l.GetName(), "%s has a high-cardinality label", name)
			}
		}
	}
}

type families map[string][]*dto.Metric

func gather(t *testing.T) families {
	t.Helper()
	fs, err := ctrlmetrics.Registry.Gather()
	require.NoError(t, err)
	out := families{}
	for _, f := range fs {
		if strings.HasPrefix(f.GetName(), "eddy_operator_") {
			out[f.GetName()] = f.GetMetric()
		}
	}
	return out
}

// value sums the series of name whose labels include want.
func (f families) value(name string, want map[string]string) (float64, bool) {
	sum, found := 0.0, false
	for _, m := range f[name] {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum, found
}

func (f families) assert(t *testing.T, name string, want map[string]string, v float64) {
	t.Helper()
	got, ok := f.value(name, want)
	if assert.True(t, ok, "%s%v not exported", name, want) {
		assert.Equal(t, v, got, "%s%v", name, want)
	}
}
