package advice

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

const mib = 1 << 20

func TestFormulas(t *testing.T) {
	f := features.Features{ThroughputBytesPerSec: 100 * mib, ReadWaitShare: 0.6}
	assert.InDelta(t, 250*mib, DemandedThroughput(&f), 1e-6, "T / (1 − w)")
	f.ReadWaitShare = 0.99
	assert.InDelta(t, 1000*mib, DemandedThroughput(&f), 1e-6, "1 − w floored at MinComputeShare")

	assert.Equal(t, int64(8*mib), ScanBlock(10*mib), "at least 8 MiB")
	assert.Equal(t, int64(16*mib), ScanBlock(200*mib), "200 MiB/s × 50 ms = 10 MiB → 16 MiB")
	assert.Equal(t, int64(16*mib), ScanBlock(10000*mib), "at most 16 MiB")
	assert.Equal(t, int64(64<<10), FileBlock(1000))
	assert.Equal(t, int64(256<<10), FileBlock(200<<10))

	// 1 GiB/s × 40 ms = 40 MiB in flight = 3 blocks of 16 MiB.
	assert.Equal(t, 3, Concurrency(1024*mib, 0.04, 16*mib, 32))
	assert.Equal(t, 1, Concurrency(1*mib, 0.0001, 16*mib, 32))
	assert.Equal(t, 32, Concurrency(1e12, 1, 16*mib, 32))
	assert.Equal(t, MinFileConcurrency, FileConcurrency(1*mib, 0.0001, 16*mib, 32))
	assert.Equal(t, 8, FileConcurrency(1*mib, 0.0001, 16*mib, 8))
	assert.Equal(t, 32, FileConcurrency(1e12, 1, 16*mib, 32))

	b := Bounds{PerWorkerCapacityBytes: 10 << 30, PerWorkerThroughput: 100 * mib, MinWorkers: 2, MaxWorkers: 8}
	w, fc, ft := Workers(25<<30, 150*mib, b)
	assert.Equal(t, []int{3, 3, 2}, []int{w, fc, ft}, "max(⌈25/10⌉, ⌈150/100⌉)")
	w, _, _ = Workers(1<<30, 50*mib, b)
	assert.Equal(t, 2, w, "at least MinWorkers")
	w, _, _ = Workers(1000<<30, 50*mib, b)
	assert.Equal(t, 8, w, "at most MaxWorkers")
}

func decision(c v1.AccessClass, conf float64) *classify.Decision {
	return &classify.Decision{Class: c, Confidence: conf}
}

func TestNothingBelowMinConfidence(t *testing.T) {
	f := features.Features{}
	a := Advise(&f, decision(v1.ClassSequentialScan, 0.49), Bounds{})
	assert.Empty(t, a.Recommendations)
	assert.Contains(t, a.Withheld, "0.49")
	a = Advise(&f, decision(v1.ClassSequentialScan, 0.6), Bounds{MinConfidence: 0.7})
	assert.Empty(t, a.Recommendations)
	for _, c := range []v1.AccessClass{v1.ClassWriteMostly, v1.ClassUnknown} {
		assert.Empty(t, Advise(&f, decision(c, 1), Bounds{}).Recommendations)
	}
}

func TestShuffledWarmsWholeDatasetThatFits(t *testing.T) {
	f := features.Features{
		ThroughputBytesPerSec: 50 * mib, ReadWaitShare: 0.5, ReadLatencyP90Sec: 0.01,
		DatasetBytes: 10 << 30, MedianFileBytes: 100 << 10,
	}
	a := Advise(&f, decision(v1.ClassShuffledEpochs, 0.9), Bounds{})
	require.Len(t, a.Recommendations, 2)
	p := a.Recommendations[0].Prefetch
	require.NotNil(t, p)
	B := 100 * mib * BandwidthHeadroom
	assert.Equal(t, v1.StrategyWholeDataset, p.Strategy)
	assert.Equal(t, int64(B), p.BandwidthBytesPerSec)
	assert.Equal(t, int64(128<<10), p.BlockBytes)
	assert.Equal(t, max(int(math.Ceil(B*0.01/(128<<10))), MinFileConcurrency), p.Concurrency)
	assert.Equal(t, int64(10<<30), p.BudgetBytes)
	assert.False(t, p.WarmBeforeStart, "the job is not held: the prefetch runs alongside it")
	assert.True(t, p.KeepInCache)
	ben := a.Recommendations[0].Evidence.Benefit
	assert.Equal(t, 0.5, ben.ExpectedHitRatio, "one epoch seen: it races the prefetcher, half its reads miss")
	assert.Equal(t, 0.25, ben.WallTimeReduction)
	assert.Equal(t, 0.25, ben.ReadWaitShareAfter)
	f.Epochs = 4
	ben = Advise(&f, decision(v1.ClassShuffledEpochs, 0.9), Bounds{}).Recommendations[0].Evidence.Benefit
	assert.Equal(t, 0.875, ben.ExpectedHitRatio, "of 4 epochs only the first misses, half of its reads")

	c := a.Recommendations[1].Cache
	require.NotNil(t, c)
	assert.Equal(t, 1, c.Workers, "10 GiB in one 16 GiB worker; 100 MiB/s under 500 MiB/s")
}

