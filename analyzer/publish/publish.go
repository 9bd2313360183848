// Package publish writes what the analyzer learned to the API server: one
// AccessProfile per (workload, dataset) with its class, features, decisions
// and checkpoint, and Recommendations within the namespace's AutotunePolicy.
// Writes are idempotent: a recommendation's name is derived from its action
// and quantized parameters, so the same advice never makes a second object,
// and new advice must hold for several assessments before it is proposed.
package publish

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
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
	"github.com/eddy-autotune/eddy/analyzer/advice"
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

// DefaultWorkers is how many keys Publish writes at once.
const DefaultWorkers = 8

// Publisher writes entries. Its zero value is not usable: set Client. It
// remembers the AccessProfiles it wrote (without their checkpoint data), so
// that it writes a profile without reading it first and skips a write that
// would change nothing material (see MaterialChange).
type Publisher struct {
	Client client.Client
	Log    logr.Logger
	// StableAssessments: see DefaultStableAssessments (0 means default).
	StableAssessments int
	// RunEndedAfter: see DefaultRunEndedAfter (0 means default).
	RunEndedAfter time.Duration
	// LongRunAfter: see v1.DefaultLongRunAfter (0 means default).
	LongRunAfter time.Duration
	// Workers is how many keys are written at once (0 means DefaultWorkers).
	Workers int
	// CheckpointEvery, when positive, is how old a profile's checkpoint may
	// grow before a changed checkpoint alone is worth a write: the
	// analyzer's durable state is elsewhere (a local log) and the profile's
	// is its fallback. Zero writes every changed checkpoint: it is the
	// analyzer's durable state.
	CheckpointEvery time.Duration
	// Written, when set, is called each time a key's profile was written or
	// found current: the publisher is making progress. It is called from
	// several goroutines at once.
	Written func(analyzer.Key)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Bounds are those the assessments were advised with (the analyzer's
	// options); a namespace whose policy states its cache's capacity is
	// advised again within them with that capacity.
	Bounds advice.Bounds

	mu      sync.Mutex
	pending map[pendingKey]pendingRec
	known   map[client.ObjectKey]knownProfile
}

// knownProfile is an AccessProfile as the publisher last wrote or read it,
// without its checkpoint data, and the hash of that data.
type knownProfile struct {
	obj        *v1.AccessProfile
	checkpoint [sha256.Size]byte
}

// pendingKey is a profile (namespace and name: two namespaces may each
// have a profile of the same name) and an action.
type pendingKey struct {
	namespace, profile string
	action             v1.Action
}

type pendingRec struct {
	identity string
	count    int
}

type policyBounds struct {
	mode          v1.PolicyMode
	coolOff       time.Duration
	refreshAfter  time.Duration
	minConfidence float64
	minWorkers    int32
	maxWorkers    int32
	maxBandwidth  int64
	budgetBytes   int64
	// cacheCapacity is the policy's cacheCapacity (0: not stated).
	cacheCapacity int64
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
	// AwaitingRun counts profiles not advised yet because none of their
	// runs has ended or been read for LongRunAfter (see v1.RunSeenWhole).
	AwaitingRun int
	// HeldKeys have advice waiting for more agreeing assessments, and
	// OpenKeys runs that have not ended: assess them again at the next
	// flush even without new windows.
	HeldKeys []analyzer.Key
	OpenKeys []analyzer.Key
	// Unchanged counts profiles not written because their checkpoint was
	// the one written and nothing else changed materially.
	Unchanged int
	// Failed keys were not written, each with why.
	Failed map[analyzer.Key]error
}

// add adds what one key's publishing did to r.
func (r *Result) add(o *Result) {
	r.Profiles += o.Profiles
	r.Proposed += o.Proposed
	r.AlreadyProposed += o.AlreadyProposed
	r.Held += o.Held
	r.InForce += o.InForce
	r.CoolingOff += o.CoolingOff
	r.AwaitingRun += o.AwaitingRun
	r.Unchanged += o.Unchanged
	r.HeldKeys = append(r.HeldKeys, o.HeldKeys...)
	r.OpenKeys = append(r.OpenKeys, o.OpenKeys...)
}

// policies caches, for one Publish call, each namespace's policy bounds
// and its recommendations by profile (one List per namespace, not one per
// profile: listing per profile cost the API server every recommendation of
// the namespace for each of its profiles).
type policies struct {
	mu    sync.Mutex
	byNS  map[string]policyBounds
	recNS map[string]*namespaceRecs
}

// namespaceRecs are one namespace's recommendations, listed once.
type namespaceRecs struct {
	once      sync.Once
	err       error
	byProfile map[string][]v1.Recommendation
}

// Publish writes every entry, Workers at a time. Keys whose writes failed
// are returned in Result.Failed with their errors (their checkpoints are not
// durable); other keys went through.
func (p *Publisher) Publish(ctx context.Context, entries []store.Entry) (Result, error) {
	p.mu.Lock()
	if p.pending == nil {
		p.pending = map[pendingKey]pendingRec{}
	}
	p.mu.Unlock()
	workers := p.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	workers = min(workers, len(entries))
	pols := &policies{byNS: map[string]policyBounds{}, recNS: map[string]*namespaceRecs{}}
	var (
		mu   sync.Mutex
		res  Result
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan *store.Entry)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range next {
				var one Result
				err := p.publishOne(ctx, e, pols, &one)
				mu.Lock()
				res.add(&one)
				if err != nil {
					if res.Failed == nil {
						res.Failed = map[analyzer.Key]error{}
					}
					res.Failed[e.Key] = err
					errs = append(errs, fmt.Errorf("%s: %w", e.Key, err))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range entries {
		next <- &entries[i]
	}
	close(next)
	wg.Wait()
	return res, errors.Join(errs...)
}

func (p *Publisher) publishOne(ctx context.Context, e *store.Entry, pols *policies, res *Result) error {
	ns := e.Key.WorkloadNamespace
	if ns == "" {
		return Permanent(fmt.Errorf("no workload namespace; the collector did not attribute these reads"))
	}
	pol, err := p.policyOf(ctx, pols, ns)
	if err != nil {
		return err
	}
	name := ProfileName(e.Key)
	verifying := func() (bool, error) {
		recs, err := p.recommendationsOf(ctx, pols, &v1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		return awaitsVerification(recs), err
	}
	prof, err := p.writeProfile(ctx, e, learnInputs{pol: pol, longRunAfter: p.longRunAfter(), verifying: verifying}, res)
	if err != nil {
		return err
	}
	res.Profiles++
	if p.Written != nil {
		p.Written(e.Key)
	}
	for _, r := range prof.Status.RecentRuns {
		if !r.Ended {
			res.OpenKeys = append(res.OpenKeys, e.Key)
			break
		}
	}

	if pol.mode == v1.ModeOff {
		return nil
	}
	if !v1.RunSeenWhole(prof.Status.RecentRuns, p.longRunAfter()) {
		res.AwaitingRun++
		return nil
	}
	a := &e.Assessment
	recs := a.Advice.Recommendations
	if pol.cacheCapacity > 0 {
		// The cache's capacity is the namespace's to state: advise again
		// with it (the assessment itself stays the analyzer's).
		b := p.Bounds
		b.CacheBudgetBytes = float64(pol.cacheCapacity)
		recs = advice.Advise(&a.Features, &a.Decision, b).Recommendations
	}
	var existing []v1.Recommendation
	for i := range recs {
		r := &recs[i]
		if r.Evidence.Confidence < pol.minConfidence {
			continue
		}
		spec, identity, ok := apiRecommendation(r, &a.Features, pol)
		if !ok {
			continue
		}
		pk := pendingKey{prof.Namespace, prof.Name, spec.Action}
		p.mu.Lock()
		pr := p.pending[pk]
		if pr.identity == identity {
			pr.count++
		} else {
			pr = pendingRec{identity: identity, count: 1}
		}
		p.pending[pk] = pr
		p.mu.Unlock()
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
			if existing, err = p.recommendationsOf(ctx, pols, prof); err != nil {
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

// writeProfile writes e into its AccessProfile's status, creating the
// profile if needed. A profile the publisher knows is patched without being
// read first (its resourceVersion guards the patch); one changed or deleted
// by someone else since is read afresh and patched once more.
func (p *Publisher) writeProfile(ctx context.Context, e *store.Entry, in learnInputs, res *Result) (*v1.AccessProfile, error) {
	key := client.ObjectKey{Namespace: e.Key.WorkloadNamespace, Name: ProfileName(e.Key)}
	sum := sha256.Sum256(e.Checkpoint)
	getFirst := false
	if k, ok := p.lookup(key); ok {
		prof, err := p.patchStatus(ctx, e, k.obj, sum, k.checkpoint, in, res)
		if err == nil {
			return prof, nil
		}
		p.forget(key)
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return nil, err
		}
		getFirst = apierrors.IsConflict(err)
	}
	prof, err := p.readOrCreate(ctx, e, key, getFirst)
	if err != nil {
		return nil, err
	}
	var held [sha256.Size]byte
	if cp := prof.Status.Checkpoint; cp != nil {
		held = sha256.Sum256(cp.Data)
	}
	return p.patchStatus(ctx, e, prof, sum, held, in, res)
}

// readOrCreate returns the profile of key as the API server has it,
// creating it (with an empty status) when it does not exist. Profiles the
// publisher does not know are mostly new (Know is given every profile at
// start), so it tries to create before it reads, unless getFirst.
func (p *Publisher) readOrCreate(ctx context.Context, e *store.Entry, key client.ObjectKey, getFirst bool) (*v1.AccessProfile, error) {
	ref, rerr := workloadRef(e)
	if getFirst || rerr != nil {
		prof := &v1.AccessProfile{}
		err := p.Client.Get(ctx, key, prof)
		switch {
		case err == nil:
			return prof, nil
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("get AccessProfile %s/%s: %w", key.Namespace, key.Name, err)
		case rerr != nil:
			return nil, Permanent(rerr)
		}
	}
	prof := &v1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
		Labels: map[string]string{v1.ManagedByLabel: v1.ManagerAnalyzer}}}
	prof.Spec = v1.AccessProfileSpec{WorkloadRef: ref, Dataset: datasetRef(e)}
	err := p.Client.Create(ctx, prof)
	if err == nil {
		return prof, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create AccessProfile %s/%s: %w", key.Namespace, key.Name, err)
	}
	prof = &v1.AccessProfile{}
	if err := p.Client.Get(ctx, key, prof); err != nil {
		return nil, fmt.Errorf("get AccessProfile %s/%s: %w", key.Namespace, key.Name, err)
	}
	return prof, nil
}

// patchStatus sets prof's status from e (its Learning condition from in)
// and patches it, unless nothing but the checkpoint changed materially (see
// MaterialChange) and the checkpoint is the one written or, with
// CheckpointEvery, the one written is recent enough.
// prof is the publisher's to change; sum is the hash of e's checkpoint,
// held that of the checkpoint prof holds.
func (p *Publisher) patchStatus(ctx context.Context, e *store.Entry, prof *v1.AccessProfile, sum, held [sha256.Size]byte, in learnInputs, res *Result) (*v1.AccessProfile, error) {
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
	cond, next, err := learning(st, in, p.now())
	if err != nil {
		return nil, err
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	st.NextRefresh = next
	if (held == sum || p.checkpointFresh(base.Status.Checkpoint)) && !materialChange(&base.Status, st) {
		res.Unchanged++
		// Not written: what the publisher remembers is base, as the API
		// server holds it.
		return prof, p.labelResting(ctx, base, held)
	}
	if err := p.Client.Status().Patch(ctx, prof, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, fmt.Errorf("update AccessProfile %s/%s status: %w", prof.Namespace, prof.Name, err)
	}
	p.remember(prof, sum)
	return prof, p.labelResting(ctx, prof, sum)
}

// checkpointFresh reports whether cp, the checkpoint a profile holds, is
// recent enough (CheckpointEvery) not to be replaced by a write of its own.
func (p *Publisher) checkpointFresh(cp *v1.Checkpoint) bool {
	return p.CheckpointEvery > 0 && cp != nil && p.now().Sub(cp.Time.Time) < p.CheckpointEvery
}

// labelResting puts v1.RestingLabel on prof while its Learning condition is
// False and takes it off otherwise, after the status says so: a collector
// that sees the label sees the status too.
func (p *Publisher) labelResting(ctx context.Context, prof *v1.AccessProfile, sum [sha256.Size]byte) error {
	c := meta.FindStatusCondition(prof.Status.Conditions, v1.ConditionLearning)
	rests := c != nil && c.Status == metav1.ConditionFalse
	if _, has := prof.Labels[v1.RestingLabel]; has == rests {
		return nil
	}
	base := prof.DeepCopy()
	if rests {
		metav1.SetMetaDataLabel(&prof.ObjectMeta, v1.RestingLabel, "true")
	} else {
		delete(prof.Labels, v1.RestingLabel)
	}
	if err := p.Client.Patch(ctx, prof, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("label AccessProfile %s/%s %s=%t: %w", prof.Namespace, prof.Name, v1.RestingLabel, rests, err)
	}
	p.remember(prof, sum)
	return nil
}

// MaterialChange is how far, relative, a number in a profile's status must
// move from what was written for the move alone to be written again.
// Features decay and drift between assessments even without new reads; a
// profile whose checkpoint is unchanged is rewritten only when its class,
// confidence, runs, pods, a decision's outcome or a condition changed, or a
// number moved by more than this.
const MaterialChange = 0.05

// materialChange reports whether now differs from was by more than
// hysteresis: checkpoints, the wording of decisions and conditions, and the
// values decisions were made on are left out (their outcomes are not), and
// numbers count as equal within MaterialChange.
func materialChange(was, now *v1.AccessProfileStatus) bool {
	a, errA := materialJSON(was)
	b, errB := materialJSON(now)
	return errA != nil || errB != nil || !near(a, b)
}

func materialJSON(st *v1.AccessProfileStatus) (any, error) {
	c := st.DeepCopy()
	c.Checkpoint = nil
	for i := range c.Decisions {
		c.Decisions[i].Rule, c.Decisions[i].Value = "", 0
	}
	for i := range c.Conditions {
		c.Conditions[i].Message = ""
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(data, &out)
}

// near compares decoded JSON, numbers within MaterialChange.
func near(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !near(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !near(x[i], y[i]) {
				return false
			}
		}
		return true
	case float64:
		y, ok := b.(float64)
		return ok && math.Abs(x-y) <= MaterialChange*math.Max(math.Abs(x), math.Abs(y))
	default:
		return a == b
	}
}

// Know tells the publisher of a profile as the API server holds it (as
// read at start), so that its first write needs no read.
func (p *Publisher) Know(prof *v1.AccessProfile) {
	var sum [sha256.Size]byte
	if cp := prof.Status.Checkpoint; cp != nil {
		sum = sha256.Sum256(cp.Data)
	}
	p.remember(prof, sum)
}

// remember keeps a copy of prof, without its checkpoint data, and sum.
func (p *Publisher) remember(prof *v1.AccessProfile, sum [sha256.Size]byte) {
	var data []byte
	if cp := prof.Status.Checkpoint; cp != nil {
		data, cp.Data = cp.Data, nil
		defer func() { cp.Data = data }()
	}
	k := knownProfile{obj: prof.DeepCopy(), checkpoint: sum}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known == nil {
		p.known = map[client.ObjectKey]knownProfile{}
	}
	p.known[client.ObjectKeyFromObject(prof)] = k
}

// Resting returns the profile of key as last written or read, when the
// publisher knows it and its Learning condition is False.
func (p *Publisher) Resting(key client.ObjectKey) (*v1.AccessProfile, bool) {
	k, ok := p.lookup(key)
	if !ok || !meta.IsStatusConditionFalse(k.obj.Status.Conditions, v1.ConditionLearning) {
		return nil, false
	}
	return k.obj, true
}

// lookup returns a copy of what the publisher knows of a profile.
func (p *Publisher) lookup(key client.ObjectKey) (knownProfile, bool) {
	p.mu.Lock()
	k, ok := p.known[key]
	p.mu.Unlock()
	if ok {
		k.obj = k.obj.DeepCopy()
	}
	return k, ok
}

func (p *Publisher) forget(key client.ObjectKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.known, key)
}

// known reports whether c is a class a workload was really seen to have.
func known(c v1.AccessClass) bool { return c != "" && c != v1.ClassUnknown }

func (p *Publisher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Publisher) longRunAfter() time.Duration {
	if p.LongRunAfter > 0 {
		return p.LongRunAfter
	}
	return v1.DefaultLongRunAfter
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

// recommendationsOf returns the recommendations made from prof, as listed
// once per Publish call for its namespace. A recommendation this call
// creates for prof is not among them; prof is published once per call.
func (p *Publisher) recommendationsOf(ctx context.Context, pols *policies, prof *v1.AccessProfile) ([]v1.Recommendation, error) {
	pols.mu.Lock()
	nr := pols.recNS[prof.Namespace]
	if nr == nil {
		nr = &namespaceRecs{}
		pols.recNS[prof.Namespace] = nr
	}
	pols.mu.Unlock()
	nr.once.Do(func() {
		var list v1.RecommendationList
		if err := p.Client.List(ctx, &list, client.InNamespace(prof.Namespace), client.HasLabels{v1.ProfileLabel}); err != nil {
			nr.err = fmt.Errorf("list Recommendations in %s: %w", prof.Namespace, err)
			return
		}
		nr.byProfile = map[string][]v1.Recommendation{}
		for _, r := range list.Items {
			nr.byProfile[r.Spec.Evidence.Profile] = append(nr.byProfile[r.Spec.Evidence.Profile], r)
		}
	})
	if nr.err != nil {
		return nil, nr.err
	}
	var out []v1.Recommendation
	for _, r := range nr.byProfile[prof.Name] {
		if r.Labels[v1.ProfileLabel] == truncate(prof.Name, 63) {
			out = append(out, r)
		}
	}
	if out == nil {
		out = []v1.Recommendation{}
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

// policyOf returns ns's policy bounds, reading them once per Publish call.
func (p *Publisher) policyOf(ctx context.Context, pols *policies, ns string) (policyBounds, error) {
	pols.mu.Lock()
	b, ok := pols.byNS[ns]
	pols.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := p.policy(ctx, ns)
	if err != nil {
		return b, err
	}
	pols.mu.Lock()
	pols.byNS[ns] = b
	pols.mu.Unlock()
	return b, nil
}

// policy reads the namespace's AutotunePolicy in force (v1.PolicyInForce); a
// namespace without one gets mode Recommend and the API defaults.
func (p *Publisher) policy(ctx context.Context, ns string) (policyBounds, error) {
	b := policyBounds{mode: v1.ModeRecommend, minConfidence: 0.7, coolOff: DefaultCoolOff, refreshAfter: v1.DefaultRefreshAfter}
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
	if s.RefreshAfter != nil {
		b.refreshAfter = s.RefreshAfter.Duration
	}
	if c := s.CacheWorkers; c != nil {
		b.minWorkers, b.maxWorkers = c.Min, c.Max
	}
	if s.CacheCapacity != nil {
		b.cacheCapacity = s.CacheCapacity.Value()
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
