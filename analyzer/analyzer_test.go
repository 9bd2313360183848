package analyzer

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/history"
	"github.com/eddy-autotune/eddy/analyzer/internal/simulate"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// The window streams below are synthetic: internal/simulate models each
// access pattern and aggregates it the way a collector does.

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

func run(t *testing.T, sim *simulate.Sim, ops []simulate.Op, after time.Duration) Assessment {
	t.Helper()
	tr := NewTracker(Options{})
	wins, end := sim.Run(ops)
	require.NotEmpty(t, wins)
	for _, w := range wins {
		tr.Observe(w)
	}
	require.Equal(t, 1, tr.Len())
	a, ok := tr.Assess(tr.Keys()[0], end.Add(after).UnixNano())
	require.True(t, ok)
	t.Logf("%s confidence %.2f: %s", a.Decision.Class, a.Decision.Confidence, a.Decision.Reason)
	return a
}

func recommendation(t *testing.T, a Assessment, action v1.Action) advice.Recommendation {
	t.Helper()
	for _, r := range a.Advice.Recommendations {
		if r.Action == action {
			return r
		}
	}
	require.Failf(t, "no recommendation", "want %s in %+v (withheld: %q)", action, a.Advice.Recommendations, a.Advice.Withheld)
	return advice.Recommendation{}
}

func TestSequentialScanOfAFolder(t *testing.T) {
	files := simulate.Files(200, 4*mib)
	sim := simulate.New(files)
	sim.Window = 1600 * time.Millisecond // 6400 reads of 2 ms: 8 whole windows
	a := run(t, sim, simulate.Scan(files, 128*kib, 1), 0)

	f := a.Features
	assert.Equal(t, v1.ClassSequentialScan, a.Decision.Class)
	assert.GreaterOrEqual(t, a.Decision.Confidence, 0.8)
	assert.InDelta(t, 1, f.SequentialRatio, 0.01)
	assert.InDelta(t, 1, f.WholeFileRatio, 0.01)
	assert.InDelta(t, 1, f.Coverage, 0.01)
	assert.Equal(t, 1.0, f.Epochs)
	assert.InDelta(t, 0, f.Reuse, 0.01)
	assert.InDelta(t, 4*mib, f.MedianFileBytes, 1)
	assert.InDelta(t, 128*kib, f.MedianReadBytes, 64*kib)
	assert.InEpsilon(t, 800*mib, f.BytesRead, 1e-3)
	assert.InDelta(t, 200, f.Files, 0.5)
	assert.InDelta(t, 0.5, f.ReadWaitShare, 0.01, "1 ms latency + 1 ms compute per read")
	assert.Equal(t, 0.0, f.WorkingSetBytes, "read-once data has no working set")

	p := recommendation(t, a, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategySequential, p.Strategy)
	assert.False(t, p.KeepInCache)
	// T = 128 KiB per 2 ms = 62.5 MiB/s; w = 0.5 → T_d = 125 MiB/s; B = 1.25 T_d.
	B := 128 * kib / 0.002 / 0.5 * advice.BandwidthHeadroom
	assert.InDelta(t, B, float64(p.BandwidthBytesPerSec), B*0.02)
	assert.Equal(t, int64(8*mib), p.BlockBytes, "B·50ms < 8 MiB")
	assert.Equal(t, advice.Concurrency(float64(p.BandwidthBytesPerSec), f.ReadLatencyP90Sec, p.BlockBytes, 32), p.Concurrency)
	assert.Equal(t, int64(f.DatasetBytes), p.BudgetBytes, "the whole scan: it fits the default cache budget")
}

