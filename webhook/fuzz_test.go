package webhook

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// fuzzWords are the strings random pods are built from: eddy's own names,
// variables and paths come up often, so collisions with what the mutator
// adds are exercised rather than left to chance.
var fuzzWords = []string{
	"", "data", "imagenet", "trainer", "a", "b", "/data", "/eddy", "/eddy/sdk", "/eddy/sdk/x", "/eddy/data/data",
	SDKVolumeName, SDKInitContainerName, PrefetchContainerName, StatusPortName,
	PythonPathEnv, HintSocketEnv, "/eddy/sdk/prefetch.sock", "/app:/eddy/sdk",
	eddyv1alpha1.AutotuneLabel, eddyv1alpha1.AutotuneEnabled, eddyv1alpha1.AutotuneDisabled,
	eddyv1alpha1.InjectedAnnotation, MirrorPodAnnotation, "pod-template-hash", "web-abc", "abc",
	"Sequential", "Ordered", "HotSet", "WholeDataset", "Bogus", "Always", "Never", "OnFailure",
	"apps/v1", "batch/v1", "v1", "ReplicaSet", "Job", "Deployment", "Pod", "Node", "kube-system", "eddy-system",
}

func fuzzFiller(data []byte) *randfill.Filler {
	return randfill.NewFromGoFuzz(data).NilChance(0.3).NumElements(0, 3).MaxDepth(8).Funcs(
		func(s *string, c randfill.Continue) { *s = fuzzWords[c.Intn(len(fuzzWords))] },
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewQuantity(c.Int63n(1<<36)-1<<20, resource.BinarySI)
		},
		func(i *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*i = intstr.FromInt32(c.Int31())
			} else {
				*i = intstr.FromString(fuzzWords[c.Intn(len(fuzzWords))])
			}
		},
		func(t *metav1.Time, c randfill.Continue) { *t = metav1.Time{} },
		func(t **metav1.Time, c randfill.Continue) { *t = nil },
		func(r *corev1.ContainerRestartPolicy, c randfill.Continue) { *r = corev1.ContainerRestartPolicyAlways },
		func(v *corev1.Volume, c randfill.Continue) {
			v.Name = fuzzWords[c.Intn(len(fuzzWords))]
			switch c.Intn(3) {
			case 0:
				v.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: fuzzWords[c.Intn(len(fuzzWords))], ReadOnly: c.Bool()}
			case 1:
				v.EmptyDir = &corev1.EmptyDirVolumeSource{}
			}
		},
	)
}

// fuzzInput builds a random pod and recommendations that mostly apply to it,
// so the injection paths, not only the early skips, run.
func fuzzInput(data []byte) Input {
	f := fuzzFiller(data)
	pod := &corev1.Pod{}
	f.Fill(pod)
	var recs []eddyv1alpha1.Recommendation
	f.Fill(&recs)
	// Most random pods should get past the early skips.
	var knob byte
	if len(data) > 0 {
		knob = data[len(data)-1]
	}
	if knob%5 != 0 {
		pod.Spec.HostNetwork = false
		delete(pod.Annotations, MirrorPodAnnotation)
		delete(pod.Annotations, eddyv1alpha1.InjectedAnnotation)
		delete(pod.Labels, eddyv1alpha1.AutotuneLabel)
		pod.OwnerReferences = nil
	}
	if len(pod.Spec.Volumes) > 0 && knob%3 != 0 {
		for i := range pod.Spec.Containers {
			v := pod.Spec.Volumes[i%len(pod.Spec.Volumes)]
			pod.Spec.Containers[i].VolumeMounts = append(pod.Spec.Containers[i].VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: "/mnt/" + v.Name})
		}
	}
	w := resolveOffline(pod, "ml")
	for i := range recs {
		r := &recs[i]
		if i%3 != 2 {
			r.Spec.TargetRef = &eddyv1alpha1.WorkloadReference{APIVersion: w.APIVersion, Kind: w.Kind, Name: w.Name}
			r.Status.Phase = eddyv1alpha1.PhaseApplied
		}
		if len(pod.Spec.Volumes) > 0 {
			v := pod.Spec.Volumes[i%len(pod.Spec.Volumes)]
			r.Spec.Dataset = eddyv1alpha1.DatasetReference{Name: v.Name, Source: "Volume"}
			if v.PersistentVolumeClaim != nil {
				r.Spec.Dataset = eddyv1alpha1.DatasetReference{Name: v.PersistentVolumeClaim.ClaimName, Source: "PVC"}
			}
		}
		if i%2 == 0 {
			r.Spec.Action = eddyv1alpha1.ActionPrefetch
			if r.Spec.Prefetch != nil && knob%2 == 0 {
				r.Spec.Prefetch.Strategy = eddyv1alpha1.StrategySequential
			}
		} else {
			r.Spec.Action = eddyv1alpha1.ActionInjectSDK
		}
	}
	var policy *eddyv1alpha1.AutotunePolicy
	f.Fill(&policy)
	labels := map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	if len(data) > 0 && data[0]%7 == 0 {
		labels = nil
	}
	return Input{Pod: pod, Namespace: "ml", NamespaceLabels: labels, Workload: w, Recommendations: recs, Policy: policy}
}

