package service_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/loopbackcert"

	"github.com/eddy-autotune/eddy/analyzer/intake"
	"github.com/eddy-autotune/eddy/analyzer/service"
)

// intakeCluster is a real API server with two nodes, eddy's collector
// service account with a pod on each, and workload pods in an opted-in
// namespace, one that is not, and kube-system.
type intakeCluster struct {
	env   *controlplane.Env
	pods  map[string]*corev1.Pod
	certs string
}

func newIntakeCluster(t testing.TB) *intakeCluster {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	c := env.Client
	ic := &intakeCluster{env: env, pods: map[string]*corev1.Pod{}}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml", Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "quiet"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "eddy-system", Name: "eddy-collector"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "default"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "default"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "quiet", Name: "default"}},
	} {
		require.NoError(t, c.Create(ctx, o))
	}
	for name, spec := range map[string]struct{ ns, node, sa string }{
		"collector-a": {"eddy-system", "node-a", "eddy-collector"},
		"collector-b": {"eddy-system", "node-b", "eddy-collector"},
		"train-a":     {"ml", "node-a", "default"},
		"train-b":     {"ml", "node-b", "default"},
		"q":           {"quiet", "node-a", "default"},
		"coredns-x":   {"kube-system", "node-a", "default"},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: spec.ns, Name: name},
			Spec: corev1.PodSpec{NodeName: spec.node, ServiceAccountName: spec.sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		require.NoError(t, c.Create(ctx, p))
		ic.pods[name] = p
	}
	ic.certs = t.TempDir()
	return ic
}

// token is a service-account token bound to pod, of audience (none: the API
// server's own).
func (ic *intakeCluster) token(t testing.TB, pod string, audience ...string) string {
	p := ic.pods[pod]
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Spec.ServiceAccountName}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audience, ExpirationSeconds: ptr(int64(3600)),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
	require.NoError(t, ic.env.Client.SubResource("token").Create(context.Background(), sa, tr))
	return tr.Status.Token
}

func (ic *intakeCluster) record(pod string) *accessv1.FileAccess {
	p := ic.pods[pod]
	now := time.Now().UnixNano()
	return &accessv1.FileAccess{
		Workload: &accessv1.WorkloadRef{Namespace: p.Namespace, Kind: "Pod", ApiVersion: "v1", Name: p.Name, Rule: "Object", Object: p.Name},
		Dataset:  &accessv1.DatasetRef{Namespace: p.Namespace, Name: "data", Source: "PVC", Pvc: "data"},
		Pod:      p.Name, PodUid: string(p.UID), Container: "c", Path: "f.bin", ReadOps: 10, ReadBytes: 1 << 20,
		FirstAccessUnixNano: now - 1e9, LastAccessUnixNano: now,
	}
}

// start runs the analyzer as cmd/eddy does: TLS intake, TokenReviews,
// admission from an informer cache of pods and namespaces.
func (ic *intakeCluster) start(t *testing.T) (*service.Service, *prometheus.Registry) {
	return ic.startTB(t)
}

func (ic *intakeCluster) startTB(t testing.TB) (*service.Service, *prometheus.Registry) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	certFile, keyFile, err := loopbackcert.Write(ic.certs)
	require.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	adm, cache, err := intake.NewClusterAdmission(ctx, ic.env.Config, ic.env.Client, []string{"kube-system", "eddy-system"})
	require.NoError(t, err)
	go func() { _ = cache.Start(ctx) }()
	require.True(t, cache.WaitForCacheSync(ctx))
	reg := prometheus.NewRegistry()
	svc, err := service.New(ctx, service.Options{
		Client: ic.env.Client, Log: logr.Discard(), Registry: reg, GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "test", StableAssessments: 2,
		ManifestTLS: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		Intake:      intake.Options{Auth: &intake.TokenReviews{Client: ic.env.Client, Users: []string{"system:serviceaccount:eddy-system:eddy-collector"}}, Admission: adm},
	})
	require.NoError(t, err)
	go func() { _ = svc.Run(ctx) }()
	return svc, reg
}

