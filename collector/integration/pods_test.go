package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/collector/cgroups"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestAllowListFollowsPodsAndNamespaces drives a PodIndex with a real API
// server. The cgroup tree is an ordinary directory tree shaped like the
// kubelet's (the resolver only needs directories and their inodes), so the
// test runs without root; the node test covers real cgroups.
// indexEnv is a real API server with an opted-in namespace team-a, and an
// empty directory standing in for the node's cgroup tree.
type indexEnv struct {
	ctx  context.Context
	c    client.Client
	cs   kubernetes.Interface
	root string
	nsOn *corev1.Namespace
}

func startIndexEnv(t *testing.T) *indexEnv {
	t.Helper()
	return startIndexEnvOn(t, controlplane.StartForTest(t, controlplane.Options{}))
}

// startIndexEnvOn is startIndexEnv on a control plane already started.
func startIndexEnvOn(t *testing.T, env *controlplane.Env) *indexEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs, err := kubernetes.NewForConfig(env.Config)
	require.NoError(t, err)
	nsOn := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}}}
	require.NoError(t, env.Client.Create(ctx, nsOn))
	return &indexEnv{ctx: ctx, c: env.Client, cs: cs, root: t.TempDir(), nsOn: nsOn}
}

func TestAllowListFollowsPodsAndNamespaces(t *testing.T) {
	e := startIndexEnv(t)
	ctx, c, cs, root, nsOn := e.ctx, e.c, e.cs, e.root, e.nsOn
	const node = "node-a"

	nsOff := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}}
	require.NoError(t, c.Create(ctx, nsOff))

	// mkPod creates a running pod whose container cgroup exists under root.
	mkPod := func(ns, name, nodeName string, lbls map[string]string) (*corev1.Pod, uint64) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "main", Image: "x"}}}}
		require.NoError(t, c.Create(ctx, p))
		id := randomHex(t, 32)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://" + id, Image: "x", ImageID: "x"}}
		require.NoError(t, c.Status().Update(ctx, p))
		dir := filepath.Join(root, "kubepods", "burstable", "pod"+string(p.UID), id)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		cg, err := cgroups.CgroupID(dir)
		require.NoError(t, err)
		return p, cg
	}
	a, cgA := mkPod(nsOn.Name, "a", node, nil)
	_, cgOut := mkPod(nsOn.Name, "opted-out", node, map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneDisabled})
	_, cgOff := mkPod(nsOff.Name, "b", node, nil)
	_, cgElse := mkPod(nsOn.Name, "elsewhere", "node-b", nil)

	src := collector.NewReplaySource()
	idx, err := collector.NewPodIndex(cs, src, cgroups.NewResolver(root, cgroups.ResolverOptions{MinRescanInterval: time.Millisecond, MaxAge: 100 * time.Millisecond}),
		collector.PodIndexOptions{Node: node, Retain: time.Hour, Resync: 50 * time.Millisecond, Log: testLogger(t)})
	require.NoError(t, err)
	go idx.Run(ctx)

	allowed := func(want ...uint64) {
		t.Helper()
		require.Eventually(t, func() bool {
			return assert.ObjectsAreEqual(sorted(want), sorted(src.AllowedIDs()))
		}, 10*time.Second, 10*time.Millisecond, "allow-list %v, want %v", src.AllowedIDs(), want)
	}
	allowed(cgA)
	// a's own cgroup is allowed as a tree too (the kernel then allows the
	// containers created in it from their creation); no other pod's is.
	podA, err := cgroups.CgroupID(filepath.Join(root, "kubepods", "burstable", "pod"+string(a.UID)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual([]uint64{podA}, src.TreeIDs()) },
		10*time.Second, 10*time.Millisecond, "trees %v, want [%d]", src.TreeIDs(), podA)
	pc, ok := idx.Lookup(cgA)
	require.True(t, ok)
	assert.Equal(t, "a", pc.Pod.Name)
	assert.Equal(t, "main", pc.Container)

	// A cgroup nested in a's container (tasks in it report its id) joins
	// the list once the resolver's cache ages out.
	nested := filepath.Join(root, "kubepods", "burstable", "pod"+string(a.UID), a.Status.ContainerStatuses[0].ContainerID[len("containerd://"):], "sub")
	require.NoError(t, os.Mkdir(nested, 0o755))
	cgNested, err := cgroups.CgroupID(nested)
	require.NoError(t, err)
	allowed(cgA, cgNested)
	pc, ok = idx.Lookup(cgNested)
	require.True(t, ok)
	assert.Equal(t, "a", pc.Pod.Name)
	assert.Equal(t, "main", pc.Container)
	for _, id := range []uint64{cgOut, cgOff, cgElse} {
		_, ok := idx.Lookup(id)
		assert.False(t, ok)
	}

	// A pod that starts later is picked up as soon as its cgroup exists.
	_, cgLate := mkPod(nsOn.Name, "late", node, nil)
	allowed(cgA, cgNested, cgLate)

	// Opting the other namespace in adds its pod; opting it out removes it.
	patchLabels(ctx, t, c, nsOff, map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled})
	allowed(cgA, cgNested, cgLate, cgOff)
	patchLabels(ctx, t, c, nsOff, map[string]string{})
	allowed(cgA, cgNested, cgLate)

	// A pod that opts out leaves the list; deleting a pod removes it too,
	// but its records stay attributable for Retain.
	var late corev1.Pod
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: nsOn.Name, Name: "late"}, &late))
	patchLabels(ctx, t, c, &late, map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneDisabled})
	allowed(cgA, cgNested)
	require.NoError(t, c.Delete(ctx, a, client.GracePeriodSeconds(0)))
	allowed()
	pc, ok = idx.Lookup(cgA)
	require.True(t, ok, "a deleted pod's last records must still be attributed")
	assert.Equal(t, "a", pc.Pod.Name)
}

