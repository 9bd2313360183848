package service_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/loopbackcert"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/intake"
	"github.com/eddy-autotune/eddy/analyzer/service"
)

// The shape of BenchmarkHeldPerWorkload: test/scale's per-workload load
// (a 1,000-file dataset read front to back, 100 files per pod per window,
// one pod per workload) at a size this machine runs in a minute or two.
const (
	heldWorkloads    = 300
	heldNodes        = 10
	heldNamespaces   = 4
	heldDatasetFiles = 1000
	heldFilesPerPod  = 100
	// heldRounds windows per collector: every file of every dataset read at
	// least once, a fifth of them twice (a second epoch begun), as at the
	// end of test/scale's full-size run.
	heldRounds = 12
)

// heldForProfile keeps the last measured analyzer reachable until the test
// binary exits, so that the heap profile -memprofile writes then shows in
// inuse_space what it held, not an empty heap.
var heldForProfile *service.Service

// BenchmarkHeldPerWorkload measures what the running analyzer holds per
// workload: the live heap (after a collection) it grows by from before the
// first window to after heldRounds windows of every workload, shipped by
// heldNodes collector identities through the authenticated TLS gRPC intake
// (TokenReviews, admission from the pod cache) and flushed after each round
// to a real API server, with manifests persisted to a state folder — what
// cmd/eddy runs, as test/scale feeds it. It reports B/workload (the issue 19
// goal is at most 100 KiB in the running service), and goal-B/workload:
// how far, per workload, the garbage collector's heap goal rose above where
// it was before the first window at its highest (sampled every 10 ms) — the
// heap the process may grow to without a memory limit, which is what its
// RSS follows: what a flush holds while it writes counts there, not in the
// live heap after it. Run it with
// -benchtime=1x; with -memprofile, the profile's inuse_space is what the
// analyzer held at the end (go tool pprof -sample_index=inuse_space).
func BenchmarkHeldPerWorkload(b *testing.B) {
	// The admission cache logs through controller-runtime's logger, which
	// prints a warning with a stack trace until it is set.
	ctrllog.SetLogger(logr.Discard())
	env := controlplane.StartForTest(b, controlplane.Options{})
	hc := newHeldCluster(b, env)
	for range b.N {
		b.StopTimer()
		svc, stop := hc.start(b)
		b.StartTimer()
		before := liveHeap()
		goalBefore := heapGoal()
		peak := peakHeapGoal()
		start := time.Now()
		records := 0
		for round := range heldRounds {
			for node := range heldNodes {
				w := hc.window(node, round)
				records += len(w.Files)
				hc.ship(b, node, w)
			}
			require.NoError(b, svc.Flush(context.Background()))
		}
		took := time.Since(start)
		goal := peak()
		after := liveHeap()
		b.StopTimer()
		hc.requireHeld(b, svc)
		b.ReportMetric(float64(after-before)/heldWorkloads, "B/workload")
		b.ReportMetric(float64(after)/(1<<20), "live-MiB")
		b.ReportMetric(float64(goal-goalBefore)/heldWorkloads, "goal-B/workload")
		b.ReportMetric(float64(goal)/(1<<20), "peak-goal-MiB")
		b.ReportMetric(float64(records)/took.Seconds(), "records/s")
		heldForProfile = svc
		stop()
	}
}

// heapGoal is the garbage collector's heap goal now.
func heapGoal() uint64 {
	m := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

// peakHeapGoal samples the heap goal every 10 ms until the function it
// returns is called, which returns the highest seen.
func peakHeapGoal() func() uint64 {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		peak := heapGoal()
		for {
			select {
			case <-stop:
				done <- max(peak, heapGoal())
				return
			case <-t.C:
				peak = max(peak, heapGoal())
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-done
	}
}

// liveHeap is the heap in use by live objects, after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heldCluster is a real API server with heldNodes nodes, a collector pod
// on each with its token, and one pod per workload in opted-in namespaces.
type heldCluster struct {
	env    *controlplane.Env
	certs  string
	tokens []string
	// pods[node] are the workload pods bound to that node.
	pods [][]*corev1.Pod
	// conns[node] is the collector's connection, made once (shippers keep
	// theirs).
	conns []*grpc.ClientConn
	seq   []uint64
}

func newHeldCluster(b *testing.B, env *controlplane.Env) *heldCluster {
	ctx := context.Background()
	c := env.Client
	hc := &heldCluster{env: env, certs: b.TempDir(), pods: make([][]*corev1.Pod, heldNodes), seq: make([]uint64, heldNodes)}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-system"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "eddy-system", Name: "eddy-collector"}},
	}
	for i := range heldNamespaces {
		ns := fmt.Sprintf("held-%d", i)
		objs = append(objs,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}})
	}
	for n := range heldNodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)}})
	}
	for _, o := range objs {
		require.NoError(b, c.Create(ctx, o))
	}
	for n := range heldNodes {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "eddy-system", Name: fmt.Sprintf("collector-%d", n)},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", n), ServiceAccountName: "eddy-collector", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		require.NoError(b, c.Create(ctx, p))
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Spec.ServiceAccountName}}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{accessv1.Audience}, ExpirationSeconds: ptr(int64(3600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
		require.NoError(b, c.SubResource("token").Create(ctx, sa, tr))
		hc.tokens = append(hc.tokens, tr.Status.Token)
	}
	for i := range heldWorkloads {
		node := i % heldNodes
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("held-%d", i%heldNamespaces), Name: heldWorkload(i)},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", node), Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		require.NoError(b, c.Create(ctx, p))
		hc.pods[node] = append(hc.pods[node], p)
	}
	return hc
}

