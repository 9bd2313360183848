package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/collector/cgroups"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestRestingWorkloadsPodsStayOffTheAllowList: with a real API server, a
// pod whose workload's profile rests (Learning False, nextRefresh ahead)
// never reaches the allow-list — neither its containers nor its pod cgroup
// — so with nothing else to learn the kernel programs would detach; a pod of
// a workload without a profile is observed, and so is a pod of the resting
// workload that carries applied recommendations (a verifying run). Once the
// profile learns again, the next pod is observed, while the pod decided
// earlier keeps its decision for its life.
func TestRestingWorkloadsPodsStayOffTheAllowList(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	e := startIndexEnvOn(t, env)
	ctx, c, root := e.ctx, e.c, e.root
	const node = "node-a"

	// The run family "train" (pods train-1, train-2, ...) rests.
	prof := &eddyv1alpha1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Namespace: e.nsOn.Name, Name: "pod-train.data"},
		Spec: eddyv1alpha1.AccessProfileSpec{
			WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "train", Rule: eddyv1alpha1.RuleNameSuffix},
			Dataset:     eddyv1alpha1.DatasetReference{Name: "data", Source: eddyv1alpha1.DatasetSourcePVC},
		}}
	require.NoError(t, c.Create(ctx, prof))
	setLearning := func(status metav1.ConditionStatus, reason string, next *metav1.Time) {
		t.Helper()
		meta.SetStatusCondition(&prof.Status.Conditions, metav1.Condition{Type: eddyv1alpha1.ConditionLearning, Status: status, Reason: reason, Message: "set by the test"})
		prof.Status.NextRefresh = next
		require.NoError(t, c.Status().Update(ctx, prof))
		// As the analyzer labels it (collectors watch resting profiles only).
		if status == metav1.ConditionFalse {
			metav1.SetMetaDataLabel(&prof.ObjectMeta, eddyv1alpha1.RestingLabel, "true")
		} else {
			delete(prof.Labels, eddyv1alpha1.RestingLabel)
		}
		require.NoError(t, c.Update(ctx, prof))
	}
	later := metav1.NewTime(time.Now().Add(time.Hour))
	setLearning(metav1.ConditionFalse, eddyv1alpha1.ReasonResting, &later)
	// Between the analyzer's status write and its label, a profile says
	// Resting without the label: the collector does not see it (it watches
	// labelled profiles only) and observes the workload — the safe side.
	unlabelled := &eddyv1alpha1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Namespace: e.nsOn.Name, Name: "pod-eval.data"},
		Spec: eddyv1alpha1.AccessProfileSpec{
			WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "eval", Rule: eddyv1alpha1.RuleNameSuffix},
			Dataset:     eddyv1alpha1.DatasetReference{Name: "data", Source: eddyv1alpha1.DatasetSourcePVC},
		}}
	require.NoError(t, c.Create(ctx, unlabelled))
	meta.SetStatusCondition(&unlabelled.Status.Conditions, metav1.Condition{Type: eddyv1alpha1.ConditionLearning, Status: metav1.ConditionFalse, Reason: eddyv1alpha1.ReasonResting, Message: "set by the test"})
	unlabelled.Status.NextRefresh = &later
	require.NoError(t, c.Status().Update(ctx, unlabelled))

	md, err := metadata.NewForConfig(env.Config)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(env.Config)
	require.NoError(t, err)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(e.cs.Discovery()))
	learner, err := collector.NewProfileLearner(dyn, collector.NewWorkloadResolver(md, mapper), testLogger(t))
	require.NoError(t, err)
	go learner.Run(ctx)
	require.Eventually(t, learner.HasSynced, 10*time.Second, 10*time.Millisecond)

	src := collector.NewReplaySource()
	idx, err := collector.NewPodIndex(e.cs, src, cgroups.NewResolver(root, cgroups.ResolverOptions{MinRescanInterval: time.Millisecond, MaxAge: 100 * time.Millisecond}),
		collector.PodIndexOptions{Node: node, Retain: time.Hour, Resync: 50 * time.Millisecond, Learner: learner, Log: testLogger(t)})
	require.NoError(t, err)
	go idx.Run(ctx)
	require.Eventually(t, idx.Synced, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // past the first sync: pods from now on are decided

	// mkPod creates a running pod whose pod and container cgroups exist.
	mkPod := func(name string, ann map[string]string, claims ...string) (pod, container uint64) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.nsOn.Name, Name: name, Annotations: ann},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "x"}}}}
		for _, claim := range claims {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: claim, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
		}
		require.NoError(t, c.Create(ctx, p))
		podDir := filepath.Join(root, "kubepods", "besteffort", "pod"+string(p.UID))
		id := randomHex(t, 32)
		require.NoError(t, os.MkdirAll(filepath.Join(podDir, id), 0o755))
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://" + id, Image: "x", ImageID: "x"}}
		require.NoError(t, c.Status().Update(ctx, p))
		var err error
		pod, err = cgroups.CgroupID(podDir)
		require.NoError(t, err)
		container, err = cgroups.CgroupID(filepath.Join(podDir, id))
		require.NoError(t, err)
		return pod, container
	}
	allowed := func(want ...uint64) {
		t.Helper()
		require.Eventually(t, func() bool {
			return assert.ObjectsAreEqual(sorted(want), sorted(append(src.AllowedIDs(), src.TreeIDs()...)))
		}, 10*time.Second, 10*time.Millisecond, "allowed %v and trees %v, want %v", src.AllowedIDs(), src.TreeIDs(), want)
	}

	restPod, restCg := mkPod("train-1", nil)
	otherPod, otherCg := mkPod("eval-1", nil)
	allowed(otherPod, otherCg)
	verifyPod, verifyCg := mkPod("train-2", map[string]string{eddyv1alpha1.RecommendationAnnotation: "pod-train.data.prefetch-1a2b3c"})
	allowed(otherPod, otherCg, verifyPod, verifyCg)
	// The resting workload reading the dataset it rests on stays off; the
	// same workload mounting a claim it has no profile of is learned.
	sameData, sameDataCg := mkPod("train-4", nil, "data")
	newData, newDataCg := mkPod("train-5", nil, "data", "small")
	allowed(otherPod, otherCg, verifyPod, verifyCg, newData, newDataCg)
	time.Sleep(300 * time.Millisecond) // several syncs
	allowed(otherPod, otherCg, verifyPod, verifyCg, newData, newDataCg)
	assert.Equal(t, 2, idx.Resting())
	for _, id := range []uint64{sameData, sameDataCg} {
		_, ok := idx.Lookup(id)
		assert.False(t, ok, "a resting pod's cgroup is attributed")
	}
	for _, id := range []uint64{restPod, restCg} {
		_, ok := idx.Lookup(id)
		assert.False(t, ok, "a resting pod's cgroup is attributed")
	}

	// The profile learns again (a refresh is due, or it lost confidence):
	// the next run is observed; train-1, decided at its start, is not.
	setLearning(metav1.ConditionTrue, eddyv1alpha1.ReasonRefreshing, nil)
	time.Sleep(200 * time.Millisecond) // the learner's watch delivers it
	nextPod, nextCg := mkPod("train-3", nil)
	allowed(otherPod, otherCg, verifyPod, verifyCg, newData, newDataCg, nextPod, nextCg)
	assert.Equal(t, 2, idx.Resting())
}
