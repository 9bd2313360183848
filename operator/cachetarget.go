package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// fluidGroupVersion is Fluid's API; fluidRuntimeKinds are its runtimes, each
// a cache served by workers and scalable through /scale.
var (
	fluidGroupVersion = schema.GroupVersion{Group: "data.fluid.io", Version: "v1alpha1"}
	fluidRuntimeKinds = []string{"AlluxioRuntime", "JuiceFSRuntime", "JindoRuntime", "GooseFSRuntime", "EFCRuntime", "ThinRuntime", "VineyardRuntime"}
	fluidDatasetGVK   = fluidGroupVersion.WithKind("Dataset")
	pvcGVK            = schema.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"}
	scaleGVK          = schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"}
)

// errNoCacheTarget means a dataset has no cache to scale: no annotation and
// no Fluid runtime of its name.
var errNoCacheTarget = errors.New("no cache target")

// cacheTarget is a scalable object that serves a dataset's cache.
type cacheTarget struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

func (t cacheTarget) String() string { return t.gvk.Kind + "/" + t.name }

func (t cacheTarget) object() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(t.gvk)
	u.SetNamespace(t.namespace)
	u.SetName(t.name)
	return u
}

// notServedTTL is how long a kind found not served (Fluid not installed, or
// not this runtime) is not asked about again: each question is a discovery
// request to the API server.
const notServedTTL = time.Minute

// scaler finds datasets' cache targets and reads and writes their /scale.
type scaler struct {
	client client.Client
	mapper meta.RESTMapper

	mu        sync.Mutex
	notServed map[schema.GroupVersionKind]time.Time
}

// targetFor resolves the cache target of dataset ds in ns: explicit when a
// recommendation names one, else the eddy.io/cache-target annotation on the
// Fluid Dataset or the PVC, else the Fluid runtime named like the dataset.
func (s *scaler) targetFor(ctx context.Context, ns string, ds eddyv1alpha1.DatasetReference, explicit *eddyv1alpha1.CacheTargetReference) (cacheTarget, error) {
	if explicit != nil {
		gv, err := schema.ParseGroupVersion(explicit.APIVersion)
		if err != nil {
			return cacheTarget{}, fmt.Errorf("cacheTargetRef apiVersion %q: %w", explicit.APIVersion, err)
		}
		return cacheTarget{gvk: gv.WithKind(explicit.Kind), namespace: ns, name: explicit.Name}, nil
	}
	obj, err := s.datasetObject(ctx, ns, ds.Name)
	if err != nil {
		return cacheTarget{}, err
	}
	if obj != nil {
		if v := obj.GetAnnotations()[eddyv1alpha1.CacheTargetAnnotation]; v != "" {
			t, err := s.parseTarget(v)
			if err != nil {
				return cacheTarget{}, fmt.Errorf("annotation %s=%q on %s %s/%s: %w", eddyv1alpha1.CacheTargetAnnotation, v, obj.Kind, ns, obj.Name, err)
			}
			t.namespace = ns
			return t, nil
		}
	}
	for _, kind := range fluidRuntimeKinds {
		gvk := fluidGroupVersion.WithKind(kind)
		if !s.served(gvk) {
			continue
		}
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(gvk)
		err := s.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ds.Name}, m)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return cacheTarget{}, fmt.Errorf("look for %s %s/%s: %w", kind, ns, ds.Name, err)
		}
		return cacheTarget{gvk: gvk, namespace: ns, name: ds.Name}, nil
	}
	return cacheTarget{}, fmt.Errorf("dataset %s/%s: %w (annotate its PVC or Fluid Dataset with %s=Kind/name, or create a Fluid runtime of the same name)",
		ns, ds.Name, errNoCacheTarget, eddyv1alpha1.CacheTargetAnnotation)
}

