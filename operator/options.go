// Package operator is eddy's actuator for what is not per pod. It reconciles
// Recommendations through their lifecycle (proposed, approved by a person or
// by policy, applied, verified from fresh profiles, rolled back when they did
// not help), keeps each AutotunePolicy's change budget, scales datasets'
// cache workers through the /scale subresource, and evicts idle datasets.
//
// It acts only while the analyzer's heartbeat Lease is fresh, persists what it
// is about to do in the object's status before doing it, and checks current
// state before every write, so a restart never repeats an action.
package operator

import (
	"time"

	"github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Verification thresholds. An applied recommendation is judged by the runs
// after it — the runs (pods) it was applied to, for Prefetch and InjectSDK;
// the runs that started VerifySettle after it was applied, for the others —
// once one has ended having read at least MinJudgedBytesShare of what the
// baseline runs (those the evidence saw) read on average, or, still running,
// has read as much as they did over at least MinOpenRunSeconds. It is Verified
// when, on average, their share of wall time spent waiting on reads dropped
// by at least MinReadWaitDrop relative to the baseline (0.40 → at most
// 0.32), or their read throughput rose by at least MinThroughputRise
// relative (100 MB/s → at least 120 MB/s). Otherwise it is Ineffective.
const (
	MinReadWaitDrop     = 0.20
	MinThroughputRise   = 0.20
	MinJudgedBytesShare = 0.5
	MinOpenRunSeconds   = 60
)

// Options tune the operator's controllers. The zero value of each field means
// the documented default.
type Options struct {
	// Namespace holds the analyzer's heartbeat Lease and the operator's
	// leader-election Lease. Default "eddy-system".
	Namespace string
	// AnalyzerLease is the name of the Lease the analyzer renews as its
	// heartbeat. Default "eddy-analyzer".
	AnalyzerLease string
	// AnalyzerStaleAfter is how old the Lease's renewTime may be before the
	// operator stops acting. Default 2m.
	AnalyzerStaleAfter time.Duration
	// StaleRetry is how soon an action held back by a stale heartbeat is
	// tried again. Default 30s.
	StaleRetry time.Duration
	// RecommendationTTL is how long a recommendation may stay Proposed before
	// it is Expired. Default 168h (7 days).
	RecommendationTTL time.Duration
	// VerifySettle is how long after a ScaleCache or EvictDataset
	// recommendation was applied a run must start to count as evidence of
	// its effect (pod-level ones are judged by the runs they were applied
	// to). Default 10m; a negative value means any run that started after
	// it was applied.
	VerifySettle time.Duration
	// StabilizationWindow is how long a lower cache demand must hold before
	// cache workers are scaled down. Default 5m; a negative value disables it.
	StabilizationWindow time.Duration
	// Workers is how many recommendations, and how many datasets, are
	// reconciled at once (one dataset's are always handled one at a time).
	// Default 4.
	Workers int
	// DryRun makes every controller record what it would do (events and
	// conditions) without doing it, in every namespace.
	DryRun bool
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// withDefaults fills in zero fields; it is idempotent (negative durations,
// meaning "none", stay negative).
func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "eddy-system"
	}
	if o.AnalyzerLease == "" {
		o.AnalyzerLease = v1alpha1.AnalyzerHeartbeatLease
	}
	if o.AnalyzerStaleAfter == 0 {
		o.AnalyzerStaleAfter = v1alpha1.AnalyzerStaleAfter
	}
	if o.StaleRetry == 0 {
		o.StaleRetry = 30 * time.Second
	}
	if o.RecommendationTTL == 0 {
		o.RecommendationTTL = 7 * 24 * time.Hour
	}
	if o.VerifySettle == 0 {
		o.VerifySettle = 10 * time.Minute
	}
	if o.StabilizationWindow == 0 {
		o.StabilizationWindow = 5 * time.Minute
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
