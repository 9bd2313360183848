package collector

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/eddy-autotune/eddy/internal/workload"
)

func ctrl(apiVersion, kind, name string) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, Controller: &t}
}

// owners is an API server's view of owner references, keyed by kind/name,
// for tests of what the collector does with a resolved workload (the
// resolution itself is tested in internal/workload, against a real API
// server too).
type owners map[string][]metav1.OwnerReference

func (o owners) resolver(calls *int) *workload.Resolver {
	return workload.NewResolver(workload.LookupFunc(func(_ context.Context, _, _, kind, name string) (*metav1.ObjectMeta, error) {
		*calls++
		refs, ok := o[kind+"/"+name]
		if !ok {
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: kind}, name)
		}
		return &metav1.ObjectMeta{Name: name, OwnerReferences: refs}, nil
	}), workload.Options{})
}
