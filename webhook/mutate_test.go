package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// TestMutateSkips: the rules the webhook configuration's selectors apply
// are re-checked in code, so a widened configuration injects nothing more.
func TestMutateSkips(t *testing.T) {
	c := loadGoldenCase(t, "testdata/golden/prefetch-native.in.yaml")
	enabled := map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	for _, tc := range []struct {
		name, reason string
		edit         func(in *Input)
	}{
		{"kube-system", SkipExcludedNamespace, func(in *Input) { in.Namespace = "kube-system" }},
		{"eddy's namespace", SkipExcludedNamespace, func(in *Input) { in.Namespace = "eddy-system" }},
		{"namespace not labelled", SkipNamespaceNotEnabled, func(in *Input) { in.NamespaceLabels = nil }},
		{"namespace labelled disabled", SkipNamespaceNotEnabled, func(in *Input) {
			in.NamespaceLabels = map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneDisabled}
		}},
		{"host network", SkipHostNetwork, func(in *Input) { in.Pod.Spec.HostNetwork = true }},
		{"mirror pod", SkipStaticPod, func(in *Input) { in.Pod.Annotations = map[string]string{MirrorPodAnnotation: "x"} }},
		{"policy Off", SkipPolicyOff, func(in *Input) { in.Policy.Spec.Mode = eddyv1alpha1.ModeOff }},
		{"recommendation superseded", SkipNoRecommendation, func(in *Input) {
			in.Recommendations[0].Status.Phase = eddyv1alpha1.PhaseSuperseded
		}},
		{"port 9471 taken", SkipPortConflict, func(in *Input) {
			in.Pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 9471}}
		}},
		{"name taken", SkipNameConflict, func(in *Input) {
			in.Pod.Spec.Containers = append(in.Pod.Spec.Containers, corev1.Container{Name: PrefetchContainerName})
		}},
		{"unknown strategy", SkipInvalid, func(in *Input) { in.Recommendations[0].Spec.Prefetch.Strategy = "Psychic" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadGoldenCase(t, "testdata/golden/prefetch-native.in.yaml")
			in := Input{Pod: &c.Pod, Namespace: c.Namespace, NamespaceLabels: enabled, Recommendations: c.Recommendations, Policy: c.Policy,
				Workload: eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "resnet"}}
			tc.edit(&in)
			res := Mutate(in, goldenConfig(true))
			assert.False(t, res.Changed())
			assert.Same(t, in.Pod, res.Pod)
			var reasons []string
			for _, d := range res.Decisions {
				reasons = append(reasons, d.Reason)
			}
			assert.Contains(t, reasons, tc.reason)
		})
	}
	// And the unedited case does inject, so the table above tests the edits.
	w := eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "resnet"}
	res := Mutate(Input{Pod: &c.Pod, Namespace: c.Namespace, NamespaceLabels: enabled, Recommendations: c.Recommendations, Policy: c.Policy, Workload: w}, goldenConfig(true))
	assert.Equal(t, []string{InjectedPrefetch}, res.Injected)
}
