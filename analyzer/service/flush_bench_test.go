package service_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer/service"
)

const (
	benchKeys       = 2000
	benchNamespaces = 20
)

// flushCase is one analyzer configuration the flush benchmark runs.
type flushCase struct {
	name string
	opt  func(*service.Options)
}

// flushCases are the configurations compared side by side.
var flushCases = []flushCase{
	{name: "workers=1", opt: func(o *service.Options) { o.PublishWorkers = 1 }},
	{name: "workers=8", opt: func(o *service.Options) { o.PublishWorkers = 8 }},
}

func benchWindow(prefix string, seq uint64) *accessv1.AccessWindow {
	var nss []string
	for i := range benchNamespaces {
		nss = append(nss, fmt.Sprintf("bench-%d", i))
	}
	return keysWindow(prefix, seq, benchKeys, nss)
}

// keysWindow is one window from one collector with a record for each of
// keys workloads (prefix tells apart the workloads of different calls),
// spread over namespaces.
func keysWindow(prefix string, seq uint64, keys int, namespaces []string) *accessv1.AccessWindow {
	now := time.Now().UnixNano()
	w := &accessv1.AccessWindow{Sequence: seq, StartUnixNano: now - 10e9, EndUnixNano: now}
	for i := range keys {
		ns := namespaces[i%len(namespaces)]
		name := fmt.Sprintf("%s-%04d", prefix, i)
		w.Files = append(w.Files, &accessv1.FileAccess{
			Workload: &accessv1.WorkloadRef{Namespace: ns, Kind: "Job", ApiVersion: "batch/v1", Name: name, Rule: "Object", Object: name},
			Dataset:  &accessv1.DatasetRef{Namespace: ns, Name: "data", Source: "PVC", Pvc: "data"},
			Pod:      name + "-pod", PodUid: name + "-uid", Container: "c",
			Path: fmt.Sprintf("/data/%s/part-%05d", name, seq), ReadOps: 64, ReadBytes: 16 << 20, FileSize: 16 << 20,
			SeqSteps: 63, Passes: 1, MaxOffset: 16 << 20, FirstAccessUnixNano: now - 9e9, LastAccessUnixNano: now - 1e9,
		})
	}
	return w
}

// BenchmarkFlush measures the analyzer's flush of benchKeys keys against a
// real API server (kube-apiserver and etcd), with manifests persisted to a
// state folder: the first flush, which creates every AccessProfile, and
// then b.N flushes that each follow a window touching every key. It
// reports keys written per second for both; run it with -benchtime=3x.
func BenchmarkFlush(b *testing.B) {
	env := controlplane.StartForTest(b, controlplane.Options{})
	ctx := context.Background()
	for i := range benchNamespaces {
		require.NoError(b, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)}}))
	}
	require.NoError(b, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-system"}}))
	// b.Run calls each case more than once: every call gets workloads of
	// its own, so that its first flush creates them all.
	calls := 0
	for _, fc := range flushCases {
		b.Run(fc.name, func(b *testing.B) {
			calls++
			prefix := fmt.Sprintf("c%d", calls)
			opt := service.Options{
				Client: env.Client, Log: logr.Discard(), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
				LeaseNamespace: "eddy-system", Identity: "bench", StateDir: b.TempDir(),
			}
			fc.opt(&opt)
			svc, err := service.New(ctx, opt)
			require.NoError(b, err)
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- svc.Run(runCtx) }()
			defer func() { svc.Stop(); cancel(); <-done }()

			collector := "bench-node/" + prefix
			seq := uint64(1)
			shipAs(b, svc.Addr(), collector, benchWindow(prefix, seq))
			start := time.Now()
			require.NoError(b, svc.Flush(ctx))
			first := time.Since(start)
			require.EqualValues(b, seq, shipAs(b, svc.Addr(), collector), "the first flush made every key durable")

			var took time.Duration
			b.ResetTimer()
			for range b.N {
				seq++
				b.StopTimer()
				shipAs(b, svc.Addr(), collector, benchWindow(prefix, seq))
				b.StartTimer()
				start := time.Now()
				require.NoError(b, svc.Flush(ctx))
				took += time.Since(start)
			}
			b.StopTimer()
			require.EqualValues(b, seq, shipAs(b, svc.Addr(), collector), "every flush made every key durable")
			b.ReportMetric(first.Seconds(), "first-flush-s")
			b.ReportMetric(benchKeys/first.Seconds(), "first-keys/s")
			b.ReportMetric(took.Seconds()/float64(b.N), "flush-s")
			b.ReportMetric(float64(benchKeys*b.N)/took.Seconds(), "keys/s")
		})
	}
}
