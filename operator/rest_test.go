package operator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// TestARestIsNotIdleness pins what keeps a rest period from evicting a
// dataset: the reader's profile rests (Learning False) and was last seen
// reading an hour ago — far beyond idleAfter — but its pod still references
// the dataset, so nothing is proposed; once the pod is gone, eviction waits
// idleAfter from then (the dataset's unused-since), not from the profile's
// last seen read. Idleness comes from the API (no pod references the
// dataset), never from eddy not having watched.
func TestARestIsNotIdleness(t *testing.T) {
	ns := newNamespace(t, "rest")
	spec := autoPolicy(eddyv1alpha1.ActionEvictDataset)
	spec.IdleAfter = &metav1.Duration{Duration: 3 * time.Second}
	createPolicy(t, ns, spec)
	createStatefulSet(t, ns, "rest-cache", 2)
	createPVC(t, ns, "shards", "StatefulSet/rest-cache")
	reader := createReader(t, ns, "reader", "shards")
	ctx := context.Background()
	prof := &eddyv1alpha1.AccessProfile{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pod-reader.shards"},
		Spec: eddyv1alpha1.AccessProfileSpec{
			WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "v1", Kind: "Pod", Name: "reader"},
			Dataset:     eddyv1alpha1.DatasetReference{Name: "shards", Source: eddyv1alpha1.DatasetSourcePVC},
		}}
	create(t, prof)
	hourAgo := metav1.NewTime(time.Now().Add(-time.Hour))
	later := metav1.NewTime(time.Now().Add(time.Hour))
	prof.Status = eddyv1alpha1.AccessProfileStatus{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.9, LastSeen: &hourAgo, FirstSeen: &hourAgo, NextRefresh: &later,
		Conditions: []metav1.Condition{{Type: eddyv1alpha1.ConditionLearning, Status: metav1.ConditionFalse, Reason: eddyv1alpha1.ReasonResting, Message: "test", LastTransitionTime: hourAgo}}}
	require.NoError(t, env.Client.Status().Update(ctx, prof))
	startOperator(t, testOptions(), nil)
	waitRunningPods(t, ns, "rest-cache", 2)

	time.Sleep(5 * time.Second) // longer than idleAfter; the profile's last read an hour ago
	require.Empty(t, evictions(t, ns), "a resting workload's dataset, still referenced, was proposed for eviction")
	require.EqualValues(t, 2, stsReplicas(t, ns, "rest-cache"))

	require.NoError(t, env.Client.Delete(ctx, reader, client.GracePeriodSeconds(0)))
	left := time.Now()
	var evict string
	eventually(t, 30*time.Second, "EvictDataset proposed", func() (bool, string) {
		e := evictions(t, ns)
		if len(e) == 1 {
			evict = e[0]
		}
		return len(e) == 1, fmt.Sprint(e)
	})
	require.GreaterOrEqual(t, time.Since(left), 3*time.Second, "proposed before idleAfter passed since the pod left")
	since := getRec(t, ns, evict).Spec.EvictDataset.IdleSince.Time
	require.False(t, since.Before(left.Add(-2*time.Second)), "idle since %s, before the pod left at %s: the rest was counted as idle", since, left)
}
