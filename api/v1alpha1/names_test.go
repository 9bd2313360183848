package v1alpha1

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPhases(t *testing.T) {
	inForce := map[RecommendationPhase]bool{PhaseApplied: true, PhaseVerified: true, PhaseIneffective: true}
	final := map[RecommendationPhase]bool{PhaseRejected: true, PhaseSuperseded: true, PhaseExpired: true, PhaseFailed: true, PhaseRolledBack: true}
	for _, p := range []RecommendationPhase{"", PhaseProposed, PhaseApproved, PhaseApplied, PhaseVerified, PhaseIneffective, PhaseRolledBack, PhaseRejected, PhaseSuperseded, PhaseExpired, PhaseFailed} {
		assert.Equal(t, inForce[p], p.InForce(), "%q in force", p)
		assert.Equal(t, final[p], p.Final(), "%q final", p)
		assert.False(t, p.InForce() && p.Final(), "%q", p)
	}
}

func TestWorkloadReferenceSame(t *testing.T) {
	a := WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train", Rule: RuleNameSuffix}
	assert.True(t, a.Same(WorkloadReference{APIVersion: "batch/v2", Kind: "Job", Name: "train"}), "versions and rules do not matter")
	assert.False(t, a.Same(WorkloadReference{APIVersion: "batch.volcano.sh/v1alpha1", Kind: "Job", Name: "train"}), "another group's Job")
	assert.False(t, a.Same(WorkloadReference{APIVersion: "batch/v1", Kind: "CronJob", Name: "train"}))
	assert.Equal(t, "batch/Job/train", a.Key())
	assert.Equal(t, "/Pod/p", WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "p"}.Key())
	assert.False(t, a.IsObject())
	assert.True(t, WorkloadReference{Kind: "Deployment", Name: "web"}.IsObject())
}

func TestParseDatasetSource(t *testing.T) {
	for in, want := range map[string]DatasetSource{"fluid": DatasetSourceFluid, "PVC": DatasetSourcePVC, "volume": DatasetSourceVolume} {
		got, ok := ParseDatasetSource(in)
		assert.True(t, ok, in)
		assert.Equal(t, want, got)
	}
	_, ok := ParseDatasetSource("nfs")
	assert.False(t, ok)
	assert.Equal(t, "Volume/cache", DatasetReference{Name: "cache", Source: DatasetSourceVolume}.VolumeKey())
	assert.Equal(t, "PVC/imagenet", DatasetReference{Name: "imagenet", Source: DatasetSourceFluid}.VolumeKey())
}

func TestPolicyInForce(t *testing.T) {
	at := func(name string, minute int) AutotunePolicy {
		return AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(0, 0).Add(time.Duration(minute) * time.Minute))}}
	}
	assert.Nil(t, PolicyInForce(nil))
	assert.Equal(t, "default", PolicyInForce([]AutotunePolicy{at("a", 0), at("default", 5)}).Name)
	assert.Equal(t, "old", PolicyInForce([]AutotunePolicy{at("new", 5), at("old", 1)}).Name)
	assert.Equal(t, "a", PolicyInForce([]AutotunePolicy{at("b", 1), at("a", 1)}).Name)
}
