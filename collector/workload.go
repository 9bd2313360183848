package collector

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// Labels the Kubeflow training operator puts on the pods of its jobs. They
// name the job when a pod's owner references do not (older operators, or
// owner references stripped by a mutating webhook).
const (
	kubeflowJobNameLabel      = "training.kubeflow.org/job-name"
	kubeflowOperatorNameLabel = "training.kubeflow.org/operator-name"
	kubeflowAPIVersion        = "kubeflow.org/v1"
	podTemplateHashLabel      = "pod-template-hash"
)

// kubeflowKinds maps the operator-name label's values (training-operator
// v1.x "<kind>-controller", and the per-framework operators before it) to the
// job kind.
var kubeflowKinds = map[string]string{
	"pytorchjob-controller": "PyTorchJob",
	"tfjob-controller":      "TFJob",
	"mpijob-controller":     "MPIJob",
	"xgboostjob-controller": "XGBoostJob",
	"paddlejob-controller":  "PaddleJob",
	"mxjob-controller":      "MXJob",
	"jaxjob-controller":     "JAXJob",
	"pytorch-operator":      "PyTorchJob",
	"tf-operator":           "TFJob",
	"mpi-operator":          "MPIJob",
	"xgboost-operator":      "XGBoostJob",
	"mxnet-operator":        "MXJob",
}

// topLevelKinds never have a controller of their own worth following, so
// resolution stops there without asking the API server.
var topLevelKinds = map[string]bool{
	"Deployment": true, "StatefulSet": true, "DaemonSet": true, "CronJob": true,
	"PyTorchJob": true, "TFJob": true, "MPIJob": true, "XGBoostJob": true,
	"PaddleJob": true, "MXJob": true, "JAXJob": true,
}

// OwnerLookup returns the owner references of the object with the given
// apiVersion, kind, namespace and name.
type OwnerLookup func(ctx context.Context, apiVersion, kind, namespace, name string) ([]metav1.OwnerReference, error)

// WorkloadResolver finds a pod's top-level workload by following controller
// owner references (ReplicaSet → Deployment, Job → CronJob, any custom
// resource chain), caching every owner it looked up. It is safe for
// concurrent use.
type WorkloadResolver struct {
	lookup   OwnerLookup
	ttl      time.Duration
	errorTTL time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[ownerKey]ownerEntry
}

type ownerKey struct{ apiVersion, kind, namespace, name string }

type ownerEntry struct {
	owners  []metav1.OwnerReference
	err     error
	expires time.Time
}

// maxOwnerDepth bounds the walk up the owner chain (a cycle or a very deep
// chain of custom resources must not stall attribution).
const maxOwnerDepth = 6

// NewWorkloadResolver returns a resolver that looks owners up with lookup
// and caches them for ttl (default 10 minutes; failed lookups for a tenth of
// that).
func NewWorkloadResolver(lookup OwnerLookup, ttl time.Duration) *WorkloadResolver {
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	return &WorkloadResolver{lookup: lookup, ttl: ttl, errorTTL: ttl / 10, now: time.Now, cache: map[ownerKey]ownerEntry{}}
}

// Resolve returns the pod's top-level workload. It never fails: when an
// owner cannot be looked up, the highest owner known is the answer, and a
// pod without a controller is its own workload.
func (r *WorkloadResolver) Resolve(ctx context.Context, pod *corev1.Pod) *accessv1.WorkloadRef {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind == "Node" {
		// Static pods are controlled by their Node: the pod is the workload.
		if w := kubeflowFromLabels(pod); w != nil {
			return w
		}
		return &accessv1.WorkloadRef{Namespace: pod.Namespace, Kind: "Pod", ApiVersion: "v1", Name: pod.Name}
	}
	cur := *ref
	for range maxOwnerDepth {
		if topLevelKinds[cur.Kind] {
			break
		}
		owners, err := r.owners(ctx, cur.APIVersion, cur.Kind, pod.Namespace, cur.Name)
		if err != nil {
			if cur.Kind == "ReplicaSet" {
				if d, ok := deploymentFromHash(pod, cur.Name); ok {
					cur = d
				}
			}
			break
		}
		parent := controllerOf(owners)
		if parent == nil {
			break
		}
		cur = *parent
	}
	return &accessv1.WorkloadRef{Namespace: pod.Namespace, Kind: cur.Kind, ApiVersion: cur.APIVersion, Name: cur.Name}
}

func (r *WorkloadResolver) owners(ctx context.Context, apiVersion, kind, namespace, name string) ([]metav1.OwnerReference, error) {
	k := ownerKey{apiVersion, kind, namespace, name}
	now := r.now()
	r.mu.Lock()
	if e, ok := r.cache[k]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.owners, e.err
	}
	r.mu.Unlock()
	owners, err := r.lookup(ctx, apiVersion, kind, namespace, name)
	ttl := r.ttl
	if err != nil {
		ttl = r.errorTTL
	}
	r.mu.Lock()
	r.cache[k] = ownerEntry{owners: owners, err: err, expires: now.Add(ttl)}
	r.mu.Unlock()
	return owners, err
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	return nil
}

// deploymentFromHash names a ReplicaSet's Deployment without the API: the
// Deployment controller names its ReplicaSets "<deployment>-<pod-template-hash>".
func deploymentFromHash(pod *corev1.Pod, rsName string) (metav1.OwnerReference, bool) {
	hash := pod.Labels[podTemplateHashLabel]
	if hash == "" || !strings.HasSuffix(rsName, "-"+hash) {
		return metav1.OwnerReference{}, false
	}
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: strings.TrimSuffix(rsName, "-"+hash)}, true
}

func kubeflowFromLabels(pod *corev1.Pod) *accessv1.WorkloadRef {
	job := pod.Labels[kubeflowJobNameLabel]
	kind := kubeflowKinds[pod.Labels[kubeflowOperatorNameLabel]]
	if job == "" || kind == "" {
		return nil
	}
	return &accessv1.WorkloadRef{Namespace: pod.Namespace, Kind: kind, ApiVersion: kubeflowAPIVersion, Name: job}
}

// MetadataOwnerLookup looks owners up as object metadata (any kind, custom
// resources included), mapping kinds to resources with the API server's
// discovery information.
func MetadataOwnerLookup(client metadata.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper) OwnerLookup {
	return func(ctx context.Context, apiVersion, kind, namespace, name string) ([]metav1.OwnerReference, error) {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil {
			return nil, fmt.Errorf("owner %s %s/%s: apiVersion %q: %w", kind, namespace, name, apiVersion, err)
		}
		m, err := mapper.RESTMapping(gv.WithKind(kind).GroupKind(), gv.Version)
		if err != nil {
			// A kind installed after discovery was cached.
			mapper.Reset()
			m, err = mapper.RESTMapping(gv.WithKind(kind).GroupKind(), gv.Version)
			if err != nil {
				return nil, fmt.Errorf("owner %s %s/%s: map kind to resource: %w", kind, namespace, name, err)
			}
		}
		obj, err := client.Resource(m.Resource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get owner %s %s/%s: %w", kind, namespace, name, err)
		}
		return obj.OwnerReferences, nil
	}
}