func TestScanRepeatedInFixedOrder(t *testing.T) {
	files := simulate.Files(100, 256*kib)
	sim := simulate.New(files)
	sim.Window = time.Second
	a := run(t, sim, simulate.Scan(files, 128*kib, 3), 0)

	assert.Equal(t, v1.ClassSequentialScan, a.Decision.Class)
	require.True(t, a.Features.OrderKnown)
	assert.InDelta(t, 1, a.Features.OrderCorrelation, 0.01)
	assert.Equal(t, 3.0, a.Features.Epochs)
	assert.InDelta(t, 2.0/3, a.Features.Reuse, 0.02)
	assert.True(t, recommendation(t, a, v1.ActionPrefetch).Prefetch.KeepInCache, "a repeated scan that fits is kept")
}

func TestShuffledEpochs(t *testing.T) {
	files := simulate.Files(500, 256*kib)
	sim := simulate.New(files)
	sim.Window = time.Second
	a := run(t, sim, simulate.Shuffled(files, 128*kib, 3, rand.New(rand.NewPCG(1, 2))), 0)

	f := a.Features
	assert.Equal(t, v1.ClassShuffledEpochs, a.Decision.Class)
	assert.GreaterOrEqual(t, a.Decision.Confidence, 0.7)
	assert.Equal(t, 3.0, f.Epochs)
	require.True(t, f.OrderKnown)
	assert.InDelta(t, 0, f.OrderCorrelation, 0.2)
	assert.InDelta(t, 1, f.Coverage, 0.02)
	assert.InDelta(t, 2.0/3, f.Reuse, 0.02)
	// Each file comes back after about one dataset (125 MiB) of other data.
	assert.InDelta(t, 125*mib, f.WorkingSetBytes, 60*mib)

	p := recommendation(t, a, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategyWholeDataset, p.Strategy)
	assert.False(t, p.WarmBeforeStart, "the prefetch runs alongside the job")
	assert.True(t, p.KeepInCache)
	assert.Equal(t, int64(256*kib), p.BlockBytes, "files fetched whole")
	assert.InDelta(t, f.DatasetBytes, float64(p.BudgetBytes), 1)
	assert.InEpsilon(t, 125*mib, f.DatasetBytes, 0.1, "estimated from 256 sampled files")
	c := recommendation(t, a, v1.ActionScaleCache).Cache
	w, _, _ := advice.Workers(f.DatasetBytes, advice.DemandedThroughput(&f), advice.DefaultBounds)
	assert.Equal(t, w, c.Workers)

	// Over the cache, a fixed part that fits is kept resident, and the
	// expected hit is that part's share of every epoch.
	tr := NewTracker(Options{Bounds: advice.Bounds{CacheBudgetBytes: 64 * mib}})
	wins, end := sim.Run(simulate.Shuffled(files, 128*kib, 3, rand.New(rand.NewPCG(1, 2))))
	for _, w := range wins {
		tr.Observe(w)
	}
	small, _ := tr.Assess(tr.Keys()[0], end.UnixNano())
	for _, r := range small.Advice.Recommendations {
		assert.NotEqual(t, v1.ActionInjectSDK, r.Action)
	}
	rec := recommendation(t, small, v1.ActionPrefetch)
	assert.Equal(t, v1.StrategyResident, rec.Prefetch.Strategy)
	assert.InDelta(t, advice.ResidentShare*64*mib, float64(rec.Prefetch.BudgetBytes), 1, "a share of the cache, the rest for the job's other reads")
	assert.InDelta(t, advice.ResidentShare*64*mib/small.Features.DatasetBytes*(1-1/6.0), rec.Evidence.Benefit.ExpectedHitRatio, 0.01)
	assert.Equal(t, int64(256*kib), rec.Prefetch.BlockBytes, "files fetched whole")
}