func TestIdleEvicts(t *testing.T) {
	f := features.Features{IdleSeconds: 3600, DatasetBytes: 5 << 30}
	a := Advise(&f, decision(v1.ClassIdle, 0.9), Bounds{MinWorkers: 1})
	require.Len(t, a.Recommendations, 1)
	r := a.Recommendations[0]
	assert.Equal(t, v1.ActionEvictDataset, r.Action)
	assert.Equal(t, 1, r.Evict.ScaleWorkersTo)
	assert.Equal(t, float64(5<<30), r.Evidence.Benefit.DatasetBytesFreed)
}

func TestBandwidthCapped(t *testing.T) {
	f := features.Features{ThroughputBytesPerSec: 10 << 30, ReadWaitShare: 0.5, ReadLatencyP90Sec: 0.001}
	a := Advise(&f, decision(v1.ClassSequentialScan, 0.9), Bounds{MaxBandwidth: 1 << 30})
	p := a.Recommendations[0].Prefetch
	assert.Equal(t, int64(1<<30), p.BandwidthBytesPerSec)
	assert.Equal(t, int64(16*mib), p.BlockBytes)
	assert.InDelta(t, 0.05, a.Recommendations[0].Evidence.Benefit.ExpectedHitRatio, 1e-9, "B / T_d = 1 GiB/s ÷ 20 GiB/s")
}

func TestRandomReadsPrefetchTheRangesRead(t *testing.T) {
	f := features.Features{
		ThroughputBytesPerSec: 200 << 10, ReadWaitShare: 0.9, ReadLatencyP90Sec: 0.08,
		DatasetBytes: 256 * mib, WorkingSetBytes: 2 * mib, MedianReadBytes: 4096,
	}
	a := Advise(&f, decision(v1.ClassRandomReads, 0.7), Bounds{})
	require.Len(t, a.Recommendations, 2)
	r := a.Recommendations[0]
	require.Equal(t, v1.ActionPrefetch, r.Action)
	p := r.Prefetch
	assert.Equal(t, v1.StrategyRanges, p.Strategy, "the ranges read, never the whole file")
	assert.Equal(t, int64(MinFileBlock), p.BlockBytes, "4 KiB reads: the smallest block")
	assert.Equal(t, MinFileConcurrency, p.Concurrency, "round trips, like small files")
	assert.Zero(t, p.BudgetBytes, "bounded by the ranges, capped by the policy")
	assert.False(t, p.WarmBeforeStart)
	assert.Contains(t, r.Evidence.Explanation, "256 MiB")
	assert.Equal(t, v1.ActionScaleCache, a.Recommendations[1].Action)
	assert.Equal(t, 2.0*mib, a.Recommendations[1].Cache.WorkingSetBytes)
}

func TestScanReadsAheadWholeWithinTheCache(t *testing.T) {
	f := features.Features{
		ThroughputBytesPerSec: 40 * mib, ReadWaitShare: 0.9, ReadLatencyP90Sec: 0.04,
		DatasetBytes: 128 * mib, MedianFileBytes: 32 * mib, Epochs: 1,
	}
	p := Advise(&f, decision(v1.ClassSequentialScan, 0.9), Bounds{CacheBudgetBytes: 1 << 30}).Recommendations[0].Prefetch
	require.NotNil(t, p)
	assert.Equal(t, v1.StrategySequential, p.Strategy)
	assert.Equal(t, int64(128*mib), p.BudgetBytes, "a scan that fits the cache is read ahead whole")
	p = Advise(&f, decision(v1.ClassSequentialScan, 0.9), Bounds{CacheBudgetBytes: 32 * mib}).Recommendations[0].Prefetch
	assert.Equal(t, int64(32*mib), p.BudgetBytes, "a cache's worth of a scan larger than the cache")
}
