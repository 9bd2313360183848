// Package publish writes what the analyzer learned to the API server: one
// AccessProfile per (workload, dataset) with its class, features, decisions
// and checkpoint, and Recommendations within the namespace's AutotunePolicy.
// Writes are idempotent: a recommendation's name is derived from its action
// and quantized parameters, so the same advice never makes a second object,
// and new advice must hold for several assessments before it is proposed.
package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/store"
)

// DefaultStableAssessments is how many consecutive assessments must agree on
// a recommendation before it is proposed.
const DefaultStableAssessments = 2

// DefaultRunEndedAfter is how long without a read a run counts as ended.
const DefaultRunEndedAfter = 30 * time.Second

// DefaultCoolOff is how long after a recommendation was judged Ineffective
// no other of its action is proposed for its profile, when the policy does
// not say.
const DefaultCoolOff = 24 * time.Hour

// Publisher writes entries. Its zero value is not usable: set Client.
type Publisher struct {
	Client client.Client
	Log    logr.Logger
	// StableAssessments: see DefaultStableAssessments (0 means default).
	StableAssessments int
	// RunEndedAfter: see DefaultRunEndedAfter (0 means default).
	RunEndedAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	pending map[pendingKey]pendingRec
}

type pendingKey struct {
	profile string
	action  v1.Action
}

type pendingRec struct {
	identity string
	count    int
}

type policyBounds struct {
	mode          v1.PolicyMode
	coolOff       time.Duration
	minConfidence float64
	minWorkers    int32
	maxWorkers    int32
	maxBandwidth  int64
	budgetBytes   int64
}

// Result counts what one Publish call did.
type Result struct {
	Profiles        int
	Proposed        int
	AlreadyProposed int
	Held            int
	// InForce counts advice not proposed because a recommendation of the
	// same action and class is in force for the profile: runs with it
	// applied read differently, and must not make it propose itself anew.
	InForce int
	// CoolingOff counts advice not proposed because a recommendation of the
	// same action was judged Ineffective within the policy's cool-off.
	CoolingOff int
	// HeldKeys have advice waiting for more agreeing assessments, and
	// OpenKeys runs that have not ended: assess them again at the next
	// flush even without new windows.
	HeldKeys []analyzer.Key
	OpenKeys []analyzer.Key
	// Failed keys were not written, each with why.
	Failed map[analyzer.Key]error
}

// Publish writes every entry. Keys whose writes failed are returned in
// Result.Failed with their errors (their checkpoints are not durable); other
// keys went through.
func (p *Publisher) Publish(ctx context.Context, entries []store.Entry) (Result, error) {
	if p.pending == nil {
		p.pending = map[pendingKey]pendingRec{}
	}
	var res Result
	var errs []error
	policies := map[string]policyBounds{}
	for i := range entries {
		e := &entries[i]
		if err := p.publishOne(ctx, e, policies, &res); err != nil {
			if res.Failed == nil {
				res.Failed = map[analyzer.Key]error{}
			}
			res.Failed[e.Key] = err
			errs = append(errs, fmt.Errorf("%s: %w", e.Key, err))
		}
	}
	return res, errors.Join(errs...)
}

