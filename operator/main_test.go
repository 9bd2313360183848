package operator_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/operator"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// env is one control plane with kwok nodes shared by the tests of this
// package; each test works in its own namespace and runs its own operator,
// one at a time.
var env *controlplane.Env

const operatorSA = "system:serviceaccount:eddy-system:eddy-operator"

func TestMain(m *testing.M) {
	flag.Parse()
	logf.SetLogger(logr.Discard())
	if testing.Short() {
		// Unit tests only; the rest skip without a control plane.
		os.Exit(m.Run())
	}
	var err error
	env, err = controlplane.Start(context.Background(), controlplane.Options{Nodes: 2})
	if err != nil {
		fmt.Fprintln(os.Stderr, "control plane:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = setUpCluster(ctx)
	code := 1
	if err == nil {
		code = m.Run()
	} else {
		fmt.Fprintln(os.Stderr, "set up:", err)
	}
	cancel()
	_ = env.Stop()
	os.Exit(code)
}

// setUpCluster installs the operator's RBAC, a Fluid-like runtime CRD with a
// /scale subresource, and keeps the analyzer's heartbeat Lease renewed, as
// the analyzer would.
func setUpCluster(ctx context.Context) error {
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-system"}}); err != nil {
		return err
	}
	if err := installRBAC(ctx, "eddy-system"); err != nil {
		return err
	}
	if err := env.Client.Create(ctx, fluidRuntimeCRD()); err != nil {
		return err
	}
	if err := waitServed(ctx); err != nil {
		return err
	}
	renew := func() {
		_ = renewLease(ctx, "eddy-system", time.Now())
	}
	renew()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				renew()
			}
		}
	}()
	return nil
}

// installRBAC applies config/operator with its namespace set to ns.
func installRBAC(ctx context.Context, ns string) error {
	files, err := filepath.Glob("../config/operator/*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "kustomization.yaml") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) == 0 {
				continue
			}
			if ns != "eddy-system" {
				// Another namespace for the operator's Leases: only the
				// namespaced Role and RoleBinding move there.
				if u.GetKind() != "Role" && u.GetKind() != "RoleBinding" {
					continue
				}
				u.SetNamespace(ns)
			}
			if err := env.Client.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

func renewLease(ctx context.Context, ns string, at time.Time) error {
	lease := &coordinationv1.Lease{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "eddy-analyzer"}, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eddy-analyzer"},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("analyzer-0"), RenewTime: &metav1.MicroTime{Time: at}},
		}
		return env.Client.Create(ctx, lease)
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &metav1.MicroTime{Time: at}
	return env.Client.Update(ctx, lease)
}

var runtimeGVK = schema.GroupVersionKind{Group: "data.fluid.io", Version: "v1alpha1", Kind: "AlluxioRuntime"}

// fluidRuntimeCRD is a stand-in for Fluid's AlluxioRuntime: the fields the
// operator uses (spec.replicas) and a /scale subresource. No controller runs
// its workers, so its status stays empty.
func fluidRuntimeCRD() *apiextensionsv1.CustomResourceDefinition {
	preserve := true
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "alluxioruntimes.data.fluid.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "data.fluid.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "alluxioruntimes", Singular: "alluxioruntime", Kind: "AlluxioRuntime", ListKind: "AlluxioRuntimeList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1alpha1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"replicas": {Type: "integer", Format: "int32"},
						}, XPreserveUnknownFields: &preserve},
						"status": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"currentWorkerNumberScheduled": {Type: "integer", Format: "int32"},
							"selector":                     {Type: "string"},
						}},
					},
				}},
				Subresources: &apiextensionsv1.CustomResourceSubresources{
					Status: &apiextensionsv1.CustomResourceSubresourceStatus{},
					Scale: &apiextensionsv1.CustomResourceSubresourceScale{
						SpecReplicasPath:   ".spec.replicas",
						StatusReplicasPath: ".status.currentWorkerNumberScheduled",
						LabelSelectorPath:  ptr.To(".status.selector"),
					},
				},
			}},
		},
	}
}

