package collector

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/workload"
)

// Learner decides, once per pod when the pod index first sees it (before
// its containers run), whether the pod is observed: the runs of a workload
// whose profiles rest are not, so that the collector's hooks cost them
// nothing. The decision holds for the pod's life, so a run is observed
// whole or not at all.
type Learner interface {
	Learning(ctx context.Context, pod *corev1.Pod) bool
}

// ProfileLearner is the Learner of a node's collector: a pod is observed
// unless every AccessProfile of its workload (one per dataset it read)
// rests, by v1alpha1.Learning, and each PersistentVolumeClaim it mounts is
// the dataset of one of them. A workload without a profile, a pod whose
// workload could not be resolved, and any pod before the profiles are
// listed are observed: what is not known is learned.
type ProfileLearner struct {
	workloads *workload.Resolver
	informer  cache.SharedIndexInformer
	log       logr.Logger
	now       func() time.Time
}

// profileResource is the AccessProfiles' API resource.
var profileResource = eddyv1alpha1.GroupVersion.WithResource("accessprofiles")

// indexProfileWorkload indexes profiles by "<namespace>/<workload key>",
// as workload.Identity.Key spells a pod's workload.
const indexProfileWorkload = "workload"

// NewProfileLearner watches the AccessProfiles labelled v1alpha1.RestingLabel
// through dyn (a profile without it learns), keeping of each
// only what the decision reads (its workload and its Learning condition and
// nextRefresh: checkpoints and features are dropped as they arrive), and
// resolves pods with workloads, the resolver that attributes reads. Call
// Run to start it.
func NewProfileLearner(dyn dynamic.Interface, workloads *workload.Resolver, log logr.Logger) (*ProfileLearner, error) {
	// Only resting profiles: the others are written at every flush, and
	// every node receiving each write would not scale.
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = eddyv1alpha1.RestingLabel + "=true"
	})
	inf := f.ForResource(profileResource).Informer()
	if err := inf.SetTransform(slimProfile); err != nil {
		return nil, fmt.Errorf("profile learner: %w", err)
	}
	if err := inf.AddIndexers(cache.Indexers{indexProfileWorkload: func(obj any) ([]string, error) {
		p, ok := obj.(*eddyv1alpha1.AccessProfile)
		if !ok {
			return nil, nil
		}
		return []string{p.Namespace + "/" + p.Spec.WorkloadRef.Key()}, nil
	}}); err != nil {
		return nil, fmt.Errorf("profile learner: %w", err)
	}
	return &ProfileLearner{workloads: workloads, informer: inf, log: log, now: time.Now}, nil
}

// slimProfile turns a watched AccessProfile into a typed one holding only
// its metadata's name and namespace, spec, Learning condition and
// nextRefresh.
func slimProfile(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil // a tombstone: the informer handles it
	}
	var p eddyv1alpha1.AccessProfile
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return nil, fmt.Errorf("decode AccessProfile %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	slim := &eddyv1alpha1.AccessProfile{Spec: p.Spec}
	slim.Name, slim.Namespace, slim.ResourceVersion = p.Name, p.Namespace, p.ResourceVersion
	slim.Status.NextRefresh = p.Status.NextRefresh
	for _, c := range p.Status.Conditions {
		if c.Type == eddyv1alpha1.ConditionLearning {
			slim.Status.Conditions = append(slim.Status.Conditions, c)
		}
	}
	return slim, nil
}

// Run watches the profiles until ctx ends.
func (l *ProfileLearner) Run(ctx context.Context) { l.informer.Run(ctx.Done()) }

// HasSynced reports whether the profiles were listed: until then every pod
// is observed.
func (l *ProfileLearner) HasSynced() bool { return l.informer.HasSynced() }

// Learning implements Learner.
func (l *ProfileLearner) Learning(ctx context.Context, pod *corev1.Pod) bool {
	if !l.informer.HasSynced() || len(appliedRecommendations(pod)) > 0 {
		// A pod the webhook applied recommendations to is a run they are
		// verified on, whatever the profile says yet.
		return true
	}
	id, err := l.workloads.Resolve(ctx, pod)
	if err != nil {
		l.log.V(1).Info("observing: workload not resolved", "pod", pod.Namespace+"/"+pod.Name, "error", err.Error())
		return true
	}
	objs, err := l.informer.GetIndexer().ByIndex(indexProfileWorkload, id.Key())
	if err != nil || len(objs) == 0 {
		return true
	}
	now := l.now()
	resting := map[string]bool{}
	for _, o := range objs {
		p, ok := o.(*eddyv1alpha1.AccessProfile)
		if !ok || eddyv1alpha1.Learning(p, now) {
			return true
		}
		resting[p.Spec.Dataset.VolumeKey()] = true
	}
	// A claim the workload has no profile of is data it has not read yet:
	// learned, though every profile it has rests. (Other volumes — config,
	// secrets, scratch — would keep every workload learning for ever.)
	for i := range pod.Spec.Volumes {
		claim := claimName(pod, &pod.Spec.Volumes[i])
		if claim != "" && !resting[eddyv1alpha1.DatasetReference{Name: claim}.VolumeKey()] {
			l.log.V(1).Info("observing: a dataset the workload has no profile of", "pod", pod.Namespace+"/"+pod.Name, "workload", id.Key(), "claim", claim)
			return true
		}
	}
	l.log.V(1).Info("not observing: the workload rests", "pod", pod.Namespace+"/"+pod.Name, "workload", id.Key())
	return false
}