func (ic *intakeCluster) ship(t testing.TB, addr, token, collector string, ws ...*accessv1.AccessWindow) (*accessv1.ShipReply, error) {
	ca, err := os.ReadFile(ic.certs + "/cert.pem")
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	require.NoError(t, err)
	defer conn.Close()
	ctx := context.Background()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, accessv1.AuthorizationMetadata, "Bearer "+token)
	}
	return accessv1.NewAccessIntakeClient(conn).Ship(ctx, &accessv1.ShipRequest{Collector: collector, Windows: ws})
}

func window(seq uint64, recs ...*accessv1.FileAccess) *accessv1.AccessWindow {
	now := time.Now().UnixNano()
	return &accessv1.AccessWindow{Sequence: seq, StartUnixNano: now - 2e9, EndUnixNano: now, Files: recs}
}

// TestIntakeTakesOnlyWhatACollectorMayReport: forged windows (issue 13, 1)
// and sequence poisoning (2) against the real analyzer, gRPC and API server.
func TestIntakeTakesOnlyWhatACollectorMayReport(t *testing.T) {
	ic := newIntakeCluster(t)
	svc, reg := ic.start(t)
	addr := svc.Addr()
	collectorA := ic.token(t, "collector-a", accessv1.Audience)

	// Who may call at all.
	_, err := ic.ship(t, addr, "", "node-a-1", window(1, ic.record("train-a")))
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no token: %v", err)
	_, err = ic.ship(t, addr, ic.token(t, "collector-a"), "node-a-1", window(1, ic.record("train-a")))
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "the collector's API token, not of the intake's audience: %v", err)
	_, err = ic.ship(t, addr, ic.token(t, "train-a", accessv1.Audience), "node-a-1", window(1, ic.record("train-a")))
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "a workload pod's token of the right audience is no collector's: %v", err)
	_, err = ic.ship(t, addr, collectorA, "node-b-1", window(1, ic.record("train-b")))
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "node-a's collector writing node-b's sequence space: %v", err)

	// What it may report: pods of its node in opted-in namespaces.
	_, err = ic.ship(t, addr, collectorA, "node-a-1", window(1,
		ic.record("train-a"), ic.record("train-b"), ic.record("q"), ic.record("coredns-x")))
	require.NoError(t, err)
	rejected := func(reason string) float64 {
		return testutil.ToFloat64(mustCounter(t, reg, "eddy_analyzer_rejected_records_total", reason))
	}
	assert.Equal(t, 1.0, rejected(intake.RejectOtherNode), "train-b runs on node-b")
	assert.Equal(t, 1.0, rejected(intake.RejectNamespace), "quiet is not opted in")
	assert.Equal(t, 1.0, rejected(intake.RejectExcluded), "kube-system is never profiled")

	// Sequence poisoning: a jump no collector makes is refused, and the
	// collector's next real window still counts.
	_, err = ic.ship(t, addr, collectorA, "node-a-1", window(math.MaxUint64, ic.record("train-a")))
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	reply, err := ic.ship(t, addr, collectorA, "node-a-1", window(2, ic.record("train-a")))
	require.NoError(t, err)
	assert.EqualValues(t, 2, reply.GetReceivedSequence(), "received by this instance")
	assert.Less(t, reply.GetAckedSequence(), uint64(2), "not acknowledged before a checkpoint covers it")
	instance := reply.GetInstance()
	assert.NotEmpty(t, instance)

	require.NoError(t, svc.Flush(context.Background()))
	var profiles v1.AccessProfileList
	require.NoError(t, ic.env.Client.List(context.Background(), &profiles))
	var names []string
	for _, p := range profiles.Items {
		names = append(names, p.Namespace+"/"+p.Spec.WorkloadRef.Name)
	}
	assert.Equal(t, []string{"ml/train-a"}, names, "a profile for the collector's own pod only")
	reply, err = ic.ship(t, addr, collectorA, "node-a-1")
	require.NoError(t, err)
	assert.EqualValues(t, 2, reply.GetAckedSequence(), "both real windows applied and acknowledged")
	assert.Equal(t, instance, reply.GetInstance(), "one instance while the process runs")

	// What a dashboard and the stale-analyzer alert read.
	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetHistogram() != nil:
				got[f.GetName()] = float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				got[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	assert.Equal(t, 2.0, got["eddy_analyzer_window_lag_seconds"], "one lag observation per applied window")
	assert.InDelta(t, float64(time.Now().Unix()), got["eddy_analyzer_last_progress_timestamp_seconds"], 60, "the flush made progress just now")
	assert.Eventually(t, func() bool {
		families, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() == "eddy_analyzer_heartbeat_timestamp_seconds" {
				return time.Since(time.Unix(int64(f.GetMetric()[0].GetGauge().GetValue()), 0)) < time.Minute
			}
		}
		return false
	}, 10*time.Second, 100*time.Millisecond, "the heartbeat Lease was renewed and the renewal exported")
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return 0 })
}

