package operator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// DatasetReconciler watches each dataset (a PVC, standing for itself or for
// the Fluid Dataset of the same name) that has a cache target. When no pod
// references it and nobody read it for the policy's idleAfter, it proposes an
// EvictDataset Recommendation; when a pod uses an evicted dataset again, it
// scales the cache back up. A dataset in use is never proposed for eviction.
type DatasetReconciler struct {
	client.Client
	Recorder recorder
	Options  Options

	scaler    *scaler
	heartbeat *heartbeat
	locks     *datasetLocks
}

// SetupWithManager registers the reconciler.
func (r *DatasetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options = r.Options.withDefaults()
	r.scaler = &scaler{client: r.Client, mapper: mgr.GetRESTMapper()}
	r.heartbeat = newHeartbeat(r.Client, r.Options)
	if r.locks == nil {
		r.locks = &datasetLocks{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("dataset").
		For(&corev1.PersistentVolumeClaim{}, builder.OnlyMetadata).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.Workers}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var out []reconcile.Request
			for _, c := range claimsOf(o.(*corev1.Pod)) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: c}})
			}
			return out
		})).
		Watches(&eddyv1alpha1.AccessProfile{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			p := o.(*eddyv1alpha1.AccessProfile)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Dataset.Name}}}
		})).
		Complete(r)
}

// Reconcile checks one dataset for idleness or renewed use.
func (r *DatasetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	unlock := r.locks.lock(req.String())
	defer unlock()
	pol, err := policyFor(ctx, r.Client, req.Namespace, r.Options.DryRun)
	if err != nil || pol.mode == eddyv1alpha1.ModeOff {
		return ctrl.Result{}, err
	}
	ds, err := r.scaler.datasetObject(ctx, req.Namespace, req.Name)
	if err != nil || ds == nil {
		return ctrl.Result{}, err
	}
	t, err := r.scaler.targetFor(ctx, req.Namespace, eddyv1alpha1.DatasetReference{Name: req.Name}, nil)
	if errors.Is(err, errNoCacheTarget) {
		return ctrl.Result{}, nil
	}
	if err != nil {
		r.Recorder.warning(ds, "BadCacheTarget", "ResolveCacheTarget", "%v", err)
		log.Error(err, "cannot resolve cache target", "dataset", req.NamespacedName)
		return ctrl.Result{}, nil
	}
	inUse, pod, err := datasetInUse(ctx, r.Client, req.Namespace, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	ann := ds.GetAnnotations()
	if inUse {
		return r.inUse(ctx, ds, t, pod, pol)
	}
	now := r.Options.Now()
	unusedSince, err := time.Parse(time.RFC3339, ann[eddyv1alpha1.UnusedSinceAnnotation])
	if err != nil {
		unusedSince = now
		if err := annotateDataset(ctx, r.Client, r.scaler, req.Namespace, req.Name, map[string]any{eddyv1alpha1.UnusedSinceAnnotation: now.UTC().Format(time.RFC3339Nano)}); err != nil {
			return ctrl.Result{}, err
		}
	}
	if ann[eddyv1alpha1.EvictedAtAnnotation] != "" {
		return ctrl.Result{}, nil
	}
	idleSince, lastReader, err := r.lastRead(ctx, req.Namespace, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if idleSince.Before(unusedSince) {
		idleSince = unusedSince
	}
	if wait := idleSince.Add(pol.idleAfter).Sub(now); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if open, err := r.evictionOpen(ctx, req.Namespace, req.Name); err != nil || open {
		return ctrl.Result{}, err
	}
	if err := r.heartbeat.check(ctx); err != nil {
		log.Info("idle dataset not proposed for eviction", "dataset", req.NamespacedName, "reason", err.Error())
		return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
	}
	rec := r.evictRecommendation(req.Namespace, req.Name, idleSince, lastReader, pol)
	if err := r.Create(ctx, rec); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create EvictDataset recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
	} else if err == nil {
		r.Recorder.normal(ds, "IdleDataset", "ProposeEviction", "no pod references %s and nobody read it since %s (idleAfter %s): proposed %s to scale %s to its minimum",
			req.Name, idleSince.UTC().Format(time.RFC3339), pol.idleAfter, rec.Name, t)
	}
	return ctrl.Result{}, nil
}

// inUse clears the unused mark of a dataset a pod references and, if it was
// evicted, scales its cache back up.
func (r *DatasetReconciler) inUse(ctx context.Context, ds *metav1.PartialObjectMetadata, t cacheTarget, pod string, pol effectivePolicy) (ctrl.Result, error) {
	ann := ds.GetAnnotations()
	patch := map[string]any{}
	if ann[eddyv1alpha1.UnusedSinceAnnotation] != "" {
		patch[eddyv1alpha1.UnusedSinceAnnotation] = nil
	}
	if ann[eddyv1alpha1.EvictedAtAnnotation] != "" {
		if err := r.heartbeat.check(ctx); err != nil {
			r.Recorder.warning(ds, "AnalyzerStale", "RestoreCache", "%v", err)
			return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
		}
		replicas, why, err := r.restoreReplicas(ctx, ds, pol)
		if err != nil {
			return ctrl.Result{}, err
		}
		what := fmt.Sprintf("scale %s back to %d (%s): pod %s uses dataset %s again", t, replicas, why, pod, ds.Name)
		if pol.dryRun {
			r.Recorder.normal(ds, "DryRun", "RestoreCache", "dry run: would %s", what)
			return ctrl.Result{}, nil
		}
		if _, err := r.scaler.setReplicas(ctx, t, replicas, nil); err != nil {
			return ctrl.Result{}, err
		}
		for _, k := range []string{eddyv1alpha1.EvictedAtAnnotation, eddyv1alpha1.EvictedByAnnotation, eddyv1alpha1.EvictedReasonAnnotation, eddyv1alpha1.ReplicasBeforeEvictionAnnotation} {
			patch[k] = nil
		}
		patch[eddyv1alpha1.RestoredAtAnnotation] = r.Options.Now().UTC().Format(time.RFC3339)
		r.Recorder.normal(ds, "CacheRestored", "RestoreCache", "%s", what)
	}
	if len(patch) == 0 {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, annotateDataset(ctx, r.Client, r.scaler, ds.Namespace, ds.Name, patch)
}

// restoreReplicas is what an evicted dataset's cache goes back to: the
// replicas of the last applied ScaleCache recommendation for it, else what
// it had before eviction, else the policy's minimum (at least one).
func (r *DatasetReconciler) restoreReplicas(ctx context.Context, ds *metav1.PartialObjectMetadata, pol effectivePolicy) (int32, string, error) {
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(ds.Namespace), client.MatchingFields{indexDataset: ds.Name}); err != nil {
		return 0, "", fmt.Errorf("list recommendations for dataset %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	var last *eddyv1alpha1.Recommendation
	for i := range list.Items {
		s := &list.Items[i]
		if s.Spec.Action != eddyv1alpha1.ActionScaleCache || s.Status.AppliedAt == nil || !s.Status.Phase.InForce() {
			continue
		}
		if last == nil || last.Status.AppliedAt.Before(s.Status.AppliedAt) {
			last = s
		}
	}
	if last != nil {
		n, _ := pol.clampReplicas(last.Spec.ScaleCache.Replicas)
		return n, "as last recommended by " + last.Name, nil
	}
	if n, err := strconv.ParseInt(ds.GetAnnotations()[eddyv1alpha1.ReplicasBeforeEvictionAnnotation], 10, 32); err == nil && n > 0 {
		c, _ := pol.clampReplicas(int32(n))
		return c, "as before eviction", nil
	}
	return max(pol.minReplicas(1), 1), "the policy's minimum", nil
}

// lastRead returns when the dataset was last read according to its
// profiles, and by which workload.
func (r *DatasetReconciler) lastRead(ctx context.Context, ns, name string) (time.Time, *eddyv1alpha1.WorkloadReference, error) {
	var list eddyv1alpha1.AccessProfileList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexDataset: name}); err != nil {
		return time.Time{}, nil, fmt.Errorf("list AccessProfiles of dataset %s/%s: %w", ns, name, err)
	}
	var last time.Time
	var who *eddyv1alpha1.WorkloadReference
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.LastSeen != nil && p.Status.LastSeen.After(last) {
			last, who = p.Status.LastSeen.Time, &p.Spec.WorkloadRef
		}
	}
	return last, who, nil
}

