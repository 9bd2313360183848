package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// restartedAtAnnotation is the pod-template annotation `kubectl rollout
// restart` sets; changing it makes the workload's controller replace its pods
// with its own rollout strategy (maxUnavailable, maxSurge, partition).
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

type restartOutcome string

const (
	restartDone        restartOutcome = "RolledOut"
	restartWaiting     restartOutcome = "WaitingToRestart"
	restartUnsupported restartOutcome = "NotRestartable"
)

type restartResult struct {
	outcome restartOutcome
	message string
}

// workloadRestarter triggers rollout restarts of Deployments, StatefulSets
// and DaemonSets, once per marker.
type workloadRestarter struct {
	client client.Client
	reader client.Reader
}

// restart sets the restartedAt template annotation of ref unless its template
// already carries marker, waiting while a rollout is in progress, the
// Deployment is paused, or a PodDisruptionBudget over its pods allows no
// disruption now.
func (w workloadRestarter) restart(ctx context.Context, ns string, ref eddyv1alpha1.WorkloadReference, marker string, now time.Time) (restartResult, error) {
	var obj client.Object
	switch {
	case ref.APIVersion != "apps/v1":
		return restartResult{restartUnsupported, fmt.Sprintf("%s %s/%s cannot be restarted by eddy; its new pods get the change when they are created", ref.APIVersion, ref.Kind, ref.Name)}, nil
	case ref.Kind == "Deployment":
		obj = &appsv1.Deployment{}
	case ref.Kind == "StatefulSet":
		obj = &appsv1.StatefulSet{}
	case ref.Kind == "DaemonSet":
		obj = &appsv1.DaemonSet{}
	default:
		return restartResult{restartUnsupported, fmt.Sprintf("%s %s cannot be restarted by eddy; its new pods get the change when they are created", ref.Kind, ref.Name)}, nil
	}
	if err := w.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, obj); err != nil {
		return restartResult{}, fmt.Errorf("get %s %s/%s to restart it: %w", ref.Kind, ns, ref.Name, err)
	}
	tmpl, busy := rolloutState(obj)
	name := fmt.Sprintf("%s %s/%s", ref.Kind, ns, ref.Name)
	if tmpl.Annotations[eddyv1alpha1.RestartedForAnnotation] == marker {
		return restartResult{restartDone, fmt.Sprintf("%s was restarted for %s", name, marker)}, nil
	}
	if busy != "" {
		return restartResult{restartWaiting, fmt.Sprintf("%s: %s", name, busy)}, nil
	}
	if pdb, err := w.blockingBudget(ctx, ns, tmpl.Labels); err != nil || pdb != "" {
		if err != nil {
			return restartResult{}, err
		}
		return restartResult{restartWaiting, fmt.Sprintf("%s: PodDisruptionBudget %s allows no disruption now", name, pdb)}, nil
	}
	patch, err := mergePatchTemplateAnnotations(map[string]string{
		restartedAtAnnotation:               now.UTC().Format(time.RFC3339),
		eddyv1alpha1.RestartedForAnnotation: marker,
	})
	if err != nil {
		return restartResult{}, err
	}
	if err := w.client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return restartResult{}, fmt.Errorf("restart %s: %w", name, err)
	}
	return restartResult{restartDone, fmt.Sprintf("%s restarted with its own rollout strategy", name)}, nil
}

// rolloutState returns the pod template and, if a rollout is still under
// way or the workload is paused, why a restart must wait.
func rolloutState(obj client.Object) (metav1.ObjectMeta, string) {
	gen := obj.GetGeneration()
	switch o := obj.(type) {
	case *appsv1.Deployment:
		want := ptrOr(o.Spec.Replicas, 1)
		switch {
		case o.Spec.Paused:
			return o.Spec.Template.ObjectMeta, "it is paused"
		case o.Status.ObservedGeneration < gen || o.Status.UpdatedReplicas < want || o.Status.UnavailableReplicas > 0:
			return o.Spec.Template.ObjectMeta, fmt.Sprintf("a rollout is in progress (%d of %d updated, %d unavailable)", o.Status.UpdatedReplicas, want, o.Status.UnavailableReplicas)
		}
		return o.Spec.Template.ObjectMeta, ""
	case *appsv1.StatefulSet:
		want := ptrOr(o.Spec.Replicas, 1)
		if o.Status.ObservedGeneration < gen || o.Status.UpdatedReplicas < want || o.Status.ReadyReplicas < want {
			return o.Spec.Template.ObjectMeta, fmt.Sprintf("a rollout is in progress (%d of %d updated, %d ready)", o.Status.UpdatedReplicas, want, o.Status.ReadyReplicas)
		}
		return o.Spec.Template.ObjectMeta, ""
	case *appsv1.DaemonSet:
		if o.Status.ObservedGeneration < gen || o.Status.UpdatedNumberScheduled < o.Status.DesiredNumberScheduled || o.Status.NumberUnavailable > 0 {
			return o.Spec.Template.ObjectMeta, fmt.Sprintf("a rollout is in progress (%d of %d updated)", o.Status.UpdatedNumberScheduled, o.Status.DesiredNumberScheduled)
		}
		return o.Spec.Template.ObjectMeta, ""
	}
	return metav1.ObjectMeta{}, "unsupported kind"
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// blockingBudget names a PodDisruptionBudget selecting pods with these labels
// that allows no disruption now, or returns "".
func (w workloadRestarter) blockingBudget(ctx context.Context, ns string, podLabels map[string]string) (string, error) {
	var pdbs policyv1.PodDisruptionBudgetList
	if err := w.reader.List(ctx, &pdbs, client.InNamespace(ns)); err != nil {
		return "", fmt.Errorf("list PodDisruptionBudgets in %s: %w", ns, err)
	}
	for _, p := range pdbs.Items {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
			continue
		}
		if p.Status.DisruptionsAllowed < 1 {
			return p.Name, nil
		}
	}
	return "", nil
}

func mergePatchTemplateAnnotations(ann map[string]string) ([]byte, error) {
	patch := map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": ann}}}}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("render restart patch: %w", err)
	}
	return b, nil
}