func TestRandomReads(t *testing.T) {
	files := simulate.Files(4, 1*gib)
	sim := simulate.New(files)
	sim.Compute = 0
	a := run(t, sim, simulate.Random(files, 50000, 4*kib, rand.New(rand.NewPCG(3, 4))), 0)

	f := a.Features
	assert.Equal(t, v1.ClassRandomReads, a.Decision.Class)
	assert.GreaterOrEqual(t, a.Decision.Confidence, 0.7)
	assert.Less(t, f.SequentialRatio, 0.01)
	assert.InDelta(t, 4*kib, f.MedianReadBytes, 2*kib)
	assert.Equal(t, 0.0, f.WholeFileRatio)
	assert.InDelta(t, 1, f.ReadWaitShare, 0.01)
	assert.Equal(t, v1.StrategyRanges, recommendation(t, a, v1.ActionPrefetch).Prefetch.Strategy,
		"no whole-file prefetch for random reads: the ranges read")
	c := recommendation(t, a, v1.ActionScaleCache).Cache
	assert.Equal(t, f.WorkingSetBytes, c.WorkingSetBytes)
	w, fc, ft := advice.Workers(f.WorkingSetBytes, advice.DemandedThroughput(&f), advice.DefaultBounds)
	assert.Equal(t, []int{w, fc, ft}, []int{c.Workers, c.WorkersForCapacity, c.WorkersForThroughput})
}

func TestHotSet(t *testing.T) {
	files := simulate.Files(1000, 64*kib)
	sim := simulate.New(files)
	a := run(t, sim, simulate.Hot(files, 30000, 50, 0.9, 64*kib, rand.New(rand.NewPCG(5, 6))), 0)

	f := a.Features
	assert.Equal(t, v1.ClassHotSet, a.Decision.Class)
	assert.GreaterOrEqual(t, a.Decision.Confidence, 0.7)
	t.Logf("mrc %v", f.MissRatioCurve)
	assert.Greater(t, f.HotSetShare, 0.85)
	assert.Greater(t, f.Reuse, 0.9)
	// 50 hot files of 64 KiB: the knee is near 3.1 MiB, far below the
	// 62.5 MiB dataset.
	assert.Less(t, f.WorkingSetBytes, 40.0*mib)
	assert.Greater(t, f.WorkingSetBytes, 2.0*mib)
	assert.Less(t, f.MissRatioAt(f.WorkingSetBytes), f.MissRatioAt(1*mib))

	// Everything read fits the default cache budget: the hot files first,
	// then the rest, and a cache that holds it all.
	p := recommendation(t, a, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategyHotSet, p.Strategy)
	assert.Equal(t, int64(f.DatasetBytes), p.BudgetBytes)
	assert.Equal(t, f.DatasetBytes, recommendation(t, a, v1.ActionScaleCache).Cache.WorkingSetBytes)

	// A cache budget below what was read: only the working set, so cold
	// files never push hot ones out.
	b := advice.DefaultBounds
	b.CacheBudgetBytes = 32 * mib
	small := advice.Advise(&f, &a.Decision, b)
	for _, r := range small.Recommendations {
		switch r.Action {
		case v1.ActionPrefetch:
			assert.Equal(t, int64(f.WorkingSetBytes), r.Prefetch.BudgetBytes)
		case v1.ActionScaleCache:
			assert.Equal(t, f.WorkingSetBytes, r.Cache.WorkingSetBytes)
		}
	}
}

func TestWriteMostly(t *testing.T) {
	files := simulate.Files(10, 64*mib)
	sim := simulate.New(files)
	sim.Window = 100 * time.Millisecond
	a := run(t, sim, simulate.Writes(files, 1*mib), 0)
	assert.Equal(t, v1.ClassWriteMostly, a.Decision.Class)
	assert.GreaterOrEqual(t, a.Decision.Confidence, 0.7)
	assert.Empty(t, a.Advice.Recommendations)
}