// evictionOpen says whether an EvictDataset recommendation for the dataset
// is still waiting to be decided or applied.
func (r *DatasetReconciler) evictionOpen(ctx context.Context, ns, name string) (bool, error) {
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexDataset: name}); err != nil {
		return false, fmt.Errorf("list recommendations for dataset %s/%s: %w", ns, name, err)
	}
	for _, s := range list.Items {
		if s.Spec.Action != eddyv1alpha1.ActionEvictDataset {
			continue
		}
		switch s.Status.Phase {
		case "", eddyv1alpha1.PhaseProposed, eddyv1alpha1.PhaseApproved:
			return true, nil
		}
	}
	return false, nil
}

// evictRecommendation builds the proposal. Its name is derived from the
// dataset and the start of the idle period, so a restarted operator proposes
// the same eviction once, and a rejected one is not proposed again until the
// dataset is used and goes idle anew.
func (r *DatasetReconciler) evictRecommendation(ns, name string, idleSince time.Time, lastReader *eddyv1alpha1.WorkloadReference, pol effectivePolicy) *eddyv1alpha1.Recommendation {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s@%d", ns, name, idleSince.Unix()))
	prefix := name
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: prefix + "-evict-" + hex.EncodeToString(sum[:])[:10],
			Labels: map[string]string{eddyv1alpha1.ManagedByLabel: eddyv1alpha1.ManagerOperator}},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef:    lastReader,
			Dataset:      eddyv1alpha1.DatasetReference{Name: name, Source: eddyv1alpha1.DatasetSourcePVC},
			Action:       eddyv1alpha1.ActionEvictDataset,
			EvictDataset: &eddyv1alpha1.EvictDatasetParameters{IdleSince: metav1.NewTime(idleSince), MinReplicas: pol.minReplicas(0)},
			Evidence: eddyv1alpha1.Evidence{
				Class:      eddyv1alpha1.ClassIdle,
				Confidence: 1,
				ExpectedBenefit: &eddyv1alpha1.Benefit{
					Summary: fmt.Sprintf("no pod references %s and nobody read it since %s (idle after %s): release its cache workers",
						name, idleSince.UTC().Format(time.RFC3339), pol.idleAfter),
				},
			},
		},
	}
}
