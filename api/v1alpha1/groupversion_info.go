// Package v1alpha1 holds eddy's API types, group eddy.io, version v1alpha1:
// AutotunePolicy (what may be changed, within which bounds), AccessProfile
// (what was seen of a workload's reads of a dataset) and Recommendation (what
// to do about it, with evidence, through a reviewed lifecycle).
//
// +kubebuilder:object:generate=true
// +groupName=eddy.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "eddy.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&AutotunePolicy{}, &AutotunePolicyList{},
		&AccessProfile{}, &AccessProfileList{},
		&Recommendation{}, &RecommendationList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Labels and annotations eddy reads and writes.
const (
	// AutotuneLabel on a namespace set to AutotuneEnabled opts its pods in;
	// on a pod set to AutotuneDisabled it opts that pod out.
	AutotuneLabel    = "eddy.io/autotune"
	AutotuneEnabled  = "enabled"
	AutotuneDisabled = "disabled"

	// InjectedAnnotation records on a pod what the webhook injected, so that
	// a second admission pass injects nothing twice.
	InjectedAnnotation = "eddy.io/injected"
	// RecommendationAnnotation names the recommendations applied to a pod.
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
)