func patchLabels(ctx context.Context, t *testing.T, c client.Client, obj client.Object, lbls map[string]string) {
	t.Helper()
	base := obj.DeepCopyObject().(client.Object)
	obj.SetLabels(lbls)
	require.NoError(t, c.Patch(ctx, obj, client.MergeFrom(base)))
}

func sorted(ids []uint64) []uint64 {
	out := append([]uint64{}, ids...)
	slices.Sort(out)
	return out
}

// A running pod's container whose cgroup appears after the last walk (the
// kubelet names it before the walk sees it) is found at once, not at the
// next walk the resolver's rate limit allows: the kernel records it from its
// creation, under the pod's allowed cgroup, and records nobody can attribute
// are lost.
func TestNamedContainerOfObservedPodFoundDespiteRateLimit(t *testing.T) {
	e := startIndexEnv(t)
	ctx, c, root := e.ctx, e.c, e.root
	const node = "node-a"
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.nsOn.Name, Name: "job"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "x"}}}}
	require.NoError(t, c.Create(ctx, p))
	id := randomHex(t, 32)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", ContainerID: "containerd://" + id, Image: "x", ImageID: "x"}}
	require.NoError(t, c.Status().Update(ctx, p))
	podDir := filepath.Join(root, "kubepods", "besteffort", "pod"+string(p.UID))
	require.NoError(t, os.MkdirAll(podDir, 0o755))
	podCg, err := cgroups.CgroupID(podDir)
	require.NoError(t, err)

	src := collector.NewReplaySource()
	// A rate limit no test outlasts: only the observed pod's walk can find
	// the container.
	idx, err := collector.NewPodIndex(e.cs, src, cgroups.NewResolver(root, cgroups.ResolverOptions{MinRescanInterval: time.Hour, MaxAge: time.Hour}),
		collector.PodIndexOptions{Node: node, Retain: time.Hour, Resync: 50 * time.Millisecond, Log: testLogger(t)})
	require.NoError(t, err)
	go idx.Run(ctx)
	require.Eventually(t, func() bool { return slices.Equal([]uint64{podCg}, src.TreeIDs()) },
		10*time.Second, 10*time.Millisecond, "the pod's cgroup is observed as a tree")

	ctrDir := filepath.Join(podDir, id)
	require.NoError(t, os.Mkdir(ctrDir, 0o755))
	ctrCg, err := cgroups.CgroupID(ctrDir)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		pc, ok := idx.Lookup(ctrCg)
		return ok && pc.Container == "main"
	}, 5*time.Second, 10*time.Millisecond, "the container is attributed without waiting for the rate limit")
}
