package workload

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// objects is a Lookup over a fixed set of objects. The rules are unit-tested
// on it; the contract test (contract_test.go) runs the same fixtures through
// the collector's and the webhook's real lookups against a real API server.
type objects map[string]*metav1.ObjectMeta

func (o objects) Get(_ context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
	if m, ok := o[apiVersion+"/"+kind+"/"+namespace+"/"+name]; ok {
		return m, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: kind}, name)
}

func ctrlRef(apiVersion, kind, name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: "u", Controller: ptr.To(true)}}
}

func TestTrimRunSuffix(t *testing.T) {
	for in, want := range map[string]string{
		"train-1": "train", "train-20261206-1": "train", "train-2026-12-06": "train", "train.7": "train",
		"train-20261206t120000z": "train", "train-20261206t1200": "train", "llama-7b-ft-3": "llama-7b-ft",
		"train": "train", "resnet50": "resnet50", "train-v2": "train-v2", "2024": "2024", "-1": "-1",
		"train-x7k2p": "train-x7k2p", "train-t": "train-t", "train-12t": "train-12t",
	} {
		assert.Equal(t, want, TrimRunSuffix(in), in)
	}
}

func TestResolve(t *testing.T) {
	ns := "ml"
	objs := objects{
		"apps/v1/ReplicaSet/ml/web-7d9f":                {Name: "web-7d9f", OwnerReferences: ctrlRef("apps/v1", "Deployment", "web")},
		"apps/v1/Deployment/ml/web":                     {Name: "web"},
		"batch/v1/Job/ml/nightly-29000":                 {Name: "nightly-29000", OwnerReferences: ctrlRef("batch/v1", "CronJob", "nightly")},
		"batch/v1/CronJob/ml/nightly":                   {Name: "nightly"},
		"batch/v1/Job/ml/train-2":                       {Name: "train-2"},
		"batch/v1/Job/ml/train-x7k2p":                   {Name: "train-x7k2p", GenerateName: "train-"},
		"batch/v1/Job/ml/resnet":                        {Name: "resnet", Labels: map[string]string{v1.WorkloadLabel: "vision"}},
		"batch/v1/Job/ml/llm-node-0":                    {Name: "llm-node-0", OwnerReferences: ctrlRef("jobset.x-k8s.io/v1alpha2", "JobSet", "llm")},
		"jobset.x-k8s.io/v1alpha2/JobSet/ml/llm":        {Name: "llm", OwnerReferences: ctrlRef("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm")},
		"trainer.kubeflow.org/v1alpha1/TrainJob/ml/llm": {Name: "llm"},
		"apps/v1/Deployment/ml/labelled":                {Name: "labelled", Labels: map[string]string{v1.WorkloadLabel: "Not_A_Label"}},
	}
	r := NewResolver(objs, Options{})
	pod := func(name string, owners []metav1.OwnerReference, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: owners, Labels: labels}}
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want v1.WorkloadReference
		obj  string
	}{
		{"deployment", pod("web-7d9f-abcde", ctrlRef("apps/v1", "ReplicaSet", "web-7d9f"), nil),
			v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Rule: v1.RuleObject}, "web"},
		{"cronjob", pod("nightly-29000-q", ctrlRef("batch/v1", "Job", "nightly-29000"), nil),
			v1.WorkloadReference{APIVersion: "batch/v1", Kind: "CronJob", Name: "nightly", Rule: v1.RuleObject}, "nightly"},
		{"job run number", pod("train-2-q", ctrlRef("batch/v1", "Job", "train-2"), nil),
			v1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train", Rule: v1.RuleNameSuffix}, "train-2"},
		{"job generateName", pod("train-x7k2p-q", ctrlRef("batch/v1", "Job", "train-x7k2p"), nil),
			v1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train", Rule: v1.RuleGenerateName}, "train-x7k2p"},
		{"job label", pod("resnet-q", ctrlRef("batch/v1", "Job", "resnet"), nil),
			v1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "vision", Rule: v1.RuleLabel}, "resnet"},
		{"pod label when the owner has none", pod("train-2-q", ctrlRef("batch/v1", "Job", "train-2"), map[string]string{v1.WorkloadLabel: "exp-a"}),
			v1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "exp-a", Rule: v1.RuleLabel}, "train-2"},
		{"invalid label ignored", pod("labelled-q", ctrlRef("apps/v1", "Deployment", "labelled"), nil),
			v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "labelled", Rule: v1.RuleObject}, "labelled"},
		{"jobset under trainjob", pod("llm-node-0-0-q", ctrlRef("batch/v1", "Job", "llm-node-0"), nil),
			v1.WorkloadReference{APIVersion: "trainer.kubeflow.org/v1alpha1", Kind: "TrainJob", Name: "llm", Rule: v1.RuleObject}, "llm"},
		{"kubeflow labels", pod("pt-3-worker-0", nil, map[string]string{KubeflowJobNameLabel: "pt-3", KubeflowOperatorNameLabel: "pytorchjob-controller"}),
			v1.WorkloadReference{APIVersion: "kubeflow.org/v1", Kind: "PyTorchJob", Name: "pt", Rule: v1.RuleNameSuffix}, "pt-3"},
		{"kubeflow labels, no suffix", pod("pt-worker-0", nil, map[string]string{KubeflowJobNameLabel: "pt", KubeflowOperatorNameLabel: "pytorchjob-controller"}),
			v1.WorkloadReference{APIVersion: "kubeflow.org/v1", Kind: "PyTorchJob", Name: "pt", Rule: v1.RuleKubeflowLabels}, "pt"},
		{"bare pod", pod("debug", nil, nil), v1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "debug", Rule: v1.RuleObject}, "debug"},
		{"bare pod run number", pod("worker-0", nil, nil), v1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "worker", Rule: v1.RuleNameSuffix}, "worker-0"},
		{"static pod", pod("etcd-node1", ctrlRef("v1", "Node", "node1"), nil), v1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "etcd-node1", Rule: v1.RuleObject}, "etcd-node1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := r.Resolve(context.Background(), c.pod)
			require.NoError(t, err)
			assert.Equal(t, c.want, id.Ref)
			assert.Equal(t, c.obj, id.Object)
			assert.Equal(t, ns, id.Namespace)
		})
	}
}

