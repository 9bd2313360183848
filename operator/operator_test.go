package operator_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/kubectlplugin"
	"github.com/eddy-autotune/eddy/operator"
)

func autoPolicy(actions ...eddyv1alpha1.Action) eddyv1alpha1.AutotunePolicySpec {
	return eddyv1alpha1.AutotunePolicySpec{
		Mode:          eddyv1alpha1.ModeAuto,
		AutoApply:     actions,
		MinConfidence: ptr.To(0.8),
		CacheWorkers:  &eddyv1alpha1.CacheWorkerBounds{Min: 1, Max: 4},
		ChangeBudget:  &eddyv1alpha1.ChangeBudget{MaxChanges: 100, Per: &metav1.Duration{Duration: time.Hour}},
	}
}

// TestScalesCacheTargetsWithinBounds: a StatefulSet named by a PVC's
// annotation gets the recommended replicas (and real Running pods on kwok
// nodes); a Fluid-like runtime found by the dataset's name is held at the
// policy's maximum; a scale-down waits for the stabilisation window.
func TestScalesCacheTargetsWithinBounds(t *testing.T) {
	ns := newNamespace(t, "scale")
	createPolicy(t, ns, autoPolicy(eddyv1alpha1.ActionScaleCache))
	createStatefulSet(t, ns, "logs-cache", 1)
	createPVC(t, ns, "logs", "StatefulSet/logs-cache")
	createRuntime(t, ns, "imagenet", 1)
	createPVC(t, ns, "imagenet", "")
	opts := testOptions()
	opts.StabilizationWindow = 4 * time.Second
	startOperator(t, opts, nil)

	create(t, scaleRec(ns, "logs-up", "logs", 3), scaleRec(ns, "imagenet-up", "imagenet", 10))
	waitPhase(t, ns, "logs-up", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 3, stsReplicas(t, ns, "logs-cache"))
	waitRunningPods(t, ns, "logs-cache", 3)

	rec := waitPhase(t, ns, "imagenet-up", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 4, runtimeReplicas(t, ns, "imagenet"), "the runtime must be held at the policy's max of 4, not the recommended 10")
	require.Contains(t, condition(rec, eddyv1alpha1.ConditionApplied).Message, "held within the policy's bounds 1..4")
	require.Equal(t, "1", rec.Annotations[eddyv1alpha1.PreviousReplicasAnnotation])

	// Lower demand: the scale-down waits until it held for the window.
	time.Sleep(time.Second) // creation times have one-second resolution: be clearly newer
	start := time.Now()
	create(t, scaleRec(ns, "logs-down", "logs", 2))
	eventually(t, 10*time.Second, "scale-down stabilising", func() (bool, string) {
		r := getRec(t, ns, "logs-down")
		return condition(r, eddyv1alpha1.ConditionApplied).Reason == "Stabilizing", describe(r)
	})
	require.EqualValues(t, 3, stsReplicas(t, ns, "logs-cache"), "scaled down before the stabilisation window passed")
	waitPhase(t, ns, "logs-down", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.GreaterOrEqual(t, time.Since(start), 3*time.Second, "creation times have one-second resolution, so the window may end up to 1s early")
	require.EqualValues(t, 2, stsReplicas(t, ns, "logs-cache"))
	waitRunningPods(t, ns, "logs-cache", 2)
	up := waitPhase(t, ns, "logs-up", eddyv1alpha1.PhaseSuperseded, 10*time.Second) // once the newer one applied
	require.Equal(t, "logs-down", up.Status.SupersededBy)
	require.NotEqual(t, "AwaitingFreshData", condition(up, eddyv1alpha1.ConditionVerified).Reason, "a superseded recommendation awaits no verdict")

	// Below the minimum: held at 1.
	create(t, scaleRec(ns, "imagenet-zero", "imagenet", 0))
	waitPhase(t, ns, "imagenet-zero", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 1, runtimeReplicas(t, ns, "imagenet"))
}

// TestRecommendVersusAuto: without a policy nothing is applied until a person
// approves; under Auto only allowed actions with enough confidence are.
func TestRecommendVersusAuto(t *testing.T) {
	rec := newNamespace(t, "recommend")
	auto := newNamespace(t, "auto")
	createPolicy(t, auto, autoPolicy(eddyv1alpha1.ActionScaleCache))
	for _, ns := range []string{rec, auto} {
		createStatefulSet(t, ns, "cache", 1)
		createPVC(t, ns, "data", "apps/v1/StatefulSet/cache")
	}
	startOperator(t, testOptions(), nil)

	create(t, scaleRec(rec, "grow", "data", 2), scaleRec(auto, "grow", "data", 2),
		scaleRec(auto, "unsure", "data2", 2, withConfidence(0.5)), prefetchRec(auto, "prefetch", "data"),
		// Someone allowed to create recommendations, not eddy (issue 13, 6):
		// an Auto policy does not apply it, however confident and large.
		scaleRec(auto, "someones", "data", 30, withoutMark()))
	waitPhase(t, auto, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 2, stsReplicas(t, auto, "cache"))
	require.Equal(t, "AutoApproved", condition(getRec(t, auto, "grow"), eddyv1alpha1.ConditionApproved).Reason)
	// One event says it was proposed and auto-approved; one asking for
	// approval where a person must give it.
	eventually(t, 5*time.Second, "events of auto/grow", func() (bool, string) {
		got := eventReasons(t, auto, "grow")
		return slices.Contains(got, "AutoApproved") && slices.Contains(got, "Scaled") && !slices.Contains(got, "Proposed"), strings.Join(got, " ")
	})
	eventually(t, 5*time.Second, "events of recommend/grow", func() (bool, string) {
		got := eventReasons(t, rec, "grow")
		return slices.Equal(got, []string{"Proposed"}), strings.Join(got, " ")
	})

	holdPhase(t, rec, "grow", eddyv1alpha1.PhaseProposed, 2*time.Second)
	holdPhase(t, auto, "unsure", eddyv1alpha1.PhaseProposed, time.Second)
	holdPhase(t, auto, "prefetch", eddyv1alpha1.PhaseProposed, time.Second)
	holdPhase(t, auto, "someones", eddyv1alpha1.PhaseProposed, time.Second)
	require.EqualValues(t, 1, stsReplicas(t, rec, "cache"), "Recommend mode applied without approval")
	require.EqualValues(t, 2, stsReplicas(t, auto, "cache"), "a recommendation eddy did not propose is not auto-applied")

	_, err := kubectlplugin.Approve(context.Background(), env.Client, rec, "grow", "looks right")
	require.NoError(t, err)
	applied := waitPhase(t, rec, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 2, stsReplicas(t, rec, "cache"))
	require.NotNil(t, applied.Status.AppliedAt)

	_, err = kubectlplugin.Reject(context.Background(), env.Client, auto, "prefetch", "not now")
	require.NoError(t, err)
	waitPhase(t, auto, "prefetch", eddyv1alpha1.PhaseRejected, 30*time.Second)
}

// TestChangeBudgetHoldsUnderBurst: ten auto-approvable recommendations at
// once against a budget of three changes per hour apply exactly three.
func TestChangeBudgetHoldsUnderBurst(t *testing.T) {
	ns := newNamespace(t, "budget")
	spec := autoPolicy(eddyv1alpha1.ActionScaleCache)
	spec.ChangeBudget = &eddyv1alpha1.ChangeBudget{MaxChanges: 3, Per: &metav1.Duration{Duration: time.Hour}}
	createPolicy(t, ns, spec)
	var recs []client.Object
	for i := range 10 {
		name := fmt.Sprintf("ds%d", i)
		createRuntime(t, ns, name, 1)
		createPVC(t, ns, name, "")
		recs = append(recs, scaleRec(ns, name+"-grow", name, 3))
	}
	startOperator(t, testOptions(), nil)
	create(t, recs...)

	count := func() (applied, proposed int) {
		var list eddyv1alpha1.RecommendationList
		require.NoError(t, env.Client.List(context.Background(), &list, client.InNamespace(ns)))
		for _, r := range list.Items {
			switch r.Status.Phase {
			case eddyv1alpha1.PhaseApplied:
				applied++
			case eddyv1alpha1.PhaseProposed:
				proposed++
			}
		}
		return
	}
	eventually(t, 30*time.Second, "three applied, seven waiting", func() (bool, string) {
		a, p := count()
		return a == 3 && p == 7, fmt.Sprintf("applied %d, proposed %d", a, p)
	})
	time.Sleep(3 * time.Second)
	a, p := count()
	require.Equal(t, 3, a, "budget exceeded")
	require.Equal(t, 7, p)
	scaled := 0
	for i := range 10 {
		if runtimeReplicas(t, ns, fmt.Sprintf("ds%d", i)) == 3 {
			scaled++
		}
	}
	require.Equal(t, 3, scaled, "cache targets scaled")
	pol := &eddyv1alpha1.AutotunePolicy{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "default"}, pol))
	require.Len(t, pol.Status.AppliedChanges, 3)
	c := findPolicyCondition(pol, eddyv1alpha1.ConditionBudgetExhausted)
	require.Equal(t, metav1.ConditionTrue, c.Status, c.Message)
	require.True(t, hasEvent(t, ns, "BudgetExhausted"), "no BudgetExhausted event says why the rest wait")
}

