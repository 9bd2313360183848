package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestStatefulSetScalesOnKwokNodes checks what the operator will rely on: a
// real scheduler and StatefulSet controller place pods on kwok fake nodes,
// the pods reach Running, and writing the /scale subresource changes their
// number.
func TestStatefulSetScalesOnKwokNodes(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	require.Len(t, env.NodeNames(), 3)

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cache"}}
	require.NoError(t, env.Client.Create(ctx, ns))
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "workers", Namespace: ns.Name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](2),
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "workers"}},
			ServiceName:         "workers",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "workers"}},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers:                   []corev1.Container{{Name: "cache", Image: "cache:fake"}},
					Tolerations:                  []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists}},
				},
			},
		},
	}
	require.NoError(t, env.Client.Create(ctx, sts))
	waitRunning(ctx, t, env, ns.Name, 2)

	scale := &autoscalingv1.Scale{}
	require.NoError(t, env.Client.SubResource("scale").Get(ctx, sts, scale))
	require.EqualValues(t, 2, scale.Spec.Replicas)
	require.EqualValues(t, 2, scale.Status.Replicas)

	setScale(ctx, t, env, sts, 5)
	waitRunning(ctx, t, env, ns.Name, 5)
	setScale(ctx, t, env, sts, 1)
	waitRunning(ctx, t, env, ns.Name, 1)
}

// setScale writes spec.replicas through the /scale subresource, as the
// operator does, retrying when the StatefulSet controller wrote in between.
func setScale(ctx context.Context, t *testing.T, env *controlplane.Env, obj client.Object, replicas int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale := &autoscalingv1.Scale{}
		if err := env.Client.SubResource("scale").Get(ctx, obj, scale); err != nil {
			return err
		}
		scale.Spec.Replicas = replicas
		return env.Client.SubResource("scale").Update(ctx, obj, client.WithSubResourceBody(scale))
	})
	require.NoError(t, err)
}

func TestMissingBinaryNamesWhatProvidesIt(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kubectl"), []byte("#!/bin/sh\n"), 0o755))
	_, err := controlplane.Start(context.Background(), controlplane.Options{BinDir: dir, Nodes: 1})
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{"etcd: apt-get install etcd-server", "kube-apiserver: make kube-binaries", "kwok: make tools"} {
		require.Contains(t, msg, want)
	}
	require.NotContains(t, msg, "kubectl:", "kubectl is present and must not be reported")
}

// waitRunning waits until exactly want pods of the namespace are Running on
// kwok nodes and no others exist.
func waitRunning(ctx context.Context, t *testing.T, env *controlplane.Env, ns string, want int) {
	t.Helper()
	var last string
	for {
		var pods corev1.PodList
		require.NoError(t, env.Client.List(ctx, &pods, client.InNamespace(ns)))
		running := 0
		var states []string
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && strings.HasPrefix(p.Spec.NodeName, "kwok-node-") {
				running++
			}
			states = append(states, fmt.Sprintf("%s=%s@%s", p.Name, p.Status.Phase, p.Spec.NodeName))
		}
		last = strings.Join(states, " ")
		if running == want && len(pods.Items) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("want %d Running pods in %s, have: %s (component logs in %s)", want, ns, last, env.Dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// BenchmarkPodsRunning measures how fast the control plane brings pods to
// Running on kwok nodes, at the controllers' own default request rate (20
// QPS) and at DefaultControllerQPS, side by side in one run: scale tests
// (issue 19) need thousands of pods. Run it with -benchtime=1x.
func BenchmarkPodsRunning(b *testing.B) {
	const pods = 600
	for _, qps := range []int{20, controlplane.DefaultControllerQPS} {
		b.Run(fmt.Sprintf("qps=%d", qps), func(b *testing.B) {
			env := controlplane.StartForTest(b, controlplane.Options{Nodes: 10, ControllerQPS: qps})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			for i := range b.N {
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%d", i)}}
				require.NoError(b, env.Client.Create(ctx, ns))
				d := &appsv1.Deployment{
					ObjectMeta: metav1.ObjectMeta{Name: "many", Namespace: ns.Name},
					Spec: appsv1.DeploymentSpec{
						Replicas: ptr.To[int32](pods),
						Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "many"}},
						Template: corev1.PodTemplateSpec{
							ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "many"}},
							Spec: corev1.PodSpec{
								AutomountServiceAccountToken: ptr.To(false),
								Containers:                   []corev1.Container{{Name: "c", Image: "fake"}},
								Tolerations:                  []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists}},
							},
						},
					},
				}
				start := time.Now()
				require.NoError(b, env.Client.Create(ctx, d))
				for {
					var list corev1.PodList
					require.NoError(b, env.Client.List(ctx, &list, client.InNamespace(ns.Name)))
					running := 0
					for _, p := range list.Items {
						if p.Status.Phase == corev1.PodRunning {
							running++
						}
					}
					if running == pods {
						break
					}
					require.NoError(b, ctx.Err(), "%d of %d pods Running", running, pods)
					time.Sleep(250 * time.Millisecond)
				}
				b.ReportMetric(pods/time.Since(start).Seconds(), "pods/s")
			}
		})
	}
}
