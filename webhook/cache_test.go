package webhook

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// The webhook's cache holds every pod, ReplicaSet and Job of the cluster:
// without their managedFields, which the API server adds to every object
// and nothing in the webhook reads.
func TestCacheHoldsNoManagedFields(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cached"}}
	mustCreate(t, env.Client, ns)
	mustCreate(t, env.Client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "cached"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}})

	c, err := NewCache(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range CachedObjects() {
		if _, err := c.GetInformer(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	var live corev1.Namespace
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "cached"}, &live); err != nil {
		t.Fatal(err)
	}
	if len(live.ManagedFields) == 0 {
		t.Fatal("the API server wrote no managedFields: the test would prove nothing")
	}
	var cached corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "cached"}, &cached); err != nil {
		t.Fatal(err)
	}
	if len(cached.ManagedFields) != 0 {
		t.Errorf("cached Namespace keeps %d managedFields entries", len(cached.ManagedFields))
	}
	pod := metadataOf(corev1.SchemeGroupVersion.WithKind("Pod"))
	if err := c.Get(ctx, client.ObjectKey{Namespace: "cached", Name: "p"}, pod); err != nil {
		t.Fatal(err)
	}
	if len(pod.GetManagedFields()) != 0 {
		t.Errorf("cached pod metadata keeps %d managedFields entries", len(pod.GetManagedFields()))
	}
}
