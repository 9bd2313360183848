// Package workload resolves a pod to the workload eddy learns from and acts
// on. It is the only code that does: the collector (which workload read a
// file), the webhook (which recommendations apply to a new pod), the analyzer
// (what its profiles and recommendations name) and the operator all go
// through it, so they can never disagree. Each brings its own Lookup: the
// collector reads object metadata from the API server, the webhook from its
// informer cache first.
//
// A pod's workload is found in two steps.
//
// The top-level object: the pod's controller, its controller, and so on up to
// an object that has none (ReplicaSet → Deployment or Argo Rollout,
// Job → CronJob, Job → JobSet → TrainJob, StatefulSet → LeaderWorkerSet, a
// LeaderWorkerSet worker → its leader pod → ...). A pod without a controller
// is its own top-level object, unless the Kubeflow training operator's labels
// name its job. When an owner cannot be read, the highest owner known is the
// answer (a ReplicaSet named "<deployment>-<pod-template-hash>" counts as its
// Deployment), and the lookup's error is returned beside it.
//
// The name, by the first rule that holds (Identity.Ref.Rule says which):
//
//   - Label: the eddy.io/workload label of the top-level object, else of the
//     pod, when it is a valid DNS label. It joins differently named runs and
//     splits same-named ones, for any kind.
//   - For runs — Jobs, JobSets, TrainJobs, Kubeflow training jobs, Argo
//     Workflows, RayJobs, Volcano Jobs and bare pods (BatchKinds) — which a
//     person creates anew for each run under a new name:
//   - GenerateName: an object created with metadata.generateName belongs to
//     the family named by that prefix (train-x7k2p → train).
//   - NameSuffix: the name without its trailing run numbers, dates and times
//     (train-2, train-20261206-1, train-2026-12-06t1200 → train).
//   - KubeflowLabels: an ownerless pod whose Kubeflow labels name its job.
//   - Object: the object's own name. Long-lived controllers (Deployment,
//     StatefulSet, DaemonSet, CronJob, Rollout, LeaderWorkerSet, ...) are
//     always named so unless labelled; their runs are their pods.
//
// Families never cross namespaces or kinds: the identity is the namespace,
// the API group, the kind and the name.
package workload

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Identity is a pod's workload.
type Identity struct {
	// Namespace of the pod and its workload.
	Namespace string
	// Ref names the workload: the top-level object's API version and kind,
	// the workload's name and the rule that formed it.
	Ref v1.WorkloadReference
	// Object is the top-level object's own name (for a run family, this
	// run's: train-2 of family train).
	Object string
}

// Key is "<namespace>/<group>/<Kind>/<name>": equal exactly for pods of one
// workload.
func (i Identity) Key() string { return i.Namespace + "/" + i.Ref.Key() }

// Lookup reads an object's metadata (owner references, labels,
// generateName). A missing object is an error for which
// apierrors.IsNotFound holds.
type Lookup interface {
	Get(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error)
}

// LookupFunc adapts a function to Lookup.
type LookupFunc func(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error)

// Get calls f.
func (f LookupFunc) Get(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
	return f(ctx, namespace, apiVersion, kind, name)
}

