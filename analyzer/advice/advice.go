package advice

import (
	"fmt"
	"math"

	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Constants of the formulas (see the package doc).
const (
	MinComputeShare   = 0.1
	BandwidthHeadroom = 1.25
	BlockSeconds      = 0.05
	MinScanBlock      = 8 << 20
	MaxScanBlock      = 16 << 20
	MinFileBlock      = 64 << 10
	// MinFileConcurrency is the fewest files a whole-file prefetch reads
	// at once. A small file's fetch from a remote store costs round trips
	// (open, stat, GET through the FUSE mount) more than bandwidth, and a
	// job that waits on them shows a low throughput, so bandwidth·latency/
	// block alone sizes it too small: measured by test/bench, 4 readers left
	// eddy behind a 16-reader warm-up script on the same link.
	MinFileConcurrency = 16
	// ResidentShare is the part of the cache a Resident prefetch keeps:
	// the rest holds the job's other reads while they are in use (a cache
	// cannot drop an open file). Measured on the host with the benchmark's
	// 32 MiB rclone cache and 64 MiB shuffled dataset: 28 MiB kept took the
	// job from 37.3 s to 27.4 s.
	ResidentShare = 0.85
)

// Bounds are the limits and capacities advice works within (normally from
// the namespace's AutotunePolicy and the cache runtime). Zero fields take
// the defaults of DefaultBounds.
type Bounds struct {
	MinConfidence float64 `json:"minConfidence"`
	// CacheBudgetBytes is what the dataset's cache holds (the policy's
	// cacheCapacity when it states one).
	CacheBudgetBytes       float64 `json:"cacheBudgetBytes"`
	MaxBandwidth           float64 `json:"maxBandwidthBytesPerSec"`
	MaxConcurrency         int     `json:"maxConcurrency"`
	PerWorkerCapacityBytes float64 `json:"perWorkerCapacityBytes"`
	PerWorkerThroughput    float64 `json:"perWorkerThroughputBytesPerSec"`
	MinWorkers             int     `json:"minWorkers"`
	MaxWorkers             int     `json:"maxWorkers"`
}

// DefaultBounds are used for zero fields of Bounds.
var DefaultBounds = Bounds{
	MinConfidence:          0.5,
	CacheBudgetBytes:       64 << 30,
	MaxBandwidth:           2 << 30,
	MaxConcurrency:         32,
	PerWorkerCapacityBytes: 16 << 30,
	PerWorkerThroughput:    500 << 20,
	MinWorkers:             1,
	MaxWorkers:             16,
}

func (b Bounds) withDefaults() Bounds {
	d := DefaultBounds
	if b.MinConfidence <= 0 {
		b.MinConfidence = d.MinConfidence
	}
	if b.CacheBudgetBytes <= 0 {
		b.CacheBudgetBytes = d.CacheBudgetBytes
	}
	if b.MaxBandwidth <= 0 {
		b.MaxBandwidth = d.MaxBandwidth
	}
	if b.MaxConcurrency <= 0 {
		b.MaxConcurrency = d.MaxConcurrency
	}
	if b.PerWorkerCapacityBytes <= 0 {
		b.PerWorkerCapacityBytes = d.PerWorkerCapacityBytes
	}
	if b.PerWorkerThroughput <= 0 {
		b.PerWorkerThroughput = d.PerWorkerThroughput
	}
	if b.MinWorkers <= 0 {
		b.MinWorkers = d.MinWorkers
	}
	if b.MaxWorkers <= 0 {
		b.MaxWorkers = d.MaxWorkers
	}
	b.MaxWorkers = max(b.MaxWorkers, b.MinWorkers)
	return b
}

// PrefetchParams parameterize a prefetch sidecar (Action Prefetch).
type PrefetchParams struct {
	Strategy             v1.PrefetchStrategy `json:"strategy"`
	BlockBytes           int64               `json:"blockBytes"`
	Concurrency          int                 `json:"concurrency"`
	BandwidthBytesPerSec int64               `json:"bandwidthBytesPerSec"`
	BudgetBytes          int64               `json:"budgetBytes"`
	// WarmBeforeStart holds the job until the data is warm. The advice
	// does not set it: on real pods the hold costs more than it saves (a
	// startup probe, and the job's container started only after it: the
	// benchmark's ShuffledEpochs job, counting warm-up, took 8.4 s held and
	// 4.9 s beside the prefetcher; Fluid's async prefetcher 6.1 s). Beside
	// the prefetcher the job's first epoch shares the link with it, so
	// where there is no start-up to save (the host demo) holding is faster
	// (about 3.3 s against 4.9 s there). A person may set it on a
	// Recommendation.
	WarmBeforeStart bool `json:"warmBeforeStart"`
	// KeepInCache is false for read-once data: drop it behind the reader.
	KeepInCache bool `json:"keepInCache"`
}

// CacheParams size the cache (Action ScaleCache).
type CacheParams struct {
	Workers                int     `json:"workers"`
	WorkingSetBytes        float64 `json:"workingSetBytes"`
	DemandedBytesPerSec    float64 `json:"demandedBytesPerSec"`
	WorkersForCapacity     int     `json:"workersForCapacity"`
	WorkersForThroughput   int     `json:"workersForThroughput"`
	ExpectedCacheMissRatio float64 `json:"expectedCacheMissRatio"`
}

// SDKParams say which SDK to inject (Action InjectSDK).
type SDKParams struct {
	// Reason the exact order is needed.
	Reason string `json:"reason"`
}

// EvictParams describe an eviction (Action EvictDataset).
type EvictParams struct {
	IdleSeconds    float64 `json:"idleSeconds"`
	ScaleWorkersTo int     `json:"scaleWorkersTo"`
}

// Benefit is the projected effect of a recommendation.
type Benefit struct {
	ReadWaitShareBefore float64 `json:"readWaitShareBefore"`
	ReadWaitShareAfter  float64 `json:"readWaitShareAfter"`
	// WallTimeReduction is the projected share of wall time saved.
	WallTimeReduction float64 `json:"wallTimeReduction"`
	ExpectedHitRatio  float64 `json:"expectedHitRatio"`
	// DatasetBytesFreed is set for evictions.
	DatasetBytesFreed float64 `json:"datasetBytesFreed,omitempty"`
}

// Evidence is why a recommendation was made.
type Evidence struct {
	Class      v1.AccessClass `json:"class"`
	Confidence float64        `json:"confidence"`
	Reason     string         `json:"reason"`
	// Explanation says in words how the parameters follow from the features.
	Explanation string `json:"explanation"`
	// Inputs are the feature values the formulas used, by Features JSON name.
	Inputs  map[string]float64 `json:"inputs"`
	Benefit Benefit            `json:"expectedBenefit"`
}

// Recommendation is one action with its parameters (exactly one of the
// parameter fields is set, matching Action) and evidence.
type Recommendation struct {
	Action   v1.Action       `json:"action"`
	Prefetch *PrefetchParams `json:"prefetch,omitempty"`
	Cache    *CacheParams    `json:"cache,omitempty"`
	SDK      *SDKParams      `json:"sdk,omitempty"`
	Evict    *EvictParams    `json:"evict,omitempty"`
	Evidence Evidence        `json:"evidence"`
}

// Advice is the outcome of Advise: recommendations, or why there are none.
type Advice struct {
	Recommendations []Recommendation `json:"recommendations"`
	// Withheld explains an empty Recommendations.
	Withheld string `json:"withheld,omitempty"`
}

// DemandedThroughput is T / max(1 − w, MinComputeShare).
func DemandedThroughput(f *features.Features) float64 {
	return f.ThroughputBytesPerSec / math.Max(1-f.ReadWaitShare, MinComputeShare)
}

// ScanBlock is 2^⌈log2(bandwidth·BlockSeconds)⌉ in [MinScanBlock, MaxScanBlock].
func ScanBlock(bandwidth float64) int64 {
	return clampPow2(bandwidth*BlockSeconds, MinScanBlock, MaxScanBlock)
}

// FileBlock is 2^⌈log2 medianFile⌉ in [MinFileBlock, MaxScanBlock].
func FileBlock(medianFileBytes float64) int64 {
	return clampPow2(medianFileBytes, MinFileBlock, MaxScanBlock)
}

func clampPow2(x float64, lo, hi int64) int64 {
	if x <= float64(lo) {
		return lo
	}
	p := int64(1) << int(math.Ceil(math.Log2(x)))
	return min(max(p, lo), hi)
}

// FileConcurrency is Concurrency for whole-file prefetch, at least
// MinFileConcurrency (within maxConcurrency).
func FileConcurrency(bandwidth, latencySec float64, block int64, maxConcurrency int) int {
	return min(max(Concurrency(bandwidth, latencySec, block, maxConcurrency), MinFileConcurrency), maxConcurrency)
}

// Concurrency is ⌈bandwidth·latency/block⌉ in [1, maxConcurrency].
func Concurrency(bandwidth, latencySec float64, block int64, maxConcurrency int) int {
	c := int(math.Ceil(bandwidth * latencySec / float64(block)))
	return min(max(c, 1), maxConcurrency)
}

// Workers is max(⌈workingSet/capacity⌉, ⌈demanded/perWorker⌉) in
// [MinWorkers, MaxWorkers], also returning the two terms.
func Workers(workingSet, demanded float64, b Bounds) (workers, forCapacity, forThroughput int) {
	b = b.withDefaults()
	forCapacity = int(math.Ceil(workingSet / b.PerWorkerCapacityBytes))
	forThroughput = int(math.Ceil(demanded / b.PerWorkerThroughput))
	workers = min(max(forCapacity, forThroughput, b.MinWorkers), b.MaxWorkers)
	return workers, forCapacity, forThroughput
}

// Advise returns the recommendations for a classified workload.
func Advise(f *features.Features, d *classify.Decision, bounds Bounds) Advice {
	b := bounds.withDefaults()
	if d.Confidence < b.MinConfidence {
		return Advice{Withheld: fmt.Sprintf("confidence %.2f in %s is below the minimum %.2f: more evidence needed", d.Confidence, d.Class, b.MinConfidence)}
	}
	a := advisor{f: f, d: d, b: b}
	a.demanded = DemandedThroughput(f)
	a.bandwidth = math.Min(b.MaxBandwidth, a.demanded*BandwidthHeadroom)
	switch d.Class {
	case v1.ClassSequentialScan:
		a.scan()
	case v1.ClassShuffledEpochs:
		a.shuffled()
	case v1.ClassHotSet:
		a.hotSet()
	case v1.ClassRandomReads:
		a.ranges()
	case v1.ClassIdle:
		a.evict()
	default:
		return Advice{Withheld: fmt.Sprintf("nothing to do for %s", d.Class)}
	}
	return Advice{Recommendations: a.recs}
}

type advisor struct {
	f         *features.Features
	d         *classify.Decision
	b         Bounds
	demanded  float64
	bandwidth float64
	recs      []Recommendation
}

func (a *advisor) evidence(hit float64, explanation string) Evidence {
	w := a.f.ReadWaitShare
	hit = math.Min(math.Max(hit, 0), 1)
	f := a.f
	return Evidence{
		Class:       a.d.Class,
		Confidence:  a.d.Confidence,
		Reason:      a.d.Reason,
		Explanation: explanation,
		Inputs: map[string]float64{
			"throughputBytesPerSec": f.ThroughputBytesPerSec,
			"readWaitShare":         f.ReadWaitShare,
			"readLatencyP90Seconds": f.ReadLatencyP90Sec,
			"datasetBytes":          f.DatasetBytes,
			"workingSetBytes":       f.WorkingSetBytes,
			"medianFileBytes":       f.MedianFileBytes,
			"idleSeconds":           f.IdleSeconds,
		},
		Benefit: Benefit{
			ReadWaitShareBefore: w,
			ReadWaitShareAfter:  w * (1 - hit),
			WallTimeReduction:   w * hit,
			ExpectedHitRatio:    hit,
		},
	}
}

// besideJobHit is the hit ratio expected of a whole-dataset prefetch that
// runs beside a job reading every file once per epoch in a new order: the
// first epoch races the prefetcher and is taken to miss half its reads, the
// later ones nothing (measured on the real node: the first run's 7.0 s of
// reading became 1.9–2.9 s, not the 1.1 s of a job held until warm).
func besideJobHit(epochs float64) float64 {
	return 1 - 1/(2*math.Max(epochs, 1))
}

func (a *advisor) streamingHit() float64 {
	if a.demanded <= 0 {
		return 1
	}
	return math.Min(1, a.bandwidth/a.demanded)
}

func (a *advisor) scan() {
	block := ScanBlock(a.bandwidth)
	conc := Concurrency(a.bandwidth, a.f.ReadLatencyP90Sec, block, a.b.MaxConcurrency)
	D := a.f.DatasetBytes
	keep := a.f.Reuse >= classify.MinHotSetReuse && D <= a.b.CacheBudgetBytes
	// The budget is the prefetcher's total: the whole scan when it fits the
	// cache, else a cache's worth (read further ahead, the first blocks
	// would be evicted before the job reaches them). A window of
	// 2·concurrency·blocks, the earlier budget, ended the read-ahead after
	// its first 16 MiB of the benchmark's 128 MiB scan.
	budget := math.Min(D, a.b.CacheBudgetBytes)
	p := &PrefetchParams{
		Strategy:             v1.StrategySequential,
		BlockBytes:           block,
		Concurrency:          conc,
		BandwidthBytesPerSec: int64(a.bandwidth),
		BudgetBytes:          int64(budget),
		KeepInCache:          keep,
	}
	a.recs = append(a.recs, Recommendation{Action: v1.ActionPrefetch, Prefetch: p, Evidence: a.evidence(a.streamingHit(), fmt.Sprintf(
		"read ahead across files in first-access order: %s blocks, %d in flight (bandwidth %s/s × p90 latency %s ÷ block), %s of the %s scan (%s); %s",
		Bytes(float64(block)), conc, Bytes(a.bandwidth), Seconds(a.f.ReadLatencyP90Sec), Bytes(budget), Bytes(D),
		map[bool]string{true: "all of it: it fits the cache", false: "a cache's worth: it exceeds the cache"}[D <= a.b.CacheBudgetBytes],
		map[bool]string{true: "kept in cache: the scan repeats and fits", false: "not kept in cache: read once"}[keep]))})
}

func (a *advisor) shuffled() {
	D := a.f.DatasetBytes
	block := FileBlock(a.f.MedianFileBytes)
	conc := FileConcurrency(a.bandwidth, a.f.ReadLatencyP90Sec, block, a.b.MaxConcurrency)
	if D <= a.b.CacheBudgetBytes {
		p := &PrefetchParams{
			Strategy:             v1.StrategyWholeDataset,
			BlockBytes:           block,
			Concurrency:          conc,
			BandwidthBytesPerSec: int64(a.bandwidth),
			BudgetBytes:          int64(D),
			KeepInCache:          true,
		}
		a.recs = append(a.recs, Recommendation{Action: v1.ActionPrefetch, Prefetch: p, Evidence: a.evidence(besideJobHit(a.f.Epochs), fmt.Sprintf(
			"every epoch reads the whole %s dataset in a new order and it fits the %s cache budget: warm it whole alongside the job, %d files in flight, and never evict it within the job",
			Bytes(D), Bytes(a.b.CacheBudgetBytes), conc))})
	} else {
		// Over the cache, a least-recently-used cache keeps the newest
		// files, and in a new order each epoch a file comes back only after
		// about a dataset of others: almost every read misses, and a
		// whole-dataset prefetch is evicted before the job reads it. A
		// fixed part that fits, kept resident, is hit in every epoch.
		keep := ResidentShare * a.b.CacheBudgetBytes
		p := &PrefetchParams{
			Strategy:             v1.StrategyResident,
			BlockBytes:           block,
			Concurrency:          conc,
			BandwidthBytesPerSec: int64(a.bandwidth),
			BudgetBytes:          int64(keep),
			KeepInCache:          true,
		}
		a.recs = append(a.recs, Recommendation{Action: v1.ActionPrefetch, Prefetch: p, Evidence: a.evidence(keep/D*besideJobHit(a.f.Epochs), fmt.Sprintf(
			"every epoch reads the whole %s dataset in a new order and it exceeds the %s cache: keep a fixed %s of it resident (%.0f%% of the cache, the rest for the job's other reads), so each epoch finds that part cached where the cache alone keeps little it will read again; %d files in flight",
			Bytes(D), Bytes(a.b.CacheBudgetBytes), Bytes(keep), ResidentShare*100, conc))})
	}
	a.cache(D, "cache sized to hold the dataset: every epoch reads all of it")
}

func (a *advisor) hotSet() {
	D := a.f.DatasetBytes
	W := math.Min(a.f.WorkingSetBytes, a.b.CacheBudgetBytes)
	block := FileBlock(a.f.MedianFileBytes)
	conc := FileConcurrency(a.bandwidth, a.f.ReadLatencyP90Sec, block, a.b.MaxConcurrency)
	budget, cached := W, a.f.WorkingSetBytes
	why := fmt.Sprintf("%s of reads go to the densest 10%% of the data: prefetch the %s working set (knee of the miss-ratio curve) at start",
		Percent(a.f.HotSetShare), Bytes(W))
	if D > W && D <= a.b.CacheBudgetBytes {
		// The files read once (or rarely) stall the job too, and there is
		// room for them: the prefetcher reads the hot files first, then
		// the rest, and the cache holds it all.
		budget, cached = D, D
		why = fmt.Sprintf("%s of reads go to the densest 10%% of the data, and all %s read fits the %s cache budget: prefetch the hot files first, then the rest, beside the job",
			Percent(a.f.HotSetShare), Bytes(D), Bytes(a.b.CacheBudgetBytes))
	}
	p := &PrefetchParams{
		Strategy:             v1.StrategyHotSet,
		BlockBytes:           block,
		Concurrency:          conc,
		BandwidthBytesPerSec: int64(a.bandwidth),
		BudgetBytes:          int64(budget),
		KeepInCache:          true,
	}
	a.recs = append(a.recs, Recommendation{Action: v1.ActionPrefetch, Prefetch: p, Evidence: a.evidence(1-a.f.MissRatioAt(budget), why)})
	if cached == D {
		a.cache(D, "cache sized to hold what the job reads: the hot files and the rest prefetched after them")
		return
	}
	a.cache(a.f.WorkingSetBytes, "cache sized at the knee of the miss-ratio curve")
}

// ranges prefetches what the latest run read of files it read at random
// offsets — the ranges, not the files: a job over a fixed index (a seeded
// sampler, a dataset's record offsets) reads the same records each run, so
// reading those ranges in parallel beside the job, as many at a time as
// small files, turns its round trips into hits while fetching about what
// the run fetched. A run that reads elsewhere gets no help and costs the
// ranges' bytes; the operator judges the change by the runs after it.
func (a *advisor) ranges() {
	block := FileBlock(a.f.MedianReadBytes)
	conc := FileConcurrency(a.bandwidth, a.f.ReadLatencyP90Sec, block, a.b.MaxConcurrency)
	p := &PrefetchParams{
		Strategy:             v1.StrategyRanges,
		BlockBytes:           block,
		Concurrency:          conc,
		BandwidthBytesPerSec: int64(a.bandwidth),
		KeepInCache:          true,
	}
	a.recs = append(a.recs, Recommendation{Action: v1.ActionPrefetch, Prefetch: p, Evidence: a.evidence(besideJobHit(1), fmt.Sprintf(
		"small reads at random offsets: read the byte ranges the latest run read (from the manifest), %d at a time beside the job, and nothing else of the files (a whole-file prefetch would fetch %s)",
		conc, Bytes(a.f.DatasetBytes)))})
	a.cache(a.f.WorkingSetBytes, "cache sized by the working set")
}

func (a *advisor) cache(workingSet float64, why string) {
	w, fc, ft := Workers(workingSet, a.demanded, a.b)
	capacity := float64(w) * a.b.PerWorkerCapacityBytes
	miss := a.f.MissRatioAt(capacity)
	if a.d.Class == v1.ClassShuffledEpochs && workingSet <= capacity {
		miss = 0
	}
	c := &CacheParams{
		Workers:                w,
		WorkingSetBytes:        workingSet,
		DemandedBytesPerSec:    a.demanded,
		WorkersForCapacity:     fc,
		WorkersForThroughput:   ft,
		ExpectedCacheMissRatio: miss,
	}
	a.recs = append(a.recs, Recommendation{Action: v1.ActionScaleCache, Cache: c, Evidence: a.evidence(1-miss, fmt.Sprintf(
		"%s: %d workers = max(⌈%s ÷ %s per worker⌉ = %d, ⌈%s/s demanded ÷ %s/s per worker⌉ = %d) within [%d, %d]",
		why, w, Bytes(workingSet), Bytes(a.b.PerWorkerCapacityBytes), fc, Bytes(a.demanded), Bytes(a.b.PerWorkerThroughput), ft, a.b.MinWorkers, a.b.MaxWorkers))})
}

func (a *advisor) evict() {
	ev := a.evidence(0, fmt.Sprintf("no reads for %s: evict the dataset from the cache and scale cache workers to %d", Seconds(a.f.IdleSeconds), a.b.MinWorkers))
	ev.Benefit.DatasetBytesFreed = a.f.DatasetBytes
	a.recs = append(a.recs, Recommendation{Action: v1.ActionEvictDataset, Evict: &EvictParams{IdleSeconds: a.f.IdleSeconds, ScaleWorkersTo: a.b.MinWorkers}, Evidence: ev})
}

// Bytes renders a byte amount for people (binary units).
func Bytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 || v >= 100 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// Seconds renders a duration in seconds for people.
func Seconds(s float64) string {
	switch {
	case s == 0:
		return "0s"
	case s < 1e-3:
		return fmt.Sprintf("%.0fµs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.1fms", s*1e3)
	case s < 120:
		return fmt.Sprintf("%.1fs", s)
	}
	return fmt.Sprintf("%.0fmin", s/60)
}

// Percent renders a share in [0,1] as a percentage.
func Percent(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }
