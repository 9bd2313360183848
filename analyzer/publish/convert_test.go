package publish

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

func prefetchAdvice(block int64, conc int, bw int64) *advice.Recommendation {
	return &advice.Recommendation{
		Action:   v1.ActionPrefetch,
		Prefetch: &advice.PrefetchParams{Strategy: v1.StrategySequential, BlockBytes: block, Concurrency: conc, BandwidthBytesPerSec: bw, BudgetBytes: 3 << 30},
		Evidence: advice.Evidence{Class: v1.ClassSequentialScan, Confidence: 0.9, Benefit: advice.Benefit{ReadWaitShareBefore: 0.4, ReadWaitShareAfter: 0.05}},
	}
}

func TestSmallWobblesKeepTheSameRecommendation(t *testing.T) {
	f := &features.Features{}
	_, id1, ok := apiRecommendation(prefetchAdvice(16<<20, 9, 300<<20), f, policyBounds{})
	require.True(t, ok)
	_, id2, _ := apiRecommendation(prefetchAdvice(16<<20, 10, 310<<20), f, policyBounds{})
	assert.Equal(t, id1, id2, "concurrency 9→10 and bandwidth 300→310 MiB/s are noise")
	_, id3, _ := apiRecommendation(prefetchAdvice(16<<20, 20, 300<<20), f, policyBounds{})
	assert.NotEqual(t, id1, id3, "doubling concurrency is a new recommendation")
}

func TestPolicyBoundsAndFloorsApply(t *testing.T) {
	f := &features.Features{}
	spec, _, ok := apiRecommendation(prefetchAdvice(16<<20, 1, 2<<30), f, policyBounds{maxBandwidth: 200 << 20, budgetBytes: 1 << 30})
	require.True(t, ok)
	assert.EqualValues(t, MinStartConcurrency, spec.Prefetch.Concurrency, "the start is floored: the prefetcher adapts from there")
	assert.EqualValues(t, 200<<20, spec.Prefetch.MaxBandwidth.Value(), "capped at the policy's maxBandwidth")
	assert.EqualValues(t, 1<<30, spec.Prefetch.BudgetBytes.Value(), "capped at the policy's budget")
	assert.Equal(t, "read wait 40% → 5% of wall time", spec.Evidence.ExpectedBenefit.Summary)

	scale := &advice.Recommendation{Action: v1.ActionScaleCache, Cache: &advice.CacheParams{Workers: 12, WorkingSetBytes: 100 << 30},
		Evidence: advice.Evidence{Class: v1.ClassShuffledEpochs, Confidence: 0.9}}
	spec, _, ok = apiRecommendation(scale, f, policyBounds{minWorkers: 1, maxWorkers: 8})
	require.True(t, ok)
	assert.EqualValues(t, 8, spec.ScaleCache.Replicas, "never past the policy's max")
	assert.Equal(t, v1.ActionScaleCache, spec.Action)

	evict := &advice.Recommendation{Action: v1.ActionEvictDataset, Evict: &advice.EvictParams{}}
	_, _, ok = apiRecommendation(evict, f, policyBounds{})
	assert.False(t, ok, "eviction is the operator's: only it sees pod references")
}

func TestProfileNamesAreValidAndStable(t *testing.T) {
	k := analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "StatefulSet", WorkloadName: "Train_Big", DatasetName: "ImageNet/2012"}
	assert.Equal(t, "statefulset-train-big.imagenet-2012", ProfileName(k))
	long := k
	long.WorkloadName = "w" + string(bytesOf('a', 300))
	n := ProfileName(long)
	assert.LessOrEqual(t, len(n), 200)
	assert.Equal(t, n, ProfileName(long))
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func TestQuantize(t *testing.T) {
	for in, want := range map[int64]int64{1: 1, 3: 3, 5: 4, 6: 6, 7: 6, 9: 8, 12: 12, 100: 96} {
		assert.Equal(t, want, quantize2(in), "quantize2(%d)", in)
	}
	assert.EqualValues(t, 16<<20, quantizePow2(15<<20))
}

// A dot in a workload name must not let two keys share a profile.
func TestProfileNamesDoNotCollide(t *testing.T) {
	a := analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Deployment", WorkloadName: "a.b", DatasetName: "c"}
	b := analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Deployment", WorkloadName: "a", DatasetName: "b.c"}
	assert.NotEqual(t, ProfileName(a), ProfileName(b))
	assert.Equal(t, "deployment-a.b.c", ProfileName(b), "names without a dot in the workload stay as they were")
	for _, k := range []analyzer.Key{a, b} {
		assert.Empty(t, validation.IsDNS1123Subdomain(ProfileName(k)), ProfileName(k))
	}
	long := a
	long.WorkloadName = "w." + string(bytesOf('a', 300))
	assert.Empty(t, validation.IsDNS1123Subdomain(ProfileName(long)))
	assert.Equal(t, ProfileName(long), ProfileName(long))
}
