package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

const testNamespace = "eddy-system"

// harness is a real API server with the webhook configurations from
// config/webhook registered against a webhook Server on loopback TLS, with
// the certificates the Server manages itself.
type harness struct {
	env  *controlplane.Env
	c    client.Client
	opts Options
	srv  *Server
	stop context.CancelFunc
	done chan error
}

func startHarness(t testing.TB, tweak func(*Options)) *harness {
	t.Helper()
	env := controlplane.StartForTest(t, controlplane.Options{})
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{env: env, c: c}
	ctx := context.Background()
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}})
	applyManifests(t, c, "rbac.yaml", nil)
	applyManifests(t, c, "origin-policy.yaml", nil)

	h.opts = Options{
		Config:      cfg,
		Namespace:   testNamespace,
		Addr:        "127.0.0.1:0",
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		Injector:    Config{Image: "eddy:test", ImagePullPolicy: corev1.PullNever},
		Log:         testLogger(t),
	}
	if tweak != nil {
		tweak(&h.opts)
	}
	h.startServer(t)
	// Only now that the port is known can the configurations point at it.
	h.opts.Addr = h.srv.Addr()
	applyManifests(t, c, "webhooks.yaml", func(u *unstructured.Unstructured) {
		hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
		for i := range hooks {
			w := hooks[i].(map[string]any)
			path, _, _ := unstructured.NestedString(w, "clientConfig", "service", "path")
			w["clientConfig"] = map[string]any{"url": "https://" + h.opts.Addr + path}
		}
		_ = unstructured.SetNestedSlice(u.Object, hooks, "webhooks")
	})
	if err := h.srv.Certs.Sync(ctx); err != nil {
		t.Fatalf("patch caBundle: %v", err)
	}
	h.waitLive(t, ctx)
	return h
}

func testLogger(t testing.TB) logr.Logger {
	if os.Getenv("EDDY_TEST_LOG") != "" {
		return testr.NewWithInterface(t, testr.Options{Verbosity: 1})
	}
	return logr.Discard()
}

// startServer starts a webhook Server with h.opts and waits until it serves.
func (h *harness) startServer(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := NewServer(ctx, h.opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h.srv, h.stop, h.done = srv, cancel, make(chan error, 1)
	go func() { h.done <- srv.Serve(ctx) }()
	t.Cleanup(func() { h.stopServer(t) })
	deadline := time.Now().Add(30 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("webhook server not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopServer stops the running Server (and is a no-op when none runs).
func (h *harness) stopServer(t testing.TB) {
	if h.stop == nil {
		return
	}
	h.stop()
	if err := <-h.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("webhook server: %v", err)
	}
	h.stop = nil
}

// waitLive waits until the API server calls the mutating webhook with a
// trusted certificate: a dry-run pod create in an opted-in namespace
// reaches the handler.
func (h *harness) waitLive(t testing.TB, ctx context.Context) {
	t.Helper()
	ns := "eddy-probe"
	if err := h.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(h.srv.Metrics.Requests.WithLabelValues("inject"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		pod := testPod(ns, "probe", "", "")
		if err := h.c.Create(ctx, pod, client.DryRunAll); err != nil {
			t.Fatalf("dry-run probe pod: %v", err)
		}
		if testutil.ToFloat64(h.srv.Metrics.Requests.WithLabelValues("inject")) > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the API server did not call the webhook within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// applyManifests creates every object of config/webhook/<file>, changed by
// edit first when given.
func applyManifests(t testing.TB, c client.Client, file string, edit func(*unstructured.Unstructured)) {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "webhook", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(strings.TrimSpace(string(doc))) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decode %s: %v", file, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if edit != nil {
			edit(u)
		}
		if err := c.Create(context.Background(), u); err != nil {
			t.Fatalf("create %s %s from %s: %v", u.GetKind(), u.GetName(), file, err)
		}
	}
}

func mustCreate(t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// testPod is a pod of the Deployment named deployment (through a ReplicaSet
// that need not exist: the pod-template-hash resolves it), reading claim.
func testPod(ns, name, deployment, claim string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{"app": "test"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"}}},
		},
	}
	if strings.HasSuffix(name, "-") {
		pod.GenerateName = name
	} else {
		pod.Name = name
	}
	if deployment != "" {
		hash := "5d8f7c9b4"
		pod.Labels["pod-template-hash"] = hash
		ctrl := true
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: deployment + "-" + hash, UID: uuid.NewUUID(), Controller: &ctrl}}
	}
	if claim != "" {
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	return pod
}

// createApplied creates a Recommendation, moves it to phase Applied
// through the status subresource (as the operator would), and waits until
// the webhook's cache sees it.
func (h *harness) createApplied(t testing.TB, rec *eddyv1alpha1.Recommendation) {
	t.Helper()
	ctx := context.Background()
	mustCreate(t, h.c, rec)
	rec.Status.Phase = eddyv1alpha1.PhaseApplied
	if err := h.c.Status().Update(ctx, rec); err != nil {
		t.Fatalf("set %s Applied: %v", rec.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got eddyv1alpha1.Recommendation
		err := h.srv.Injector.Reader.Get(ctx, client.ObjectKeyFromObject(rec), &got)
		if err == nil && got.Status.Phase == eddyv1alpha1.PhaseApplied {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook cache did not see %s Applied within 10s (last error %v)", rec.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eddyMade marks a recommendation as the analyzer's, as it writes them (the
// tests create them as an administrator, standing in for the analyzer).
var eddyMade = map[string]string{eddyv1alpha1.ManagedByLabel: eddyv1alpha1.ManagerAnalyzer}

func prefetchRec(ns, name, deployment, dataset string) *eddyv1alpha1.Recommendation {
	return &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: eddyMade},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef: &eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: deployment},
			Dataset:   eddyv1alpha1.DatasetReference{Name: dataset, Source: "PVC"},
			Action:    eddyv1alpha1.ActionPrefetch,
			Prefetch: &eddyv1alpha1.PrefetchParameters{
				Strategy: eddyv1alpha1.StrategySequential, BlockSize: resource.MustParse("8Mi"), Concurrency: 8,
				WarmBeforeStart: true, WarmThresholdPercent: 50,
			},
			Evidence: eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassSequentialScan, Confidence: 0.9},
		},
	}
}

func sdkRec(ns, name, deployment, dataset string) *eddyv1alpha1.Recommendation {
	return &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: eddyMade},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef: &eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: deployment},
			Dataset:   eddyv1alpha1.DatasetReference{Name: dataset},
			Action:    eddyv1alpha1.ActionInjectSDK,
			SDK:       &eddyv1alpha1.SDKParameters{},
			Evidence:  eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.9},
		},
	}
}

func namespace(name string, enabled bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if enabled {
		ns.Labels = map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	}
	return ns
}

func injected(pod *corev1.Pod) string { return pod.Annotations[eddyv1alpha1.InjectedAnnotation] }

// webhookConfigsHaveBundle reports whether both configurations carry a
// caBundle, as the CertManager patches it.
func webhookConfigsHaveBundle(ctx context.Context, c client.Client) (bool, error) {
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: "eddy-pod-injector"}, m); err != nil {
		return false, err
	}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: "eddy-approval"}, v); err != nil {
		return false, err
	}
	for _, w := range m.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			return false, fmt.Errorf("mutating webhook %s has no caBundle", w.Name)
		}
	}
	for _, w := range v.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			return false, fmt.Errorf("validating webhook %s has no caBundle", w.Name)
		}
	}
	return true, nil
}
