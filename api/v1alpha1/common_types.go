package v1alpha1

import "strings"

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

// WorkloadRule says how a workload's name was found from a pod (see
// internal/workload, the one resolver every component uses).
// +kubebuilder:validation:Enum=Object;Label;GenerateName;NameSuffix;KubeflowLabels
type WorkloadRule string

const (
	// RuleObject: the name is the top-level object's own name. Long-lived
	// controllers (Deployment, StatefulSet, DaemonSet, CronJob, ...) are
	// always named so, unless labelled.
	RuleObject WorkloadRule = "Object"
	// RuleLabel: the eddy.io/workload label of the pod or its top-level owner.
	RuleLabel WorkloadRule = "Label"
	// RuleGenerateName: a run (Job, JobSet, training job, bare pod) created
	// with metadata.generateName belongs to the family named by that prefix.
	RuleGenerateName WorkloadRule = "GenerateName"
	// RuleNameSuffix: a run's name without its trailing run number, date or
	// time (train-3, train-20261206-1 → train).
	RuleNameSuffix WorkloadRule = "NameSuffix"
	// RuleKubeflowLabels: an ownerless pod named its Kubeflow training job
	// in the training operator's labels.
	RuleKubeflowLabels WorkloadRule = "KubeflowLabels"
)

// WorkloadReference names a workload in the object's namespace: a
// long-lived controller (Deployment, StatefulSet, DaemonSet, CronJob, ...),
// or the family of runs of a batch workload (Jobs, JobSets, Kubeflow
// training jobs, bare pods) that a person runs again under new names.
type WorkloadReference struct {
	// APIVersion of the top-level object, e.g. apps/v1.
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// Kind of the top-level object, e.g. Deployment.
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Name of the workload: the object's name, or the run family's name
	// (see Rule).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Rule says how Name was found. It explains the name; it is not part of
	// the identity, which is the API group, Kind and Name.
	// +optional
	Rule WorkloadRule `json:"rule,omitempty"`
}

// Same reports whether r and o name the same workload: the same API group,
// kind and name (versions and rules may differ).
func (r WorkloadReference) Same(o WorkloadReference) bool {
	return r.Kind == o.Kind && r.Name == o.Name && apiGroup(r.APIVersion) == apiGroup(o.APIVersion)
}

// Key is "<group>/<Kind>/<name>", equal for references that are Same.
func (r WorkloadReference) Key() string {
	return apiGroup(r.APIVersion) + "/" + r.Kind + "/" + r.Name
}

// IsObject reports whether Name names one object of Kind (so that it can be
// read, scaled or restarted), rather than a run family or a label's value.
func (r WorkloadReference) IsObject() bool {
	return r.Rule == "" || r.Rule == RuleObject
}

func apiGroup(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

// DatasetSource says what a DatasetReference's name names.
// +kubebuilder:validation:Enum=Fluid;PVC;Volume
type DatasetSource string

const (
	// DatasetSourceFluid: a Fluid Dataset (its PVC is named like it).
	DatasetSourceFluid DatasetSource = "Fluid"
	// DatasetSourcePVC: a PersistentVolumeClaim.
	DatasetSourcePVC DatasetSource = "PVC"
	// DatasetSourceVolume: a pod volume that is not a claim (hostPath,
	// emptyDir, CSI inline, ...), by its name in the pod.
	DatasetSourceVolume DatasetSource = "Volume"
)

// ParseDatasetSource returns the source s names, in any letter case; ok is
// false for anything else.
func ParseDatasetSource(s string) (DatasetSource, bool) {
	for _, d := range []DatasetSource{DatasetSourceFluid, DatasetSourcePVC, DatasetSourceVolume} {
		if strings.EqualFold(s, string(d)) {
			return d, true
		}
	}
	return "", false
}

// DatasetReference names the data a workload reads: a Fluid Dataset, else a
// PVC, else a pod volume.
type DatasetReference struct {
	// Name of the Fluid Dataset, PVC or volume.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Source says what Name names.
	// +kubebuilder:default=PVC
	// +optional
	Source DatasetSource `json:"source,omitempty"`
}

// VolumeKey is what a pod volume must match for the reference to concern it:
// "PVC/<claim>" for a Fluid Dataset or a PVC (a Fluid Dataset's PVC is named
// like the Dataset), "Volume/<name>" for a pod volume.
func (d DatasetReference) VolumeKey() string {
	if d.Source == DatasetSourceVolume {
		return "Volume/" + d.Name
	}
	return "PVC/" + d.Name
}