// TestIdleAfterReadsStop: reads stop; the workload is Idle 30 minutes later
// only if collectors watched it through those minutes (windows that name
// its pod as observed and carry no record of it). Minutes nobody watched —
// it rested, or had no pod on an observing node — are unknown, never idle.
func TestIdleAfterReadsStop(t *testing.T) {
	files := simulate.Files(50, 4*mib)
	sim := simulate.New(files)
	ops := simulate.Scan(files, 1*mib, 1)

	busy := run(t, sim, ops, time.Minute)
	assert.NotEqual(t, v1.ClassIdle, busy.Decision.Class)

	unwatched := run(t, sim, ops, 30*time.Minute)
	assert.NotEqual(t, v1.ClassIdle, unwatched.Decision.Class, "30 minutes nobody watched made the workload idle")
	assert.Less(t, unwatched.Features.IdleSeconds, 60.0)
	for _, r := range unwatched.Advice.Recommendations {
		assert.NotEqual(t, v1.ActionEvictDataset, r.Action, "eviction advised after a time nobody watched")
	}

	tr := NewTracker(Options{})
	wins, end := sim.Run(ops)
	for _, w := range wins {
		tr.Observe(w)
	}
	for m := 1; m <= 30; m++ {
		e := end.Add(time.Duration(m) * time.Minute)
		tr.Observe(&accessv1.AccessWindow{StartUnixNano: e.Add(-time.Minute).UnixNano(), EndUnixNano: e.UnixNano(),
			Observed: []*accessv1.ObservedPod{{Workload: sim.Workload, Pod: sim.Pod, PodUid: "uid-" + sim.Pod}}})
	}
	idle, ok := tr.Assess(tr.Keys()[0], end.Add(30*time.Minute).UnixNano())
	require.True(t, ok)
	assert.Equal(t, v1.ClassIdle, idle.Decision.Class)
	assert.GreaterOrEqual(t, idle.Decision.Confidence, 0.5)
	ev := recommendation(t, idle, v1.ActionEvictDataset)
	assert.Equal(t, advice.DefaultBounds.MinWorkers, ev.Evict.ScaleWorkersTo)
	assert.InDelta(t, 200*mib, ev.Evidence.Benefit.DatasetBytesFreed, 1)
}

func TestLittleEvidenceRecommendsNothing(t *testing.T) {
	files := simulate.Files(2, 64*kib)
	sim := simulate.New(files)
	a := run(t, sim, simulate.Scan(files, 64*kib, 1), 0)
	assert.Less(t, a.Decision.Confidence, 0.5)
	assert.Empty(t, a.Advice.Recommendations)
	assert.Contains(t, a.Advice.Withheld, "below the minimum")
}

func TestCheckpointRestoresEverything(t *testing.T) {
	files := simulate.Files(300, 256*kib)
	sim := simulate.New(files)
	sim.Window = time.Second
	wins, end := sim.Run(simulate.Shuffled(files, 128*kib, 4, rand.New(rand.NewPCG(7, 8))))
	half := len(wins) / 2

	orig := NewTracker(Options{History: history.Config{MaxFiles: 128}})
	for _, w := range wins[:half] {
		orig.Observe(w)
	}
	k := orig.Keys()[0]
	data, err := orig.Checkpoint(k)
	require.NoError(t, err)
	restored := NewTracker(Options{})
	require.NoError(t, restored.Restore(k, data))

	now := end.UnixNano()
	a1, _ := orig.Assess(k, now)
	a2, _ := restored.Assess(k, now)
	assert.Equal(t, a1, a2, "restored history assesses the same")

	for _, w := range wins[half:] {
		orig.Observe(w)
		restored.Observe(w)
	}
	a1, _ = orig.Assess(k, now)
	a2, _ = restored.Assess(k, now)
	assert.Equal(t, a1, a2, "and evolves the same")
	assert.Equal(t, v1.ClassShuffledEpochs, a2.Decision.Class)

	again, err := restored.Checkpoint(k)
	require.NoError(t, err)
	c1, _ := orig.Checkpoint(k)
	assert.JSONEq(t, string(c1), string(again))

	_, err = history.Restore([]byte(`{"files":[{"k":2},{"k":1}]}`))
	assert.ErrorContains(t, err, "not sorted")
}