// TestIneffectiveRecommendationRolledBack: fresh profile data that shows no
// improvement makes an applied recommendation Ineffective; Auto rolls it
// back, Recommend keeps it flagged until a person rejects it; one that helped
// is Verified.
func TestIneffectiveRecommendationRolledBack(t *testing.T) {
	auto := newNamespace(t, "verify-auto")
	recommend := newNamespace(t, "verify-recommend")
	createPolicy(t, auto, autoPolicy(eddyv1alpha1.ActionScaleCache))
	for _, ns := range []string{auto, recommend} {
		createStatefulSet(t, ns, "cache", 2)
		createPVC(t, ns, "data", "StatefulSet/cache")
		createStatefulSet(t, ns, "cache2", 1)
		createPVC(t, ns, "data2", "StatefulSet/cache2")
		setProfile(t, ns, "train-data", "StatefulSet", "train", "data", features(0.4, 100<<20))
		setProfile(t, ns, "train-data2", "StatefulSet", "train", "data2", features(0.4, 100<<20))
	}
	startOperator(t, testOptions(), nil)

	create(t, scaleRec(auto, "grow", "data", 4, withTarget("StatefulSet", "train"), withProfile("train-data")),
		scaleRec(auto, "grow2", "data2", 3, withTarget("StatefulSet", "train"), withProfile("train-data2")))
	waitPhase(t, auto, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	waitPhase(t, auto, "grow2", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 4, stsReplicas(t, auto, "cache"))
	time.Sleep(1100 * time.Millisecond) // profile times have second resolution: be clearly after appliedAt
	setProfile(t, auto, "train-data", "StatefulSet", "train", "data", features(0.38, 105<<20))
	setProfile(t, auto, "train-data2", "StatefulSet", "train", "data2", features(0.15, 250<<20))

	rolled := waitPhase(t, auto, "grow", eddyv1alpha1.PhaseRolledBack, 30*time.Second)
	require.EqualValues(t, 2, stsReplicas(t, auto, "cache"), "rollback must restore the previous replicas")
	require.Contains(t, rolled.Status.Outcome.Summary, "did not help")
	verified := waitPhase(t, auto, "grow2", eddyv1alpha1.PhaseVerified, 30*time.Second)
	require.Contains(t, verified.Status.Outcome.Summary, "helped")
	require.EqualValues(t, 3, stsReplicas(t, auto, "cache2"))

	create(t, scaleRec(recommend, "grow", "data", 4, withTarget("StatefulSet", "train"), withProfile("train-data")))
	waitPhase(t, recommend, "grow", eddyv1alpha1.PhaseProposed, 30*time.Second)
	_, err := kubectlplugin.Approve(context.Background(), env.Client, recommend, "grow", "try it")
	require.NoError(t, err)
	waitPhase(t, recommend, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	time.Sleep(1100 * time.Millisecond)
	setProfile(t, recommend, "train-data", "StatefulSet", "train", "data", features(0.41, 99<<20))
	flagged := waitPhase(t, recommend, "grow", eddyv1alpha1.PhaseIneffective, 30*time.Second)
	require.Contains(t, condition(flagged, eddyv1alpha1.ConditionVerified).Message, "kubectl eddy reject grow")
	holdPhase(t, recommend, "grow", eddyv1alpha1.PhaseIneffective, 2*time.Second)
	require.EqualValues(t, 4, stsReplicas(t, recommend, "cache"), "Recommend mode must not roll back by itself")
	_, err = kubectlplugin.Reject(context.Background(), env.Client, recommend, "grow", "it did not help")
	require.NoError(t, err)
	waitPhase(t, recommend, "grow", eddyv1alpha1.PhaseRolledBack, 30*time.Second)
	require.EqualValues(t, 2, stsReplicas(t, recommend, "cache"))
}

// TestIdleDatasetEvictedAndRestored: a dataset whose pods leave is proposed
// for eviction after idleAfter, evicted (cache to the minimum, recorded on
// the PVC), and scaled back when a pod uses it again; while in use it is
// never evicted.
func TestIdleDatasetEvictedAndRestored(t *testing.T) {
	ns := newNamespace(t, "idle")
	spec := autoPolicy(eddyv1alpha1.ActionScaleCache, eddyv1alpha1.ActionEvictDataset)
	spec.IdleAfter = &metav1.Duration{Duration: 3 * time.Second}
	createPolicy(t, ns, spec)
	createStatefulSet(t, ns, "scratch-cache", 3)
	createPVC(t, ns, "scratch", "StatefulSet/scratch-cache")
	reader := createReader(t, ns, "reader", "scratch")
	startOperator(t, testOptions(), nil)
	waitRunningPods(t, ns, "scratch-cache", 3)

	time.Sleep(5 * time.Second) // longer than idleAfter, but the pod references it
	require.Empty(t, evictions(t, ns), "a dataset in use was proposed for eviction")
	require.EqualValues(t, 3, stsReplicas(t, ns, "scratch-cache"))

	require.NoError(t, env.Client.Delete(context.Background(), reader, client.GracePeriodSeconds(0)))
	left := time.Now()
	var evict string
	eventually(t, 30*time.Second, "EvictDataset proposed", func() (bool, string) {
		e := evictions(t, ns)
		if len(e) == 1 {
			evict = e[0]
		}
		return len(e) == 1, fmt.Sprint(e)
	})
	require.GreaterOrEqual(t, time.Since(left), 3*time.Second, "proposed before idleAfter passed")
	rec := waitPhase(t, ns, evict, eddyv1alpha1.PhaseVerified, 30*time.Second)
	require.Equal(t, "CacheReleased", condition(rec, eddyv1alpha1.ConditionVerified).Reason)
	require.EqualValues(t, 1, stsReplicas(t, ns, "scratch-cache"))
	waitRunningPods(t, ns, "scratch-cache", 1)
	pvc := &corev1.PersistentVolumeClaim{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "scratch"}, pvc))
	require.NotEmpty(t, pvc.Annotations[eddyv1alpha1.EvictedAtAnnotation])
	require.Equal(t, evict, pvc.Annotations[eddyv1alpha1.EvictedByAnnotation])
	require.Contains(t, pvc.Annotations[eddyv1alpha1.EvictedReasonAnnotation], "no pod references dataset scratch")

	createReader(t, ns, "reader-again", "scratch")
	eventually(t, 30*time.Second, "cache scaled back", func() (bool, string) {
		n := stsReplicas(t, ns, "scratch-cache")
		return n == 3, fmt.Sprintf("replicas %d", n)
	})
	waitRunningPods(t, ns, "scratch-cache", 3)
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "scratch"}, pvc))
	require.Empty(t, pvc.Annotations[eddyv1alpha1.EvictedAtAnnotation])
	require.NotEmpty(t, pvc.Annotations[eddyv1alpha1.RestoredAtAnnotation])
	time.Sleep(4 * time.Second)
	require.Len(t, evictions(t, ns), 1, "a dataset in use again was proposed for eviction")
}

