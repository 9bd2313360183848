package operator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// RecommendationReconciler moves each Recommendation through its lifecycle:
// Proposed → Approved (by a person, or by an Auto policy within its change
// budget) → Applied → Verified or Ineffective → RolledBack, or Rejected,
// Superseded, Expired, Failed. Every step is recorded in status conditions and
// events; every action first persists its intent and then checks the current
// state, so a restart in the middle never repeats it.
type RecommendationReconciler struct {
	client.Client
	// APIReader reads around the cache, for the change budget.
	APIReader client.Reader
	Recorder  recorder
	Options   Options

	scaler     *scaler
	heartbeat  *heartbeat
	locks      *datasetLocks
	budgetMemo sync.Map
}

// SetupWithManager registers the reconciler; Options' zero fields take their defaults.
func (r *RecommendationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options = r.Options.withDefaults()
	r.scaler = &scaler{client: r.Client, mapper: mgr.GetRESTMapper()}
	r.heartbeat = newHeartbeat(r.Client, r.Options)
	if r.locks == nil {
		r.locks = &datasetLocks{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("recommendation").
		For(&eddyv1alpha1.Recommendation{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.Workers}).
		// A newer recommendation's progress decides whether an older one is superseded.
		Watches(&eddyv1alpha1.Recommendation{}, handler.EnqueueRequestsFromMapFunc(r.siblings)).
		// Fresh profile data decides whether an applied one helped.
		Watches(&eddyv1alpha1.AccessProfile{}, handler.EnqueueRequestsFromMapFunc(r.appliedForProfile)).
		// A changed policy spec may allow or forbid what was waiting.
		Watches(&eddyv1alpha1.AutotunePolicy{}, handler.EnqueueRequestsFromMapFunc(r.openInNamespace),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

func (r *RecommendationReconciler) siblings(ctx context.Context, o client.Object) []reconcile.Request {
	rec, ok := o.(*eddyv1alpha1.Recommendation)
	if !ok {
		return nil
	}
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(rec.Namespace), client.MatchingFields{indexLineage: lineageOf(rec)}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if s.Name != rec.Name && !s.Status.Phase.Final() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
		}
	}
	return out
}

func (r *RecommendationReconciler) appliedForProfile(ctx context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*eddyv1alpha1.AccessProfile)
	if !ok {
		return nil
	}
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingFields{indexDataset: p.Spec.Dataset.Name}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if s.Status.Phase == eddyv1alpha1.PhaseApplied {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
		}
	}
	return out
}

func (r *RecommendationReconciler) openInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if !s.Status.Phase.Final() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
		}
	}
	return out
}

// Reconcile takes one step of a recommendation's lifecycle. A write that
// conflicts means a newer version exists; its watch event brings the
// recommendation back, so the conflict is not retried here.
func (r *RecommendationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.step(ctx, req)
	if isRecommendationConflict(err) {
		logf.FromContext(ctx).V(1).Info("recommendation changed meanwhile; waiting for its update", "error", err.Error())
		return ctrl.Result{}, nil
	}
	return res, err
}

// isRecommendationConflict says whether err is a conflict writing a
// Recommendation (not its policy or cache target, whose changes do not bring
// the recommendation back).
func isRecommendationConflict(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	st := se.Status()
	return st.Reason == metav1.StatusReasonConflict && st.Details != nil && st.Details.Group == eddyv1alpha1.GroupVersion.Group && st.Details.Kind == "recommendations"
}

