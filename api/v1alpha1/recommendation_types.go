package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PrefetchStrategy is how an injected prefetcher reads ahead.
// +kubebuilder:validation:Enum=WholeDataset;Sequential;Ordered;HotSet;Ranges;Resident
type PrefetchStrategy string

const (
	// StrategyWholeDataset warms the whole dataset (or a selection) in parallel.
	StrategyWholeDataset PrefetchStrategy = "WholeDataset"
	// StrategySequential reads ahead in first-access order with a growing window.
	StrategySequential PrefetchStrategy = "Sequential"
	// StrategyOrdered reads in the exact order from the manifest or SDK hints.
	StrategyOrdered PrefetchStrategy = "Ordered"
	// StrategyHotSet warms the hot files at start.
	StrategyHotSet PrefetchStrategy = "HotSet"
	// StrategyRanges reads, in parallel, the byte ranges of files that the
	// latest run read at random offsets (from the manifest), and nothing
	// else of them.
	StrategyRanges PrefetchStrategy = "Ranges"
	// StrategyResident reads a fixed part of the dataset, at most the budget
	// (sized under the cache's capacity), and keeps it resident in a cache
	// that drops the least recently used files by reading a byte of each of
	// those files again, more often than the cache evicts, while the pod
	// runs. For a job that reads more than the cache holds in a new order
	// each epoch, a fixed part stays cached for every epoch, where the cache's
	// own choice (the newest files) is evicted before the job comes back to it.
	StrategyResident PrefetchStrategy = "Resident"
)

// RecommendationSpec is what the analyzer proposes. It is immutable once
// written: a changed proposal is a new Recommendation that supersedes this one.
//
// +kubebuilder:validation:XValidation:rule="(self.action == 'Prefetch') == has(self.prefetch)",message="spec.prefetch must be set exactly when spec.action is Prefetch",fieldPath=".prefetch"
// +kubebuilder:validation:XValidation:rule="(self.action == 'InjectSDK') == has(self.sdk)",message="spec.sdk must be set exactly when spec.action is InjectSDK",fieldPath=".sdk"
// +kubebuilder:validation:XValidation:rule="(self.action == 'ScaleCache') == has(self.scaleCache)",message="spec.scaleCache must be set exactly when spec.action is ScaleCache",fieldPath=".scaleCache"
// +kubebuilder:validation:XValidation:rule="(self.action == 'EvictDataset') == has(self.evictDataset)",message="spec.evictDataset must be set exactly when spec.action is EvictDataset",fieldPath=".evictDataset"
type RecommendationSpec struct {
	// TargetRef is the workload the recommendation is for (for EvictDataset,
	// the workload that last read the dataset, if any).
	// +optional
	TargetRef *WorkloadReference `json:"targetRef,omitempty"`
	// Dataset the recommendation concerns.
	Dataset DatasetReference `json:"dataset"`
	// Action to take.
	Action Action `json:"action"`

	// +optional
	Prefetch *PrefetchParameters `json:"prefetch,omitempty"`
	// +optional
	SDK *SDKParameters `json:"sdk,omitempty"`
	// +optional
	ScaleCache *ScaleCacheParameters `json:"scaleCache,omitempty"`
	// +optional
	EvictDataset *EvictDatasetParameters `json:"evictDataset,omitempty"`

	// Evidence is why: the profile, class and features it was made from and
	// the benefit expected.
	Evidence Evidence `json:"evidence"`
}

// PrefetchParameters tune an injected prefetcher.
type PrefetchParameters struct {
	Strategy PrefetchStrategy `json:"strategy"`
	// BlockSize is the size of each read-ahead request.
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-') && string(self) != '0'",message="prefetch.blockSize must be positive"
	BlockSize resource.Quantity `json:"blockSize"`
	// Concurrency is the number of reads in flight:
	// ceil(bandwidth × latency / blockSize), clamped.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	Concurrency int32 `json:"concurrency"`
	// MaxBandwidth caps the read rate in bytes per second.
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-')",message="prefetch.maxBandwidth must not be negative"
	// +optional
	MaxBandwidth *resource.Quantity `json:"maxBandwidth,omitempty"`
	// BudgetBytes caps the bytes read ahead.
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-')",message="prefetch.budgetBytes must not be negative"
	// +optional
	BudgetBytes *resource.Quantity `json:"budgetBytes,omitempty"`
	// WarmBeforeStart holds the main containers until WarmThresholdPercent
	// of the selection is warm.
	// +optional
	WarmBeforeStart bool `json:"warmBeforeStart,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	WarmThresholdPercent int32 `json:"warmThresholdPercent,omitempty"`
}

// SDKParameters choose the SDK to inject.
type SDKParameters struct {
	// Language of the SDK.
	// +kubebuilder:validation:Enum=Python
	// +kubebuilder:default=Python
	// +optional
	Language string `json:"language,omitempty"`
	// Framework the SDK follows.
	// +kubebuilder:validation:Enum=PyTorch
	// +kubebuilder:default=PyTorch
	// +optional
	Framework string `json:"framework,omitempty"`
	// Containers to inject into; empty means every container that mounts the dataset.
	// +listType=set
	// +optional
	Containers []string `json:"containers,omitempty"`
}

// CacheTargetReference names a scalable object (with a /scale subresource)
// that serves a dataset's cache.
type CacheTargetReference struct {
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// ScaleCacheParameters size a dataset's cache workers.
type ScaleCacheParameters struct {
	// CacheTargetRef is the object to scale; empty means the Fluid runtime
	// named like the dataset, or the object named by the eddy.io/cache-target
	// annotation.
	// +optional
	CacheTargetRef *CacheTargetReference `json:"cacheTargetRef,omitempty"`
	// Replicas wanted: max(ceil(workingSet / perWorkerCapacity),
	// ceil(demandedThroughput / perWorkerThroughput)), within policy bounds
	// (the operator clamps to them whatever is asked).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas int32 `json:"replicas"`
	// WorkingSetBytes the replicas were sized for.
	// +optional
	WorkingSetBytes *resource.Quantity `json:"workingSetBytes,omitempty"`
}

// EvictDatasetParameters describe an idle dataset's eviction.
type EvictDatasetParameters struct {
	// IdleSince is when the dataset was last read or referenced.
	IdleSince metav1.Time `json:"idleSince"`
	// MinReplicas is what the cache target is scaled to.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=0
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`
}