func waitServed(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var l unstructured.UnstructuredList
		l.SetGroupVersionKind(runtimeGVK.GroupVersion().WithKind("AlluxioRuntimeList"))
		if err := env.Client.List(ctx, &l); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("AlluxioRuntime CRD not served after 30s")
}

// requestCounter counts the API requests an operator makes, by method and
// path, through a wrapped transport.
type requestCounter struct {
	mu    sync.Mutex
	total atomic.Int64
	byKey map[string]int
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		c.total.Add(1)
		c.mu.Lock()
		if c.byKey == nil {
			c.byKey = map[string]int{}
		}
		c.byKey[req.Method+" "+req.URL.Path]++
		c.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

// count returns how many requests with this method went to this path.
func (c *requestCounter) count(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[method+" "+path]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// testOptions are operator options with short times for tests.
func testOptions() operator.Options {
	return operator.Options{
		AnalyzerStaleAfter:  30 * time.Second,
		StaleRetry:          500 * time.Millisecond,
		VerifySettle:        -1,
		StabilizationWindow: -1,
	}
}

// startOperator runs the operator as its service account (so the RBAC in
// config/operator is what it gets), with leader election, until the test
// ends or stop is called.
func startOperator(t testing.TB, opts operator.Options, counter *requestCounter) (stop func()) {
	t.Helper()
	skipWithoutControlPlane(t)
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: operatorSA, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:eddy-system", "system:authenticated"}}
	cfg.QPS, cfg.Burst = 200, 400
	if counter != nil {
		cfg.Wrap(counter.wrap)
	}
	mgr, err := operator.New(cfg, operator.Config{Options: opts, LeaderElection: true, SkipControllerNameValidation: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "operator stopped with an error")
			case <-time.After(30 * time.Second):
				t.Error("operator did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-mgr.Elected():
	case err := <-done:
		t.Fatalf("operator stopped before it was elected: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("operator not elected leader within 30s")
	}
	return stop
}

// newNamespace creates a namespace for one test and deletes it afterwards.
func newNamespace(t *testing.T, name string) string {
	t.Helper()
	skipWithoutControlPlane(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}}}
	require.NoError(t, env.Client.Create(context.Background(), ns))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ns) })
	return name
}

func createPolicy(t *testing.T, ns string, spec eddyv1alpha1.AutotunePolicySpec) {
	t.Helper()
	require.NoError(t, env.Client.Create(context.Background(), &eddyv1alpha1.AutotunePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}, Spec: spec,
	}))
}

func createStatefulSet(t *testing.T, ns, name string, replicas int32) *appsv1.StatefulSet {
	t.Helper()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       fakePodSpec(),
			},
		},
	}
	require.NoError(t, env.Client.Create(context.Background(), sts))
	return sts
}

func fakePodSpec() corev1.PodSpec {
	return corev1.PodSpec{
		AutomountServiceAccountToken: ptr.To(false),
		Containers:                   []corev1.Container{{Name: "main", Image: "fake:latest"}},
		Tolerations:                  []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists}},
	}
}

func createRuntime(t *testing.T, ns, name string, replicas int64) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"replicas": replicas}}}
	u.SetGroupVersionKind(runtimeGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	require.NoError(t, env.Client.Create(context.Background(), u))
	return u
}

func runtimeReplicas(t testing.TB, ns, name string) int64 {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(runtimeGVK)
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u))
	n, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
	return n
}

func stsReplicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	sts := &appsv1.StatefulSet{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, sts))
	return *sts.Spec.Replicas
}

func createPVC(t *testing.T, ns, name, cacheTarget string) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if cacheTarget != "" {
		pvc.Annotations = map[string]string{eddyv1alpha1.CacheTargetAnnotation: cacheTarget}
	}
	require.NoError(t, env.Client.Create(context.Background(), pvc))
}

