package v1alpha1

// Labels and annotations eddy reads and writes. Every component uses these;
// none spells them itself.
const (
	// AutotuneLabel on a namespace set to AutotuneEnabled opts its pods in;
	// on a pod set to AutotuneDisabled it opts that pod out.
	AutotuneLabel    = "eddy.io/autotune"
	AutotuneEnabled  = "enabled"
	AutotuneDisabled = "disabled"

	// WorkloadLabel on a pod or its top-level owner names the workload (run
	// family) eddy learns and acts on, overriding the default rules: runs
	// with the same value share profiles and recommendations, runs with
	// different values never do. The value is a DNS label.
	WorkloadLabel = "eddy.io/workload"

	// InjectedAnnotation records on a pod what the webhook injected, so that
	// a second admission pass injects nothing twice.
	InjectedAnnotation = "eddy.io/injected"
	// RecommendationAnnotation names the recommendations applied to a pod
	// (comma-separated). The collector reports it with the pod's reads, so a
	// recommendation is judged by the runs it was applied to.
	RecommendationAnnotation = "eddy.io/recommendation"
	// PrefetchContainerName and SDKInitContainerName are the containers the
	// webhook injects. The collector does not record them: the prefetcher's
	// reads are eddy's, not the workload's, and counting them would hide the
	// effect eddy is verified on.
	PrefetchContainerName = "eddy-prefetch"
	SDKInitContainerName  = "eddy-sdk-install"

	// CacheTargetAnnotation on a PVC or Fluid Dataset names the scalable
	// object (kind/name, e.g. "StatefulSet/cache-workers") that serves it.
	CacheTargetAnnotation = "eddy.io/cache-target"

	// ManagedByLabel set to ManagerAnalyzer marks the AccessProfiles and
	// Recommendations the analyzer wrote, set to ManagerOperator the
	// EvictDataset recommendations the operator proposes itself. Only the
	// component's own service account may set it (the
	// ValidatingAdmissionPolicy in config/webhook/origin-policy.yaml), so
	// the operator can tell what eddy proposed from what anyone allowed to
	// create Recommendations wrote: only the former may be applied without a
	// person, and the latter only with the approval of a person who could
	// make the change directly.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// RestingLabel ("true") is on an AccessProfile exactly while its
	// Learning condition is False, set by the analyzer. Collectors watch
	// only profiles carrying it: a profile that learns is written at every
	// flush, and a thousand nodes each receiving every write would be a
	// fan-out the API server cannot carry; resting profiles seldom change.
	RestingLabel    = "eddy.io/resting"
	ManagerAnalyzer = "eddy-analyzer"
	ManagerOperator = "eddy-operator"

	// ProfileLabel on a Recommendation names the AccessProfile it was made
	// from; ActionLabel is its action.
	ProfileLabel = "eddy.io/profile"
	ActionLabel  = "eddy.io/action"

	// PreviousReplicasAnnotation on a Recommendation records the cache
	// target's replicas before it was applied: what a rollback restores. It is
	// written before the target is scaled and never overwritten.
	PreviousReplicasAnnotation = "eddy.io/previous-replicas"
	// EvictedAtAnnotation, EvictedByAnnotation and EvictedReasonAnnotation on
	// a dataset (Fluid Dataset or PVC) record when, by which recommendation
	// and why its cache was scaled to the minimum.
	EvictedAtAnnotation     = "eddy.io/evicted-at"
	EvictedByAnnotation     = "eddy.io/evicted-by"
	EvictedReasonAnnotation = "eddy.io/evicted-reason"
	// ReplicasBeforeEvictionAnnotation on a dataset is what its cache target
	// had before eviction.
	ReplicasBeforeEvictionAnnotation = "eddy.io/replicas-before-eviction"
	// UnusedSinceAnnotation on a dataset is when the operator first saw no pod
	// referencing it; removed when a pod references it again.
	UnusedSinceAnnotation = "eddy.io/unused-since"
	// RestoredAtAnnotation on a dataset is when its cache was scaled back up
	// after eviction because a pod used it again.
	RestoredAtAnnotation = "eddy.io/restored-at"
	// RestartedForAnnotation on a workload's pod template names the
	// recommendation whose rollout restart it carries, so a restart is never
	// repeated.
	RestartedForAnnotation = "eddy.io/restarted-for"
)

// Condition types. On a Recommendation, Approved and Denied are set by people
// (through the status subresource, guarded by the approval webhook); the rest
// by the operator.
const (
	ConditionApproved = "Approved"
	ConditionDenied   = "Denied"
	ConditionApplied  = "Applied"
	ConditionVerified = "Verified"
	// ConditionRestarted says whether the workload's pods were restarted so
	// that a pod-level recommendation takes effect.
	ConditionRestarted = "Restarted"
	// ConditionDryRun holds what the operator would have done had dry-run
	// been off.
	ConditionDryRun = "DryRun"

	// ConditionClassified on an AccessProfile says whether a class was
	// assigned, and why; ConditionClassChanged that the workload now reads
	// differently from what it was classified as before.
	ConditionClassified   = "Classified"
	ConditionClassChanged = "ClassChanged"
	// ConditionLearning on an AccessProfile says whether the workload's new
	// runs are observed (True) or it rests (False): see Learning, which every
	// component reads it through, and the Reason* constants below.
	ConditionLearning = "Learning"

	// ConditionReady on an AutotunePolicy says whether it is the one in
	// force in its namespace; ConditionBudgetExhausted whether its change
	// budget is used up.
	ConditionReady           = "Ready"
	ConditionBudgetExhausted = "BudgetExhausted"
)

// Reasons of a Recommendation's Verified condition that other components
// read: the analyzer holds back new proposals after ReasonIneffective.
const (
	// ReasonHelped: the runs after the change read measurably better.
	ReasonHelped = "Helped"
	// ReasonIneffective: they did not.
	ReasonIneffective = "Ineffective"
)

// Reasons of an AccessProfile's Learning condition, set by the analyzer.
const (
	// ReasonNotConfident (True): no run was seen whole yet, or the class is
	// unknown or below the policy's minConfidence.
	ReasonNotConfident = "NotConfident"
	// ReasonVerifying (True): a recommendation made from the profile is
	// Applied and awaits the runs it is verified on.
	ReasonVerifying = "Verifying"
	// ReasonRefreshing (True): the profile rested for the policy's
	// refreshAfter; runs are observed until one that started after the
	// refresh was due has been seen whole.
	ReasonRefreshing = "Refreshing"
	// ReasonNeverRests (True): the policy's refreshAfter is 0.
	ReasonNeverRests = "NeverRests"
	// ReasonResting (False): the profile is confident and nothing awaits
	// verification; runs that start before status.nextRefresh are not
	// observed. Not observed is not idle: a resting workload's reads are
	// unknown, never counted as none.
	ReasonResting = "Resting"
)

// ProposedByEddy reports whether eddy's analyzer or operator wrote the
// recommendation (see ManagedByLabel).
func (r *Recommendation) ProposedByEddy() bool {
	m := r.Labels[ManagedByLabel]
	return m == ManagerAnalyzer || m == ManagerOperator
}