// Labels the Kubeflow training operator puts on the pods of its jobs. They
// name the job when a pod's owner references do not (older operators, or
// owner references stripped by a mutating webhook).
const (
	KubeflowJobNameLabel      = "training.kubeflow.org/job-name"
	KubeflowOperatorNameLabel = "training.kubeflow.org/operator-name"
	kubeflowAPIVersion        = "kubeflow.org/v1"
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

// BatchKinds are the top-level kinds whose objects are runs: a person creates
// a new one, under a new name, each time. Their workload is the run family
// (see the package doc). Keys are "<group>/<Kind>" ("" is the core group).
var BatchKinds = map[string]bool{
	"/Pod":                          true,
	"batch/Job":                     true,
	"jobset.x-k8s.io/JobSet":        true,
	"trainer.kubeflow.org/TrainJob": true,
	"kubeflow.org/PyTorchJob":       true,
	"kubeflow.org/TFJob":            true,
	"kubeflow.org/MPIJob":           true,
	"kubeflow.org/XGBoostJob":       true,
	"kubeflow.org/PaddleJob":        true,
	"kubeflow.org/JAXJob":           true,
	"kubeflow.org/MXJob":            true,
	"argoproj.io/Workflow":          true,
	"ray.io/RayJob":                 true,
	"batch.volcano.sh/Job":          true,
}

// OwnerResources are the resources (by API group) of the controllers whose
// objects the resolver reads on a pod's owner chain. A component that
// resolves pods needs get on each; an owner of another kind is not read (a
// Forbidden lookup), and resolution stops at it.
var OwnerResources = map[string][]string{
	"":                         {"pods"},
	"apps":                     {"replicasets", "deployments", "statefulsets", "daemonsets"},
	"batch":                    {"jobs", "cronjobs"},
	"jobset.x-k8s.io":          {"jobsets"},
	"trainer.kubeflow.org":     {"trainjobs"},
	"kubeflow.org":             {"pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs", "mxjobs"},
	"argoproj.io":              {"rollouts", "workflows"},
	"leaderworkerset.x-k8s.io": {"leaderworkersets"},
	"ray.io":                   {"rayjobs", "rayclusters"},
	"batch.volcano.sh":         {"jobs"},
}

// MaxOwnerDepth bounds the walk up the owner chain, so that a cycle or a very
// deep chain of custom resources cannot stall resolution.
const MaxOwnerDepth = 8

// Options configure a Resolver; zero values are the defaults.
type Options struct {
	// TTL is how long an object's metadata is reused (default 10 minutes;
	// failed lookups are retried after a tenth of it).
	TTL time.Duration
	// MaxEntries bounds the metadata kept (default 65536).
	MaxEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Resolver resolves pods to workloads, caching the metadata it looked up.
// It is safe for concurrent use.
type Resolver struct {
	lookup Lookup
	opts   Options

	mu    sync.Mutex
	cache map[objectKey]entry
}

type objectKey struct{ namespace, apiVersion, kind, name string }

type entry struct {
	meta    *metav1.ObjectMeta
	err     error
	expires time.Time
}

// NewResolver returns a Resolver over lookup.
func NewResolver(lookup Lookup, opts Options) *Resolver {
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Minute
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1 << 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Resolver{lookup: lookup, opts: opts, cache: map[objectKey]entry{}}
}

// Resolve returns the pod's workload (see the package doc). It always
// returns an identity; the error, when not nil, says which owner could not
// be read, and the identity is then the best known.
func (r *Resolver) Resolve(ctx context.Context, pod *corev1.Pod) (Identity, error) {
	top, topMeta, err := r.topLevel(ctx, pod)
	id := Identity{Namespace: pod.Namespace, Ref: v1.WorkloadReference{APIVersion: top.APIVersion, Kind: top.Kind}, Object: top.Name}
	id.Ref.Name, id.Ref.Rule = name(top, topMeta, pod)
	return id, err
}

// owner is an object in a pod's owner chain.
type owner struct{ APIVersion, Kind, Name string }

func (o owner) groupKind() string {
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil {
		return o.APIVersion + "/" + o.Kind
	}
	return gv.Group + "/" + o.Kind
}

// topLevel walks the owner chain; it returns the top-level object and its
// metadata (nil when it could not be read).
func (r *Resolver) topLevel(ctx context.Context, pod *corev1.Pod) (owner, *metav1.ObjectMeta, error) {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || (ref.Kind == "Node" && ref.APIVersion == "v1") {
		// Static pods are controlled by their Node: the pod is the workload.
		if kind := kubeflowKinds[pod.Labels[KubeflowOperatorNameLabel]]; kind != "" && pod.Labels[KubeflowJobNameLabel] != "" {
			return owner{kubeflowAPIVersion, kind, pod.Labels[KubeflowJobNameLabel]}, nil, nil
		}
		name := pod.Name
		if name == "" {
			// At admission a controller's pod may have only generateName.
			name = strings.TrimRight(pod.GenerateName, "-.")
		}
		return owner{"v1", "Pod", name}, &pod.ObjectMeta, nil
	}
	cur := owner{ref.APIVersion, ref.Kind, ref.Name}
	for range MaxOwnerDepth {
		meta, err := r.get(ctx, pod.Namespace, cur)
		if err != nil {
			if d, ok := deploymentFromHash(pod, cur); ok {
				return d, nil, fmt.Errorf("read %s %s/%s: %w", cur.Kind, pod.Namespace, cur.Name, err)
			}
			return cur, nil, fmt.Errorf("read %s %s/%s: %w", cur.Kind, pod.Namespace, cur.Name, err)
		}
		parent := metav1.GetControllerOfNoCopy(&metav1.ObjectMeta{OwnerReferences: meta.OwnerReferences})
		if parent == nil {
			return cur, meta, nil
		}
		cur = owner{parent.APIVersion, parent.Kind, parent.Name}
	}
	return cur, nil, fmt.Errorf("owner chain of pod %s/%s is deeper than %d", pod.Namespace, pod.Name, MaxOwnerDepth)
}

// deploymentFromHash names a ReplicaSet's Deployment without the API: the
// Deployment controller names its ReplicaSets "<deployment>-<pod-template-hash>".
func deploymentFromHash(pod *corev1.Pod, rs owner) (owner, bool) {
	hash := pod.Labels["pod-template-hash"]
	if rs.Kind != "ReplicaSet" || rs.groupKind() != "apps/ReplicaSet" || hash == "" || !strings.HasSuffix(rs.Name, "-"+hash) {
		return owner{}, false
	}
	return owner{"apps/v1", "Deployment", strings.TrimSuffix(rs.Name, "-"+hash)}, true
}

// name applies the naming rules to the top-level object.
func name(top owner, meta *metav1.ObjectMeta, pod *corev1.Pod) (string, v1.WorkloadRule) {
	if meta != nil && validLabel(meta.Labels[v1.WorkloadLabel]) {
		return meta.Labels[v1.WorkloadLabel], v1.RuleLabel
	}
	if validLabel(pod.Labels[v1.WorkloadLabel]) {
		return pod.Labels[v1.WorkloadLabel], v1.RuleLabel
	}
	if !BatchKinds[top.groupKind()] {
		return top.Name, v1.RuleObject
	}
	// At admission a pod created with generateName has no name yet.
	if meta != nil && meta.GenerateName != "" && (meta.Name == "" || strings.HasPrefix(meta.Name, meta.GenerateName)) {
		if family := strings.TrimRight(meta.GenerateName, "-."); family != "" {
			return family, v1.RuleGenerateName
		}
	}
	if family := TrimRunSuffix(top.Name); family != top.Name {
		return family, v1.RuleNameSuffix
	}
	if meta == nil && top.Kind != "Pod" && pod.Labels[KubeflowJobNameLabel] == top.Name && metav1.GetControllerOfNoCopy(pod) == nil {
		return top.Name, v1.RuleKubeflowLabels
	}
	return top.Name, v1.RuleObject
}

// TrimRunSuffix removes the trailing segments (separated by '-' or '.') of a
// run's name that are run numbers, dates or times — all digits, or digits
// with a 't' between date and time and an optional 'z' — and never the whole
// name: train-3 → train, train-20261206-1 → train,
// train-20261206t120000z → train, resnet50 → resnet50, 2024 → 2024.
func TrimRunSuffix(name string) string {
	out := name
	for {
		i := strings.LastIndexAny(out, "-.")
		if i <= 0 || !runNumber(out[i+1:]) {
			return out
		}
		out = out[:i]
	}
}

func runNumber(seg string) bool {
	if seg == "" {
		return false
	}
	date, clock, hasClock := strings.Cut(seg, "t")
	if hasClock {
		clock = strings.TrimSuffix(clock, "z")
		return allDigits(date) && allDigits(clock) && clock != ""
	}
	return allDigits(seg)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func validLabel(v string) bool {
	return v != "" && len(validation.IsDNS1123Label(v)) == 0
}

// get returns an owner's metadata, from the cache while fresh.
func (r *Resolver) get(ctx context.Context, namespace string, o owner) (*metav1.ObjectMeta, error) {
	k := objectKey{namespace, o.APIVersion, o.Kind, o.Name}
	now := r.opts.Now()
	r.mu.Lock()
	if e, ok := r.cache[k]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.meta, e.err
	}
	r.mu.Unlock()
	meta, err := r.lookup.Get(ctx, namespace, o.APIVersion, o.Kind, o.Name)
	if err == nil && meta == nil {
		err = apierrors.NewNotFound(schema.GroupResource{Resource: o.Kind}, o.Name)
	}
	ttl := r.opts.TTL
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		ttl /= 10
		meta = nil
	} else {
		// Keep only what resolution reads.
		meta = &metav1.ObjectMeta{Name: meta.Name, GenerateName: meta.GenerateName, Labels: keep(meta.Labels), OwnerReferences: meta.OwnerReferences}
	}
	r.mu.Lock()
	if len(r.cache) >= r.opts.MaxEntries {
		r.evictLocked(now)
	}
	r.cache[k] = entry{meta: meta, err: err, expires: now.Add(ttl)}
	r.mu.Unlock()
	return meta, err
}

// keep is the labels resolution reads.
func keep(labels map[string]string) map[string]string {
	if v, ok := labels[v1.WorkloadLabel]; ok {
		return map[string]string{v1.WorkloadLabel: v}
	}
	return nil
}

// evictLocked drops expired entries, and half of the rest when none had
// expired: the cache stays bounded whatever the churn of owners.
func (r *Resolver) evictLocked(now time.Time) {
	n := len(r.cache)
	for k, e := range r.cache {
		if !now.Before(e.expires) {
			delete(r.cache, k)
		}
	}
	if len(r.cache) < n {
		return
	}
	i := 0
	for k := range r.cache {
		if i%2 == 0 {
			delete(r.cache, k)
		}
		i++
	}
}

// Chain returns a Lookup that asks first and, when first fails for any
// reason (an informer that has not caught up, a kind it does not cache),
// then. The error is then's.
func Chain(first, then Lookup) Lookup {
	return LookupFunc(func(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
		if m, err := first.Get(ctx, namespace, apiVersion, kind, name); err == nil && m != nil {
			return m, nil
		}
		return then.Get(ctx, namespace, apiVersion, kind, name)
	})
}
