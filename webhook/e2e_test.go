package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-autotune/eddy/internal/workload"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/prefetch"
)

// TestEndToEnd runs both webhooks against a real kube-apiserver and etcd.
// The certificates are short-lived (serving 6s, CA 24s) so that every
// subtest runs while they rotate.
func TestEndToEnd(t *testing.T) {
	h := startHarness(t, func(o *Options) {
		o.CertValidity = 6 * time.Second
		o.CAValidity = 24 * time.Second
		o.CAOverlap = 2 * time.Second
		o.CertCheckInterval = 250 * time.Millisecond
		o.MissCheckInterval = 200 * time.Millisecond
	})
	ctx := context.Background()
	mustCreate(t, h.c, namespace("ml", true))
	mustCreate(t, h.c, namespace("plain", false))
	h.createApplied(t, prefetchRec("ml", "web.imagenet.prefetch", "web", "imagenet"))
	h.createApplied(t, sdkRec("ml", "train.coco.sdk", "train", "coco"))
	h.createApplied(t, prefetchRec("plain", "web.imagenet.prefetch", "web", "imagenet"))

	t.Run("injection", func(t *testing.T) {
		ok, err := webhookConfigsHaveBundle(ctx, h.c)
		require.True(t, ok, "caBundle: %v", err)
		native := h.srv.Injector.Config.NativeSidecars
		t.Logf("native sidecars detected: %v", native)
		assert.True(t, native, "kube-apiserver 1.31 supports native sidecars")

		pod := testPod("ml", "web-", "web", "imagenet")
		mustCreate(t, h.c, pod)
		assert.Equal(t, InjectedPrefetch, injected(pod))
		assert.Equal(t, "web.imagenet.prefetch", pod.Annotations[eddyv1alpha1.RecommendationAnnotation])
		require.Len(t, pod.Spec.InitContainers, 1, "prefetch sidecar")
		side := pod.Spec.InitContainers[0]
		assert.Equal(t, PrefetchContainerName, side.Name)
		require.NotNil(t, side.RestartPolicy, "the API server kept restartPolicy Always: a native sidecar")
		assert.Equal(t, corev1.ContainerRestartPolicyAlways, *side.RestartPolicy)
		assert.Equal(t, []string{SidecarCommand}, side.Command)
		assert.Contains(t, side.Args, "--root="+prefetch.DataMountRoot+"/data")
		require.NotNil(t, side.StartupProbe, "warmBeforeStart: startup probe on /warm")
		assert.Equal(t, "/warm", side.StartupProbe.HTTPGet.Path)
		require.Len(t, side.VolumeMounts, 1)
		assert.True(t, side.VolumeMounts[0].ReadOnly)

		plain := testPod("plain", "web-", "web", "imagenet")
		mustCreate(t, h.c, plain)
		assert.Empty(t, injected(plain), "namespace without the opt-in label")
		assert.Empty(t, plain.Spec.InitContainers)

		other := testPod("ml", "api-", "api", "imagenet")
		mustCreate(t, h.c, other)
		assert.Empty(t, injected(other), "no recommendation for Deployment api")

		optedOut := testPod("ml", "web-", "web", "imagenet")
		optedOut.Labels[eddyv1alpha1.AutotuneLabel] = eddyv1alpha1.AutotuneDisabled
		mustCreate(t, h.c, optedOut)
		assert.Empty(t, injected(optedOut), "pod opted out")

		hostNet := testPod("ml", "web-", "web", "imagenet")
		hostNet.Spec.HostNetwork = true
		mustCreate(t, h.c, hostNet)
		assert.Empty(t, injected(hostNet), "host-network pod")

		// A CronJob's Job, resolved through the informer cache of Job metadata.
		cron := &batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "nightly"},
			Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Image: "busybox"}}},
			}}}},
		}
		mustCreate(t, h.c, cron)
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "nightly-29374560", OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(cron, batchv1.SchemeGroupVersion.WithKind("CronJob"))}},
			Spec: cron.Spec.JobTemplate.Spec,
		}
		mustCreate(t, h.c, job)
		cronRec := prefetchRec("ml", "nightly.imagenet.prefetch", "nightly", "imagenet")
		cronRec.Spec.TargetRef = &eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "CronJob", Name: "nightly"}
		h.createApplied(t, cronRec)
		require.Eventually(t, func() bool {
			m, err := workload.ReaderLookup(h.srv.Injector.Reader).Get(ctx, "ml", "batch/v1", "Job", job.Name)
			return err == nil && metav1.GetControllerOf(m) != nil && metav1.GetControllerOf(m).Name == "nightly"
		}, 10*time.Second, 20*time.Millisecond, "Job in the webhook's cache")
		jobPod := testPod("ml", job.Name+"-", "", "imagenet")
		jobPod.Spec.RestartPolicy = corev1.RestartPolicyNever
		jobPod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))}
		mustCreate(t, h.c, jobPod)
		assert.Equal(t, InjectedPrefetch, injected(jobPod), "pod of a CronJob's Job")
		assert.Equal(t, "nightly.imagenet.prefetch", jobPod.Annotations[eddyv1alpha1.RecommendationAnnotation])

		// SDK: the trainer takes PYTHONPATH from a ConfigMap (left alone, skipped
		// with an event); the loader's PYTHONPATH is appended to.
		sdkPod := testPod("ml", "train-", "train", "coco")
		sdkPod.Spec.Containers[0].Name = "trainer"
		sdkPod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: PythonPathEnv, ValueFrom: &corev1.EnvVarSource{
			ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "py"}, Key: "path"}}}}
		loader := sdkPod.Spec.Containers[0].DeepCopy()
		loader.Name = "loader"
		loader.Env = []corev1.EnvVar{{Name: PythonPathEnv, Value: "/app"}}
		sdkPod.Spec.Containers = append(sdkPod.Spec.Containers, *loader)
		mustCreate(t, h.c, sdkPod)
		assert.Equal(t, InjectedSDK, injected(sdkPod))
		require.Len(t, sdkPod.Spec.InitContainers, 1)
		assert.Equal(t, SDKInitContainerName, sdkPod.Spec.InitContainers[0].Name)
		assert.Equal(t, "/app:"+prefetch.SDKMountPath, envValue(sdkPod.Spec.Containers[1], PythonPathEnv))
		assert.NotNil(t, sdkPod.Spec.Containers[0].Env[0].ValueFrom, "valueFrom left alone")
		assert.Len(t, sdkPod.Spec.Containers[0].Env, 1, "skipped container unchanged")
		waitEvent(t, h.c, "ml", "train.coco.sdk", EventInjectionSkip, "trainer")

		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Injections.WithLabelValues(InjectedPrefetch)), 1.0)
		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Skips.WithLabelValues(SkipOptedOut)), 0.0,
			"the objectSelector keeps opted-out pods from reaching the webhook at all")
		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Skips.WithLabelValues(SkipHostNetwork)), 1.0)
		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Skips.WithLabelValues(SkipEnvConflict)), 1.0)
	})

	t.Run("approval", func(t *testing.T) {
		rec := prefetchRec("ml", "reviewed.prefetch", "reviewed", "imagenet")
		mustCreate(t, h.c, rec)
		// alice is bound to the approver ClusterRole from config/webhook/rbac.yaml;
		// bob may update status but not approve.
		alice, err := h.env.AddUser("alice")
		require.NoError(t, err)
		bob, err := h.env.AddUser("bob")
		require.NoError(t, err)
		mustCreate(t, h.c, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "alice-approves"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "eddy-recommendation-approver"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "alice"}},
		})
		mustCreate(t, h.c, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "status-writer"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"eddy.io"}, Resources: []string{"recommendations"}, Verbs: []string{"get", "list"}},
				{APIGroups: []string{"eddy.io"}, Resources: []string{"recommendations/status"}, Verbs: []string{"get", "update", "patch"}},
			},
		})
		mustCreate(t, h.c, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "bob-writes-status"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "status-writer"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "bob"}},
		})
		asAlice, err := client.New(alice, client.Options{Scheme: Scheme()})
		require.NoError(t, err)
		asBob, err := client.New(bob, client.Options{Scheme: Scheme()})
		require.NoError(t, err)

		setCondition := func(c client.Client, typ string) error {
			var cur eddyv1alpha1.Recommendation
			if err := c.Get(ctx, client.ObjectKeyFromObject(rec), &cur); err != nil {
				return err
			}
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: "Reviewed", Message: "looks right"})
			return c.Status().Update(ctx, &cur)
		}
		err = setCondition(asBob, eddyv1alpha1.ConditionApproved)
		require.Error(t, err, "bob has no approve verb")
		assert.True(t, apierrors.IsForbidden(err), "denied by the webhook: %v", err)
		assert.Contains(t, err.Error(), `user "bob" may not approve`)

		// bob's other status changes pass: only the decision is guarded.
		var cur eddyv1alpha1.Recommendation
		require.NoError(t, asBob.Get(ctx, client.ObjectKeyFromObject(rec), &cur))
		cur.Status.Phase = eddyv1alpha1.PhaseProposed
		require.NoError(t, asBob.Status().Update(ctx, &cur))

		require.NoError(t, setCondition(asAlice, eddyv1alpha1.ConditionApproved), "alice holds the approve verb")
		var got eddyv1alpha1.Recommendation
		require.NoError(t, h.c.Get(ctx, client.ObjectKeyFromObject(rec), &got))
		assert.True(t, meta.IsStatusConditionTrue(got.Status.Conditions, eddyv1alpha1.ConditionApproved))

		err = setCondition(asAlice, eddyv1alpha1.ConditionDenied)
		require.Error(t, err, "never both Approved and Denied")
		assert.Contains(t, err.Error(), "cannot be both Approved and Denied")
		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Approvals.WithLabelValues("denied")), 2.0)
		assert.GreaterOrEqual(t, testutil.ToFloat64(h.srv.Metrics.Approvals.WithLabelValues("allowed")), 1.0)
	})

	t.Run("recommendations eddy did not propose", func(t *testing.T) {
		// carol may create recommendations and approve them, nothing else:
		// she must not get eddy to scale what she may not (issue 13, 6).
		carol, err := h.env.AddUser("carol")
		require.NoError(t, err)
		mustCreate(t, h.c, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "rec-writer"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"eddy.io"}, Resources: []string{"recommendations"}, Verbs: []string{"create", "get", "update"}}},
		})
		for _, role := range []string{"rec-writer", "eddy-recommendation-approver"} {
			mustCreate(t, h.c, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "carol-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "carol"}},
			})
		}
		asCarol, err := client.New(carol, client.Options{Scheme: Scheme()})
		require.NoError(t, err)
		scale := &eddyv1alpha1.Recommendation{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "payments-bigger", Labels: eddyMade},
			Spec: eddyv1alpha1.RecommendationSpec{
				TargetRef: &eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "payments"},
				Dataset:   eddyv1alpha1.DatasetReference{Name: "imagenet", Source: "PVC"},
				Action:    eddyv1alpha1.ActionScaleCache,
				ScaleCache: &eddyv1alpha1.ScaleCacheParameters{Replicas: 30,
					CacheTargetRef: &eddyv1alpha1.CacheTargetReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "payments"}},
				Evidence: eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 1},
			},
		}
		err = asCarol.Create(ctx, scale.DeepCopy())
		require.Error(t, err, "carol may not pass her recommendation off as the analyzer's")
		assert.Contains(t, err.Error(), "only eddy-system/eddy-analyzer may mark")
		scale.Labels = nil
		require.NoError(t, asCarol.Create(ctx, scale))
		approve := func(c client.Client) error {
			var cur eddyv1alpha1.Recommendation
			if err := c.Get(ctx, client.ObjectKeyFromObject(scale), &cur); err != nil {
				return err
			}
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: eddyv1alpha1.ConditionApproved, Status: metav1.ConditionTrue, Reason: "Mine", Message: "go"})
			return c.Status().Update(ctx, &cur)
		}
		err = approve(asCarol)
		require.Error(t, err, "carol holds the approve verb, but may not scale Deployment/payments")
		assert.Contains(t, err.Error(), `user "carol" may not scale Deployment/payments in ml directly`)

		// With the right to scale it herself, her approval stands.
		mustCreate(t, h.c, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "scale-payments"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale"}, ResourceNames: []string{"payments"}, Verbs: []string{"update"}}},
		})
		mustCreate(t, h.c, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "carol-scales-payments"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "scale-payments"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "carol"}},
		})
		require.Eventually(t, func() bool { return approve(asCarol) == nil }, 10*time.Second, 200*time.Millisecond, "RBAC takes effect")
	})

	t.Run("rotation while creating pods", func(t *testing.T) {
		servingBefore := testutil.ToFloat64(h.srv.Metrics.CertRotations.WithLabelValues("serving"))
		caBefore := testutil.ToFloat64(h.srv.Metrics.CertRotations.WithLabelValues("ca"))
		stop := make(chan struct{})
		var mu sync.Mutex
		serials, issuers := map[string]bool{}, map[string]bool{}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				conn, err := tls.Dial("tcp", h.srv.Addr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the served certificate only
				if err != nil {
					continue
				}
				c := conn.ConnectionState().PeerCertificates[0]
				mu.Lock()
				serials[c.SerialNumber.String()], issuers[c.Issuer.CommonName] = true, true
				mu.Unlock()
				_ = conn.Close()
			}
		}()
		const rate, dur = 20, 30 * time.Second
		var created, missed int
		tick := time.NewTicker(time.Second / rate)
		end := time.Now().Add(dur)
		for time.Now().Before(end) {
			<-tick.C
			pod := testPod("ml", "web-", "web", "imagenet")
			require.NoError(t, h.c.Create(ctx, pod))
			created++
			if injected(pod) != InjectedPrefetch {
				missed++
			}
		}
		tick.Stop()
		close(stop)
		wg.Wait()
		serving := testutil.ToFloat64(h.srv.Metrics.CertRotations.WithLabelValues("serving")) - servingBefore
		cas := testutil.ToFloat64(h.srv.Metrics.CertRotations.WithLabelValues("ca")) - caBefore
		t.Logf("rotation: %d pods created over %s, %d not injected; %v serving certificates and %v CAs issued; %d serials and %d issuers served",
			created, dur, missed, serving, cas, len(serials), len(issuers))
		assert.Zero(t, missed, "every pod created during rotation was injected")
		assert.GreaterOrEqual(t, serving, 4.0, "serving certificate renewed")
		assert.GreaterOrEqual(t, cas, 1.0, "CA rotated")
		assert.GreaterOrEqual(t, len(serials), 4, "renewed certificates were served without a restart")
		assert.GreaterOrEqual(t, len(issuers), 2, "certificates of the new CA were served")
	})

	t.Run("fail open when stopped", func(t *testing.T) {
		h.stopServer(t)
		const n = 20
		var missed int
		start := time.Now()
		for range n {
			pod := testPod("ml", "web-", "web", "imagenet")
			require.NoError(t, h.c.Create(ctx, pod), "failurePolicy Ignore: pods are created while the webhook is down")
			if injected(pod) == "" {
				missed++
			}
		}
		took := time.Since(start)
		t.Logf("fail-open: %d pods created in %s with the webhook stopped; %d missed injection (no %s annotation)", n, took, missed, eddyv1alpha1.InjectedAnnotation)
		assert.Equal(t, n, missed)
		missedListed := countUninjected(t, h.c, "ml", "web")
		assert.GreaterOrEqual(t, missedListed, n, "misses are visible as pods without the annotation")

		// Restarted on the same address, it injects again, and its
		// eddy_webhook_uninjected_pods shows what it missed while down (plus
		// the host-network pod of the first subtest, which it saw and skipped:
		// pod metadata cannot tell the two apart).
		h.startServer(t)
		h.waitLive(t, ctx)
		pod := testPod("ml", "web-", "web", "imagenet")
		mustCreate(t, h.c, pod)
		assert.Equal(t, InjectedPrefetch, injected(pod))
		deadline := time.Now().Add(10 * time.Second)
		for testutil.ToFloat64(h.srv.Metrics.Uninjected) < n && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		gauge := testutil.ToFloat64(h.srv.Metrics.Uninjected)
		t.Logf("fail-open: eddy_webhook_uninjected_pods = %v after restart (%d missed while down, %d uninjected pods of Deployment web listed)", gauge, n, missedListed)
		assert.Equal(t, float64(missedListed), gauge, "the gauge counts exactly the uninjected pods listed")
	})
}