// At admission a pod created with generateName has no name yet; the
// collector later sees it named. Both must find the same workload.
func TestBarePodAtAdmissionAndLater(t *testing.T) {
	r := NewResolver(objects{}, Options{})
	admitted, err := r.Resolve(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", GenerateName: "train-1-"}})
	require.NoError(t, err)
	running, err := r.Resolve(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", GenerateName: "train-1-", Name: "train-1-x7k2p"}})
	require.NoError(t, err)
	assert.Equal(t, admitted.Key(), running.Key())
	assert.Equal(t, "train-1", running.Ref.Name)
	assert.Equal(t, v1.RuleGenerateName, running.Ref.Rule)
}

func TestLookupFailures(t *testing.T) {
	failing := LookupFunc(func(context.Context, string, string, string, string) (*metav1.ObjectMeta, error) {
		return nil, errors.New("connection refused")
	})
	now := time.Unix(0, 0)
	calls := 0
	counting := LookupFunc(func(ctx context.Context, ns, av, k, n string) (*metav1.ObjectMeta, error) {
		calls++
		return failing(ctx, ns, av, k, n)
	})
	r := NewResolver(counting, Options{TTL: time.Minute, Now: func() time.Time { return now }})
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "web-7d9f-abcde", Labels: map[string]string{"pod-template-hash": "7d9f"},
		OwnerReferences: ctrlRef("apps/v1", "ReplicaSet", "web-7d9f")}}
	id, err := r.Resolve(context.Background(), p)
	assert.ErrorContains(t, err, "connection refused")
	assert.Equal(t, v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Rule: v1.RuleObject}, id.Ref, "the ReplicaSet's name gives its Deployment")
	_, _ = r.Resolve(context.Background(), p)
	assert.Equal(t, 1, calls, "a failure is cached for a while")
	now = now.Add(7 * time.Second)
	_, _ = r.Resolve(context.Background(), p)
	assert.Equal(t, 2, calls, "and retried after a tenth of the TTL")

	j := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "x", OwnerReferences: ctrlRef("batch/v1", "Job", "train-4")}}
	id, err = r.Resolve(context.Background(), j)
	assert.Error(t, err)
	assert.Equal(t, "batch/Job/train", id.Ref.Key(), "the highest owner known, named by the rules")
}

func TestOwnerCycleIsBounded(t *testing.T) {
	objs := objects{
		"x.io/v1/A/ml/a": {Name: "a", OwnerReferences: ctrlRef("x.io/v1", "B", "b")},
		"x.io/v1/B/ml/b": {Name: "b", OwnerReferences: ctrlRef("x.io/v1", "A", "a")},
	}
	_, err := NewResolver(objs, Options{}).Resolve(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "p", OwnerReferences: ctrlRef("x.io/v1", "A", "a")}})
	assert.ErrorContains(t, err, "deeper than")
}

func TestCacheIsBounded(t *testing.T) {
	objs := objects{}
	r := NewResolver(objs, Options{MaxEntries: 100})
	for i := range 1000 {
		_, _ = r.Resolve(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "p", OwnerReferences: ctrlRef("batch/v1", "Job", "j"+string(rune('a'+i%26))+string(rune('a'+i/26)))}})
	}
	assert.LessOrEqual(t, len(r.cache), 100)
}
