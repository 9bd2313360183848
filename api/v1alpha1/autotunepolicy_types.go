package v1alpha1

import (
	"sort"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PolicyMode says how far eddy may act in a namespace.
// +kubebuilder:validation:Enum=Off;Recommend;Auto
type PolicyMode string

const (
	// ModeOff: nothing is proposed or applied.
	ModeOff PolicyMode = "Off"
	// ModeRecommend: recommendations are proposed; nothing is applied without
	// a person's approval. The default, and what a namespace without a policy gets.
	ModeRecommend PolicyMode = "Recommend"
	// ModeAuto: actions listed in autoApply are applied without approval,
	// within the policy's bounds and change budget.
	ModeAuto PolicyMode = "Auto"
)

// AutotunePolicySpec is what a namespace's owner allows eddy to do.
type AutotunePolicySpec struct {
	// Mode says whether eddy proposes, auto-applies, or does nothing.
	// +kubebuilder:default=Recommend
	// +optional
	Mode PolicyMode `json:"mode,omitempty"`

	// AutoApply lists the actions that may be applied without approval in
	// Auto mode. Empty means none.
	// +listType=set
	// +optional
	AutoApply []Action `json:"autoApply,omitempty"`

	// MinConfidence is the classification confidence below which nothing is
	// recommended, in [0, 1].
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	// +kubebuilder:default=0.7
	// +optional
	MinConfidence *float64 `json:"minConfidence,omitempty"`

	// CacheWorkers bounds the number of cache workers eddy may scale a
	// dataset's cache target to.
	// +optional
	CacheWorkers *CacheWorkerBounds `json:"cacheWorkers,omitempty"`

	// Prefetch bounds what an injected prefetcher may use.
	// +optional
	Prefetch *PrefetchBounds `json:"prefetch,omitempty"`

	// CacheCapacity is how many bytes the cache in front of each dataset of
	// the namespace holds: a Fluid runtime's tiered-store quota, an rclone
	// mount's --vfs-cache-max-size. The analyzer sizes its advice to it: a
	// dataset that every epoch reads whole but that is larger than the cache
	// is not prefetched whole (a least-recently-used cache would drop what
	// was fetched before the job reads it) but gets a Resident prefetch of a
	// fixed part that fits. Unset means unknown: the analyzer's default cache
	// budget (64 GiB).
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-') && string(self) != '0'",message="cacheCapacity must be positive"
	// +optional
	CacheCapacity *resource.Quantity `json:"cacheCapacity,omitempty"`

	// IdleAfter is how long a dataset must go unreferenced and unread before
	// it is proposed for eviction.
	// +kubebuilder:default="24h"
	// +optional
	IdleAfter *metav1.Duration `json:"idleAfter,omitempty"`

	// CoolOff is how long, after a recommendation was judged Ineffective,
	// the analyzer proposes no other recommendation of the same action for
	// the same workload and dataset.
	// +kubebuilder:default="24h"
	// +optional
	CoolOff *metav1.Duration `json:"coolOff,omitempty"`

	// RefreshAfter is how long a workload whose profile is confident rests —
	// its new pods are not observed, so the collector's hooks cost them
	// nothing — before the runs that start next are observed again to
	// refresh the profile (each such refresh lasts until one observed run
	// has ended). A workload also learns again, without waiting, while a
	// recommendation applied to it awaits its verifying runs. 0 never rests:
	// every run is observed.
	// +kubebuilder:default="12h"
	// +optional
	RefreshAfter *metav1.Duration `json:"refreshAfter,omitempty"`

	// ChangeBudget caps how many changes eddy applies automatically per interval.
	// +optional
	ChangeBudget *ChangeBudget `json:"changeBudget,omitempty"`

	// RolloutRestart allows the operator to restart a workload's pods (within
	// its own rollout limits and PodDisruptionBudgets) so that an applied
	// pod-level recommendation takes effect without waiting for new pods.
	// +optional
	RolloutRestart bool `json:"rolloutRestart,omitempty"`

	// DryRun records what would be done, in events and status, and does nothing.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// CacheWorkerBounds bounds cache worker replicas.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="cacheWorkers.min must be less than or equal to cacheWorkers.max",fieldPath=".min"
type CacheWorkerBounds struct {
	// Min is the fewest cache workers; an evicted dataset is scaled to it.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=0
	Min int32 `json:"min"`
	// Max is the most cache workers eddy may ask for.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Max int32 `json:"max"`
}

// PrefetchBounds bounds an injected prefetcher.
type PrefetchBounds struct {
	// MaxBandwidth caps a prefetcher's read rate in bytes per second.
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-')",message="prefetch.maxBandwidth must not be negative"
	// +optional
	MaxBandwidth *resource.Quantity `json:"maxBandwidth,omitempty"`
	// BudgetBytes caps the bytes one prefetcher reads ahead.
	// +kubebuilder:validation:XValidation:rule="!string(self).startsWith('-')",message="prefetch.budgetBytes must not be negative"
	// +optional
	BudgetBytes *resource.Quantity `json:"budgetBytes,omitempty"`
	// MaxCPU and MaxMemory cap the prefetch sidecar's resource limits.
	// +optional
	MaxCPU *resource.Quantity `json:"maxCPU,omitempty"`
	// +optional
	MaxMemory *resource.Quantity `json:"maxMemory,omitempty"`
}

// ChangeBudget is at most MaxChanges automatically applied changes per Per.
type ChangeBudget struct {
	// MaxChanges per interval.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=5
	MaxChanges int32 `json:"maxChanges"`
	// Per is the interval.
	// +kubebuilder:default="1h"
	// +optional
	Per *metav1.Duration `json:"per,omitempty"`
}

// AutotunePolicyStatus is written by the operator.
type AutotunePolicyStatus struct {
	// ObservedGeneration is the generation the operator last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// AppliedChanges are the times of automatically applied changes within
	// the current budget interval.
	// +listType=atomic
	// +optional
	AppliedChanges []metav1.Time `json:"appliedChanges,omitempty"`
	// Conditions: Ready, BudgetExhausted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AutotunePolicy says, for its namespace, what eddy may change and within
// which bounds. A namespace without one behaves as mode Recommend.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=atp,categories=eddy
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Min-Confidence",type=number,JSONPath=`.spec.minConfidence`
// +kubebuilder:printcolumn:name="Idle-After",type=string,JSONPath=`.spec.idleAfter`
// +kubebuilder:printcolumn:name="Dry-Run",type=boolean,JSONPath=`.spec.dryRun`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AutotunePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	// +optional
	Spec   AutotunePolicySpec   `json:"spec"`
	Status AutotunePolicyStatus `json:"status,omitempty"`
}

// AutotunePolicyList is a list of AutotunePolicy.
//
// +kubebuilder:object:root=true
type AutotunePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AutotunePolicy `json:"items"`
}

// PolicyInForce picks, among a namespace's AutotunePolicies, the one every
// component obeys: the one named "default", else the oldest, else the first
// by name. It returns nil for none (the namespace behaves as mode Recommend).
// It reorders items.
func PolicyInForce(items []AutotunePolicy) *AutotunePolicy {
	if len(items) == 0 {
		return nil
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := &items[i], &items[j]
		if (a.Name == "default") != (b.Name == "default") {
			return a.Name == "default"
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return &items[0]
}
