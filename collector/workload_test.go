package collector

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

func ctrl(apiVersion, kind, name string) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, Controller: &t}
}

// owners is an API server's view of owner references, keyed by kind/name.
type owners map[string][]metav1.OwnerReference

func (o owners) lookup(calls *int) OwnerLookup {
	return func(_ context.Context, apiVersion, kind, namespace, name string) ([]metav1.OwnerReference, error) {
		*calls++
		refs, ok := o[kind+"/"+name]
		if !ok {
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: kind}, name)
		}
		return refs, nil
	}
}

func TestWorkloadResolution(t *testing.T) {
	api := owners{
		"ReplicaSet/web-7d9f8b6c5d": {ctrl("apps/v1", "Deployment", "web")},
		"ReplicaSet/orphan-rs":      nil,
		"Job/nightly-29012340":      {ctrl("batch/v1", "CronJob", "nightly")},
		"Job/once":                  nil,
		"Job/trainer-0":             {ctrl("jobset.x-k8s.io/v1alpha2", "JobSet", "trainer")},
		"JobSet/trainer":            {ctrl("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm")},
		"TrainJob/llm":              nil,
	}
	pod := func(name string, lbls map[string]string, refs ...metav1.OwnerReference) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: name, Labels: lbls, OwnerReferences: refs}}
	}
	notController := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "x"}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want *accessv1.WorkloadRef
	}{
		{"deployment via replicaset", pod("web-7d9f8b6c5d-x2x9z", nil, ctrl("apps/v1", "ReplicaSet", "web-7d9f8b6c5d")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Deployment", ApiVersion: "apps/v1", Name: "web"}},
		{"replicaset without owner", pod("orphan-rs-abc", nil, ctrl("apps/v1", "ReplicaSet", "orphan-rs")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "ReplicaSet", ApiVersion: "apps/v1", Name: "orphan-rs"}},
		{"deleted replicaset: deployment from pod-template-hash", pod("api-5f6c7d8e9f-abcde", map[string]string{"pod-template-hash": "5f6c7d8e9f"}, ctrl("apps/v1", "ReplicaSet", "api-5f6c7d8e9f")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Deployment", ApiVersion: "apps/v1", Name: "api"}},
		{"cronjob via job", pod("nightly-29012340-q8k2m", nil, ctrl("batch/v1", "Job", "nightly-29012340")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "CronJob", ApiVersion: "batch/v1", Name: "nightly"}},
		{"bare job", pod("once-7xk2p", nil, ctrl("batch/v1", "Job", "once")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", ApiVersion: "batch/v1", Name: "once"}},
		{"statefulset", pod("db-0", nil, ctrl("apps/v1", "StatefulSet", "db")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "StatefulSet", ApiVersion: "apps/v1", Name: "db"}},
		{"daemonset", pod("agent-9x8z7", nil, ctrl("apps/v1", "DaemonSet", "agent")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "DaemonSet", ApiVersion: "apps/v1", Name: "agent"}},
		{"pytorchjob owner", pod("resnet-worker-0", map[string]string{kubeflowJobNameLabel: "resnet", kubeflowOperatorNameLabel: "pytorchjob-controller"}, ctrl("kubeflow.org/v1", "PyTorchJob", "resnet")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "PyTorchJob", ApiVersion: "kubeflow.org/v1", Name: "resnet"}},
		{"tfjob from labels only", pod("mnist-worker-1", map[string]string{kubeflowJobNameLabel: "mnist", kubeflowOperatorNameLabel: "tfjob-controller"}),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "TFJob", ApiVersion: "kubeflow.org/v1", Name: "mnist"}},
		{"mpijob from old operator label", pod("bert-launcher", map[string]string{kubeflowJobNameLabel: "bert", kubeflowOperatorNameLabel: "mpi-operator"}),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "MPIJob", ApiVersion: "kubeflow.org/v1", Name: "bert"}},
		{"custom resource chain", pod("trainer-0-0-abcde", nil, ctrl("batch/v1", "Job", "trainer-0")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "TrainJob", ApiVersion: "trainer.kubeflow.org/v1alpha1", Name: "llm"}},
		{"bare pod", pod("debug", nil),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Pod", ApiVersion: "v1", Name: "debug"}},
		{"non-controller owner only", pod("cm-owned", nil, notController),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Pod", ApiVersion: "v1", Name: "cm-owned"}},
		{"static pod owned by its node", pod("etcd-node1", nil, ctrl("v1", "Node", "node1")),
			&accessv1.WorkloadRef{Namespace: "ml", Kind: "Pod", ApiVersion: "v1", Name: "etcd-node1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			r := NewWorkloadResolver(api.lookup(&calls), 0)
			assert.Equal(t, tt.want, r.Resolve(context.Background(), tt.pod))
		})
	}
}

func TestWorkloadResolutionCachesOwners(t *testing.T) {
	calls := 0
	api := owners{"ReplicaSet/web-1": {ctrl("apps/v1", "Deployment", "web")}}
	r := NewWorkloadResolver(api.lookup(&calls), 0)
	for i := range 5 {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: fmt.Sprintf("web-1-%d", i),
			OwnerReferences: []metav1.OwnerReference{ctrl("apps/v1", "ReplicaSet", "web-1")}}}
		assert.Equal(t, "web", r.Resolve(context.Background(), p).Name)
	}
	assert.Equal(t, 1, calls, "owner lookups must be cached across pods of one ReplicaSet")
}

func TestWorkloadResolutionStopsOnOwnerCycle(t *testing.T) {
	calls := 0
	api := owners{
		"A/a": {ctrl("x/v1", "B", "b")},
		"B/b": {ctrl("x/v1", "A", "a")},
	}
	r := NewWorkloadResolver(api.lookup(&calls), 0)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "p", OwnerReferences: []metav1.OwnerReference{ctrl("x/v1", "A", "a")}}}
	got := r.Resolve(context.Background(), p)
	assert.Contains(t, []string{"A", "B"}, got.Kind)
	assert.LessOrEqual(t, calls, 2, "a cycle is walked at most once, then cached")
}
