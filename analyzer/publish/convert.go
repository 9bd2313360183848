package publish

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/features"
	"github.com/eddy-autotune/eddy/analyzer/history"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// apiFeatures maps the analyzer's features onto the API's.
func apiFeatures(f *features.Features) *v1.AccessFeatures {
	out := &v1.AccessFeatures{
		BytesRead:                int64(f.BytesRead),
		ReadOps:                  int64(f.ReadOps),
		BytesWritten:             int64(f.BytesWritten),
		Files:                    int64(math.Round(f.Files)),
		DatasetBytes:             int64(f.DatasetBytes),
		MedianFileBytes:          int64(f.MedianFileBytes),
		MedianReadBytes:          int64(f.MedianReadBytes),
		SequentialRatio:          round(f.SequentialRatio),
		WholeFileRatio:           round(f.WholeFileRatio),
		Coverage:                 round(f.Coverage),
		Epochs:                   round(f.Epochs),
		Reuse:                    round(f.Reuse),
		HotSetShare:              round(f.HotSetShare),
		WorkingSetBytes:          int64(f.WorkingSetBytes),
		ThroughputBytesPerSecond: math.Round(f.ThroughputBytesPerSec),
		ReadLatencyP50Seconds:    f.ReadLatencyP50Sec,
		ReadLatencyP99Seconds:    f.ReadLatencyP99Sec,
		PageCacheMissRatio:       round(f.PageCacheMissRatio),
		ReadWaitShare:            round(f.ReadWaitShare),
		WriteShare:               round(f.WriteShare),
	}
	if f.OrderKnown {
		c := round(f.OrderCorrelation)
		out.OrderCorrelation = &c
	}
	return out
}

// round keeps three decimals, so status updates do not churn on noise.
func round(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return math.Round(x*1000) / 1000
}

// apiDecisions flattens the candidates' rules into the API's Decisions.
func apiDecisions(d *classify.Decision) []v1.Decision {
	var out []v1.Decision
	for _, c := range d.Candidates {
		for _, r := range c.Rules {
			out = append(out, v1.Decision{
				Rule:      string(c.Class) + ": " + r.String(),
				Feature:   r.Feature,
				Value:     round(r.Value),
				Threshold: r.Threshold,
				Held:      r.Passed,
			})
		}
	}
	return out
}

// quantized parameters keep a recommendation stable while measurements
// wobble: two assessments that round to the same parameters are the same
// recommendation (same name), so nothing is re-proposed.
func quantizePow2(x int64) int64 {
	if x <= 0 {
		return 0
	}
	return int64(1) << int64(math.Round(math.Log2(float64(x))))
}

// quantize2 keeps two significant binary digits: 1, 1.5, 2, 3, 4, 6, 8, ...
func quantize2(x int64) int64 {
	if x <= 0 {
		return 0
	}
	p := int64(1) << int64(math.Floor(math.Log2(float64(x))))
	if x >= p+p/2 {
		return p + p/2
	}
	return p
}

// MinStartConcurrency is the lowest starting concurrency recommended.
const MinStartConcurrency = 4