func (p *Publisher) publishOne(ctx context.Context, e *store.Entry, policies map[string]policyBounds, res *Result) error {
	ns := e.Key.WorkloadNamespace
	if ns == "" {
		return Permanent(fmt.Errorf("no workload namespace; the collector did not attribute these reads"))
	}
	prof, err := p.writeProfile(ctx, e)
	if err != nil {
		return err
	}
	res.Profiles++
	for _, r := range prof.Status.RecentRuns {
		if !r.Ended {
			res.OpenKeys = append(res.OpenKeys, e.Key)
			break
		}
	}

	pol, ok := policies[ns]
	if !ok {
		if pol, err = p.policy(ctx, ns); err != nil {
			return err
		}
		policies[ns] = pol
	}
	if pol.mode == v1.ModeOff {
		return nil
	}
	a := &e.Assessment
	var existing []v1.Recommendation
	for i := range a.Advice.Recommendations {
		r := &a.Advice.Recommendations[i]
		if r.Evidence.Confidence < pol.minConfidence {
			continue
		}
		spec, identity, ok := apiRecommendation(r, &a.Features, pol)
		if !ok {
			continue
		}
		pk := pendingKey{prof.Name, spec.Action}
		pr := p.pending[pk]
		if pr.identity == identity {
			pr.count++
		} else {
			pr = pendingRec{identity: identity, count: 1}
		}
		p.pending[pk] = pr
		stable := p.StableAssessments
		if stable <= 0 {
			stable = DefaultStableAssessments
		}
		if pr.count < stable {
			res.Held++
			res.HeldKeys = append(res.HeldKeys, e.Key)
			continue
		}
		target := prof.Spec.WorkloadRef
		spec.TargetRef = &target
		spec.Dataset = prof.Spec.Dataset
		spec.Evidence.Profile = prof.Name
		spec.Evidence.Runs = baselineRuns(prof.Status.RecentRuns)
		if existing == nil {
			if existing, err = p.recommendationsOf(ctx, prof); err != nil {
				return err
			}
		}
		switch held, why := holdProposal(existing, spec, recommendationName(prof, spec.Action, identity), pol.coolOff, p.now()); held {
		case holdAlreadyProposed:
			res.AlreadyProposed++
			continue
		case holdInForce:
			res.InForce++
			continue
		case holdCoolingOff:
			res.CoolingOff++
			p.Log.V(1).Info("not proposing during cool-off", "profile", client.ObjectKeyFromObject(prof), "action", spec.Action, "why", why)
			continue
		}
		created, err := p.createRecommendation(ctx, prof, spec, identity)
		if err != nil {
			return err
		}
		if created {
			res.Proposed++
		} else {
			res.AlreadyProposed++
		}
	}
	return nil
}

// permanentError marks a failure that retrying cannot mend.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying the write cannot mend.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether a write failed for good: the input was bad,
// the API server refuses the object as invalid, or its namespace is gone.
// (Forbidden is not: it is the analyzer's own rights that are wrong, for
// every key alike, and retrying after they are mended succeeds.)
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		(apierrors.IsNotFound(err) && !isConflictLike(err))
}

// isConflictLike excludes the NotFound of an object deleted under a write
// (retrying recreates it) from the NotFound of its namespace.
func isConflictLike(err error) bool {
	var s apierrors.APIStatus
	if !errors.As(err, &s) {
		return false
	}
	d := s.Status().Details
	return d != nil && d.Kind != "namespaces"
}

// workloadRef is the entry's workload as the collector resolved it.
func workloadRef(e *store.Entry) (v1.WorkloadReference, error) {
	w := e.Meta.Workload
	if w == nil || w.ApiVersion == "" || w.Kind == "" || w.Name == "" {
		return v1.WorkloadReference{}, fmt.Errorf("the collector sent no complete workload (apiVersion, kind, name)")
	}
	ref := v1.WorkloadReference{APIVersion: w.ApiVersion, Kind: w.Kind, Name: w.Name}
	if w.Rule != "" {
		ref.Rule = v1.WorkloadRule(w.Rule)
	}
	return ref, nil
}

func datasetRef(e *store.Entry) v1.DatasetReference {
	d := v1.DatasetReference{Name: e.Key.DatasetName, Source: v1.DatasetSourcePVC}
	if ds := e.Meta.Dataset; ds != nil {
		if src, ok := v1.ParseDatasetSource(ds.Source); ok {
			d.Source = src
		}
	}
	return d
}

