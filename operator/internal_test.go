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
	base := &eddyv1alpha1.AccessFeatures{ReadWaitShare: 0.40, ThroughputBytesPerSecond: 100}
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
		helped, summary := judge(base, &eddyv1alpha1.AccessFeatures{ReadWaitShare: c.wait, ThroughputBytesPerSecond: c.thr})
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
	ok, why := p.mayAutoApply(&eddyv1alpha1.Recommendation{Spec: eddyv1alpha1.RecommendationSpec{Action: eddyv1alpha1.ActionScaleCache, Evidence: eddyv1alpha1.Evidence{Confidence: 1}}})
	require.False(t, ok)
	require.Contains(t, why, "a person must approve")

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