// requireHeld requires every workload's history kept and its manifest
// listing its whole dataset: what was measured is what was meant.
func (hc *heldCluster) requireHeld(b *testing.B, svc *service.Service) {
	for _, pods := range hc.pods {
		for _, p := range pods {
			k := analyzer.Key{WorkloadNamespace: p.Namespace, WorkloadKind: "Deployment", WorkloadName: p.Name, DatasetNamespace: p.Namespace, DatasetName: "data"}
			require.True(b, svc.Store.History(k, func(*analyzer.Tracker, analyzer.Key) {}), "history of %s", k)
			m, ok := svc.Manifests.Get(k, 0, 0.8)
			require.True(b, ok, "manifest of %s", k)
			require.Len(b, m.Files, heldDatasetFiles, "manifest of %s", k)
		}
	}
}

func heldWorkload(i int) string { return fmt.Sprintf("w-%04d", i) }

// start runs the analyzer as cmd/eddy does and returns a stop that ends it
// at once (as a crash would: no final flush against a control plane about
// to stop).
func (hc *heldCluster) start(b *testing.B) (*service.Service, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	certFile, keyFile, err := loopbackcert.Write(hc.certs)
	require.NoError(b, err)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(b, err)
	adm, cache, err := intake.NewClusterAdmission(ctx, hc.env.Config, hc.env.Client, []string{"kube-system", "eddy-system"})
	require.NoError(b, err)
	go func() { _ = cache.Start(ctx) }()
	require.True(b, cache.WaitForCacheSync(ctx))
	svc, err := service.New(ctx, service.Options{
		Client: hc.env.Client, Log: logr.Discard(), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "held", StateDir: b.TempDir(),
		ManifestTLS: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		Intake:      intake.Options{Auth: &intake.TokenReviews{Client: hc.env.Client, Users: []string{"system:serviceaccount:eddy-system:eddy-collector"}}, Admission: adm},
	})
	require.NoError(b, err)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	ca, err := os.ReadFile(hc.certs + "/cert.pem")
	require.NoError(b, err)
	pool := x509.NewCertPool()
	require.True(b, pool.AppendCertsFromPEM(ca))
	hc.conns = hc.conns[:0]
	for range heldNodes {
		conn, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
		require.NoError(b, err)
		hc.conns = append(hc.conns, conn)
	}
	return svc, func() {
		for _, c := range hc.conns {
			c.Close()
		}
		svc.Stop()
		cancel()
		<-done
	}
}

// window is node's window of the given round: each of its pods read the
// next heldFilesPerPod files of its workload's dataset whole, front to back
// (test/scale's fleet.window).
func (hc *heldCluster) window(node, round int) *accessv1.AccessWindow {
	const fileSize = 4 << 20
	hc.seq[node]++
	end := time.Now()
	start := end.Add(-10 * time.Second)
	w := &accessv1.AccessWindow{Sequence: hc.seq[node], StartUnixNano: start.UnixNano(), EndUnixNano: end.UnixNano()}
	for _, p := range hc.pods[node] {
		for k := range heldFilesPerPod {
			file := (round*heldFilesPerPod + k) % heldDatasetFiles
			at := start.Add(time.Duration(k+1) * 10 * time.Second / (heldFilesPerPod + 1))
			w.Files = append(w.Files, &accessv1.FileAccess{
				Workload: &accessv1.WorkloadRef{Namespace: p.Namespace, Kind: "Deployment", ApiVersion: "apps/v1", Name: p.Name, Rule: string(v1.RuleObject), Object: p.Name},
				Dataset:  &accessv1.DatasetRef{Namespace: p.Namespace, Name: "data", Source: "PVC", Pvc: "data"},
				Pod:      p.Name, PodUid: string(p.UID), Container: "c",
				Path:    fmt.Sprintf("/data/%s/part-%05d", p.Name, file),
				ReadOps: 16, ReadBytes: fileSize, FileSize: fileSize, SeqSteps: 15, Passes: 1, MaxOffset: fileSize,
				FirstAccessUnixNano: at.Add(-50 * time.Millisecond).UnixNano(), LastAccessUnixNano: at.UnixNano(),
			})
		}
	}
	return w
}

// ship sends w as node's collector and requires it taken.
func (hc *heldCluster) ship(b *testing.B, node int, w *accessv1.AccessWindow) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), accessv1.AuthorizationMetadata, "Bearer "+hc.tokens[node])
	reply, err := accessv1.NewAccessIntakeClient(hc.conns[node]).Ship(ctx, &accessv1.ShipRequest{Collector: fmt.Sprintf("node-%d-c", node), Windows: []*accessv1.AccessWindow{w}})
	require.NoError(b, err)
	require.GreaterOrEqual(b, reply.GetReceivedSequence(), w.GetSequence(), "the window was received")
}