func (p *Publisher) writeProfile(ctx context.Context, e *store.Entry) (*v1.AccessProfile, error) {
	prof := &v1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Name: ProfileName(e.Key), Namespace: e.Key.WorkloadNamespace}}
	err := p.Client.Get(ctx, client.ObjectKeyFromObject(prof), prof)
	if apierrors.IsNotFound(err) {
		ref, rerr := workloadRef(e)
		if rerr != nil {
			return nil, Permanent(rerr)
		}
		prof.Labels = map[string]string{v1.ManagedByLabel: v1.ManagerAnalyzer}
		prof.Spec = v1.AccessProfileSpec{WorkloadRef: ref, Dataset: datasetRef(e)}
		if err = p.Client.Create(ctx, prof); err != nil {
			return nil, fmt.Errorf("create AccessProfile %s/%s: %w", prof.Namespace, prof.Name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("get AccessProfile %s/%s: %w", prof.Namespace, prof.Name, err)
	}
	base := prof.DeepCopy()
	a := &e.Assessment
	st := &prof.Status
	if old, cur := st.Class, a.Decision.Class; known(old) && known(cur) && old != cur {
		// A workload (a run family above all) that reads differently now:
		// say so, since its recommendations were made for the old class.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: v1.ConditionClassChanged, Status: metav1.ConditionTrue, Reason: string(old) + "To" + string(cur),
			Message: fmt.Sprintf("the workload read as %s until %s and reads as %s since; recommendations made for %s are superseded by new ones",
				old, p.now().UTC().Format(time.RFC3339), cur, old),
		})
	}
	st.Class = a.Decision.Class
	st.Confidence = round(a.Decision.Confidence)
	st.Features = apiFeatures(&a.Features)
	st.Decisions = apiDecisions(&a.Decision)
	st.ObservedPods = int32(len(e.Meta.PodList))
	st.RecentRuns = apiRuns(e.Runs, p.now(), p.runEndedAfter())
	st.Windows = e.Meta.Windows
	if e.Meta.FirstSeen > 0 {
		st.FirstSeen = ptr.To(metav1.NewTime(time.Unix(0, e.Meta.FirstSeen)))
	}
	if e.Meta.LastSeen > 0 {
		st.LastSeen = ptr.To(metav1.NewTime(time.Unix(0, e.Meta.LastSeen)))
	}
	st.Checkpoint = &v1.Checkpoint{Version: store.CheckpointVersion, Data: e.Checkpoint, Time: metav1.Now()}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:    v1.ConditionClassified,
		Status:  metav1.ConditionTrue,
		Reason:  string(a.Decision.Class),
		Message: truncate(a.Decision.Reason, 1024),
	})
	if err := p.Client.Status().Patch(ctx, prof, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, fmt.Errorf("update AccessProfile %s/%s status: %w", prof.Namespace, prof.Name, err)
	}
	return prof, nil
}

// known reports whether c is a class a workload was really seen to have.
func known(c v1.AccessClass) bool { return c != "" && c != v1.ClassUnknown }

func (p *Publisher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Publisher) runEndedAfter() time.Duration {
	if p.RunEndedAfter > 0 {
		return p.RunEndedAfter
	}
	return DefaultRunEndedAfter
}

// recommendationName names the recommendation of an action with the given
// identity for a profile: the same advice always has the same name.
func recommendationName(prof *v1.AccessProfile, action v1.Action, identity string) string {
	return dnsName(prof.Name + "." + string(action) + "-" + shortHash(identity))
}

// recommendationsOf lists the recommendations made from prof.
func (p *Publisher) recommendationsOf(ctx context.Context, prof *v1.AccessProfile) ([]v1.Recommendation, error) {
	var list v1.RecommendationList
	if err := p.Client.List(ctx, &list, client.InNamespace(prof.Namespace), client.MatchingLabels{v1.ProfileLabel: truncate(prof.Name, 63)}); err != nil {
		return nil, fmt.Errorf("list Recommendations of AccessProfile %s/%s: %w", prof.Namespace, prof.Name, err)
	}
	out := list.Items[:0]
	for _, r := range list.Items {
		if r.Spec.Evidence.Profile == prof.Name {
			out = append(out, r)
		}
	}
	return out, nil
}

