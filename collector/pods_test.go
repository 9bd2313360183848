package collector

import (
	"strings"
	"testing"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestOptIn(t *testing.T) {
	ns := func(l map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: l}}
	}
	pod := func(l map[string]string) *corev1.Pod { return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: l}} }
	assert.True(t, NamespaceOptedIn(ns(map[string]string{eddyv1alpha1.AutotuneLabel: "enabled"})))
	assert.False(t, NamespaceOptedIn(ns(map[string]string{eddyv1alpha1.AutotuneLabel: "Enabled"})))
	assert.False(t, NamespaceOptedIn(ns(nil)))
	assert.True(t, PodOptedIn(pod(nil)))
	assert.True(t, PodOptedIn(pod(map[string]string{eddyv1alpha1.AutotuneLabel: "enabled"})))
	assert.False(t, PodOptedIn(pod(map[string]string{eddyv1alpha1.AutotuneLabel: "disabled"})))
}

func TestContainerIDs(t *testing.T) {
	p := &corev1.Pod{Status: corev1.PodStatus{
		InitContainerStatuses:      []corev1.ContainerStatus{{Name: "init", ContainerID: "containerd://aaa"}},
		ContainerStatuses:          []corev1.ContainerStatus{{Name: "main", ContainerID: "cri-o://bbb"}, {Name: "waiting"}},
		EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debug", ContainerID: "docker://ccc"}},
	}}
	assert.Equal(t, []ContainerRef{{"init", "aaa"}, {"main", "bbb"}, {"debug", "ccc"}}, ContainerIDs(p))

	p.Status.InitContainerStatuses[0].State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0}
	assert.Equal(t, []ContainerRef{{"main", "bbb"}, {"debug", "ccc"}}, ContainerIDs(p), "a finished init container has no cgroup")
	p.Status.Phase = corev1.PodSucceeded
	assert.Empty(t, ContainerIDs(p))
}

func TestContainerIDsLeaveOutEddysOwnContainers(t *testing.T) {
	p := &corev1.Pod{}
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{
		{Name: "eddy-sdk-install", ContainerID: "containerd://aaa"},
		{Name: "eddy-prefetch", ContainerID: "containerd://bbb"},
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "trainer", ContainerID: "containerd://ccc"}}
	assert.Len(t, ContainerIDs(p), 3, "without the injected annotation the names are the user's own")
	p.Annotations = map[string]string{"eddy.io/injected": "prefetch,sdk"}
	assert.Equal(t, []ContainerRef{{"trainer", "ccc"}}, ContainerIDs(p), "the prefetcher's reads are not the workload's")
}

func TestPodStartingUntilStatusNamesEveryContainer(t *testing.T) {
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "app"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	if !podStarting(pod) {
		t.Fatal("a pending pod without container statuses is not starting")
	}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init", ContainerID: "containerd://" + strings.Repeat("a", 64)}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app"}}
	if !podStarting(pod) {
		t.Fatal("a pod whose app container has no id yet is not starting")
	}
	pod.Status.ContainerStatuses[0].ContainerID = "containerd://" + strings.Repeat("b", 64)
	pod.Status.Phase = corev1.PodRunning
	if podStarting(pod) {
		t.Fatal("a pod whose every container is named is still starting")
	}
	if ids := statusContainerIDs(pod); !ids[strings.Repeat("a", 64)] || !ids[strings.Repeat("b", 64)] || len(ids) != 2 {
		t.Fatalf("statusContainerIDs = %v", ids)
	}
	pod.Status.ContainerStatuses[0].ContainerID = ""
	pod.Status.Phase = corev1.PodSucceeded
	if podStarting(pod) {
		t.Fatal("a finished pod is starting")
	}
}

func TestUnnamedContainersWaitForEddysOwnToBeNamed(t *testing.T) {
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "eddy-prefetch"}},
			Containers:     []corev1.Container{{Name: "trainer"}},
		},
	}
	assert.True(t, eddysNamed(pod), "eddy-prefetch is the user's own without the injected annotation")
	pod.Annotations = map[string]string{"eddy.io/injected": "prefetch"}
	assert.False(t, eddysNamed(pod), "the injected sidecar has no id yet: an unnamed cgroup may be it")
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "eddy-prefetch", ContainerID: "containerd://" + strings.Repeat("a", 64)}}
	assert.True(t, eddysNamed(pod))
}
