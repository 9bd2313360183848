package operator

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// actions counts what the operator did, one increment per event it records:
// step is the event's action (Apply, Verify, RollBack, ProposeEviction,
// RestoreCache, ...), reason its reason (Verified, Ineffective,
// AnalyzerStale, BudgetExhausted, ...), action the Recommendation's action
// when the event is about one.
var actions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "eddy_operator_actions_total",
	Help: "What the operator did or was blocked from doing, by step (Apply, Verify, RollBack, ...), reason and the recommendation's action.",
}, []string{"step", "reason", "action", "type"})

// Label names of the per-profile state metrics: a workload × dataset, never
// a pod, a file or a UID.
var profileLabels = []string{"namespace", "workload_kind", "workload", "dataset"}

// State reports the state of eddy's API objects as Prometheus metrics, in
// the manner of kube-state-metrics: one info series per AccessProfile with
// its class, its features as gauges, Recommendations counted by namespace,
// action and phase, the expected and measured benefit of those in force,
// each policy's change budget, and the age of the analyzer's heartbeat. It
// reads the manager's cache on scrape and writes nothing.
type State struct {
	mu     sync.Mutex
	reader client.Reader
	opts   Options

	profileInfo, confidence, readWait, throughput, workingSet, missRatio, sequential, lastSeen *prometheus.Desc
	recommendations, openRecs, recReadWait, recWorkers                                         *prometheus.Desc
	budgetUsed, budgetMax, heartbeatAge, optedIn, scrapeErrors                                 *prometheus.Desc
}

// NewState returns a State that reads nothing until SetReader is called.
func NewState() *State {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("eddy_operator_"+name, help, labels, nil)
	}
	pl := profileLabels
	rl := []string{"namespace", "workload_kind", "workload", "dataset", "action", "basis"}
	return &State{
		profileInfo:     d("profile_info", "One per AccessProfile, with the access class the analyzer assigned.", append(append([]string{}, pl...), "class")...),
		confidence:      d("profile_confidence_ratio", "Confidence of the profile's class (0..1).", pl...),
		readWait:        d("profile_read_wait_ratio", "Share of wall time the workload waited on reads of the dataset (0..1).", pl...),
		throughput:      d("profile_throughput_bytes_per_second", "Read throughput of the workload from the dataset.", pl...),
		workingSet:      d("profile_working_set_bytes", "Bytes of the dataset the workload reads (its working set).", pl...),
		missRatio:       d("profile_page_cache_miss_ratio", "Share of read pages that were not in the page cache (0..1).", pl...),
		sequential:      d("profile_sequential_ratio", "Share of reads that continued the previous read of the same file (0..1).", pl...),
		lastSeen:        d("profile_last_seen_timestamp_seconds", "When the workload last read the dataset.", pl...),
		recommendations: d("recommendations", "Recommendations by namespace, action and phase (New before the operator first saw it).", "namespace", "action", "phase"),
		openRecs: d("open_recommendations", "Recommendations not yet in a final phase (proposed, approved or in force), by workload, dataset and action: a workload with none has nothing pending.",
			"namespace", "workload_kind", "workload", "dataset", "action"),
		recReadWait: d("recommendation_read_wait_ratio",
			"Read wait share of the workload of each recommendation in force: before (its evidence), expected (after, as predicted) and measured (after, verified).", rl...),
		recWorkers:   d("recommendation_cache_workers", "Cache workers a ScaleCache recommendation in force sets for a dataset.", "namespace", "dataset"),
		budgetUsed:   d("change_budget_used", "Changes applied within the policy's change-budget interval.", "namespace"),
		budgetMax:    d("change_budget_max", "Changes the policy allows per change-budget interval.", "namespace"),
		heartbeatAge: d("analyzer_heartbeat_age_seconds", "Seconds since the analyzer last renewed its heartbeat Lease; the operator does not act past its stale-after."),
		optedIn:      d("opted_in_namespaces", "Namespaces labelled eddy.io/autotune=enabled."),
		scrapeErrors: d("state_errors", "Object kinds that could not be read for this scrape (their series are missing)."),
	}
}

// SetReader makes s read objects through r (the manager's cache) with o's
// heartbeat Lease, namespace and clock.
func (s *State) SetReader(r client.Reader, o Options) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reader, s.opts = r, o.withDefaults()
}

