package operator

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Operator-owned annotations and condition types.
const (
	// PreviousReplicasAnnotation on a Recommendation records the cache
	// target's replicas before it was applied: what a rollback restores. It is
	// written before the target is scaled and never overwritten.
	PreviousReplicasAnnotation = "eddy.io/previous-replicas"
	// EvictedAtAnnotation, EvictedByAnnotation and EvictedReasonAnnotation on
	// a dataset (Fluid Dataset or PVC) record when, by which recommendation
	// and why its cache was scaled to the minimum.
	EvictedAtAnnotation     = "eddy.io/evicted-at"
	EvictedByAnnotation     = "eddy.io/evicted-by"
	EvictedReasonAnnotation = "eddy.io/evicted-reason"
	// ReplicasBeforeEvictionAnnotation on a dataset is what its cache target
	// had before eviction.
	ReplicasBeforeEvictionAnnotation = "eddy.io/replicas-before-eviction"
	// UnusedSinceAnnotation on a dataset is when the operator first saw no pod
	// referencing it; removed when a pod references it again.
	UnusedSinceAnnotation = "eddy.io/unused-since"
	// RestoredAtAnnotation on a dataset is when its cache was scaled back up
	// after eviction because a pod used it again.
	RestoredAtAnnotation = "eddy.io/restored-at"
	// RestartedForAnnotation on a workload's pod template names the
	// recommendation whose rollout restart it carries, so a restart is never
	// repeated.
	RestartedForAnnotation = "eddy.io/restarted-for"
	// ConditionRestarted on a Recommendation says whether the workload's pods
	// were restarted so that a pod-level recommendation takes effect.
	ConditionRestarted = "Restarted"
	// ConditionDryRun on a Recommendation holds what the operator would have
	// done had dry-run been off.
	ConditionDryRun = "DryRun"
)

// setCondition sets a condition on rec and says whether anything changed.
func setCondition(rec *eddyv1alpha1.Recommendation, typ string, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&rec.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: rec.Generation,
	})
}

// recorder emits events regarding an object; a nil events.EventRecorder
// records nothing.
type recorder struct{ events.EventRecorder }

func (r recorder) normal(obj client.Object, reason, action, note string, args ...any) {
	if r.EventRecorder != nil {
		r.Eventf(obj, nil, corev1.EventTypeNormal, reason, action, note, args...)
	}
}

func (r recorder) warning(obj client.Object, reason, action, note string, args ...any) {
	if r.EventRecorder != nil {
		r.Eventf(obj, nil, corev1.EventTypeWarning, reason, action, note, args...)
	}
}

func isFinal(p eddyv1alpha1.RecommendationPhase) bool {
	switch p {
	case eddyv1alpha1.PhaseRejected, eddyv1alpha1.PhaseSuperseded, eddyv1alpha1.PhaseExpired, eddyv1alpha1.PhaseFailed, eddyv1alpha1.PhaseRolledBack:
		return true
	}
	return false
}

func isApplied(p eddyv1alpha1.RecommendationPhase) bool {
	switch p {
	case eddyv1alpha1.PhaseApplied, eddyv1alpha1.PhaseVerified, eddyv1alpha1.PhaseIneffective:
		return true
	}
	return false
}

func isPodLevel(a eddyv1alpha1.Action) bool {
	return a == eddyv1alpha1.ActionPrefetch || a == eddyv1alpha1.ActionInjectSDK
}
