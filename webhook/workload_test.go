package webhook

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// mapOwners answers OwnerLookup from a map "Kind/name" → controller; the
// e2e test exercises the informer-backed lookup against a real API server.
type mapOwners map[string]*metav1.OwnerReference

func (m mapOwners) ControllerOf(_ context.Context, _, _, kind, name string) (*metav1.OwnerReference, bool, error) {
	if kind == "Job" && name == "broken" {
		return nil, false, errors.New("cache unavailable")
	}
	o, ok := m[kind+"/"+name]
	return o, ok, nil
}

func TestResolveWorkload(t *testing.T) {
	ctrl := true
	owned := func(apiVersion, kind, name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, Controller: &ctrl}}}}
	}
	lookup := mapOwners{
		"ReplicaSet/web-abc": {APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Controller: &ctrl},
		"ReplicaSet/bare":    nil,
		"Job/nightly-2937":   {APIVersion: "batch/v1", Kind: "CronJob", Name: "nightly", Controller: &ctrl},
		"Job/once":           nil,
	}
	ref := func(apiVersion, kind, name string) eddyv1alpha1.WorkloadReference {
		return eddyv1alpha1.WorkloadReference{APIVersion: apiVersion, Kind: kind, Name: name}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		lookup  OwnerLookup
		want    eddyv1alpha1.WorkloadReference
		wantErr bool
	}{
		{"ReplicaSet of a Deployment", owned("apps/v1", "ReplicaSet", "web-abc", nil), lookup, ref("apps/v1", "Deployment", "web"), false},
		{"bare ReplicaSet", owned("apps/v1", "ReplicaSet", "bare", nil), lookup, ref("apps/v1", "ReplicaSet", "bare"), false},
		{"ReplicaSet not yet cached: pod-template-hash", owned("apps/v1", "ReplicaSet", "api-7f9c", map[string]string{"pod-template-hash": "7f9c"}), lookup, ref("apps/v1", "Deployment", "api"), false},
		{"ReplicaSet unknown without hash", owned("apps/v1", "ReplicaSet", "api-7f9c", nil), nil, ref("apps/v1", "ReplicaSet", "api-7f9c"), false},
		{"Job of a CronJob", owned("batch/v1", "Job", "nightly-2937", nil), lookup, ref("batch/v1", "CronJob", "nightly"), false},
		{"bare Job", owned("batch/v1", "Job", "once", nil), lookup, ref("batch/v1", "Job", "once"), false},
		{"lookup error keeps the Job, with the error", owned("batch/v1", "Job", "broken", nil), lookup, ref("batch/v1", "Job", "broken"), true},
		{"StatefulSet", owned("apps/v1", "StatefulSet", "db", nil), lookup, ref("apps/v1", "StatefulSet", "db"), false},
		{"DaemonSet", owned("apps/v1", "DaemonSet", "agent", nil), lookup, ref("apps/v1", "DaemonSet", "agent"), false},
		{"custom training job", owned("kubeflow.org/v1", "PyTorchJob", "ft", nil), lookup, ref("kubeflow.org/v1", "PyTorchJob", "ft"), false},
		{"bare pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug"}}, lookup, ref("v1", "Pod", "debug"), false},
		{"bare pod with generateName", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "train-"}}, lookup, ref("v1", "Pod", "train"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveWorkload(context.Background(), tc.pod, "ml", tc.lookup)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantErr, err != nil, "error: %v", err)
		})
	}
}

func TestNativeSidecarsFromVersion(t *testing.T) {
	for _, tc := range []struct {
		major, minor string
		native, ok   bool
	}{
		{"1", "28", false, true},
		{"1", "29", true, true},
		{"1", "31+", true, true},
		{"2", "0", true, true},
		{"", "", false, false},
		{"0", "0", false, false},
		{"1", "x", false, false},
	} {
		native, ok := NativeSidecarsFromVersion(tc.major, tc.minor)
		assert.Equal(t, tc.native, native, "%s.%s", tc.major, tc.minor)
		assert.Equal(t, tc.ok, ok, "%s.%s", tc.major, tc.minor)
	}
}