func evictions(t *testing.T, ns string) []string {
	var list eddyv1alpha1.RecommendationList
	require.NoError(t, env.Client.List(context.Background(), &list, client.InNamespace(ns)))
	var out []string
	for _, r := range list.Items {
		if r.Spec.Action == eddyv1alpha1.ActionEvictDataset {
			out = append(out, r.Name)
		}
	}
	return out
}

// TestRestartMidActionDoesNotRepeat: an operator that died after persisting
// its intent and scaling, but before recording Applied, is replaced; the new
// one finishes the bookkeeping without writing /scale again, and a restarted
// pod-level recommendation is not restarted twice.
func TestRestartMidActionDoesNotRepeat(t *testing.T) {
	ns := newNamespace(t, "restart")
	spec := autoPolicy(eddyv1alpha1.ActionScaleCache, eddyv1alpha1.ActionPrefetch)
	spec.RolloutRestart = true
	createPolicy(t, ns, spec)
	createStatefulSet(t, ns, "cache", 4)
	createPVC(t, ns, "data", "StatefulSet/cache")
	createStatefulSet(t, ns, "scan", 2)
	ctx := context.Background()

	// The state a crashed operator left: intent recorded, replicas already 4 (were 2).
	rec := scaleRec(ns, "grow", "data", 4)
	rec.Annotations = map[string]string{eddyv1alpha1.PreviousReplicasAnnotation: "2"}
	create(t, rec)
	rec.Status.Phase = eddyv1alpha1.PhaseApproved
	rec.Status.Conditions = []metav1.Condition{
		{Type: eddyv1alpha1.ConditionApproved, Status: metav1.ConditionTrue, Reason: "AutoApproved", Message: "by the previous operator", LastTransitionTime: metav1.Now()},
		{Type: eddyv1alpha1.ConditionApplied, Status: metav1.ConditionUnknown, Reason: "Applying", Message: "scale StatefulSet/cache from 2 to 4", LastTransitionTime: metav1.Now()},
	}
	require.NoError(t, env.Client.Status().Update(ctx, rec))
	waitRunningPods(t, ns, "scan", 2)
	waitRolledOut(t, ns, "scan")

	counter := &requestCounter{}
	stop := startOperator(t, testOptions(), counter)
	applied := waitPhase(t, ns, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.Equal(t, 0, counter.count("PUT", "/apis/apps/v1/namespaces/"+ns+"/statefulsets/cache/scale"), "the new operator wrote /scale again")
	require.Equal(t, "2", applied.Annotations[eddyv1alpha1.PreviousReplicasAnnotation], "previous replicas must survive the restart")
	require.Contains(t, condition(applied, eddyv1alpha1.ConditionApplied).Message, "from 2 to 4")

	// A pod-level recommendation is applied and rolled out once; an operator
	// restart after that does not restart the pods again.
	create(t, prefetchRec(ns, "prefetch", "data", withTarget("StatefulSet", "scan")))
	eventually(t, 30*time.Second, "rolled out", func() (bool, string) {
		r := getRec(t, ns, "prefetch")
		return condition(r, eddyv1alpha1.ConditionRestarted).Status == metav1.ConditionTrue, describe(r)
	})
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scan"}, sts))
	gen := sts.Generation
	require.Equal(t, "prefetch", sts.Spec.Template.Annotations[eddyv1alpha1.RestartedForAnnotation])
	require.NotEmpty(t, sts.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"])

	// Simulate a crash between the restart and recording it.
	r := getRec(t, ns, "prefetch")
	r.Status.Conditions[indexOf(r, eddyv1alpha1.ConditionRestarted)].Status = metav1.ConditionUnknown
	stop()
	require.NoError(t, env.Client.Status().Update(ctx, r))
	counter2 := &requestCounter{}
	startOperator(t, testOptions(), counter2)
	eventually(t, 30*time.Second, "restart recorded again", func() (bool, string) {
		r := getRec(t, ns, "prefetch")
		return condition(r, eddyv1alpha1.ConditionRestarted).Status == metav1.ConditionTrue, describe(r)
	})
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scan"}, sts))
	require.Equal(t, gen, sts.Generation, "the pods were restarted a second time")
	require.Equal(t, 0, counter2.count("PATCH", "/apis/apps/v1/namespaces/"+ns+"/statefulsets/scan"))
	require.Equal(t, 0, counter2.count("PUT", "/apis/apps/v1/namespaces/"+ns+"/statefulsets/cache/scale"))
	require.Equal(t, applied.Status.AppliedAt.Time, getRec(t, ns, "grow").Status.AppliedAt.Time)
}

func indexOf(r *eddyv1alpha1.Recommendation, typ string) int {
	for i, c := range r.Status.Conditions {
		if c.Type == typ {
			return i
		}
	}
	return -1
}

// TestStaleAnalyzerLeaseStopsActions: with the analyzer's heartbeat stale,
// nothing is approved or scaled; once renewed, the operator proceeds.
func TestStaleAnalyzerLeaseStopsActions(t *testing.T) {
	ctx := context.Background()
	leaseNS := newNamespace(t, "eddy-stale")
	require.NoError(t, installRBAC(ctx, leaseNS))
	require.NoError(t, renewLease(ctx, leaseNS, time.Now().Add(-10*time.Minute)))
	ns := newNamespace(t, "stale")
	createPolicy(t, ns, autoPolicy(eddyv1alpha1.ActionScaleCache))
	createStatefulSet(t, ns, "cache", 1)
	createPVC(t, ns, "data", "StatefulSet/cache")
	opts := testOptions()
	opts.Namespace = leaseNS
	startOperator(t, opts, nil)

	create(t, scaleRec(ns, "grow", "data", 3))
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseProposed, 30*time.Second)
	holdPhase(t, ns, "grow", eddyv1alpha1.PhaseProposed, 3*time.Second)
	require.EqualValues(t, 1, stsReplicas(t, ns, "cache"))
	require.True(t, hasEvent(t, ns, "AnalyzerStale"), "no event says why nothing happens")

	require.NoError(t, renewLease(ctx, leaseNS, time.Now()))
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseApplied, 30*time.Second)
	require.EqualValues(t, 3, stsReplicas(t, ns, "cache"))
}