// countUninjected counts the pods of a Deployment (created after its
// recommendation was applied) that carry no eddy.io/injected annotation and
// did not opt out: the trace of admissions the webhook missed, as
// eddy_webhook_uninjected_pods defines it.
func countUninjected(t *testing.T, c client.Client, ns, deployment string) int {
	t.Helper()
	var pods corev1.PodList
	require.NoError(t, c.List(context.Background(), &pods, client.InNamespace(ns)))
	n := 0
	for _, p := range pods.Items {
		if strings.HasPrefix(p.GenerateName, deployment+"-") && injected(&p) == "" && p.Labels[eddyv1alpha1.AutotuneLabel] != eddyv1alpha1.AutotuneDisabled {
			n++
		}
	}
	return n
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// waitEvent waits for an event on the named Recommendation with reason
// whose message contains substr.
func waitEvent(t *testing.T, c client.Client, ns, rec, reason, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var events corev1.EventList
		require.NoError(t, c.List(context.Background(), &events, client.InNamespace(ns)))
		var seen []string
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Recommendation" && e.InvolvedObject.Name == rec {
				seen = append(seen, fmt.Sprintf("%s: %s", e.Reason, e.Message))
				if e.Reason == reason && strings.Contains(e.Message, substr) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event on recommendation %s mentioning %q; saw %q", reason, rec, substr, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
