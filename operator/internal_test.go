package operator

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// TestJudgeThresholds pins the documented thresholds: read wait must drop by
// 20% relative, or throughput rise by 20%.
func TestJudgeThresholds(t *testing.T) {
	base := eddyv1alpha1.RunStats{Runs: 1, ReadWaitShare: 0.40, ThroughputBytesPerSecond: 100}
	for _, c := range []struct {
		wait, thr float64
		helped    bool
	}{
		{0.32, 100, true},  // exactly −20%
		{0.33, 100, false}, // −17.5%
		{0.40, 120, true},  // exactly +20%
		{0.40, 119, false},
		{0.45, 200, true}, // throughput alone suffices
	} {
		helped, summary := judge(base, eddyv1alpha1.RunStats{Runs: 1, ReadWaitShare: c.wait, ThroughputBytesPerSecond: c.thr})
		require.Equal(t, c.helped, helped, "wait %.2f throughput %.0f: %s", c.wait, c.thr, summary)
	}
}

func TestRecommendationConflictOnly(t *testing.T) {
	recs := apierrors.NewConflict(schema.GroupResource{Group: "eddy.io", Resource: "recommendations"}, "a", errors.New("changed"))
	pols := apierrors.NewConflict(schema.GroupResource{Group: "eddy.io", Resource: "autotunepolicies"}, "default", errors.New("changed"))
	require.True(t, isRecommendationConflict(fmt.Errorf("mark Applied: %w", recs)))
	require.False(t, isRecommendationConflict(fmt.Errorf("reserve budget: %w", pols)))
	require.False(t, isRecommendationConflict(errors.New("plain")))
}

func TestPolicyDefaultsAndBounds(t *testing.T) {
	p := resolvePolicy(nil, false)
	require.Equal(t, eddyv1alpha1.ModeRecommend, p.mode, "no policy means Recommend")
	eddys := metav1.ObjectMeta{Labels: map[string]string{eddyv1alpha1.ManagedByLabel: eddyv1alpha1.ManagerAnalyzer}}
	ok, why := p.mayAutoApply(&eddyv1alpha1.Recommendation{ObjectMeta: eddys, Spec: eddyv1alpha1.RecommendationSpec{Action: eddyv1alpha1.ActionScaleCache, Evidence: eddyv1alpha1.Evidence{Confidence: 1}}})
	require.False(t, ok)
	require.Contains(t, why, "a person must approve")

	// Without bounds in the policy a safe maximum still holds.
	for in, want := range map[int32]int32{0: 0, 4: 4, 30: DefaultMaxCacheWorkers, 2147483647: DefaultMaxCacheWorkers} {
		got, _ := p.clampReplicas(in)
		require.Equal(t, want, got, "replicas %d without bounds", in)
	}
	ok, why = p.mayAutoApply(&eddyv1alpha1.Recommendation{Spec: eddyv1alpha1.RecommendationSpec{Action: eddyv1alpha1.ActionScaleCache, Evidence: eddyv1alpha1.Evidence{Confidence: 1}}})
	require.False(t, ok)
	require.Contains(t, why, "not proposed by eddy")

	p = resolvePolicy(&eddyv1alpha1.AutotunePolicy{Spec: eddyv1alpha1.AutotunePolicySpec{CacheWorkers: &eddyv1alpha1.CacheWorkerBounds{Min: 2, Max: 6}}}, false)
	for in, want := range map[int32]int32{0: 2, 4: 4, 9: 6} {
		got, _ := p.clampReplicas(in)
		require.Equal(t, want, got)
	}
	now := time.Now()
	times := []metav1.Time{metav1.NewTime(now.Add(-2 * time.Hour)), metav1.NewTime(now.Add(-time.Minute)), metav1.NewTime(now.Add(-30 * time.Minute))}
	within := changesWithin(times, time.Hour, now)
	require.Len(t, within, 2)
	require.True(t, within[0].Before(&within[1]), "oldest first")
}