func (r *RecommendationReconciler) step(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rec := &eddyv1alpha1.Recommendation{}
	if err := r.Get(ctx, req.NamespacedName, rec); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if rec.DeletionTimestamp != nil || rec.Status.Phase.Final() {
		return ctrl.Result{}, nil
	}
	// One dataset's recommendations (and its cache) are handled one at a
	// time, so a newer one is never overtaken by an older one being applied.
	unlock := r.locks.lock(rec.Namespace + "/" + rec.Spec.Dataset.Name)
	defer unlock()
	if done, err := r.supersede(ctx, rec); done || err != nil {
		return ctrl.Result{}, err
	}
	if rec.Status.Phase == "" {
		rec.Status.Phase = eddyv1alpha1.PhaseProposed
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("mark recommendation %s Proposed: %w", req, err)
		}
		// Under a policy that applies it at once, the AutoApproved event
		// that follows says what was proposed: one event, not two (events
		// were a third of the operator's writes at scale, issue 19).
		if pol, err := policyFor(ctx, r.Client, rec.Namespace, r.Options.DryRun); err == nil && pol.autoApprovesNow(rec) {
			countAction(rec, corev1.EventTypeNormal, "Proposed", "Propose")
			return ctrl.Result{}, nil
		}
		r.Recorder.normal(rec, "Proposed", "Propose", "%s for dataset %s proposed (class %s, confidence %.2f)",
			rec.Spec.Action, rec.Spec.Dataset.Name, rec.Spec.Evidence.Class, rec.Spec.Evidence.Confidence)
		return ctrl.Result{}, nil
	}
	pol, err := policyFor(ctx, r.Client, rec.Namespace, r.Options.DryRun)
	if err != nil {
		return ctrl.Result{}, err
	}
	if c := meta.FindStatusCondition(rec.Status.Conditions, eddyv1alpha1.ConditionDenied); c != nil && c.Status == metav1.ConditionTrue {
		return r.deny(ctx, rec, pol, c)
	}
	switch rec.Status.Phase {
	case eddyv1alpha1.PhaseProposed:
		return r.approve(ctx, rec, pol)
	case eddyv1alpha1.PhaseApproved:
		return r.apply(ctx, rec, pol)
	case eddyv1alpha1.PhaseApplied:
		return r.verify(ctx, rec, pol)
	case eddyv1alpha1.PhaseIneffective:
		if pol.mode == eddyv1alpha1.ModeAuto {
			return r.rollback(ctx, rec, pol, "Ineffective", "it did not help and the policy is Auto")
		}
	}
	return ctrl.Result{}, nil
}

// deny handles a person's Denied=True: before application the recommendation
// is Rejected; after, it is rolled back.
func (r *RecommendationReconciler) deny(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy, c *metav1.Condition) (ctrl.Result, error) {
	if rec.Status.Phase.InForce() {
		return r.rollback(ctx, rec, pol, "Rejected", "a person rejected it after it was applied: "+c.Message)
	}
	rec.Status.Phase = eddyv1alpha1.PhaseRejected
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Rejected: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "Rejected", "Reject", "rejected: %s", c.Message)
	return ctrl.Result{}, nil
}