// Evidence is what a recommendation was made from.
type Evidence struct {
	// Profile is the AccessProfile's name.
	// +optional
	Profile string `json:"profile,omitempty"`
	// +optional
	Class AccessClass `json:"class,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Confidence float64 `json:"confidence"`
	// Features at the time of the recommendation.
	// +optional
	Features *AccessFeatures `json:"features,omitempty"`
	// ExpectedBenefit in words and numbers.
	// +optional
	ExpectedBenefit *Benefit `json:"expectedBenefit,omitempty"`
	// Runs are the runs the recommendation was made from, before any
	// change: the baseline it is verified against.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Runs []RunSummary `json:"runs,omitempty"`
}

// Benefit is an expected or measured effect.
type Benefit struct {
	// Summary in words, e.g. "read wait 42% → 8% of wall time".
	Summary string `json:"summary"`
	// ReadWaitShare expected (or measured) after the change.
	// +optional
	ReadWaitShare *float64 `json:"readWaitShare,omitempty"`
	// ThroughputBytesPerSecond expected (or measured) after the change.
	// +optional
	ThroughputBytesPerSecond *float64 `json:"throughputBytesPerSecond,omitempty"`
}

// RecommendationPhase is where a recommendation is in its lifecycle.
// +kubebuilder:validation:Enum=Proposed;Approved;Applied;Verified;Ineffective;RolledBack;Rejected;Superseded;Expired;Failed
type RecommendationPhase string

const (
	PhaseProposed    RecommendationPhase = "Proposed"
	PhaseApproved    RecommendationPhase = "Approved"
	PhaseApplied     RecommendationPhase = "Applied"
	PhaseVerified    RecommendationPhase = "Verified"
	PhaseIneffective RecommendationPhase = "Ineffective"
	PhaseRolledBack  RecommendationPhase = "RolledBack"
	PhaseRejected    RecommendationPhase = "Rejected"
	PhaseSuperseded  RecommendationPhase = "Superseded"
	PhaseExpired     RecommendationPhase = "Expired"
	PhaseFailed      RecommendationPhase = "Failed"
)

// InForce reports whether a recommendation in phase p is in effect: applied
// and not rolled back. An Ineffective one stays in force until it is rolled
// back (at once in Auto mode, by a person otherwise).
func (p RecommendationPhase) InForce() bool {
	switch p {
	case PhaseApplied, PhaseVerified, PhaseIneffective:
		return true
	}
	return false
}

// Final reports whether phase p is an end: nothing moves a recommendation
// out of it.
func (p RecommendationPhase) Final() bool {
	switch p {
	case PhaseRejected, PhaseSuperseded, PhaseExpired, PhaseFailed, PhaseRolledBack:
		return true
	}
	return false
}

// PodLevel reports whether the action changes pods at admission (the webhook
// applies it) rather than objects the operator scales.
func (a Action) PodLevel() bool {
	return a == ActionPrefetch || a == ActionInjectSDK
}

// RecommendationStatus is written by the operator, except the Approved and
// Denied conditions.
type RecommendationStatus struct {
	// Phase is empty until the operator first sees the recommendation and
	// sets Proposed (a status cannot be defaulted on create).
	// +optional
	Phase RecommendationPhase `json:"phase,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AppliedAt is when it took effect.
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`
	// SupersededBy names the newer recommendation.
	// +optional
	SupersededBy string `json:"supersededBy,omitempty"`
	// Outcome measured from profiles after application.
	// +optional
	Outcome *Benefit `json:"outcome,omitempty"`
	// Verification is how the outcome was measured: the runs before the
	// change against the runs it was applied to.
	// +optional
	Verification *Verification `json:"verification,omitempty"`
}

// Verification compares the runs before a change with the runs after it.
type Verification struct {
	Before RunStats `json:"before"`
	After  RunStats `json:"after"`
	// Runs are the pods of the runs judged after the change.
	// +listType=atomic
	// +optional
	Runs []string `json:"runs,omitempty"`
}

// RunStats are the means of a set of runs (see RunSummary).
type RunStats struct {
	Runs                     int32   `json:"runs"`
	BytesRead                int64   `json:"bytesRead"`
	WallSeconds              float64 `json:"wallSeconds"`
	ReadWaitShare            float64 `json:"readWaitShare"`
	ThroughputBytesPerSecond float64 `json:"throughputBytesPerSecond"`
}

// Recommendation is a proposed change with its evidence, reviewed by a
// person or auto-applied by policy.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rec;recs,categories=eddy
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Dataset",type=string,JSONPath=`.spec.dataset.name`
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.spec.evidence.class`
// +kubebuilder:printcolumn:name="Confidence",type=number,format=float,JSONPath=`.spec.evidence.confidence`
// +kubebuilder:printcolumn:name="Expected",type=string,JSONPath=`.spec.evidence.expectedBenefit.summary`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Recommendation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new Recommendation instead"
	Spec   RecommendationSpec   `json:"spec"`
	Status RecommendationStatus `json:"status,omitempty"`
}

// RecommendationList is a list of Recommendation.
//
// +kubebuilder:object:root=true
type RecommendationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Recommendation `json:"items"`
}