// TestDryRunRecordsWithoutActing: a dry-run policy records what it would do.
func TestDryRunRecordsWithoutActing(t *testing.T) {
	ns := newNamespace(t, "dryrun")
	spec := autoPolicy(eddyv1alpha1.ActionScaleCache)
	spec.DryRun = true
	createPolicy(t, ns, spec)
	createStatefulSet(t, ns, "cache", 1)
	createPVC(t, ns, "data", "StatefulSet/cache")
	startOperator(t, testOptions(), nil)
	create(t, scaleRec(ns, "grow", "data", 3))
	eventually(t, 30*time.Second, "dry run recorded", func() (bool, string) {
		r := getRec(t, ns, "grow")
		return condition(r, eddyv1alpha1.ConditionDryRun).Status == metav1.ConditionTrue, describe(r)
	})
	holdPhase(t, ns, "grow", eddyv1alpha1.PhaseProposed, 2*time.Second)
	require.EqualValues(t, 1, stsReplicas(t, ns, "cache"))
	require.Contains(t, condition(getRec(t, ns, "grow"), eddyv1alpha1.ConditionDryRun).Message, "would auto-approve")
}

// TestLeaderElectionOneActs: a second operator waits while the first leads.
func TestLeaderElectionOneActs(t *testing.T) {
	startOperator(t, testOptions(), nil)
	cfg := *env.Config
	mgr, err := operator.New(&cfg, operator.Config{Options: testOptions(), LeaderElection: true, SkipControllerNameValidation: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	select {
	case <-mgr.Elected():
		t.Fatal("a second operator became leader while the first leads")
	case <-time.After(3 * time.Second):
	}
	cancel()
	require.NoError(t, <-done)
}

func findPolicyCondition(p *eddyv1alpha1.AutotunePolicy, typ string) metav1.Condition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

// eventReasons lists the reasons of the events regarding recommendation
// name in ns, oldest first.
func eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	var evs eventsv1.EventList
	require.NoError(t, env.Client.List(context.Background(), &evs, client.InNamespace(ns)))
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].CreationTimestamp.Before(&evs.Items[j].CreationTimestamp) })
	var out []string
	for _, e := range evs.Items {
		if e.Regarding.Kind == "Recommendation" && e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

func hasEvent(t *testing.T, ns, reason string) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var evs eventsv1.EventList
		require.NoError(t, env.Client.List(context.Background(), &evs, client.InNamespace(ns)))
		for _, e := range evs.Items {
			if e.Reason == reason {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// waitRunningPods waits until exactly want pods of StatefulSet name run on kwok nodes.
func waitRunningPods(t *testing.T, ns, name string, want int) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%d Running pods of %s/%s", want, ns, name), func() (bool, string) {
		var pods corev1.PodList
		require.NoError(t, env.Client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": name}))
		running, all := 0, 0
		var states []string
		for _, p := range pods.Items {
			all++
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && strings.HasPrefix(p.Spec.NodeName, "kwok-node-") {
				running++
			}
			states = append(states, p.Name+"="+string(p.Status.Phase))
		}
		return running == want && all == want, strings.Join(states, " ")
	})
}

// waitRolledOut waits until the StatefulSet reports every replica updated and ready.
func waitRolledOut(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 60*time.Second, "rollout of "+name, func() (bool, string) {
		sts := &appsv1.StatefulSet{}
		require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, sts))
		s := sts.Status
		return s.ObservedGeneration >= sts.Generation && s.UpdatedReplicas == *sts.Spec.Replicas && s.ReadyReplicas == *sts.Spec.Replicas,
			fmt.Sprintf("%+v", s)
	})
}