// FuzzIntake sends random and adversarial windows, as a compromised or
// broken collector of node-a could, through the real intake (real gRPC,
// TokenReview, admission, publishing to a real API server). Whatever it
// sends: no panic, nothing written outside the opted-in namespace ml, and
// the analyzer's state stays bounded (at most MaxKeysPerPod keys for the
// one pod of node-a in ml).
func FuzzIntake(f *testing.F) {
	ic := newIntakeCluster(f)
	svc, _ := ic.startTB(f)
	token := ic.token(f, "collector-a", accessv1.Audience)
	f.Add([]byte("seed"), uint64(1))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 254, 253}, uint64(math.MaxUint64))
	f.Add(make([]byte, 512), uint64(7))
	pods := []string{"train-a", "train-b", "q", "coredns-x"}
	seq := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte, rawSeq uint64) {
		var ws []*accessv1.AccessWindow
		var req accessv1.ShipRequest
		if proto.Unmarshal(data, &req) == nil && len(req.Windows) > 0 {
			ws = req.Windows // whatever the bytes decode to, as is
		} else {
			w := window(rawSeq)
			for i := 0; i+4 <= len(data) && i < 4*256; i += 4 {
				b := data[i : i+4]
				r := ic.record(pods[int(b[0])%len(pods)])
				switch b[1] % 8 {
				case 0:
					r.PodUid = "forged"
				case 1:
					r.Workload.Namespace = "kube-system"
				case 2:
					r.Workload.Name = fmt.Sprintf("made-up-%d", b[2])
				case 3:
					r.Dataset.Name = fmt.Sprintf("ds-%d", b[2])
				case 4:
					r.Path = strings.Repeat("p", int(b[2])*40)
				case 5:
					r.ReadBytes, r.ReadOps = math.MaxUint64, math.MaxUint64
				case 6:
					r.Workload = nil
				case 7:
					r.Dataset.Namespace = "quiet"
				}
				w.Files = append(w.Files, r)
			}
			ws = []*accessv1.AccessWindow{w}
		}
		// Keep most calls' sequences moving so that their records are applied.
		seq++
		for i, w := range ws {
			if w != nil && rawSeq%3 != 0 {
				w.Sequence = seq + uint64(i)
			}
		}
		seq += uint64(len(ws))
		_, _ = ic.ship(t, svc.Addr(), token, "node-a-1", ws...)
		_ = svc.Flush(context.Background())

		var profiles v1.AccessProfileList
		require.NoError(t, ic.env.Client.List(context.Background(), &profiles))
		for _, p := range profiles.Items {
			require.Equal(t, "ml", p.Namespace, "profile %s written outside the opted-in namespace", p.Name)
		}
		require.LessOrEqual(t, len(profiles.Items), intake.MaxKeysPerPod, "keys are bounded by the pod of node-a in ml")
	})
}

// TestIntakeTakesOnlyObservedPodsACollectorMayReport: a window's observed
// pods (what makes a workload's quiet count as idle) pass the same checks
// as records: a collector may not say it watched another node's pod.
func TestIntakeTakesOnlyObservedPodsACollectorMayReport(t *testing.T) {
	ic := newIntakeCluster(t)
	svc, reg := ic.start(t)
	observed := func(name string) *accessv1.ObservedPod {
		r := ic.record(name)
		return &accessv1.ObservedPod{Workload: r.Workload, Pod: r.Pod, PodUid: r.PodUid}
	}
	w := window(1)
	w.Observed = []*accessv1.ObservedPod{observed("train-a"), observed("train-b")}
	_, err := ic.ship(t, svc.Addr(), ic.token(t, "collector-a", accessv1.Audience), "node-a-1", w)
	require.NoError(t, err)
	assert.Equal(t, 1.0, testutil.ToFloat64(mustCounter(t, reg, "eddy_analyzer_rejected_records_total", intake.RejectOtherNode)), "train-b runs on node-b")
}
