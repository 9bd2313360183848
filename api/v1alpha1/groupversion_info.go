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
