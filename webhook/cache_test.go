package webhook

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/workload"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// requestLog records the paths of the reads a client sends to the API
// server: what an informer lists and watches is what it holds.
type requestLog struct {
	mu    sync.Mutex
	paths []string
}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodGet {
			l.mu.Lock()
			l.paths = append(l.paths, r.URL.Path)
			l.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// read reports whether any read went to one of the paths.
func (l *requestLog) read(paths ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.paths, func(p string) bool { return slices.Contains(paths, p) })
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// namespacedPaths are the collections of the kinds the cache holds per
// namespace: ns "" is the cluster-wide one.
func namespacedPaths(ns string) []string {
	in := ""
	if ns != "" {
		in = "/namespaces/" + ns
	}
	return []string{"/api/v1" + in + "/pods", "/apis/apps/v1" + in + "/replicasets", "/apis/batch/v1" + in + "/jobs"}
}

// The webhook's cache lists and watches pods, ReplicaSets and Jobs only in
// the namespaces it serves, follows a namespace being opted in and out, and
// keeps of each object only what the webhook reads.
func TestCacheHoldsOnlyServedNamespaces(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	mustCreate(t, c, namespace("served", true))
	mustCreate(t, c, namespace("later", false))
	mustCreate(t, c, namespace(testNamespace, true)) // eddy's own: never served, whatever its label
	bulky := map[string]string{"note": strings.Repeat("x", 4096), eddyv1alpha1.InjectedAnnotation: InjectedPrefetch}
	for _, ns := range []string{"served", "later", testNamespace} {
		pod := testPod(ns, "p", "", "data")
		pod.Annotations = bulky
		mustCreate(t, c, pod)
		mustCreate(t, c, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "train-1", Annotations: bulky},
			Spec: batchv1.JobSpec{Suspend: new(true), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}})
	}

	var log requestLog
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(log.wrap)
	cache, err := NewCache(cfg, testNamespace, testLogger(t))
	require.NoError(t, err)
	go func() { _ = cache.Start(ctx) }()
	require.True(t, cache.WaitForCacheSync(ctx), "cache did not sync")

	assert.Equal(t, []string{"served"}, cache.Namespaces())
	assert.True(t, log.read(namespacedPaths("served")...), "pods, ReplicaSets and Jobs of the served namespace are listed")
	for _, ns := range []string{"", "later", testNamespace} {
		assert.False(t, log.read(namespacedPaths(ns)...), "pods, ReplicaSets or Jobs listed in namespace %q", ns)
	}

	pods := func(ns string) (*metav1.PartialObjectMetadataList, error) {
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		return l, cache.List(ctx, l, client.InNamespace(ns))
	}
	served, err := pods("served")
	require.NoError(t, err)
	require.Len(t, served.Items, 1)
	p := served.Items[0]
	assert.Empty(t, p.ManagedFields, "managedFields are not kept")
	assert.Equal(t, map[string]string{eddyv1alpha1.InjectedAnnotation: InjectedPrefetch}, p.Annotations, "only the annotations the webhook reads are kept")
	_, err = pods("later")
	assert.True(t, IsNotCached(err), "pods of a namespace not opted in: %v", err)
	job := metadataOf(batchv1.SchemeGroupVersion.WithKind("Job"))
	err = cache.Get(ctx, client.ObjectKey{Namespace: "later", Name: "train-1"}, job)
	assert.True(t, IsNotCached(err), "Job of a namespace not opted in: %v", err)

	var ns corev1.Namespace
	require.NoError(t, cache.Get(ctx, client.ObjectKey{Name: "served"}, &ns))
	var live corev1.Namespace
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "served"}, &live))
	require.NotEmpty(t, live.ManagedFields, "the API server wrote no managedFields: the test would prove nothing")
	assert.Empty(t, ns.ManagedFields, "cached Namespace keeps no managedFields")

	// Opted in later: its objects are cached from then on, and the
	// resolver finds a Job's metadata there.
	live = corev1.Namespace{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "later"}, &live))
	live.Labels = map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	require.NoError(t, c.Update(ctx, &live))
	require.Eventually(t, func() bool {
		l, err := pods("later")
		return err == nil && len(l.Items) == 1
	}, 20*time.Second, 20*time.Millisecond, "pods of a namespace opted in later are cached")
	m, err := workload.ReaderLookup(cache).Get(ctx, "later", "batch/v1", "Job", "train-1")
	require.NoError(t, err)
	assert.Equal(t, "train-1", m.Name)
	assert.Equal(t, []string{"later", "served"}, cache.Namespaces())

	// Opted out: no longer held.
	live = corev1.Namespace{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "served"}, &live))
	delete(live.Labels, eddyv1alpha1.AutotuneLabel)
	require.NoError(t, c.Update(ctx, &live))
	require.Eventually(t, func() bool { return slices.Equal(cache.Namespaces(), []string{"later"}) }, 20*time.Second, 20*time.Millisecond,
		"a namespace opted out is dropped")
	_, err = pods("served")
	assert.True(t, IsNotCached(err), "pods of a namespace opted out: %v", err)
	assert.False(t, log.read(namespacedPaths("")...), "pods, ReplicaSets or Jobs listed cluster-wide")
	assert.False(t, log.read(namespacedPaths(testNamespace)...), "pods, ReplicaSets or Jobs listed in eddy's namespace")
}