// createReader creates a pod that mounts the dataset's PVC. The PVC is never
// bound, so the pod stays Pending: a pending pod counts as using it.
func createReader(t *testing.T, ns, name, dataset string) *corev1.Pod {
	t.Helper()
	spec := fakePodSpec()
	spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: dataset}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	require.NoError(t, env.Client.Create(context.Background(), pod))
	return pod
}

// features is a profile's measurements with the two the operator judges by.
func features(readWait, throughput float64) *eddyv1alpha1.AccessFeatures {
	return &eddyv1alpha1.AccessFeatures{BytesRead: 1 << 30, ReadOps: 1 << 14, Files: 1000, SequentialRatio: 0.1, WholeFileRatio: 1, Coverage: 1, Epochs: 3,
		WorkingSetBytes: 10 << 30, ThroughputBytesPerSecond: throughput, ReadWaitShare: readWait, HotSetShare: 0.2}
}

type recOpt func(*eddyv1alpha1.Recommendation)

func withConfidence(c float64) recOpt {
	return func(r *eddyv1alpha1.Recommendation) { r.Spec.Evidence.Confidence = c }
}

func withTarget(kind, name string) recOpt {
	return func(r *eddyv1alpha1.Recommendation) {
		r.Spec.TargetRef = &eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: kind, Name: name}
	}
}

func withProfile(name string) recOpt {
	return func(r *eddyv1alpha1.Recommendation) { r.Spec.Evidence.Profile = name }
}

// proposedByAnalyzer is the mark the analyzer puts on what it proposes
// (these tests stand in for it); withoutMark makes a recommendation someone
// else wrote.
func proposedByAnalyzer() map[string]string {
	return map[string]string{eddyv1alpha1.ManagedByLabel: eddyv1alpha1.ManagerAnalyzer}
}

func withoutMark() recOpt {
	return func(r *eddyv1alpha1.Recommendation) { r.Labels = nil }
}

func scaleRec(ns, name, dataset string, replicas int32, opts ...recOpt) *eddyv1alpha1.Recommendation {
	r := &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: proposedByAnalyzer()},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef:  &eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train"},
			Dataset:    eddyv1alpha1.DatasetReference{Name: dataset, Source: "PVC"},
			Action:     eddyv1alpha1.ActionScaleCache,
			ScaleCache: &eddyv1alpha1.ScaleCacheParameters{Replicas: replicas},
			Evidence: eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.9, Features: features(0.4, 100<<20),
				ExpectedBenefit: &eddyv1alpha1.Benefit{Summary: "working set fits the cache"}},
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func prefetchRec(ns, name, dataset string, opts ...recOpt) *eddyv1alpha1.Recommendation {
	r := &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: proposedByAnalyzer()},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef: &eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "scan"},
			Dataset:   eddyv1alpha1.DatasetReference{Name: dataset, Source: "PVC"},
			Action:    eddyv1alpha1.ActionPrefetch,
			Prefetch:  &eddyv1alpha1.PrefetchParameters{Strategy: eddyv1alpha1.StrategySequential, BlockSize: resource.MustParse("8Mi"), Concurrency: 4},
			Evidence: eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassSequentialScan, Confidence: 0.9, Features: features(0.5, 50<<20),
				ExpectedBenefit: &eddyv1alpha1.Benefit{Summary: "read wait 50% → 10%"}},
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		require.NoError(t, env.Client.Create(context.Background(), o))
	}
}

func getRec(t *testing.T, ns, name string) *eddyv1alpha1.Recommendation {
	t.Helper()
	r := &eddyv1alpha1.Recommendation{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, r))
	return r
}

// eventually polls cond every 100 ms until it holds or timeout passes; cond
// returns what it saw, for the failure message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		var ok bool
		ok, last = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPhase waits until the recommendation reaches phase.
