package operator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Defaults of a namespace without an AutotunePolicy, or of fields a policy
// leaves unset (matching the CRD's defaults).
const (
	defaultMinConfidence = 0.7
	defaultIdleAfter     = 24 * time.Hour
	defaultMaxChanges    = 5
	defaultBudgetPer     = time.Hour
)

// effectivePolicy is a namespace's policy with every default filled in.
type effectivePolicy struct {
	// obj is the AutotunePolicy in force; nil when the namespace has none.
	obj            *eddyv1alpha1.AutotunePolicy
	mode           eddyv1alpha1.PolicyMode
	autoApply      []eddyv1alpha1.Action
	minConfidence  float64
	bounds         *eddyv1alpha1.CacheWorkerBounds
	idleAfter      time.Duration
	maxChanges     int
	per            time.Duration
	rolloutRestart bool
	dryRun         bool
}

// policyFor returns the policy in force in ns: the AutotunePolicy named
// "default" if there is one, else the oldest; Recommend mode when there is none.
// dryRun forces dry-run whatever the policy says.
func policyFor(ctx context.Context, c client.Reader, ns string, dryRun bool) (effectivePolicy, error) {
	var list eddyv1alpha1.AutotunePolicyList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return effectivePolicy{}, fmt.Errorf("list AutotunePolicies in %s: %w", ns, err)
	}
	return resolvePolicy(eddyv1alpha1.PolicyInForce(list.Items), dryRun), nil
}

// resolvePolicy fills in obj's defaults; obj nil means no policy.
func resolvePolicy(obj *eddyv1alpha1.AutotunePolicy, dryRun bool) effectivePolicy {
	p := effectivePolicy{
		mode:          eddyv1alpha1.ModeRecommend,
		minConfidence: defaultMinConfidence,
		idleAfter:     defaultIdleAfter,
		maxChanges:    defaultMaxChanges,
		per:           defaultBudgetPer,
		dryRun:        dryRun,
	}
	if obj == nil {
		return p
	}
	p.obj = obj
	s := obj.Spec
	if s.Mode != "" {
		p.mode = s.Mode
	}
	p.autoApply = s.AutoApply
	if s.MinConfidence != nil {
		p.minConfidence = *s.MinConfidence
	}
	p.bounds = s.CacheWorkers
	if s.IdleAfter != nil {
		p.idleAfter = s.IdleAfter.Duration
	}
	if s.ChangeBudget != nil {
		p.maxChanges = int(s.ChangeBudget.MaxChanges)
		if s.ChangeBudget.Per != nil {
			p.per = s.ChangeBudget.Per.Duration
		}
	}
	p.rolloutRestart = s.RolloutRestart
	p.dryRun = p.dryRun || s.DryRun
	return p
}

// mayAutoApply says whether rec may be approved without a person, and if not, why.
func (p effectivePolicy) mayAutoApply(rec *eddyv1alpha1.Recommendation) (bool, string) {
	switch {
	case !rec.ProposedByEddy():
		return false, fmt.Sprintf("not proposed by eddy (no %s label of its analyzer or operator): a person who could make the change directly must approve", eddyv1alpha1.ManagedByLabel)
	case p.mode != eddyv1alpha1.ModeAuto:
		return false, fmt.Sprintf("policy mode is %s: a person must approve", p.mode)
	case !slices.Contains(p.autoApply, rec.Spec.Action):
		return false, fmt.Sprintf("action %s is not in the policy's autoApply %v: a person must approve", rec.Spec.Action, p.autoApply)
	case rec.Spec.Evidence.Confidence < p.minConfidence:
		return false, fmt.Sprintf("confidence %.2f is below the policy's minConfidence %.2f: a person must approve", rec.Spec.Evidence.Confidence, p.minConfidence)
	}
	return true, ""
}

// autoApprovesNow says whether rec goes on to auto-approval without a
// person (it may still wait for the change budget or a fresh analyzer,
// which say so in their own events).
func (p effectivePolicy) autoApprovesNow(rec *eddyv1alpha1.Recommendation) bool {
	ok, _ := p.mayAutoApply(rec)
	return ok && !p.dryRun
}

// DefaultMaxCacheWorkers bounds cache workers when the policy sets no
// cacheWorkers bounds: no recommendation scales a cache beyond it unless the
// namespace's owner allowed more.
const DefaultMaxCacheWorkers = 10

// clampReplicas bounds n by the policy's cache worker bounds (0 to
// DefaultMaxCacheWorkers without them) and says whether it had to.
func (p effectivePolicy) clampReplicas(n int32) (int32, bool) {
	if p.bounds == nil {
		if n > DefaultMaxCacheWorkers {
			return DefaultMaxCacheWorkers, true
		}
		return max(n, 0), n < 0
	}
	switch {
	case n < p.bounds.Min:
		return p.bounds.Min, true
	case n > p.bounds.Max:
		return p.bounds.Max, true
	}
	return n, false
}

// minReplicas is the fewest cache workers the policy allows, or fallback
// when the policy sets no bounds.
func (p effectivePolicy) minReplicas(fallback int32) int32 {
	if p.bounds == nil {
		return fallback
	}
	return p.bounds.Min
}

// changesWithin returns the applied-change times still inside the budget
// interval ending at now, oldest first.
func changesWithin(times []metav1.Time, per time.Duration, now time.Time) []metav1.Time {
	var out []metav1.Time
	for _, t := range times {
		if now.Sub(t.Time) < per {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(&out[j]) })
	return out
}