// FuzzMutate: for any pod and recommendations the mutator does not panic,
// leaves its input alone, adds no validation problem, sets its annotations
// exactly when it injected, and changes nothing on a second pass. The seeds
// run in every `go test`; `go test -fuzz FuzzMutate ./webhook` explores.
func FuzzMutate(f *testing.F) {
	for _, seed := range []string{
		"", "\x00", "eddy", "\x07prefetch-and-sdk", "several containers and volumes, with conflicts",
		strings.Repeat("\xff", 64), strings.Repeat("\x01\x02\x03\x04", 32), strings.Repeat("eddy-sdk", 40),
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, native bool) {
		in := fuzzInput(data)
		cfg := goldenConfig(native)
		before, err := json.Marshal(in.Pod)
		if err != nil {
			t.Skip("random pod does not marshal:", err)
		}
		inputOK := roundTrips(in.Pod) == nil
		had := podProblems(in.Pod)

		res := Mutate(in, cfg)

		after, _ := json.Marshal(in.Pod)
		if string(before) != string(after) {
			t.Fatalf("Mutate changed its input pod")
		}
		if res.Pod == nil {
			t.Fatal("Mutate returned no pod")
		}
		if inputOK {
			if err := roundTrips(res.Pod); err != nil {
				t.Fatal(err)
			}
			if err := patchProduces(in.Pod, res.Pod); err != nil {
				t.Fatal(err)
			}
		}
		for p := range podProblems(res.Pod) {
			if !had[p] {
				t.Errorf("Mutate introduced: %s", p)
			}
		}
		_, annotated := res.Pod.Annotations[eddyv1alpha1.InjectedAnnotation]
		if res.Changed() != (annotated && res.Pod != in.Pod) {
			t.Errorf("changed=%v but annotated=%v", res.Changed(), annotated)
		}
		if !res.Changed() && res.Pod != in.Pod {
			t.Errorf("unchanged result returned a different pod")
		}
		in2 := in
		in2.Pod = res.Pod
		if again := Mutate(in2, cfg); again.Changed() || again.Pod != res.Pod {
			t.Errorf("second pass changed the pod again: %v", again.Decisions)
		}
	})
}

// TestFuzzInputsReachInjection keeps the fuzz test honest: the generator
// must produce pods that get injected, not only ones skipped early.
func TestFuzzInputsReachInjection(t *testing.T) {
	counts := map[string]int{}
	for i := range 300 {
		data := []byte(strings.Repeat(string(rune('a'+i%26)), 1+i/26) + string(rune(i)))
		res := Mutate(fuzzInput(data), goldenConfig(i%2 == 0))
		for _, what := range res.Injected {
			counts[what]++
		}
		for _, d := range res.Decisions {
			counts[d.Reason]++
		}
	}
	t.Logf("outcomes over 300 random inputs: %v", counts)
	for _, want := range []string{InjectedPrefetch, InjectedSDK, SkipNoRecommendation} {
		if counts[want] == 0 {
			t.Errorf("no random input led to %s: %v", want, counts)
		}
	}
}