type hold int

const (
	holdNone hold = iota
	holdAlreadyProposed
	holdInForce
	holdCoolingOff
)

// holdProposal says whether spec (to be named name) must not be proposed,
// given the profile's existing recommendations: it exists already; one of
// its action and class is in force (the runs with it applied read
// differently, and must not make it propose itself anew — a class change
// does propose, and supersedes it); or one of its action was judged
// Ineffective less than coolOff ago.
func holdProposal(existing []v1.Recommendation, spec v1.RecommendationSpec, name string, coolOff time.Duration, now time.Time) (hold, string) {
	for i := range existing {
		r := &existing[i]
		if r.Name == name {
			return holdAlreadyProposed, ""
		}
	}
	for i := range existing {
		r := &existing[i]
		if r.Spec.Action != spec.Action {
			continue
		}
		if r.Status.Phase.InForce() && r.Status.Phase != v1.PhaseIneffective && r.Spec.Evidence.Class == spec.Evidence.Class {
			return holdInForce, r.Name
		}
		if c := meta.FindStatusCondition(r.Status.Conditions, v1.ConditionVerified); c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1.ReasonIneffective {
			if until := c.LastTransitionTime.Add(coolOff); now.Before(until) {
				return holdCoolingOff, fmt.Sprintf("%s was judged Ineffective at %s; cool-off until %s", r.Name, c.LastTransitionTime.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
			}
		}
	}
	return holdNone, ""
}

func (p *Publisher) createRecommendation(ctx context.Context, prof *v1.AccessProfile, spec v1.RecommendationSpec, identity string) (bool, error) {
	rec := &v1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{
			Name:      recommendationName(prof, spec.Action, identity),
			Namespace: prof.Namespace,
			Labels: map[string]string{
				v1.ProfileLabel:   truncate(prof.Name, 63),
				v1.ActionLabel:    string(spec.Action),
				v1.ManagedByLabel: v1.ManagerAnalyzer,
			},
		},
		Spec: spec,
	}
	if err := controllerutil.SetOwnerReference(prof, rec, p.Client.Scheme()); err != nil {
		return false, err
	}
	err := p.Client.Create(ctx, rec)
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create Recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	p.Log.Info("proposed", "recommendation", client.ObjectKeyFromObject(rec), "action", spec.Action, "class", spec.Evidence.Class, "confidence", spec.Evidence.Confidence)
	return true, nil
}

// policy reads the namespace's AutotunePolicy in force (v1.PolicyInForce); a
// namespace without one gets mode Recommend and the API defaults.
func (p *Publisher) policy(ctx context.Context, ns string) (policyBounds, error) {
	b := policyBounds{mode: v1.ModeRecommend, minConfidence: 0.7, coolOff: DefaultCoolOff}
	var list v1.AutotunePolicyList
	if err := p.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return b, fmt.Errorf("list AutotunePolicies in %s: %w", ns, err)
	}
	if len(list.Items) == 0 {
		return b, nil
	}
	s := &v1.PolicyInForce(list.Items).Spec
	if s.Mode != "" {
		b.mode = s.Mode
	}
	if s.MinConfidence != nil {
		b.minConfidence = *s.MinConfidence
	}
	if s.CoolOff != nil {
		b.coolOff = s.CoolOff.Duration
	}
	if c := s.CacheWorkers; c != nil {
		b.minWorkers, b.maxWorkers = c.Min, c.Max
	}
	if pf := s.Prefetch; pf != nil {
		if pf.MaxBandwidth != nil {
			b.maxBandwidth = pf.MaxBandwidth.Value()
		}
		if pf.BudgetBytes != nil {
			b.budgetBytes = pf.BudgetBytes.Value()
		}
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