func TestDecayHalvesOldEvidence(t *testing.T) {
	files := simulate.Files(10, 1*mib)
	sim := simulate.New(files)
	a := run(t, sim, simulate.Scan(files, 1*mib, 1), 6*time.Hour)
	assert.InDelta(t, 5*mib, a.Features.BytesRead, 0.05*mib, "default half-life is 6h")
}

func TestFileSamplingBoundsMemoryAndEstimates(t *testing.T) {
	files := simulate.Files(5000, 64*kib)
	sim := simulate.New(files)
	tr := NewTracker(Options{History: history.Config{MaxFiles: 256}})
	wins, end := sim.Run(simulate.Scan(files, 64*kib, 1))
	for _, w := range wins {
		tr.Observe(w)
	}
	k := tr.Keys()[0]
	h := tr.History(k)
	assert.LessOrEqual(t, len(h.Files), 256)
	assert.LessOrEqual(t, len(h.Reuse.Items), h.Config.MaxSampledChunks)
	a, _ := tr.Assess(k, end.UnixNano())
	assert.InEpsilon(t, 5000, a.Features.Files, 0.2)
	assert.InEpsilon(t, 5000*64*kib, a.Features.DatasetBytes, 0.2)
	assert.Equal(t, v1.ClassSequentialScan, a.Decision.Class)
}

func TestAssessmentIsJSON(t *testing.T) {
	files := simulate.Files(100, 1*mib)
	a := run(t, simulate.New(files), simulate.Scan(files, 1*mib, 1), 0)
	data, err := json.Marshal(a)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"class":"SequentialScan"`)
	assert.Contains(t, string(data), `"feature":"sequentialRatio"`)
}

func TestObserveSplitsByWorkloadAndDataset(t *testing.T) {
	tr := NewTracker(Options{})
	rec := func(w, d string) *accessv1.FileAccess {
		return &accessv1.FileAccess{Workload: &accessv1.WorkloadRef{Namespace: "a", Kind: "Job", Name: w}, Dataset: &accessv1.DatasetRef{Namespace: "a", Name: d}, Path: "x", ReadOps: 1, ReadBytes: 10, FileSize: 10}
	}
	tr.Observe(&accessv1.AccessWindow{StartUnixNano: 1e9, EndUnixNano: 2e9, Files: []*accessv1.FileAccess{rec("j1", "d1"), rec("j1", "d2"), rec("j2", "d1"), rec("j1", "d1"), nil}})
	assert.Equal(t, 3, tr.Len())
	a, ok := tr.Assess(Key{WorkloadNamespace: "a", WorkloadKind: "Job", WorkloadName: "j1", DatasetNamespace: "a", DatasetName: "d1"}, 2e9)
	require.True(t, ok)
	assert.Equal(t, 20.0, a.Features.BytesRead)
}

func TestEpochsWithinOneWindow(t *testing.T) {
	// A small dataset read from the page cache: five epochs in one 10 s
	// window. Only each file's first and latest pass are dated.
	files := simulate.Files(200, 64*kib)
	sim := simulate.New(files)
	sim.Latency, sim.Compute = 50*time.Microsecond, 50*time.Microsecond

	shuffled := run(t, sim, simulate.Shuffled(files, 64*kib, 5, rand.New(rand.NewPCG(9, 9))), 0)
	assert.Equal(t, uint64(1), shuffled.Features.Windows)
	assert.Equal(t, v1.ClassShuffledEpochs, shuffled.Decision.Class)
	assert.Equal(t, 200, shuffled.Features.OrderFiles)
	assert.InDelta(t, 0, shuffled.Features.OrderCorrelation, 0.25)

	fixed := run(t, sim, simulate.Scan(files, 64*kib, 5), 0)
	assert.Equal(t, v1.ClassSequentialScan, fixed.Decision.Class)
	assert.InDelta(t, 1, fixed.Features.OrderCorrelation, 1e-9)
}