func TestParseCacheTarget(t *testing.T) {
	s := &scaler{}
	for in, want := range map[string]schema.GroupVersionKind{
		"StatefulSet/cache":                       {Group: "apps", Version: "v1", Kind: "StatefulSet"},
		"apps/v1/Deployment/cache":                {Group: "apps", Version: "v1", Kind: "Deployment"},
		"JuiceFSRuntime/cache":                    {Group: "data.fluid.io", Version: "v1alpha1", Kind: "JuiceFSRuntime"},
		"cache.example.com/v1beta1/Workers/cache": {Group: "cache.example.com", Version: "v1beta1", Kind: "Workers"},
	} {
		got, err := s.parseTarget(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got.gvk, in)
		require.Equal(t, "cache", got.name, in)
	}
	_, err := s.parseTarget("Workers/cache")
	require.ErrorContains(t, err, "needs its API version")
	_, err = s.parseTarget("cache")
	require.Error(t, err)
}

// A pod-level recommendation is judged by the runs it was applied to, once
// they read enough; others by the runs that started after it settled.
func TestRunsAfter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	run := func(pod string, start time.Time, ended bool, bytes int64, wall, wait float64, recs ...string) eddyv1alpha1.RunSummary {
		return eddyv1alpha1.RunSummary{Pod: pod, Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(time.Duration(wall * 1e9))), Ended: ended,
			BytesRead: bytes, WallSeconds: wall, ReadWaitShare: wait, ThroughputBytesPerSecond: float64(bytes) / wall, Recommendations: recs}
	}
	cold := run("cold", t0, false, 60<<20, 6, 0.9)
	prefetch := &eddyv1alpha1.Recommendation{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: eddyv1alpha1.RecommendationSpec{
		Action: eddyv1alpha1.ActionPrefetch, Evidence: eddyv1alpha1.Evidence{Runs: []eddyv1alpha1.RunSummary{cold}}}}
	before, ok := baseline(prefetch)
	require.True(t, ok, "a run still reading when the recommendation was made is its baseline")
	require.EqualValues(t, 1, before.Runs)

	runs := []eddyv1alpha1.RunSummary{
		cold,
		run("other", t0.Add(time.Minute), true, 96<<20, 6, 0.9),             // not injected
		run("short", t0.Add(2*time.Minute), true, 10<<20, 1, 0.1, "p"),      // read too little
		run("running", t0.Add(3*time.Minute), false, 96<<20, 1, 0.05, "p"),  // not ended, not long enough
		run("warm", t0.Add(4*time.Minute), true, 96<<20, 1, 0.05, "q", "p"), // judged
	}
	after, pods := runsAfter(prefetch, runs, t0, before)
	require.Equal(t, []string{"warm"}, pods)
	helped, summary := judge(before, after)
	require.True(t, helped, summary)
	require.Contains(t, summary, "read wait 90% → 5%")
	require.Contains(t, summary, "1 run before, 1 run after")

	long := run("service", t0.Add(5*time.Minute), false, 200<<20, 120, 0.05, "p")
	_, pods = runsAfter(prefetch, append(runs, long), t0, before)
	require.Equal(t, []string{"warm", "service"}, pods, "a long-lived pod that read a baseline's worth over a minute is judged")

	scale := &eddyv1alpha1.Recommendation{Spec: eddyv1alpha1.RecommendationSpec{Action: eddyv1alpha1.ActionScaleCache}}
	_, pods = runsAfter(scale, runs, t0.Add(90*time.Second), before)
	require.Equal(t, []string{"warm"}, pods, "not pod-level: ended runs started after the change settled")
	_, pods = runsAfter(scale, runs, t0.Add(4*time.Minute), before)
	require.Empty(t, pods, "a run that started in the second the change settled may have started before it")

	_, ok = baseline(&eddyv1alpha1.Recommendation{})
	require.False(t, ok)
}
