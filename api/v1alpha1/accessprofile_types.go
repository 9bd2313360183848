package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AccessProfileSpec names the workload and dataset a profile describes.
// Both are immutable: a different pair is a different profile.
type AccessProfileSpec struct {
	// WorkloadRef is the top-level workload whose pods' reads are profiled.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.workloadRef is immutable"
	WorkloadRef WorkloadReference `json:"workloadRef"`
	// Dataset is the data those pods read.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.dataset is immutable"
	Dataset DatasetReference `json:"dataset"`
}

// AccessFeatures are the measured features a classification is made from.
// Ratios are in [0, 1]; sizes in bytes; times in seconds.
type AccessFeatures struct {
	BytesRead       int64 `json:"bytesRead"`
	ReadOps         int64 `json:"readOps"`
	BytesWritten    int64 `json:"bytesWritten,omitempty"`
	Files           int64 `json:"files"`
	DatasetBytes    int64 `json:"datasetBytes,omitempty"`
	MedianFileBytes int64 `json:"medianFileBytes,omitempty"`
	MedianReadBytes int64 `json:"medianReadBytes,omitempty"`
	// SequentialRatio is the share of reads that continued where the
	// previous read of the same open file ended.
	SequentialRatio float64 `json:"sequentialRatio"`
	// WholeFileRatio is the share of bytes read that belong to files read
	// from start to end.
	WholeFileRatio float64 `json:"wholeFileRatio"`
	// Coverage is the share of the dataset's files read per epoch.
	Coverage float64 `json:"coverage"`
	// Epochs is the number of full passes over the data seen.
	Epochs float64 `json:"epochs"`
	// OrderCorrelation is the Spearman rank correlation of first-access
	// order between consecutive epochs: 1 fixed order, ~0 shuffled.
	// +optional
	OrderCorrelation *float64 `json:"orderCorrelation,omitempty"`
	// Reuse is the share of bytes read that had been read before.
	Reuse float64 `json:"reuse"`
	// HotSetShare is the share of reads that hit the hottest 20% of files.
	HotSetShare float64 `json:"hotSetShare"`
	// WorkingSetBytes is the cache size at the knee of the sampled
	// miss-ratio curve.
	WorkingSetBytes int64 `json:"workingSetBytes"`
	// ThroughputBytesPerSecond is the mean read throughput while reading.
	ThroughputBytesPerSecond float64 `json:"throughputBytesPerSecond"`
	ReadLatencyP50Seconds    float64 `json:"readLatencyP50Seconds"`
	ReadLatencyP99Seconds    float64 `json:"readLatencyP99Seconds"`
	// PageCacheMissRatio is pages brought into the cache per page requested.
	PageCacheMissRatio float64 `json:"pageCacheMissRatio"`
	// ReadWaitShare is the share of wall time the workload spent in reads.
	ReadWaitShare float64 `json:"readWaitShare"`
	// WriteShare is the share of bytes that were written.
	WriteShare float64 `json:"writeShare"`
}

// Decision explains a classification: each rule checked, the feature it
// looked at, the threshold, and whether it held.
type Decision struct {
	Rule      string  `json:"rule"`
	Feature   string  `json:"feature"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Held      bool    `json:"held"`
}

// RunSummary is what one run of the workload — one pod — read, measured the
// same way for every run so that runs compare: the span from its first read
// to its last, the time inside reads, bytes. Reads of containers eddy
// injected are not the workload's and never counted.
type RunSummary struct {
	// Pod is the run's pod; Object its top-level object (the Job train-2 of
	// the run family train).
	Pod string `json:"pod"`
	// +optional
	Object string `json:"object,omitempty"`
	// Recommendations the webhook applied to the pod.
	// +listType=atomic
	// +optional
	Recommendations []string `json:"recommendations,omitempty"`
	// Start and End are its first and last read seen.
	Start metav1.Time `json:"start"`
	End   metav1.Time `json:"end"`
	// Ended is set once no read of the run has been seen for a while: it
	// ended or paused, and can be judged whole.
	// +optional
	Ended     bool  `json:"ended,omitempty"`
	BytesRead int64 `json:"bytesRead"`
	ReadOps   int64 `json:"readOps"`
	// WallSeconds is End − Start; ReadWaitSeconds the time inside reads,
	// summed over the run's threads; ReadWaitShare their ratio, capped at 1.
	WallSeconds     float64 `json:"wallSeconds"`
	ReadWaitSeconds float64 `json:"readWaitSeconds"`
	ReadWaitShare   float64 `json:"readWaitShare"`
	// ThroughputBytesPerSecond is BytesRead over WallSeconds.
	ThroughputBytesPerSecond float64 `json:"throughputBytesPerSecond"`
}

// AccessProfileStatus is written by the analyzer.
type AccessProfileStatus struct {
	// Class is the access pattern assigned.
	// +optional
	Class AccessClass `json:"class,omitempty"`
	// Confidence in Class, in [0, 1]; it grows with evidence.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	// +optional
	Confidence float64 `json:"confidence,omitempty"`
	// Features measured, decayed over the analyzer's half-life.
	// +optional
	Features *AccessFeatures `json:"features,omitempty"`
	// Decisions are the rules that led to Class.
	// +listType=atomic
	// +optional
	Decisions []Decision `json:"decisions,omitempty"`
	// ObservedPods is how many distinct pods contributed.
	// +optional
	ObservedPods int32 `json:"observedPods,omitempty"`
	// RecentRuns are the latest runs (pods), oldest first: what an applied
	// recommendation is verified on.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	RecentRuns []RunSummary `json:"recentRuns,omitempty"`
	// Windows is how many collector windows contributed.
	// +optional
	Windows int64 `json:"windows,omitempty"`
	// FirstSeen and LastSeen bound the reads observed.
	// +optional
	FirstSeen *metav1.Time `json:"firstSeen,omitempty"`
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// Checkpoint is the analyzer's compressed history, so a restarted
	// analyzer resumes where it stopped.
	// +optional
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// NextRefresh is when a resting workload's runs are observed again, to
	// refresh what was learned (see ConditionLearning and Learning). Unset
	// while the workload is learning, and when its policy never rests it.
	// +optional
	NextRefresh *metav1.Time `json:"nextRefresh,omitempty"`
	// Conditions: Classified, ClassChanged, Learning.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Checkpoint is opaque analyzer state.
type Checkpoint struct {
	// Version of the encoding.
	Version int32 `json:"version"`
	// Data is the encoded history.
	// +kubebuilder:validation:MaxLength=1048576
	Data []byte `json:"data"`
	// Time it was written.
	Time metav1.Time `json:"time"`
}

// AccessProfile is what eddy saw of one workload's reads of one dataset.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=aprof,categories=eddy
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workloadRef.name`
// +kubebuilder:printcolumn:name="Dataset",type=string,JSONPath=`.spec.dataset.name`
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.status.class`
// +kubebuilder:printcolumn:name="Confidence",type=number,format=float,JSONPath=`.status.confidence`
// +kubebuilder:printcolumn:name="Learning",type=string,JSONPath=`.status.conditions[?(@.type=="Learning")].reason`
// +kubebuilder:printcolumn:name="Read-Wait",type=number,format=float,JSONPath=`.status.features.readWaitShare`
// +kubebuilder:printcolumn:name="Last-Seen",type=date,JSONPath=`.status.lastSeen`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccessProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AccessProfileSpec   `json:"spec"`
	Status AccessProfileStatus `json:"status,omitempty"`
}

// AccessProfileList is a list of AccessProfile.
//
// +kubebuilder:object:root=true
type AccessProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessProfile `json:"items"`
}
