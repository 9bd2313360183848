package webhook

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/workload"
)

// MissCounter makes admissions the webhook missed visible: with
// failurePolicy Ignore the API server admits a pod without calling eddy when
// eddy is down or slow, and records nothing eddy can read. It periodically
// counts, from the webhook's Cache of pod metadata, the pods in opted-in
// namespaces that carry no eddy.io/injected annotation although their
// workload had an Applied Prefetch or InjectSDK recommendation when they were
// created. Such a pod was missed, or the recommendation did not fit it (a
// conflict, a dataset it does not mount: see InjectionSkipped events on the
// recommendation).
type MissCounter struct {
	// Reader lists pod metadata, Namespaces and Recommendations.
	Reader client.Reader
	// Workloads resolves pods as the injector and the collector do.
	Workloads *workload.Resolver
	// EddyNamespace is never counted.
	EddyNamespace string
	// Gauge receives the count.
	Gauge prometheus.Gauge
	// Log receives failed counts.
	Log logr.Logger
}

// Run counts now and every interval until ctx ends.
func (m *MissCounter) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := m.Count(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.Log.Error(err, "counting uninjected pods")
			}
		} else {
			m.Gauge.Set(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Count returns the number of uninjected pods as defined on MissCounter.
func (m *MissCounter) Count(ctx context.Context) (int, error) {
	var namespaces corev1.NamespaceList
	if err := m.Reader.List(ctx, &namespaces, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("list namespaces: %w", err)
	}
	n := 0
	for _, ns := range namespaces.Items {
		if !Serves(&ns, m.EddyNamespace) {
			continue
		}
		var recs eddyv1alpha1.RecommendationList
		if err := m.Reader.List(ctx, &recs, client.InNamespace(ns.Name), client.UnsafeDisableDeepCopy); err != nil {
			return 0, fmt.Errorf("list recommendations in %s: %w", ns.Name, err)
		}
		since := appliedSince(recs.Items)
		if len(since) == 0 {
			continue
		}
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		err := m.Reader.List(ctx, pods, client.InNamespace(ns.Name), client.UnsafeDisableDeepCopy)
		if IsNotCached(err) {
			// Opted in a moment ago: counted once the cache holds its pods.
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("list pods in %s: %w", ns.Name, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if _, ok := p.Annotations[eddyv1alpha1.InjectedAnnotation]; ok || p.Labels[eddyv1alpha1.AutotuneLabel] == eddyv1alpha1.AutotuneDisabled {
				continue
			}
			if _, ok := p.Annotations[MirrorPodAnnotation]; ok {
				continue
			}
			id, _ := m.Workloads.Resolve(ctx, &corev1.Pod{ObjectMeta: p.ObjectMeta})
			if t, ok := since[id.Ref.Key()]; ok && !p.CreationTimestamp.Time.Before(t) {
				n++
			}
		}
	}
	return n, nil
}

// appliedSince maps each workload with an Applied (or Verified) Prefetch or
// InjectSDK recommendation to when the earliest one took effect: its
// appliedAt, else its Applied condition, else its creation.
func appliedSince(recs []eddyv1alpha1.Recommendation) map[string]time.Time {
	out := map[string]time.Time{}
	for i := range recs {
		r := &recs[i]
		if r.Spec.TargetRef == nil || !r.Spec.Action.PodLevel() || !r.Status.Phase.InForce() {
			continue
		}
		t := r.CreationTimestamp.Time
		for _, c := range r.Status.Conditions {
			if c.Type == eddyv1alpha1.ConditionApplied && c.Status == metav1.ConditionTrue {
				t = c.LastTransitionTime.Time
			}
		}
		if r.Status.AppliedAt != nil {
			t = r.Status.AppliedAt.Time
		}
		k := r.Spec.TargetRef.Key()
		if old, ok := out[k]; !ok || t.Before(old) {
			out[k] = t
		}
	}
	return out
}
