package operator

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// PolicyReconciler keeps each AutotunePolicy's status: whether it is in
// force, its applied changes pruned to the budget interval, and whether the
// budget is exhausted.
type PolicyReconciler struct {
	client.Client
	Options Options
}

// SetupWithManager registers the reconciler.
func (r *PolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Options = r.Options.withDefaults()
	return ctrl.NewControllerManagedBy(mgr).Named("autotunepolicy").For(&eddyv1alpha1.AutotunePolicy{}).Complete(r)
}

// Reconcile brings one policy's status up to date.
func (r *PolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pol := &eddyv1alpha1.AutotunePolicy{}
	if err := r.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	eff, err := policyFor(ctx, r.Client, pol.Namespace, r.Options.DryRun)
	if err != nil {
		return ctrl.Result{}, err
	}
	orig := pol.Status.DeepCopy()
	now := r.Options.Now()
	if eff.obj.Name == pol.Name {
		meta.SetStatusCondition(&pol.Status.Conditions, metav1.Condition{Type: eddyv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "InForce",
			Message: fmt.Sprintf("mode %s in namespace %s", eff.mode, pol.Namespace), ObservedGeneration: pol.Generation})
	} else {
		meta.SetStatusCondition(&pol.Status.Conditions, metav1.Condition{Type: eddyv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Ignored",
			Message: fmt.Sprintf("policy %s is in force in namespace %s (one per namespace: %q first, else the oldest)", eff.obj.Name, pol.Namespace, "default"), ObservedGeneration: pol.Generation})
	}
	own := resolvePolicy(pol, r.Options.DryRun)
	recent := changesWithin(pol.Status.AppliedChanges, own.per, now)
	if len(recent) == 0 {
		recent = nil
	}
	pol.Status.AppliedChanges = recent
	setBudgetCondition(pol, len(recent), own.maxChanges, own.per)
	pol.Status.ObservedGeneration = pol.Generation
	if !equality.Semantic.DeepEqual(orig, &pol.Status) {
		if err := r.Status().Update(ctx, pol); err != nil {
			return ctrl.Result{}, fmt.Errorf("update status of AutotunePolicy %s: %w", req, err)
		}
	}
	if len(recent) > 0 {
		return ctrl.Result{RequeueAfter: recent[0].Add(own.per).Sub(now) + time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// setBudgetCondition records whether used changes exhaust the budget.
func setBudgetCondition(pol *eddyv1alpha1.AutotunePolicy, used, maxChanges int, per time.Duration) {
	c := metav1.Condition{Type: eddyv1alpha1.ConditionBudgetExhausted, Status: metav1.ConditionFalse, Reason: "BudgetAvailable", ObservedGeneration: pol.Generation,
		Message: fmt.Sprintf("%d of %d automatic changes per %s used", used, maxChanges, per)}
	if used >= maxChanges {
		c.Status, c.Reason = metav1.ConditionTrue, "BudgetUsedUp"
	}
	meta.SetStatusCondition(&pol.Status.Conditions, c)
}
