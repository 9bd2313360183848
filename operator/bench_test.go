package operator_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/operator"
)

// BenchmarkConverge measures the operator on 1,000 datasets (each a PVC and a
// Fluid-like runtime) with 5,000 ScaleCache recommendations, five per
// dataset, under an Auto policy: from operator start until every dataset's
// newest recommendation is Applied and the rest Superseded. It reports the
// time to converge, API requests per reconcile, and the operator's heap.
// Run it once: go test -run '^$' -bench Converge -benchtime 1x ./operator/
func BenchmarkConverge(b *testing.B) {
	const datasets, perDataset = 1000, 5
	skipWithoutControlPlane(b)
	for range b.N {
		ns := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		ctx := context.Background()
		cfg := rest.CopyConfig(env.Config)
		cfg.QPS, cfg.Burst = 500, 1000
		c, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
		require.NoError(b, err)
		require.NoError(b, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
		spec := autoPolicy(eddyv1alpha1.ActionScaleCache)
		spec.CacheWorkers = &eddyv1alpha1.CacheWorkerBounds{Min: 1, Max: 8}
		spec.ChangeBudget = &eddyv1alpha1.ChangeBudget{MaxChanges: 10 * datasets, Per: &metav1.Duration{Duration: time.Hour}}
		require.NoError(b, c.Create(ctx, &eddyv1alpha1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}, Spec: spec}))

		var objs []client.Object
		for d := range datasets {
			name := fmt.Sprintf("ds-%04d", d)
			rt := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"replicas": int64(1)}}}
			rt.SetGroupVersionKind(runtimeGVK)
			rt.SetNamespace(ns)
			rt.SetName(name)
			objs = append(objs, rt, &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
			})
		}
		createAll(b, c, objs)
		objs = objs[:0]
		for v := range perDataset {
			for d := range datasets {
				objs = append(objs, scaleRec(ns, fmt.Sprintf("ds-%04d-v%d", d, v), fmt.Sprintf("ds-%04d", d), int32(2+v)))
			}
		}
		start := time.Now()
		createAll(b, c, objs)
		b.Logf("created %d datasets and %d recommendations in %s", datasets, datasets*perDataset, time.Since(start).Round(time.Millisecond))

		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		reconcilesBefore := reconciles(b)
		counter := &requestCounter{}
		b.ResetTimer()
		start = time.Now()
		stop := startOperator(b, testOptions(), counter)
		var applied, superseded int
		for {
			var list eddyv1alpha1.RecommendationList
			require.NoError(b, c.List(ctx, &list, client.InNamespace(ns)))
			applied, superseded = 0, 0
			for _, r := range list.Items {
				switch r.Status.Phase {
				case eddyv1alpha1.PhaseApplied:
					applied++
				case eddyv1alpha1.PhaseSuperseded:
					superseded++
				}
			}
			if applied == datasets && superseded == datasets*(perDataset-1) {
				break
			}
			if time.Since(start) > 20*time.Minute {
				b.Fatalf("not converged after 20m: %d applied, %d superseded", applied, superseded)
			}
			time.Sleep(500 * time.Millisecond)
		}
		converge := time.Since(start)
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		n := reconciles(b) - reconcilesBefore
		requests := counter.total.Load()
		stop()
		fmt.Println("reconciles by controller and result:", reconcileResults(b))
		fmt.Println("API requests by kind:", counter.byKind())

		wrong := 0
		for d := range datasets {
			if runtimeReplicas(b, ns, fmt.Sprintf("ds-%04d", d)) != int64(2+perDataset-1) {
				wrong++
			}
		}
		require.Zero(b, wrong, "runtimes not at the newest recommendation's replicas")
		b.ReportMetric(converge.Seconds(), "s-to-converge")
		b.ReportMetric(float64(requests)/float64(n), "requests/reconcile")
		b.ReportMetric(float64(n), "reconciles")
		b.ReportMetric(float64(requests), "requests")
		b.ReportMetric(float64(after.HeapInuse)/(1<<20), "MiB-heap-in-use")
		b.ReportMetric((float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20), "MiB-heap-growth")
		fmt.Printf("operator on kwok: %d datasets, %d recommendations: converged in %s; %d reconciles, %d API requests (%.2f per reconcile); heap in use %.1f MiB (grew %.1f MiB), %d GC cycles\n",
			datasets, datasets*perDataset, converge.Round(time.Millisecond), n, requests, float64(requests)/float64(n),
			float64(after.HeapInuse)/(1<<20), (float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20), after.NumGC-before.NumGC)
	}
}

// createAll creates objects with a few writers in parallel.
func createAll(b *testing.B, c client.Client, objs []client.Object) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(objs); i += 8 {
				if err := c.Create(context.Background(), objs[i]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
}

// reconciles sums controller-runtime's reconcile counter over every controller.
func reconciles(b *testing.B) int {
	mfs, err := crmetrics.Registry.Gather()
	require.NoError(b, err)
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return int(total)
}

// reconcileResults breaks controller-runtime's reconcile counter down by
// controller and result.
func reconcileResults(b *testing.B) map[string]int {
	mfs, err := crmetrics.Registry.Gather()
	require.NoError(b, err)
	out := map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetValue() + "/"
			}
			if v := int(m.GetCounter().GetValue()); v > 0 {
				out[strings.TrimSuffix(key, "/")] = v
			}
		}
	}
	return out
}
