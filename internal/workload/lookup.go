package workload

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MetadataLookup reads object metadata from the API server (any kind,
// custom resources included), mapping kinds to resources with the server's
// discovery information. A kind installed after discovery was cached is
// found by resetting the mapper once.
func MetadataLookup(md metadata.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper) Lookup {
	return LookupFunc(func(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil {
			return nil, fmt.Errorf("owner %s %s/%s: apiVersion %q: %w", kind, namespace, name, apiVersion, err)
		}
		m, err := mapper.RESTMapping(gv.WithKind(kind).GroupKind(), gv.Version)
		if err != nil {
			mapper.Reset()
			if m, err = mapper.RESTMapping(gv.WithKind(kind).GroupKind(), gv.Version); err != nil {
				return nil, fmt.Errorf("owner %s %s/%s: map kind to resource: %w", kind, namespace, name, err)
			}
		}
		obj, err := md.Resource(m.Resource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return &obj.ObjectMeta, nil
	})
}

// ReaderLookup reads object metadata through a controller-runtime reader: an
// informer cache of metadata (the webhook's), or a live client.
func ReaderLookup(r client.Reader) Lookup {
	return LookupFunc(func(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil {
			return nil, fmt.Errorf("owner %s %s/%s: apiVersion %q: %w", kind, namespace, name, apiVersion, err)
		}
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(gv.WithKind(kind))
		if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj); err != nil {
			return nil, err
		}
		return &obj.ObjectMeta, nil
	})
}