// apiRecommendation maps advice onto a RecommendationSpec within the
// namespace policy's bounds. It returns the spec and the identity string
// that names it (action + class + quantized parameters).
func apiRecommendation(r *advice.Recommendation, f *features.Features, pol policyBounds) (v1.RecommendationSpec, string, bool) {
	spec := v1.RecommendationSpec{
		Action: v1.Action(r.Action),
		Evidence: v1.Evidence{
			Class:      v1.AccessClass(r.Evidence.Class),
			Confidence: round(r.Evidence.Confidence),
			Features:   apiFeatures(f),
			ExpectedBenefit: &v1.Benefit{
				Summary: benefitSummary(r),
			},
		},
	}
	after := round(r.Evidence.Benefit.ReadWaitShareAfter)
	spec.Evidence.ExpectedBenefit.ReadWaitShare = &after
	switch r.Action {
	case v1.ActionPrefetch:
		p := r.Prefetch
		if p == nil {
			return spec, "", false
		}
		block := quantizePow2(p.BlockBytes)
		bw := quantize2(p.BandwidthBytesPerSec)
		if pol.maxBandwidth > 0 && (bw == 0 || bw > pol.maxBandwidth) {
			bw = pol.maxBandwidth
		}
		budget := quantize2(p.BudgetBytes)
		if p.Strategy == v1.StrategyResident {
			// What Resident keeps follows from the cache's stated
			// capacity, not from a measurement that wobbles; rounding it
			// down to two binary digits would give away up to a third of
			// it. Rounded down to whole MiB, unless under one.
			budget = p.BudgetBytes
			if mib := budget &^ (1<<20 - 1); mib > 0 {
				budget = mib
			}
		}
		if pol.budgetBytes > 0 && (budget == 0 || budget > pol.budgetBytes) {
			budget = pol.budgetBytes
		}
		// The prefetcher adapts concurrency from this starting point; starting
		// below MinStartConcurrency cost a quarter of the link in ramp-up over
		// a 50 ms remote (prefetch benchmark), so the start is floored there.
		conc := int32(min(max(quantize2(int64(p.Concurrency)), MinStartConcurrency), 256))
		pp := &v1.PrefetchParameters{
			Strategy:        v1.PrefetchStrategy(p.Strategy),
			BlockSize:       *resource.NewQuantity(block, resource.BinarySI),
			Concurrency:     conc,
			WarmBeforeStart: p.WarmBeforeStart,
		}
		if block <= 0 {
			return spec, "", false
		}
		if bw > 0 {
			pp.MaxBandwidth = resource.NewQuantity(bw, resource.BinarySI)
		}
		if budget > 0 {
			pp.BudgetBytes = resource.NewQuantity(budget, resource.BinarySI)
		}
		if p.WarmBeforeStart {
			pp.WarmThresholdPercent = 100
		}
		spec.Prefetch = pp
		return spec, fmt.Sprintf("%s/%s/%s/%d/%d/%d/%d/%t", r.Action, r.Evidence.Class, p.Strategy, block, conc, bw, budget, p.WarmBeforeStart), true
	case v1.ActionInjectSDK:
		spec.SDK = &v1.SDKParameters{Language: "Python", Framework: "PyTorch"}
		return spec, fmt.Sprintf("%s/%s", r.Action, r.Evidence.Class), true
	case v1.ActionScaleCache:
		c := r.Cache
		if c == nil {
			return spec, "", false
		}
		n := int32(c.Workers)
		if pol.maxWorkers > 0 && n > pol.maxWorkers {
			n = pol.maxWorkers
		}
		if n < pol.minWorkers {
			n = pol.minWorkers
		}
		ws := quantize2(int64(c.WorkingSetBytes))
		spec.ScaleCache = &v1.ScaleCacheParameters{Replicas: n, WorkingSetBytes: resource.NewQuantity(ws, resource.BinarySI)}
		return spec, fmt.Sprintf("%s/%s/%d", r.Action, r.Evidence.Class, n), true
	}
	// EvictDataset is the operator's: only it sees whether pods still
	// reference a dataset.
	return spec, "", false
}

func benefitSummary(r *advice.Recommendation) string {
	b := r.Evidence.Benefit
	pct := func(x float64) string { return strconv.Itoa(int(math.Round(x*100))) + "%" }
	switch r.Action {
	case v1.ActionScaleCache:
		if r.Cache != nil {
			return fmt.Sprintf("%d workers hold the %s working set; hit ratio %s", r.Cache.Workers, resource.NewQuantity(quantize2(int64(r.Cache.WorkingSetBytes)), resource.BinarySI), pct(b.ExpectedHitRatio))
		}
	}
	if b.ReadWaitShareBefore > 0 {
		return fmt.Sprintf("read wait %s → %s of wall time", pct(b.ReadWaitShareBefore), pct(b.ReadWaitShareAfter))
	}
	return r.Evidence.Reason
}

// apiRuns maps the history's runs onto the API's, oldest first. A run is
// Ended once no read of it was seen for endedAfter.
func apiRuns(runs []history.Run, now time.Time, endedAfter time.Duration) []v1.RunSummary {
	out := make([]v1.RunSummary, 0, len(runs))
	for i := range runs {
		r := &runs[i]
		out = append(out, v1.RunSummary{
			Pod:                      r.Pod,
			Object:                   r.Object,
			Recommendations:          r.Recommendations,
			Start:                    metav1.NewTime(time.Unix(0, r.First)),
			End:                      metav1.NewTime(time.Unix(0, r.Last)),
			Ended:                    now.Sub(time.Unix(0, r.Last)) >= endedAfter,
			BytesRead:                int64(r.ReadBytes),
			ReadOps:                  int64(r.ReadOps),
			WallSeconds:              round(r.WallSeconds()),
			ReadWaitSeconds:          round(float64(r.ReadWaitNano) / 1e9),
			ReadWaitShare:            round(r.ReadWaitShare()),
			ThroughputBytesPerSecond: math.Round(r.Throughput()),
		})
	}
	return out
}

// baselineRuns are the runs a recommendation is made from: those no
// recommendation was applied to.
func baselineRuns(runs []v1.RunSummary) []v1.RunSummary {
	var out []v1.RunSummary
	for _, r := range runs {
		if len(r.Recommendations) == 0 {
			out = append(out, r)
		}
	}
	return out
}
