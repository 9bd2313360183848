package publish

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

func TestHoldProposal(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	spec := v1.RecommendationSpec{Action: v1.ActionPrefetch, Evidence: v1.Evidence{Class: v1.ClassShuffledEpochs}}
	rec := func(name string, action v1.Action, class v1.AccessClass, phase v1.RecommendationPhase, conds ...metav1.Condition) v1.Recommendation {
		r := v1.Recommendation{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.RecommendationSpec{Action: action, Evidence: v1.Evidence{Class: class}}}
		r.Status.Phase = phase
		r.Status.Conditions = conds
		return r
	}
	ineffective := func(ago time.Duration) metav1.Condition {
		return metav1.Condition{Type: v1.ConditionVerified, Status: metav1.ConditionFalse, Reason: v1.ReasonIneffective, LastTransitionTime: metav1.NewTime(now.Add(-ago))}
	}
	for _, c := range []struct {
		name     string
		existing []v1.Recommendation
		want     hold
	}{
		{"nothing yet", nil, holdNone},
		{"same name", []v1.Recommendation{rec("p.prefetch-abc", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseRolledBack)}, holdAlreadyProposed},
		{"verified, same class", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseVerified)}, holdInForce},
		{"applied, same class", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseApplied)}, holdInForce},
		{"applied, the class changed", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassSequentialScan, v1.PhaseApplied)}, holdNone},
		{"another action in force", []v1.Recommendation{rec("old", v1.ActionScaleCache, v1.ClassShuffledEpochs, v1.PhaseVerified)}, holdNone},
		{"rolled back as ineffective, in cool-off", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseRolledBack, ineffective(time.Hour))}, holdCoolingOff},
		{"ineffective and still applied", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassSequentialScan, v1.PhaseIneffective, ineffective(time.Minute))}, holdCoolingOff},
		{"cool-off over", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseRolledBack, ineffective(25*time.Hour))}, holdNone},
		{"rejected by a person", []v1.Recommendation{rec("old", v1.ActionPrefetch, v1.ClassShuffledEpochs, v1.PhaseRejected)}, holdNone},
	} {
		got, _ := holdProposal(c.existing, spec, "p.prefetch-abc", 24*time.Hour, now)
		assert.Equal(t, c.want, got, c.name)
	}
}

func TestBaselineRuns(t *testing.T) {
	runs := []v1.RunSummary{{Pod: "a"}, {Pod: "b", Recommendations: []string{"x"}}, {Pod: "c"}}
	got := baselineRuns(runs)
	assert.Equal(t, []v1.RunSummary{{Pod: "a"}, {Pod: "c"}}, got)
}