// supersede marks rec Superseded when a newer recommendation for the same
// target, dataset and action exists (one eddy did not propose counts only
// once a person approved it): at once if rec was not applied yet,
// else once the newer one is applied.
func (r *RecommendationReconciler) supersede(ctx context.Context, rec *eddyv1alpha1.Recommendation) (bool, error) {
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(rec.Namespace), client.MatchingFields{indexLineage: lineageOf(rec)}); err != nil {
		return false, fmt.Errorf("list recommendations like %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	var newest *eddyv1alpha1.Recommendation
	for i := range list.Items {
		s := &list.Items[i]
		if s.Name == rec.Name || s.Status.Phase.Final() || !newer(s, rec) {
			continue
		}
		if !s.ProposedByEddy() && !s.Status.Phase.InForce() && !meta.IsStatusConditionTrue(s.Status.Conditions, eddyv1alpha1.ConditionApproved) {
			// Someone else's recommendation replaces eddy's only once a
			// person with the right approved it.
			continue
		}
		if newest == nil || newer(s, newest) {
			newest = s
		}
	}
	if newest == nil || (rec.Status.Phase.InForce() && !newest.Status.Phase.InForce()) {
		return false, nil
	}
	rec.Status.Phase = eddyv1alpha1.PhaseSuperseded
	rec.Status.SupersededBy = newest.Name
	if c := meta.FindStatusCondition(rec.Status.Conditions, eddyv1alpha1.ConditionVerified); c != nil && c.Status == metav1.ConditionUnknown {
		// It will never be judged: say so rather than keep "awaiting".
		setCondition(rec, eddyv1alpha1.ConditionVerified, metav1.ConditionUnknown, "Superseded",
			fmt.Sprintf("not judged: superseded by %s before a run it applied to ended", newest.Name))
	}
	if err := r.Status().Update(ctx, rec); err != nil {
		return true, fmt.Errorf("mark recommendation %s/%s Superseded: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "Superseded", "Supersede", "superseded by the newer %s", newest.Name)
	return true, nil
}

// newer says whether a was created after b. Creation times have a
// resolution of one second; within the same second one that was already
// applied (or applied earlier) counts as older, then names decide.
func newer(a, b *eddyv1alpha1.Recommendation) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	if a.Status.Phase.InForce() != b.Status.Phase.InForce() {
		return b.Status.Phase.InForce()
	}
	if x, y := a.Status.AppliedAt, b.Status.AppliedAt; x != nil && y != nil && !x.Equal(y) {
		return y.Before(x)
	}
	return a.Name > b.Name
}

// approve moves a Proposed recommendation to Approved when a person approved
// it or the policy allows it automatically, and expires it after the TTL.
func (r *RecommendationReconciler) approve(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	now := r.Options.Now()
	if c := meta.FindStatusCondition(rec.Status.Conditions, eddyv1alpha1.ConditionApproved); c != nil && c.Status == metav1.ConditionTrue {
		rec.Status.Phase = eddyv1alpha1.PhaseApproved
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Approved: %w", rec.Namespace, rec.Name, err)
		}
		r.Recorder.normal(rec, "Approved", "Approve", "approved (%s): %s", c.Reason, c.Message)
		return ctrl.Result{}, nil
	}
	expiry := rec.CreationTimestamp.Add(r.Options.RecommendationTTL)
	if !now.Before(expiry) {
		rec.Status.Phase = eddyv1alpha1.PhaseExpired
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Expired: %w", rec.Namespace, rec.Name, err)
		}
		r.Recorder.normal(rec, "Expired", "Expire", "nobody approved it within %s", r.Options.RecommendationTTL)
		return ctrl.Result{}, nil
	}
	untilExpiry := ctrl.Result{RequeueAfter: expiry.Sub(now)}
	if ok, _ := pol.mayAutoApply(rec); !ok {
		return untilExpiry, nil
	}
	if err := r.heartbeat.check(ctx); err != nil {
		r.Recorder.warning(rec, "AnalyzerStale", "AutoApprove", "%v", err)
		return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
	}
	if pol.dryRun {
		return r.recordDryRun(ctx, rec, fmt.Sprintf("auto-approve %s under policy %s", rec.Spec.Action, pol.obj.Name))
	}
	ok, used, retryAt, err := r.reserveBudget(ctx, pol, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !ok {
		r.Recorder.warning(rec, "BudgetExhausted", "AutoApprove", "change budget of policy %s (%d per %s) is used up; next slot at %s",
			pol.obj.Name, pol.maxChanges, pol.per, retryAt.UTC().Format(time.RFC3339))
		return ctrl.Result{RequeueAfter: retryAt.Sub(now)}, nil
	}
	setCondition(rec, eddyv1alpha1.ConditionApproved, metav1.ConditionTrue, "AutoApproved",
		fmt.Sprintf("policy %s is Auto, allows %s, confidence %.2f ≥ %.2f; change %d of %d per %s",
			pol.obj.Name, rec.Spec.Action, rec.Spec.Evidence.Confidence, pol.minConfidence, used, pol.maxChanges, pol.per))
	rec.Status.Phase = eddyv1alpha1.PhaseApproved
	if err := r.Status().Update(ctx, rec); err != nil {
		// The reserved budget slot stays used: a crash or conflict here can
		// waste a slot but never exceed the budget.
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s auto-approved: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "AutoApproved", "Approve", "%s for dataset %s (class %s, confidence %.2f) auto-approved by policy %s (change %d of %d per %s)",
		rec.Spec.Action, rec.Spec.Dataset.Name, rec.Spec.Evidence.Class, rec.Spec.Evidence.Confidence, pol.obj.Name, used, pol.maxChanges, pol.per)
	return ctrl.Result{}, nil
}

// reserveBudget records one applied change in the policy's status if the
// budget has room. It reads the policy fresh and writes with its
// resourceVersion, so concurrent reservations cannot exceed the budget.
func (r *RecommendationReconciler) reserveBudget(ctx context.Context, pol effectivePolicy, now time.Time) (ok bool, used int, retryAt time.Time, err error) {
	key := client.ObjectKeyFromObject(pol.obj)
	// Reservations in a namespace take turns here; the resourceVersion check
	// still guards against any other writer.
	unlock := r.locks.lock("budget:" + key.Namespace)
	defer unlock()
	memoKey := key.String()
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		// The policy as this operator last wrote it saves a read per change;
		// if anyone wrote since, the update conflicts and it is read afresh.
		p := &eddyv1alpha1.AutotunePolicy{}
		if m, ok := r.budgetMemo.Load(memoKey); ok && m.(*eddyv1alpha1.AutotunePolicy).UID == pol.obj.UID {
			p = m.(*eddyv1alpha1.AutotunePolicy).DeepCopy()
			r.budgetMemo.Delete(memoKey)
		} else if err := r.APIReader.Get(ctx, key, p); err != nil {
			return err
		}
		recent := changesWithin(p.Status.AppliedChanges, pol.per, now)
		if len(recent) >= pol.maxChanges {
			ok, used = false, len(recent)
			if len(recent) > 0 {
				retryAt = recent[0].Add(pol.per)
			} else {
				retryAt = now.Add(pol.per)
			}
			return nil
		}
		p.Status.AppliedChanges = append(recent, metav1.NewTime(now))
		ok, used = true, len(p.Status.AppliedChanges)
		setBudgetCondition(p, len(p.Status.AppliedChanges), pol.maxChanges, pol.per)
		if err := r.Status().Update(ctx, p); err != nil {
			return err
		}
		r.budgetMemo.Store(memoKey, p)
		return nil
	})
	if err != nil {
		return false, 0, time.Time{}, fmt.Errorf("reserve change budget of policy %s: %w", key, err)
	}
	return ok, used, retryAt, nil
}

