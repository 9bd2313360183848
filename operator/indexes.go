package operator

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Field indexes the controllers look objects up by.
const (
	// indexLineage keys a Recommendation by target, dataset and action: a
	// newer one with the same key supersedes an older one.
	indexLineage = "eddy.io/lineage"
	// indexDataset keys Recommendations and AccessProfiles by dataset name.
	indexDataset = "eddy.io/dataset"
	// indexWorkload keys AccessProfiles by workload (WorkloadReference.Key).
	indexWorkload = "eddy.io/workload"
	// indexClaims keys Pods by the PVCs their volumes claim.
	indexClaims = "eddy.io/claims"
)

func lineageOf(r *eddyv1alpha1.Recommendation) string {
	target := ""
	if t := r.Spec.TargetRef; t != nil {
		target = t.Key()
	}
	return fmt.Sprintf("%s|%s/%s|%s", target, r.Spec.Dataset.Source, r.Spec.Dataset.Name, r.Spec.Action)
}

func claimsOf(p *corev1.Pod) []string {
	var out []string
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		}
	}
	return out
}

// addIndexes registers the field indexes with the manager's cache.
func addIndexes(ctx context.Context, idx client.FieldIndexer) error {
	indexes := []struct {
		obj   client.Object
		field string
		fn    client.IndexerFunc
	}{
		{&eddyv1alpha1.Recommendation{}, indexLineage, func(o client.Object) []string {
			return []string{lineageOf(o.(*eddyv1alpha1.Recommendation))}
		}},
		{&eddyv1alpha1.Recommendation{}, indexDataset, func(o client.Object) []string {
			return []string{o.(*eddyv1alpha1.Recommendation).Spec.Dataset.Name}
		}},
		{&eddyv1alpha1.AccessProfile{}, indexDataset, func(o client.Object) []string {
			return []string{o.(*eddyv1alpha1.AccessProfile).Spec.Dataset.Name}
		}},
		{&eddyv1alpha1.AccessProfile{}, indexWorkload, func(o client.Object) []string {
			return []string{o.(*eddyv1alpha1.AccessProfile).Spec.WorkloadRef.Key()}
		}},
		{&corev1.Pod{}, indexClaims, func(o client.Object) []string { return claimsOf(o.(*corev1.Pod)) }},
	}
	for _, i := range indexes {
		if err := idx.IndexField(ctx, i.obj, i.field, i.fn); err != nil {
			return fmt.Errorf("index %T by %s: %w", i.obj, i.field, err)
		}
	}
	return nil
}

// datasetInUse says whether a pod that has not finished (pending pods count)
// claims the dataset's PVC, and names one.
func datasetInUse(ctx context.Context, c client.Reader, ns, dataset string) (bool, string, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingFields{indexClaims: dataset}); err != nil {
		return false, "", fmt.Errorf("list pods claiming %s/%s: %w", ns, dataset, err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		return true, p.Name, nil
	}
	return false, "", nil
}
