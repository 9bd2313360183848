package scale

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/node"
)

// appLabel marks the benchmark's Deployments and their pods; its value is
// the Deployment's name.
const appLabel = "eddy.io/scale-app"

// Dataset is the PVC every benchmark workload reads.
const Dataset = "data"

func optedIn(i int) string { return fmt.Sprintf("scale-%02d", i) }
func plain(i int) string   { return fmt.Sprintf("plain-%02d", i) }

// workloadName is the i-th workload's Deployment, in optedIn(i %
// Namespaces).
func workloadName(i int) string { return fmt.Sprintf("w-%04d", i) }

// createNamespaces creates the opted-in namespaces (each with an Auto policy
// for Prefetch and the dataset's PVC) and those not opted in.
func createNamespaces(ctx context.Context, c client.Client, s Size) error {
	var objs []client.Object
	for i := range s.Namespaces {
		ns := optedIn(i)
		policy := node.AutoPolicy("1Gi", v1.ActionPrefetch)
		policy.Namespace = ns
		// One change per workload is what the benchmark asks for: the
		// default budget (5 an hour) would stop the operator, not test it.
		policy.Spec.ChangeBudget = &v1.ChangeBudget{MaxChanges: int32(10 * s.Workloads), Per: &metav1.Duration{Duration: time.Hour}}
		objs = append(objs,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}}},
			policy,
			&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: Dataset},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: plain(i)}})
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// deployment is a Deployment of replicas pods on kwok nodes. They mount no
// volume: the claim would stay unbound (no provisioner here) and the pods
// unscheduled; the collectors report their reads of the claim all the same.
func deployment(ns, name string, replicas int) *appsv1.Deployment {
	labels := map[string]string{appLabel: name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers:                   []corev1.Container{{Name: "c", Image: "scale.local/reader:1"}},
					Tolerations:                  []corev1.Toleration{{Key: controlplane.KwokNodeAnnotation, Operator: corev1.TolerationOpExists}},
				},
			},
		},
	}
}

// workloads are the opted-in Deployments.
func workloads(s Size) []client.Object {
	var out []client.Object
	for i := range s.Workloads {
		out = append(out, deployment(optedIn(i%s.Namespaces), workloadName(i), s.PodsPerWorkload))
	}
	return out
}

// plainWorkloads are Deployments of PlainPods pods in all, in namespaces
// not opted in, 10 pods each.
func plainWorkloads(s Size) []client.Object {
	var out []client.Object
	for i, left := 0, s.PlainPods; left > 0; i++ {
		n := min(left, 10)
		out = append(out, deployment(plain(i%s.Namespaces), fmt.Sprintf("p-%04d", i), n))
		left -= n
	}
	return out
}

// createAll creates objects with a few writers in parallel.
func createAll(ctx context.Context, c client.Client, objs []client.Object) error {
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(objs); i += writers {
				if err := c.Create(ctx, objs[i]); err != nil {
					errs <- fmt.Errorf("create %T %s/%s: %w", objs[i], objs[i].GetNamespace(), objs[i].GetName(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// waitRunning waits until want pods labelled appLabel in namespaces whose
// name starts with prefix are Running, and returns them.
func waitRunning(ctx context.Context, c client.Client, namespaces []string, want int, timeout time.Duration) ([]corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		var running []corev1.Pod
		for _, ns := range namespaces {
			var pods corev1.PodList
			if err := c.List(ctx, &pods, client.InNamespace(ns), client.HasLabels{appLabel}); err != nil {
				return nil, err
			}
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
					running = append(running, p)
				}
			}
		}
		if len(running) >= want {
			return running, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d pods Running after %s", len(running), want, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// collectorTokens creates, for each node, a pod of eddy-system/eddy-collector
// bound to it (as the DaemonSet would) and returns node → that pod's
// projected token of the intake's audience.
func collectorTokens(ctx context.Context, c client.Client, nodes []string) (map[string]string, error) {
	var pods []client.Object
	for _, n := range nodes {
		pods = append(pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: controlplane.EddyNamespace, Name: "eddy-collector-" + n},
			Spec: corev1.PodSpec{NodeName: n, ServiceAccountName: "eddy-collector", AutomountServiceAccountToken: ptr.To(false),
				Containers:  []corev1.Container{{Name: "collector", Image: "scale.local/collector:1"}},
				Tolerations: []corev1.Toleration{{Key: controlplane.KwokNodeAnnotation, Operator: corev1.TolerationOpExists}}},
		})
	}
	if err := createAll(ctx, c, pods); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(nodes))
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: controlplane.EddyNamespace, Name: "eddy-collector"}}
	for _, o := range pods {
		p := o.(*corev1.Pod)
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{accessv1.Audience}, ExpirationSeconds: ptr.To(int64(3600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
		if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
			return nil, fmt.Errorf("token of %s: %w", p.Name, err)
		}
		out[p.Spec.NodeName] = tr.Status.Token
	}
	return out, nil
}

// prefetchRecommendation is a Prefetch for the i-th workload, as the
// analyzer would propose it.
func prefetchRecommendation(s Size, i int) *v1.Recommendation {
	return &v1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: optedIn(i % s.Namespaces), Name: workloadName(i) + "-bench-prefetch",
			Labels: map[string]string{v1.ManagedByLabel: v1.ManagerAnalyzer}},
		Spec: v1.RecommendationSpec{
			TargetRef: &v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: workloadName(i)},
			Dataset:   v1.DatasetReference{Name: Dataset, Source: "PVC"},
			Action:    v1.ActionPrefetch,
			Prefetch:  &v1.PrefetchParameters{Strategy: v1.StrategySequential, BlockSize: resource.MustParse("8Mi"), Concurrency: 4},
			Evidence: v1.Evidence{Class: v1.ClassSequentialScan, Confidence: 0.9,
				Features: &v1.AccessFeatures{BytesRead: 1 << 30, ReadOps: 1 << 14, Files: 1000, SequentialRatio: 1, WholeFileRatio: 1, Coverage: 1, Epochs: 1,
					WorkingSetBytes: 4 << 30, ThroughputBytesPerSecond: 50 << 20, ReadWaitShare: 0.5},
				ExpectedBenefit: &v1.Benefit{Summary: "read wait 50% → 10% (scale benchmark)"}},
		},
	}
}
