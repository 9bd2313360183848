package webhook

import (
	"context"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// OwnerLookup finds the controller of an intermediate owner (a ReplicaSet's
// Deployment, a Job's CronJob). The admission server answers from an
// informer cache of object metadata; tests may answer from a map.
type OwnerLookup interface {
	// ControllerOf returns the controller reference of the named object;
	// found is false when the object is unknown (not yet in the cache).
	ControllerOf(ctx context.Context, namespace, apiVersion, kind, name string) (owner *metav1.OwnerReference, found bool, err error)
}

// ResolveWorkload returns the pod's top-level workload: a ReplicaSet's
// Deployment, a Job's CronJob, otherwise the controlling owner, or the pod
// itself. When an owner is not yet resolvable (lookup nil, or the object not
// found) it falls back on names: a ReplicaSet whose name is a Deployment's
// plus the pod-template-hash belongs to that Deployment, and an ownerless pod
// with only generateName is the workload named by it. The error is the
// lookup's; the fallback answer is still returned with it.
func ResolveWorkload(ctx context.Context, pod *corev1.Pod, namespace string, lookup OwnerLookup) (eddyv1alpha1.WorkloadReference, error) {
	owner := metav1.GetControllerOfNoCopy(pod)
	if owner == nil && len(pod.OwnerReferences) > 0 {
		owner = &pod.OwnerReferences[0]
	}
	if owner == nil {
		name := pod.Name
		if name == "" {
			name = strings.TrimSuffix(pod.GenerateName, "-")
		}
		return eddyv1alpha1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: name}, nil
	}
	self := eddyv1alpha1.WorkloadReference{APIVersion: owner.APIVersion, Kind: owner.Kind, Name: owner.Name}
	group := apiGroup(owner.APIVersion)
	var parentKind string
	switch {
	case group == "apps" && owner.Kind == "ReplicaSet":
		parentKind = "Deployment"
	case group == "batch" && owner.Kind == "Job":
		parentKind = "CronJob"
	default:
		return self, nil
	}
	var lookupErr error
	if lookup != nil {
		parent, found, err := lookup.ControllerOf(ctx, namespace, owner.APIVersion, owner.Kind, owner.Name)
		switch {
		case err != nil:
			lookupErr = err
		case found && parent != nil && parent.Kind == parentKind && apiGroup(parent.APIVersion) == group:
			return eddyv1alpha1.WorkloadReference{APIVersion: parent.APIVersion, Kind: parent.Kind, Name: parent.Name}, nil
		case found:
			return self, nil
		}
	}
	if parentKind == "Deployment" {
		if hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; hash != "" && strings.HasSuffix(owner.Name, "-"+hash) {
			return eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: strings.TrimSuffix(owner.Name, "-"+hash)}, lookupErr
		}
	}
	return self, lookupErr
}
