package workload_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/internal/workload"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/webhook"
)

// The controllers whose objects own pods in the fixtures, as CRDs that hold
// anything (their schemas do not matter to owner resolution).
var crds = []struct{ group, version, kind, plural string }{
	{"jobset.x-k8s.io", "v1alpha2", "JobSet", "jobsets"},
	{"trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainjobs"},
	{"kubeflow.org", "v1", "PyTorchJob", "pytorchjobs"},
	{"argoproj.io", "v1alpha1", "Rollout", "rollouts"},
	{"leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet", "leaderworkersets"},
}

// TestCollectorAndWebhookAgree runs the same pods through the collector's
// resolver (owners read from the API server's metadata) and the webhook's
// (owners from its informer cache first, then the API server), against a
// real API server, and requires the same workload from both — for the pod as
// the collector sees it (named, running) and as the webhook sees it at
// admission (created with generateName, no name yet).
func TestCollectorAndWebhookAgree(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	c := env.Client
	for _, d := range crds {
		installCRD(t, c, d.group, d.version, d.kind, d.plural)
	}
	ns := "ml"
	// Opted in: the webhook caches owners only there.
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}}}))

	md, err := metadata.NewForConfig(env.Config)
	require.NoError(t, err)
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	require.NoError(t, err)
	collectorSide := collector.NewWorkloadResolver(md, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)))

	cache, err := webhook.NewCache(env.Config, "eddy-system", logr.Discard())
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = cache.Start(cctx) }()
	require.True(t, cache.WaitForCacheSync(ctx))
	require.Equal(t, []string{ns}, cache.Namespaces(), "the webhook caches the owners of an opted-in namespace")
	webhookSide, err := webhook.NewWorkloadResolver(cache, env.Config)
	require.NoError(t, err)

	// create makes an object and returns a controller reference to it.
	create := func(apiVersion, kind, name, generateName string, labels map[string]string, owner *metav1.OwnerReference) *metav1.OwnerReference {
		t.Helper()
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetNamespace(ns)
		u.SetName(name)
		u.SetGenerateName(generateName)
		u.SetLabels(labels)
		if owner != nil {
			u.SetOwnerReferences([]metav1.OwnerReference{*owner})
		}
		switch kind {
		case "Deployment", "StatefulSet", "ReplicaSet":
			u.Object["spec"] = map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "x"}},
				"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "x"}},
					"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}}}
		case "Job":
			u.Object["spec"] = map[string]any{"template": map[string]any{"spec": map[string]any{"restartPolicy": "Never",
				"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}}, "suspend": true}
		case "CronJob":
			u.Object["spec"] = map[string]any{"schedule": "0 3 * * *", "suspend": true, "jobTemplate": map[string]any{"spec": map[string]any{
				"template": map[string]any{"spec": map[string]any{"restartPolicy": "Never", "containers": []any{map[string]any{"name": "c", "image": "busybox"}}}}}}}
		case "Pod":
			u.Object["spec"] = map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}
		}
		require.NoError(t, c.Create(ctx, u), "%s %s", kind, name)
		return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: u.GetName(), UID: u.GetUID(), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	}

	deploy := create("apps/v1", "Deployment", "web", "", nil, nil)
	rs := create("apps/v1", "ReplicaSet", "web-7d9f8b6c5d", "", nil, deploy)
	sts := create("apps/v1", "StatefulSet", "db", "", nil, nil)
	cron := create("batch/v1", "CronJob", "nightly", "", nil, nil)
	cronJob := create("batch/v1", "Job", "nightly-29374560", "", nil, cron)
	train := create("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm", "", nil, nil)
	jobset := create("jobset.x-k8s.io/v1alpha2", "JobSet", "llm", "", nil, train)
	jobsetJob := create("batch/v1", "Job", "llm-node-0", "", nil, jobset)
	ptj := create("kubeflow.org/v1", "PyTorchJob", "resnet-3", "", nil, nil)
	rollout := create("argoproj.io/v1alpha1", "Rollout", "api", "", nil, nil)
	rolloutRS := create("apps/v1", "ReplicaSet", "api-6c4d5f7b8", "", nil, rollout)
	lws := create("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "vllm", "", nil, nil)
	leaders := create("apps/v1", "StatefulSet", "vllm", "", nil, lws)
	leader := create("v1", "Pod", "vllm-0", "", nil, leaders)
	workers := create("apps/v1", "StatefulSet", "vllm-0", "", nil, leader)
	train1 := create("batch/v1", "Job", "train-1", "", nil, nil)
	train2 := create("batch/v1", "Job", "train-2", "", nil, nil)
	trainGen := create("batch/v1", "Job", "", "train-", nil, nil)
	dated := create("batch/v1", "Job", "train-20261206-1", "", nil, nil)
	resnet := create("batch/v1", "Job", "resnet-1", "", map[string]string{v1.WorkloadLabel: "vision"}, nil)
	vit := create("batch/v1", "Job", "vit-1", "", map[string]string{v1.WorkloadLabel: "vision"}, nil)
	expA := create("batch/v1", "Job", "exp-1", "", map[string]string{v1.WorkloadLabel: "exp-a"}, nil)
	expB := create("batch/v1", "Job", "exp-2", "", map[string]string{v1.WorkloadLabel: "exp-b"}, nil)

	ref := func(apiVersion, kind, name string, rule v1.WorkloadRule) v1.WorkloadReference {
		return v1.WorkloadReference{APIVersion: apiVersion, Kind: kind, Name: name, Rule: rule}
	}
	kubeflow := map[string]string{workload.KubeflowJobNameLabel: "mnist-2", workload.KubeflowOperatorNameLabel: "pytorchjob-controller"}
	for _, f := range []struct {
		name   string
		owner  *metav1.OwnerReference
		labels map[string]string
		want   v1.WorkloadReference
	}{
		{"deployment", rs, map[string]string{"pod-template-hash": "7d9f8b6c5d"}, ref("apps/v1", "Deployment", "web", v1.RuleObject)},
		{"statefulset", sts, nil, ref("apps/v1", "StatefulSet", "db", v1.RuleObject)},
		{"cronjob", cronJob, nil, ref("batch/v1", "CronJob", "nightly", v1.RuleObject)},
		{"jobset under trainjob", jobsetJob, nil, ref("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm", v1.RuleObject)},
		{"pytorchjob owner", ptj, nil, ref("kubeflow.org/v1", "PyTorchJob", "resnet", v1.RuleNameSuffix)},
		{"pytorchjob labels only", nil, kubeflow, ref("kubeflow.org/v1", "PyTorchJob", "mnist", v1.RuleNameSuffix)},
		{"argo rollout", rolloutRS, map[string]string{"pod-template-hash": "6c4d5f7b8"}, ref("argoproj.io/v1alpha1", "Rollout", "api", v1.RuleObject)},
		{"leaderworkerset leader", leaders, nil, ref("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "vllm", v1.RuleObject)},
		{"leaderworkerset worker", workers, nil, ref("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "vllm", v1.RuleObject)},
		{"bare pod", nil, nil, ref("v1", "Pod", "debug", v1.RuleGenerateName)},
		{"job train-1", train1, nil, ref("batch/v1", "Job", "train", v1.RuleNameSuffix)},
		{"job train-2", train2, nil, ref("batch/v1", "Job", "train", v1.RuleNameSuffix)},
		{"job with generateName", trainGen, nil, ref("batch/v1", "Job", "train", v1.RuleGenerateName)},
		{"job with a dated name", dated, nil, ref("batch/v1", "Job", "train", v1.RuleNameSuffix)},
		{"label joins resnet", resnet, nil, ref("batch/v1", "Job", "vision", v1.RuleLabel)},
		{"label joins vit", vit, nil, ref("batch/v1", "Job", "vision", v1.RuleLabel)},
		{"label splits exp-1", expA, nil, ref("batch/v1", "Job", "exp-a", v1.RuleLabel)},
		{"label splits exp-2", expB, nil, ref("batch/v1", "Job", "exp-b", v1.RuleLabel)},
	} {
		t.Run(f.name, func(t *testing.T) {
			generateName := "debug-"
			if f.owner != nil {
				generateName = f.owner.Name + "-"
			}
			if f.labels[workload.KubeflowJobNameLabel] != "" {
				generateName = f.labels[workload.KubeflowJobNameLabel] + "-worker-"
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: generateName, Labels: f.labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if f.owner != nil {
				pod.OwnerReferences = []metav1.OwnerReference{*f.owner}
			}
			// At admission, as the webhook sees it: no name yet.
			atAdmission, err := webhookSide.Resolve(ctx, pod.DeepCopy())
			require.NoError(t, err)
			require.NoError(t, c.Create(ctx, pod))
			running, err := collectorSide.Resolve(ctx, pod)
			require.NoError(t, err)
			assert.Equal(t, running.Key(), atAdmission.Key(), "collector and webhook must find the same workload")
			assert.Equal(t, ns+"/"+f.want.Key(), running.Key())
			assert.Equal(t, f.want, running.Ref)
			again, err := webhookSide.Resolve(ctx, pod)
			require.NoError(t, err)
			assert.Equal(t, running, again, "the webhook on the created pod")
		})
	}

	// A Job created now is resolved at once by the webhook, before its
	// informer has it: the API server answers.
	late := create("batch/v1", "Job", "train-3", "", nil, nil)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "train-3-", OwnerReferences: []metav1.OwnerReference{*late}}}
	id, err := webhookSide.Resolve(ctx, pod)
	require.NoError(t, err)
	assert.Equal(t, "ml/batch/Job/train", id.Key())
	assert.Equal(t, "train-3", id.Object)
}

func installCRD(t *testing.T, c client.Client, group, version, kind, plural string) {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: fmt.Sprintf("%s-singular", plural)},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
	require.NoError(t, c.Create(context.Background(), crd))
	require.Eventually(t, func() bool {
		got := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(context.Background(), types.NamespacedName{Name: crd.Name}, got); err != nil {
			return false
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "CRD %s established", crd.Name)
}
