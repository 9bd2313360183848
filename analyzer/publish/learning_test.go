package publish

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// TestLearningFollowsAProfileThroughItsLife walks one profile from its
// first windows to rest, through a recommendation's verification, a
// refresh, and back to rest, checking at each step what the collector
// would do with a pod starting then (v1.Learning).
func TestLearningFollowsAProfileThroughItsLife(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	pol := policyBounds{minConfidence: 0.7, refreshAfter: time.Hour}
	applied := false
	in := learnInputs{pol: pol, longRunAfter: 10 * time.Minute, verifying: func() (bool, error) { return applied, nil }}
	prof := &v1.AccessProfile{}
	st := &prof.Status
	step := func(now time.Time, wantReason string, wantObserved bool) {
		t.Helper()
		cond, next, err := learning(st, in, now)
		require.NoError(t, err)
		meta.SetStatusCondition(&st.Conditions, cond)
		st.NextRefresh = next
		assert.Equal(t, wantReason, cond.Reason, cond.Message)
		assert.Equal(t, wantObserved, v1.Learning(prof, now), "a pod starting at %s observed", now.Sub(t0))
	}
	run := func(start time.Duration, ended bool) v1.RunSummary {
		return v1.RunSummary{Pod: "p", Start: metav1.NewTime(t0.Add(start)), End: metav1.NewTime(t0.Add(start + time.Minute)), Ended: ended, WallSeconds: 60}
	}

	st.Class, st.Confidence = v1.ClassShuffledEpochs, 0.9
	st.RecentRuns = []v1.RunSummary{run(0, false)}
	step(t0, v1.ReasonNotConfident, true) // the first run is still reading
	st.Confidence = 0.5
	st.RecentRuns[0].Ended = true
	step(t0.Add(2*time.Minute), v1.ReasonNotConfident, true) // whole, but not sure enough
	st.Confidence = 0.9
	step(t0.Add(3*time.Minute), v1.ReasonResting, false)
	require.NotNil(t, st.NextRefresh)
	assert.Equal(t, t0.Add(time.Hour+3*time.Minute), st.NextRefresh.Time)
	restedAt := st.NextRefresh.Time

	// Windows of a pod observed since before the rest keep coming: the rest
	// is not extended, and does not end.
	step(t0.Add(10*time.Minute), v1.ReasonResting, false)
	assert.Equal(t, restedAt, st.NextRefresh.Time)

	// A recommendation is applied: its verifying runs are observed; once it
	// is verified the workload rests again, from then.
	applied = true
	step(t0.Add(20*time.Minute), v1.ReasonVerifying, true)
	assert.Nil(t, st.NextRefresh)
	applied = false
	step(t0.Add(30*time.Minute), v1.ReasonResting, false)
	restedAt = st.NextRefresh.Time
	assert.Equal(t, t0.Add(90*time.Minute), restedAt)

	// Past nextRefresh the collector observes again before the analyzer
	// hears of it; the first windows after it make the profile Refreshing,
	// until a run that started after the refresh was due is seen whole.
	assert.True(t, v1.Learning(prof, restedAt), "refresh due")
	st.RecentRuns = append(st.RecentRuns, run(95*time.Minute, false))
	step(t0.Add(96*time.Minute), v1.ReasonRefreshing, true)
	step(t0.Add(97*time.Minute), v1.ReasonRefreshing, true)
	st.RecentRuns[1].Ended = true
	step(t0.Add(98*time.Minute), v1.ReasonResting, false)
	assert.Equal(t, t0.Add(158*time.Minute), st.NextRefresh.Time)

	// The workload reads differently now: learning again.
	st.Class, st.Confidence = v1.ClassRandomReads, 0.4
	step(t0.Add(100*time.Minute), v1.ReasonNotConfident, true)
	assert.Nil(t, st.NextRefresh)
}

func TestLearningNeverRestsWithRefreshAfterZero(t *testing.T) {
	st := &v1.AccessProfileStatus{Class: v1.ClassSequentialScan, Confidence: 1, RecentRuns: []v1.RunSummary{{Ended: true}}}
	cond, next, err := learning(st, learnInputs{pol: policyBounds{minConfidence: 0.7}}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, metav1.ConditionTrue, cond.Status)
	assert.Equal(t, v1.ReasonNeverRests, cond.Reason)
	assert.Nil(t, next)
}

func TestAwaitsVerification(t *testing.T) {
	rec := func(p v1.RecommendationPhase) v1.Recommendation {
		r := v1.Recommendation{}
		r.Status.Phase = p
		return r
	}
	assert.False(t, awaitsVerification(nil))
	assert.False(t, awaitsVerification([]v1.Recommendation{rec(v1.PhaseProposed), rec(v1.PhaseVerified), rec(v1.PhaseRolledBack)}))
	assert.True(t, awaitsVerification([]v1.Recommendation{rec(v1.PhaseVerified), rec(v1.PhaseApplied)}))
}

// TestAWriteOnlyProfileRests: a workload's output volume (writes only: no
// runs, which are made of reads) rests once classified WriteMostly, and its
// refresh ends at once; otherwise it would keep the workload learning.
func TestAWriteOnlyProfileRests(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st := &v1.AccessProfileStatus{Class: v1.ClassWriteMostly, Confidence: 0.9}
	in := learnInputs{pol: policyBounds{minConfidence: 0.7, refreshAfter: time.Hour}, longRunAfter: 10 * time.Minute}
	cond, next, err := learning(st, in, now)
	require.NoError(t, err)
	assert.Equal(t, v1.ReasonResting, cond.Reason, cond.Message)
	require.NotNil(t, next)
	meta.SetStatusCondition(&st.Conditions, cond)
	st.NextRefresh = next
	cond, next, err = learning(st, in, now.Add(2*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, v1.ReasonRefreshing, cond.Reason)
	meta.SetStatusCondition(&st.Conditions, cond)
	st.NextRefresh = next
	cond, _, err = learning(st, in, now.Add(2*time.Hour+time.Minute))
	require.NoError(t, err)
	assert.Equal(t, v1.ReasonResting, cond.Reason, "a refresh of a write-only profile waits for a run that never comes")
}
