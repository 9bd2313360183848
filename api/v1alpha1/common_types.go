package v1alpha1

// Action is what a Recommendation asks for.
// +kubebuilder:validation:Enum=Prefetch;InjectSDK;ScaleCache;EvictDataset
type Action string

const (
	// ActionPrefetch injects a prefetch sidecar into the workload's new pods.
	ActionPrefetch Action = "Prefetch"
	// ActionInjectSDK copies an SDK into the workload's new pods that tells the
	// prefetcher the exact future read order.
	ActionInjectSDK Action = "InjectSDK"
	// ActionScaleCache scales the dataset's cache workers through /scale.
	ActionScaleCache Action = "ScaleCache"
	// ActionEvictDataset scales an idle dataset's cache to its minimum.
	ActionEvictDataset Action = "EvictDataset"
)

// AccessClass is the access pattern the analyzer assigned to a workload's
// reads of a dataset.
// +kubebuilder:validation:Enum=SequentialScan;ShuffledEpochs;RandomReads;HotSet;WriteMostly;Idle;Unknown
type AccessClass string

const (
	ClassSequentialScan AccessClass = "SequentialScan"
	ClassShuffledEpochs AccessClass = "ShuffledEpochs"
	ClassRandomReads    AccessClass = "RandomReads"
	ClassHotSet         AccessClass = "HotSet"
	ClassWriteMostly    AccessClass = "WriteMostly"
	ClassIdle           AccessClass = "Idle"
	ClassUnknown        AccessClass = "Unknown"
)

// WorkloadReference names a top-level workload in the object's namespace:
// a Deployment, StatefulSet, DaemonSet, Job, CronJob, a Kubeflow training
// job, or a bare Pod.
type WorkloadReference struct {
	// APIVersion of the workload, e.g. apps/v1.
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// Kind of the workload, e.g. Deployment.
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Name of the workload.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// DatasetReference names the data a workload reads: a Fluid Dataset, else a
// PVC, else a pod volume.
type DatasetReference struct {
	// Name of the Fluid Dataset, PVC or volume.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Source says what Name names.
	// +kubebuilder:validation:Enum=Fluid;PVC;Volume
	// +kubebuilder:default=PVC
	// +optional
	Source string `json:"source,omitempty"`
}
