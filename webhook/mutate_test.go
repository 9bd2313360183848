package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

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

// TestInjectionKeepsThePodsQoSClass: the pod's QoS class (its eviction
// order, OOM score and whether the CPU manager pins it) is the same after
// the prefetch sidecar and the SDK installer are injected as before, for a
// BestEffort, a Burstable and a Guaranteed pod; a policy that caps the
// sidecar's resources still gets its limits on a BestEffort pod.
func TestInjectionKeepsThePodsQoSClass(t *testing.T) {
	enabled := map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	w := eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "resnet-train"}
	list := func(cpu, mem string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	}
	for _, tc := range []struct {
		name      string
		resources corev1.ResourceRequirements
		want      corev1.PodQOSClass
	}{
		{"BestEffort", corev1.ResourceRequirements{}, corev1.PodQOSBestEffort},
		{"Burstable", corev1.ResourceRequirements{Requests: list("1", "1Gi")}, corev1.PodQOSBurstable},
		{"Guaranteed", corev1.ResourceRequirements{Requests: list("2", "4Gi"), Limits: list("2", "4Gi")}, corev1.PodQOSGuaranteed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadGoldenCase(t, "testdata/golden/prefetch-and-sdk.in.yaml")
			for i := range c.Pod.Spec.Containers {
				c.Pod.Spec.Containers[i].Resources = *tc.resources.DeepCopy()
			}
			for i := range c.Pod.Spec.InitContainers {
				c.Pod.Spec.InitContainers[i].Resources = *tc.resources.DeepCopy()
			}
			require.Equal(t, tc.want, podQoS(&c.Pod), "the pod before injection")
			res := Mutate(Input{Pod: &c.Pod, Namespace: c.Namespace, NamespaceLabels: enabled, Recommendations: c.Recommendations,
				Policy: c.Policy, Workload: w}, goldenConfig(true))
			require.ElementsMatch(t, []string{InjectedPrefetch, InjectedSDK}, res.Injected)
			assert.Equal(t, tc.want, podQoS(res.Pod), "the pod after injection")
		})
	}
	t.Run("BestEffort with the policy's caps", func(t *testing.T) {
		c := loadGoldenCase(t, "testdata/golden/prefetch-and-sdk.in.yaml")
		if c.Policy == nil {
			c.Policy = &eddyv1alpha1.AutotunePolicy{}
		}
		cpu := resource.MustParse("200m")
		c.Policy.Spec.Prefetch = &eddyv1alpha1.PrefetchBounds{MaxCPU: &cpu}
		res := Mutate(Input{Pod: &c.Pod, Namespace: c.Namespace, NamespaceLabels: enabled, Recommendations: c.Recommendations,
			Policy: c.Policy, Workload: w}, goldenConfig(true))
		for _, ic := range res.Pod.Spec.InitContainers {
			if ic.Name == PrefetchContainerName {
				assert.True(t, cpu.Equal(ic.Resources.Limits[corev1.ResourceCPU]), "the policy's cap is a limit: %v", ic.Resources)
				return
			}
		}
		t.Fatal("no prefetch sidecar injected")
	})
}