// recordDryRun records what would have been done, once.
func (r *RecommendationReconciler) recordDryRun(ctx context.Context, rec *eddyv1alpha1.Recommendation, what string) (ctrl.Result, error) {
	if !setCondition(rec, eddyv1alpha1.ConditionDryRun, metav1.ConditionTrue, "WouldAct", "dry run: would "+what) {
		return ctrl.Result{}, nil
	}
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("record dry run on recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "DryRun", "DryRun", "dry run: would %s", what)
	return ctrl.Result{}, nil
}

// fail marks rec Failed with a reason a person can act on.
func (r *RecommendationReconciler) fail(ctx context.Context, rec *eddyv1alpha1.Recommendation, reason, msg string) (ctrl.Result, error) {
	rec.Status.Phase = eddyv1alpha1.PhaseFailed
	setCondition(rec, eddyv1alpha1.ConditionApplied, metav1.ConditionFalse, reason, msg)
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Failed: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.warning(rec, reason, "Apply", "%s", msg)
	return ctrl.Result{}, nil
}

// persistIntent records, before acting, what is about to be done and the
// replicas to roll back to (previous < 0: nothing to roll back to).
func (r *RecommendationReconciler) persistIntent(ctx context.Context, rec *eddyv1alpha1.Recommendation, previous int32, what string) error {
	if _, ok := rec.Annotations[eddyv1alpha1.PreviousReplicasAnnotation]; !ok && previous >= 0 {
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, eddyv1alpha1.PreviousReplicasAnnotation, strconv.Itoa(int(previous)))
		if err := r.Patch(ctx, rec, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("record previous replicas on recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
		}
	}
	if setCondition(rec, eddyv1alpha1.ConditionApplied, metav1.ConditionUnknown, "Applying", what) {
		if err := r.Status().Update(ctx, rec); err != nil {
			return fmt.Errorf("record intent on recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
		}
	}
	return nil
}

func applying(rec *eddyv1alpha1.Recommendation) bool {
	c := meta.FindStatusCondition(rec.Status.Conditions, eddyv1alpha1.ConditionApplied)
	return c != nil && c.Status == metav1.ConditionUnknown && c.Reason == "Applying"
}

func previousReplicas(rec *eddyv1alpha1.Recommendation) (int32, bool) {
	v, ok := rec.Annotations[eddyv1alpha1.PreviousReplicasAnnotation]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return int32(n), true
}

func (r *RecommendationReconciler) markApplied(ctx context.Context, rec *eddyv1alpha1.Recommendation, reason, msg string) (ctrl.Result, error) {
	now := metav1.NewTime(r.Options.Now())
	rec.Status.Phase = eddyv1alpha1.PhaseApplied
	rec.Status.AppliedAt = &now
	setCondition(rec, eddyv1alpha1.ConditionApplied, metav1.ConditionTrue, reason, msg)
	if rec.Spec.Action != eddyv1alpha1.ActionEvictDataset {
		// Said now rather than on the next reconcile: one write fewer per change.
		before, _ := baseline(rec)
		setCondition(rec, eddyv1alpha1.ConditionVerified, metav1.ConditionUnknown, "AwaitingFreshData",
			awaitingMessage(rec, now.Add(max(r.Options.VerifySettle, 0)), before))
	}
	meta.RemoveStatusCondition(&rec.Status.Conditions, eddyv1alpha1.ConditionDryRun)
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Applied: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, reason, "Apply", "%s", msg)
	return ctrl.Result{}, nil
}

// apply carries out an Approved recommendation.
func (r *RecommendationReconciler) apply(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	if pol.mode == eddyv1alpha1.ModeOff {
		return ctrl.Result{}, nil
	}
	if err := r.heartbeat.check(ctx); err != nil {
		r.Recorder.warning(rec, "AnalyzerStale", "Apply", "%v", err)
		return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
	}
	switch rec.Spec.Action {
	case eddyv1alpha1.ActionScaleCache:
		return r.applyScale(ctx, rec, pol)
	case eddyv1alpha1.ActionEvictDataset:
		return r.applyEvict(ctx, rec, pol)
	default:
		what := fmt.Sprintf("the admission webhook gives new pods of %s the %s", targetName(rec), rec.Spec.Action)
		if pol.dryRun {
			return r.recordDryRun(ctx, rec, "apply: "+what)
		}
		return r.markApplied(ctx, rec, "WebhookInjects", what)
	}
}

func targetName(rec *eddyv1alpha1.Recommendation) string {
	if t := rec.Spec.TargetRef; t != nil {
		return t.Kind + "/" + t.Name
	}
	return "any workload reading dataset " + rec.Spec.Dataset.Name
}

func (r *RecommendationReconciler) applyScale(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	t, err := r.scaler.targetFor(ctx, rec.Namespace, rec.Spec.Dataset, rec.Spec.ScaleCache.CacheTargetRef)
	if err != nil {
		return r.fail(ctx, rec, "NoCacheTarget", err.Error())
	}
	cur, _, read, err := r.scaler.scaleOf(ctx, t)
	if err != nil {
		return r.fail(ctx, rec, "CacheTargetUnreadable", err.Error())
	}
	want, clamped := pol.clampReplicas(rec.Spec.ScaleCache.Replicas)
	from := cur
	if prev, ok := previousReplicas(rec); ok {
		from = prev
	}
	what := fmt.Sprintf("scale %s from %d to %d cache workers", t, from, want)
	if clamped {
		what += fmt.Sprintf(" (recommended %d, held within the policy's bounds %d..%d)", rec.Spec.ScaleCache.Replicas, pol.bounds.Min, pol.bounds.Max)
	}
	if want < cur && !applying(rec) {
		if until, wait, err := r.stabilizing(ctx, rec, cur); err != nil || wait {
			if err != nil {
				return ctrl.Result{}, err
			}
			msg := fmt.Sprintf("waiting until %s: demand below %d must hold for %s before scaling %s down to %d",
				until.UTC().Format(time.RFC3339), cur, r.Options.StabilizationWindow, t, want)
			if setCondition(rec, eddyv1alpha1.ConditionApplied, metav1.ConditionFalse, "Stabilizing", msg) {
				if err := r.Status().Update(ctx, rec); err != nil {
					return ctrl.Result{}, fmt.Errorf("record stabilisation on recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
				}
				r.Recorder.normal(rec, "Stabilizing", "Scale", "%s", msg)
			}
			return ctrl.Result{RequeueAfter: until.Sub(r.Options.Now())}, nil
		}
	}
	if pol.dryRun {
		return r.recordDryRun(ctx, rec, what)
	}
	if err := r.persistIntent(ctx, rec, cur, what); err != nil {
		return ctrl.Result{}, err
	}
	changed, err := r.scaler.setReplicas(ctx, t, want, read)
	if err != nil {
		return ctrl.Result{}, err
	}
	log.Info("cache target scaled", "target", t.String(), "replicas", want, "changed", changed, "recommendation", rec.Name)
	return r.markApplied(ctx, rec, "Scaled", what)
}

// stabilizing says whether a scale-down must wait: every ScaleCache
// recommendation for the dataset since lowSince asked for fewer than cur
// replicas, and lowSince must be at least the stabilisation window ago.
func (r *RecommendationReconciler) stabilizing(ctx context.Context, rec *eddyv1alpha1.Recommendation, cur int32) (time.Time, bool, error) {
	window := r.Options.StabilizationWindow
	if window <= 0 {
		return time.Time{}, false, nil
	}
	var list eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &list, client.InNamespace(rec.Namespace), client.MatchingFields{indexDataset: rec.Spec.Dataset.Name}); err != nil {
		return time.Time{}, false, fmt.Errorf("list recommendations for dataset %s/%s: %w", rec.Namespace, rec.Spec.Dataset.Name, err)
	}
	recs := list.Items[:0]
	for _, s := range list.Items {
		if s.Spec.Action == eddyv1alpha1.ActionScaleCache && !newer(&s, rec) {
			recs = append(recs, s)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return newer(&recs[j], &recs[i]) })
	var lowSince time.Time
	for _, s := range recs {
		if s.Spec.ScaleCache.Replicas >= cur {
			lowSince = time.Time{}
		} else if lowSince.IsZero() {
			lowSince = s.CreationTimestamp.Time
		}
	}
	if lowSince.IsZero() {
		lowSince = rec.CreationTimestamp.Time
	}
	until := lowSince.Add(window)
	return until, r.Options.Now().Before(until), nil
}

func (r *RecommendationReconciler) applyEvict(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	ds := rec.Spec.Dataset.Name
	if inUse, pod, err := datasetInUse(ctx, r.Client, rec.Namespace, ds); err != nil || inUse {
		if err != nil {
			return ctrl.Result{}, err
		}
		return r.fail(ctx, rec, "DatasetInUse", fmt.Sprintf("pod %s uses dataset %s: a dataset in use is never evicted", pod, ds))
	}
	t, err := r.scaler.targetFor(ctx, rec.Namespace, rec.Spec.Dataset, nil)
	if err != nil {
		return r.fail(ctx, rec, "NoCacheTarget", err.Error())
	}
	cur, _, read, err := r.scaler.scaleOf(ctx, t)
	if err != nil {
		return r.fail(ctx, rec, "CacheTargetUnreadable", err.Error())
	}
	from := cur
	if prev, ok := previousReplicas(rec); ok {
		from = prev
	}
	minimum := pol.minReplicas(rec.Spec.EvictDataset.MinReplicas)
	reason := fmt.Sprintf("no pod references dataset %s and nobody read it since %s", ds, rec.Spec.EvictDataset.IdleSince.UTC().Format(time.RFC3339))
	what := fmt.Sprintf("scale %s from %d to its minimum %d: %s", t, from, minimum, reason)
	if pol.dryRun {
		return r.recordDryRun(ctx, rec, what)
	}
	if err := r.persistIntent(ctx, rec, cur, what); err != nil {
		return ctrl.Result{}, err
	}
	if _, err := r.scaler.setReplicas(ctx, t, minimum, read); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.annotateDataset(ctx, rec.Namespace, ds, map[string]any{
		eddyv1alpha1.EvictedAtAnnotation:              r.Options.Now().UTC().Format(time.RFC3339),
		eddyv1alpha1.EvictedByAnnotation:              rec.Name,
		eddyv1alpha1.EvictedReasonAnnotation:          reason,
		eddyv1alpha1.ReplicasBeforeEvictionAnnotation: strconv.Itoa(int(from)),
		eddyv1alpha1.RestoredAtAnnotation:             nil,
	}); err != nil {
		return ctrl.Result{}, err
	}
	return r.markApplied(ctx, rec, "Evicted", what)
}

// annotateDataset merges annotations into the dataset's object (nil values
// remove them).
func (r *RecommendationReconciler) annotateDataset(ctx context.Context, ns, name string, ann map[string]any) error {
	return annotateDataset(ctx, r.Client, r.scaler, ns, name, ann)
}

func annotateDataset(ctx context.Context, c client.Client, s *scaler, ns, name string, ann map[string]any) error {
	obj, err := s.datasetObject(ctx, ns, name)
	if err != nil || obj == nil {
		return err
	}
	patch, err := mergePatchAnnotations(ann)
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("annotate %s %s/%s: %w", obj.Kind, ns, name, err)
	}
	return nil
}