// TestUnapprovedExpiresAfterTTL: a proposal nobody approves expires.
func TestUnapprovedExpiresAfterTTL(t *testing.T) {
	ns := newNamespace(t, "expiry")
	createStatefulSet(t, ns, "cache", 1)
	createPVC(t, ns, "data", "StatefulSet/cache")
	opts := testOptions()
	opts.RecommendationTTL = 3 * time.Second
	startOperator(t, opts, nil)
	create(t, scaleRec(ns, "grow", "data", 2))
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseProposed, 30*time.Second)
	waitPhase(t, ns, "grow", eddyv1alpha1.PhaseExpired, 30*time.Second)
	require.EqualValues(t, 1, stsReplicas(t, ns, "cache"))
	require.True(t, hasEvent(t, ns, "Expired"))
}

// TestRolloutRestartWaitsForDisruptionBudget: a pod-level recommendation's
// rollout restart waits while a PodDisruptionBudget allows no disruption.
func TestRolloutRestartWaitsForDisruptionBudget(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "pdb")
	spec := autoPolicy(eddyv1alpha1.ActionPrefetch)
	spec.RolloutRestart = true
	createPolicy(t, ns, spec)
	createStatefulSet(t, ns, "scan", 2)
	waitRunningPods(t, ns, "scan", 2)
	waitRolledOut(t, ns, "scan")
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "scan"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(2)),
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "scan"}},
		},
	}
	create(t, pdb)
	startOperator(t, testOptions(), nil)

	create(t, prefetchRec(ns, "prefetch", "data", withTarget("StatefulSet", "scan")))
	eventually(t, 30*time.Second, "restart waiting for the budget", func() (bool, string) {
		r := getRec(t, ns, "prefetch")
		c := condition(r, eddyv1alpha1.ConditionRestarted)
		return r.Status.Phase == eddyv1alpha1.PhaseApplied && c.Reason == "WaitingToRestart" && strings.Contains(c.Message, "PodDisruptionBudget scan"), describe(r)
	})
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scan"}, sts))
	require.Empty(t, sts.Spec.Template.Annotations[eddyv1alpha1.RestartedForAnnotation], "restarted despite the budget")

	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(pdb), pdb))
	pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(1))
	require.NoError(t, env.Client.Update(ctx, pdb))
	eventually(t, 45*time.Second, "restarted once the budget allows", func() (bool, string) {
		r := getRec(t, ns, "prefetch")
		return condition(r, eddyv1alpha1.ConditionRestarted).Status == metav1.ConditionTrue, describe(r)
	})
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "scan"}, sts))
	require.Equal(t, "prefetch", sts.Spec.Template.Annotations[eddyv1alpha1.RestartedForAnnotation])
}