func waitPhase(t *testing.T, ns, name string, phase eddyv1alpha1.RecommendationPhase, timeout time.Duration) *eddyv1alpha1.Recommendation {
	t.Helper()
	var rec *eddyv1alpha1.Recommendation
	eventually(t, timeout, fmt.Sprintf("recommendation %s/%s %s", ns, name, phase), func() (bool, string) {
		rec = getRec(t, ns, name)
		return rec.Status.Phase == phase, describe(rec)
	})
	return rec
}

// holdPhase asserts the recommendation stays in phase for d.
func holdPhase(t *testing.T, ns, name string, phase eddyv1alpha1.RecommendationPhase, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		rec := getRec(t, ns, name)
		require.Equal(t, phase, rec.Status.Phase, "recommendation %s/%s left %s: %s", ns, name, phase, describe(rec))
		time.Sleep(200 * time.Millisecond)
	}
}

func describe(r *eddyv1alpha1.Recommendation) string {
	s := fmt.Sprintf("phase=%q supersededBy=%q", r.Status.Phase, r.Status.SupersededBy)
	for _, c := range r.Status.Conditions {
		s += fmt.Sprintf(" %s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message)
	}
	return s
}

func condition(r *eddyv1alpha1.Recommendation, typ string) metav1.Condition {
	c := meta.FindStatusCondition(r.Status.Conditions, typ)
	if c == nil {
		return metav1.Condition{}
	}
	return *c
}

// setProfile writes an AccessProfile with features seen now, as the analyzer would.
func setProfile(t *testing.T, ns, name, workloadKind, workload, dataset string, f *eddyv1alpha1.AccessFeatures) {
	t.Helper()
	ctx := context.Background()
	p := &eddyv1alpha1.AccessProfile{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p)
	if apierrors.IsNotFound(err) {
		p = &eddyv1alpha1.AccessProfile{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: eddyv1alpha1.AccessProfileSpec{
				WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: workloadKind, Name: workload},
				Dataset:     eddyv1alpha1.DatasetReference{Name: dataset, Source: "PVC"},
			},
		}
		require.NoError(t, env.Client.Create(ctx, p))
	} else {
		require.NoError(t, err)
	}
	now := metav1.Now()
	p.Status.Class = eddyv1alpha1.ClassShuffledEpochs
	p.Status.Confidence = 0.9
	p.Status.Features = f
	// One more run that read as f says, ended, as the analyzer reports it.
	wall := float64(f.BytesRead) / f.ThroughputBytesPerSecond
	p.Status.RecentRuns = append(p.Status.RecentRuns, eddyv1alpha1.RunSummary{
		Pod: fmt.Sprintf("%s-%d", workload, len(p.Status.RecentRuns)), Start: now, End: now, Ended: true,
		BytesRead: f.BytesRead, ReadOps: f.ReadOps, WallSeconds: wall, ReadWaitSeconds: wall * f.ReadWaitShare, ReadWaitShare: f.ReadWaitShare,
		ThroughputBytesPerSecond: f.ThroughputBytesPerSecond,
	})
	p.Status.LastSeen = &now
	if p.Status.FirstSeen == nil {
		p.Status.FirstSeen = &now
	}
	require.NoError(t, env.Client.Status().Update(ctx, p))
}

// byKind aggregates the counted requests by method, resource and subresource,
// names left out.
func (c *requestCounter) byKind() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for key, n := range c.byKey {
		method, path, _ := strings.Cut(key, " ")
		parts := strings.Split(strings.Trim(path, "/"), "/")
		kind := path
		for i, p := range parts {
			if p == "namespaces" && i+2 < len(parts) {
				rest := parts[i+2:]
				kind = rest[0]
				if len(rest) > 2 {
					kind += "/" + rest[2]
				}
				break
			}
		}
		out[method+" "+kind] += n
	}
	return out
}

func skipWithoutControlPlane(t testing.TB) {
	if env == nil {
		t.Skip("needs a real kube-apiserver and kwok nodes; skipped with -short")
	}
}