// Describe implements prometheus.Collector.
func (s *State) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.profileInfo, s.confidence, s.readWait, s.throughput, s.workingSet, s.missRatio, s.sequential, s.lastSeen,
		s.recommendations, s.openRecs, s.recReadWait, s.recWorkers, s.budgetUsed, s.budgetMax, s.heartbeatAge, s.optedIn, s.scrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *State) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	r, o := s.reader, s.opts
	s.mu.Unlock()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	errs := 0

	var profiles eddyv1alpha1.AccessProfileList
	if err := r.List(ctx, &profiles); err != nil {
		errs++
	}
	for i := range profiles.Items {
		p := &profiles.Items[i]
		l := []string{p.Namespace, p.Spec.WorkloadRef.Kind, p.Spec.WorkloadRef.Name, p.Spec.Dataset.Name}
		gauge(s.profileInfo, 1, append(append([]string{}, l...), string(p.Status.Class))...)
		gauge(s.confidence, p.Status.Confidence, l...)
		if f := p.Status.Features; f != nil {
			gauge(s.readWait, f.ReadWaitShare, l...)
			gauge(s.throughput, f.ThroughputBytesPerSecond, l...)
			gauge(s.workingSet, float64(f.WorkingSetBytes), l...)
			gauge(s.missRatio, f.PageCacheMissRatio, l...)
			gauge(s.sequential, f.SequentialRatio, l...)
		}
		if p.Status.LastSeen != nil {
			gauge(s.lastSeen, float64(p.Status.LastSeen.Unix()), l...)
		}
	}

	var recs eddyv1alpha1.RecommendationList
	if err := r.List(ctx, &recs); err != nil {
		errs++
	}
	type phaseKey struct{ ns, action, phase string }
	byPhase := map[phaseKey]int{}
	type openKey struct{ ns, kind, name, dataset, action string }
	open := map[openKey]int{}
	for i := range recs.Items {
		rec := &recs.Items[i]
		phase := string(rec.Status.Phase)
		if phase == "" {
			phase = "New"
		}
		byPhase[phaseKey{rec.Namespace, string(rec.Spec.Action), phase}]++
		var kind, name string
		if t := rec.Spec.TargetRef; t != nil {
			kind, name = t.Kind, t.Name
		}
		if !rec.Status.Phase.Final() {
			open[openKey{rec.Namespace, kind, name, rec.Spec.Dataset.Name, string(rec.Spec.Action)}]++
		}
		if !rec.Status.Phase.InForce() {
			continue
		}
		if rec.Spec.Action == eddyv1alpha1.ActionScaleCache && rec.Spec.ScaleCache != nil {
			gauge(s.recWorkers, float64(rec.Spec.ScaleCache.Replicas), rec.Namespace, rec.Spec.Dataset.Name)
		}
		l := func(basis string) []string {
			return []string{rec.Namespace, kind, name, rec.Spec.Dataset.Name, string(rec.Spec.Action), basis}
		}
		if f := rec.Spec.Evidence.Features; f != nil {
			gauge(s.recReadWait, f.ReadWaitShare, l("before")...)
		}
		if b := rec.Spec.Evidence.ExpectedBenefit; b != nil && b.ReadWaitShare != nil {
			gauge(s.recReadWait, *b.ReadWaitShare, l("expected")...)
		}
		if b := rec.Status.Outcome; b != nil && b.ReadWaitShare != nil {
			gauge(s.recReadWait, *b.ReadWaitShare, l("measured")...)
		}
	}
	for k, n := range byPhase {
		gauge(s.recommendations, float64(n), k.ns, k.action, k.phase)
	}
	for k, n := range open {
		gauge(s.openRecs, float64(n), k.ns, k.kind, k.name, k.dataset, k.action)
	}

	var policies eddyv1alpha1.AutotunePolicyList
	if err := r.List(ctx, &policies); err != nil {
		errs++
	}
	now := o.Now()
	for i := range policies.Items {
		p := &policies.Items[i]
		eff := resolvePolicy(p, false)
		gauge(s.budgetUsed, float64(len(changesWithin(p.Status.AppliedChanges, eff.per, now))), p.Namespace)
		gauge(s.budgetMax, float64(eff.maxChanges), p.Namespace)
	}

	var namespaces corev1.NamespaceList
	if err := r.List(ctx, &namespaces, client.MatchingLabels{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}); err != nil {
		errs++
	} else {
		gauge(s.optedIn, float64(len(namespaces.Items)))
	}

	var lease coordinationv1.Lease
	if err := r.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.AnalyzerLease}, &lease); err == nil && lease.Spec.RenewTime != nil {
		gauge(s.heartbeatAge, now.Sub(lease.Spec.RenewTime.Time).Seconds())
	}
	gauge(s.scrapeErrors, float64(errs))
}

var (
	// state is registered once with controller-runtime's registry; each
	// manager built by New points it at its own cache.
	state        = NewState()
	registerOnce sync.Once
)

// registerMetrics adds the operator's metrics to controller-runtime's
// registry, which the manager's metrics server serves.
func registerMetrics() {
	registerOnce.Do(func() { ctrlmetrics.Registry.MustRegister(Collectors()...) })
}

// Collectors returns the operator's own metrics (besides controller-runtime's),
// as registered with controller-runtime's registry: for tools that check
// what dashboards and rules may query.
func Collectors() []prometheus.Collector { return []prometheus.Collector{actions, state} }

// countAction counts one event the operator recorded.
func countAction(obj client.Object, eventType, reason, step string) {
	action := ""
	if rec, ok := obj.(*eddyv1alpha1.Recommendation); ok {
		action = string(rec.Spec.Action)
	}
	actions.WithLabelValues(step, reason, action, eventType).Inc()
}