// parseTarget reads "Kind/name" or "apiVersion/Kind/name" (apiVersion may
// hold a slash, e.g. apps/v1/StatefulSet/cache).
func (s *scaler) parseTarget(v string) (cacheTarget, error) {
	parts := strings.Split(v, "/")
	if len(parts) < 2 || parts[len(parts)-1] == "" || parts[len(parts)-2] == "" {
		return cacheTarget{}, fmt.Errorf("want Kind/name or apiVersion/Kind/name")
	}
	name, kind := parts[len(parts)-1], parts[len(parts)-2]
	if len(parts) > 2 {
		gv, err := schema.ParseGroupVersion(strings.Join(parts[:len(parts)-2], "/"))
		if err != nil {
			return cacheTarget{}, err
		}
		return cacheTarget{gvk: gv.WithKind(kind), name: name}, nil
	}
	switch kind {
	case "StatefulSet", "Deployment", "ReplicaSet":
		return cacheTarget{gvk: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: kind}, name: name}, nil
	}
	for _, k := range fluidRuntimeKinds {
		if k == kind {
			return cacheTarget{gvk: fluidGroupVersion.WithKind(kind), name: name}, nil
		}
	}
	return cacheTarget{}, fmt.Errorf("kind %s needs its API version: write apiVersion/%s/%s", kind, kind, name)
}

func (s *scaler) served(gvk schema.GroupVersionKind) bool {
	s.mu.Lock()
	until, known := s.notServed[gvk]
	s.mu.Unlock()
	if known && time.Now().Before(until) {
		return false
	}
	_, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err == nil {
		return true
	}
	s.mu.Lock()
	if s.notServed == nil {
		s.notServed = map[schema.GroupVersionKind]time.Time{}
	}
	s.notServed[gvk] = time.Now().Add(notServedTTL)
	s.mu.Unlock()
	return false
}

// datasetObject returns the object that stands for dataset name in ns: the
// Fluid Dataset if Fluid is installed and one exists, else the PVC; nil if neither.
func (s *scaler) datasetObject(ctx context.Context, ns, name string) (*metav1.PartialObjectMetadata, error) {
	for _, gvk := range []schema.GroupVersionKind{fluidDatasetGVK, pvcGVK} {
		if gvk == fluidDatasetGVK && !s.served(gvk) {
			continue
		}
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(gvk)
		err := s.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, m)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get %s %s/%s: %w", gvk.Kind, ns, name, err)
		}
		return m, nil
	}
	return nil, nil
}

// scaleOf reads the target's /scale: wanted and current replicas, and the
// Scale object read (for setReplicas).
func (s *scaler) scaleOf(ctx context.Context, t cacheTarget) (spec, status int32, read *unstructured.Unstructured, err error) {
	sc, err := s.getScale(ctx, t)
	if err != nil {
		return 0, 0, nil, err
	}
	sp, _, _ := unstructured.NestedInt64(sc.Object, "spec", "replicas")
	st, _, _ := unstructured.NestedInt64(sc.Object, "status", "replicas")
	return int32(sp), int32(st), sc, nil
}

func (s *scaler) getScale(ctx context.Context, t cacheTarget) (*unstructured.Unstructured, error) {
	sc := &unstructured.Unstructured{}
	sc.SetGroupVersionKind(scaleGVK)
	if err := s.client.SubResource("scale").Get(ctx, t.object(), sc); err != nil {
		return nil, fmt.Errorf("read /scale of %s in %s: %w", t, t.namespace, err)
	}
	return sc, nil
}

// setReplicas writes spec.replicas through /scale, retrying when the target's
// own controller wrote in between. It writes nothing when already there. read,
// if not nil, is a Scale just read, tried first instead of reading again.
func (s *scaler) setReplicas(ctx context.Context, t cacheTarget, replicas int32, read *unstructured.Unstructured) (changed bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc := read
		read = nil
		if sc == nil {
			var err error
			if sc, err = s.getScale(ctx, t); err != nil {
				return err
			}
		}
		cur, _, _ := unstructured.NestedInt64(sc.Object, "spec", "replicas")
		if int32(cur) == replicas {
			changed = false
			return nil
		}
		if err := unstructured.SetNestedField(sc.Object, int64(replicas), "spec", "replicas"); err != nil {
			return err
		}
		changed = true
		return s.client.SubResource("scale").Update(ctx, t.object(), client.WithSubResourceBody(sc))
	})
	if err != nil {
		return false, fmt.Errorf("scale %s in %s to %d: %w", t, t.namespace, replicas, err)
	}
	return changed, nil
}
