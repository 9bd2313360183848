package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/config"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// These tests run against a real kube-apiserver and etcd with the committed
// CRDs: what they reject is what a user's kubectl apply would see rejected.

func TestSamplesApply(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	samples, err := config.Samples()
	require.NoError(t, err)
	require.NotEmpty(t, samples)
	kinds := map[string]bool{}
	for _, s := range samples {
		obj := s.Object.DeepCopy()
		require.NoError(t, env.Client.Create(ctx, obj), "sample %s (%s %s) must apply", s.File, obj.GetKind(), obj.GetName())
		kinds[obj.GetKind()] = true
	}
	for _, k := range []string{"AutotunePolicy", "AccessProfile", "Recommendation"} {
		assert.True(t, kinds[k], "config/samples has no %s", k)
	}
}

func TestDefaultsAreFilledIn(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	ns := "defaults"
	createNamespace(t, env, ns)

	p := &v1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
	require.NoError(t, env.Client.Create(ctx, p))
	got := &v1.AutotunePolicy{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(p), got))
	assert.Equal(t, v1.ModeRecommend, got.Spec.Mode, "mode defaults to Recommend")
	require.NotNil(t, got.Spec.MinConfidence)
	assert.InDelta(t, 0.7, *got.Spec.MinConfidence, 1e-9)
	require.NotNil(t, got.Spec.IdleAfter)
	assert.Equal(t, "24h0m0s", got.Spec.IdleAfter.Duration.String())

	p2 := &v1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Name: "budget", Namespace: ns},
		Spec: v1.AutotunePolicySpec{ChangeBudget: &v1.ChangeBudget{MaxChanges: 3}, CacheWorkers: &v1.CacheWorkerBounds{Max: 4}}}
	require.NoError(t, env.Client.Create(ctx, p2))
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(p2), got))
	assert.Equal(t, "1h0m0s", got.Spec.ChangeBudget.Per.Duration.String(), "changeBudget.per defaults to 1h")

	r := validRecommendation(ns, "sdk")
	r.Spec.Action = v1.ActionInjectSDK
	r.Spec.Prefetch = nil
	r.Spec.SDK = &v1.SDKParameters{}
	require.NoError(t, env.Client.Create(ctx, r))
	gotR := &v1.Recommendation{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(r), gotR))
	assert.Equal(t, "Python", gotR.Spec.SDK.Language)
	assert.Equal(t, "PyTorch", gotR.Spec.SDK.Framework)
	assert.Equal(t, v1.DatasetSourcePVC, gotR.Spec.Dataset.Source)
}

func TestInvalidObjectsAreRejectedNamingTheField(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	ns := "invalid"
	createNamespace(t, env, ns)

	cases := []struct {
		name   string
		obj    client.Object
		fields []string // every one must appear in the rejection
	}{
		{"unknown mode", unstructuredPolicy(ns, "bad-mode", map[string]any{"mode": "Sometimes"}), []string{"spec.mode", "Sometimes"}},
		{"unknown auto-apply action", unstructuredPolicy(ns, "bad-action", map[string]any{"autoApply": []any{"Teleport"}}), []string{"spec.autoApply[0]"}},
		{"confidence above 1", unstructuredPolicy(ns, "bad-conf", map[string]any{"minConfidence": 1.5}), []string{"spec.minConfidence"}},
		{"negative cache workers", unstructuredPolicy(ns, "neg", map[string]any{"cacheWorkers": map[string]any{"min": -1, "max": 3}}), []string{"spec.cacheWorkers.min"}},
		{"min above max", unstructuredPolicy(ns, "minmax", map[string]any{"cacheWorkers": map[string]any{"min": 5, "max": 2}}), []string{"spec.cacheWorkers.min", "less than or equal"}},
		{"negative bandwidth", unstructuredPolicy(ns, "negbw", map[string]any{"prefetch": map[string]any{"maxBandwidth": "-10Mi"}}), []string{"spec.prefetch.maxBandwidth", "negative"}},
		{"negative change budget", unstructuredPolicy(ns, "negbudget", map[string]any{"changeBudget": map[string]any{"maxChanges": -2}}), []string{"spec.changeBudget.maxChanges"}},
		{"prefetch action without prefetch block", func() client.Object {
			r := validRecommendation(ns, "noblock")
			r.Spec.Prefetch = nil
			return r
		}(), []string{"spec.prefetch", "exactly when spec.action is Prefetch"}},
		{"prefetch action with a scaleCache block", func() client.Object {
			r := validRecommendation(ns, "wrongblock")
			r.Spec.ScaleCache = &v1.ScaleCacheParameters{Replicas: 2}
			return r
		}(), []string{"spec.scaleCache", "exactly when spec.action is ScaleCache"}},
		{"unknown action", func() client.Object {
			r := validRecommendation(ns, "badaction")
			r.Spec.Action = "Teleport"
			return r
		}(), []string{"spec.action", "Teleport"}},
		{"unknown strategy", func() client.Object {
			r := validRecommendation(ns, "badstrategy")
			r.Spec.Prefetch.Strategy = "Psychic"
			return r
		}(), []string{"spec.prefetch.strategy"}},
		{"zero concurrency", func() client.Object {
			r := validRecommendation(ns, "zeroconc")
			r.Spec.Prefetch.Concurrency = 0
			return r
		}(), []string{"spec.prefetch.concurrency"}},
		{"zero block size", func() client.Object {
			r := validRecommendation(ns, "zeroblock")
			r.Spec.Prefetch.BlockSize = resource.MustParse("0")
			return r
		}(), []string{"spec.prefetch.blockSize", "positive"}},
		{"negative replicas", func() client.Object {
			r := validRecommendation(ns, "negrep")
			r.Spec.Action = v1.ActionScaleCache
			r.Spec.Prefetch = nil
			r.Spec.ScaleCache = &v1.ScaleCacheParameters{Replicas: -3}
			return r
		}(), []string{"spec.scaleCache.replicas"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(ctx, tc.obj)
			require.Error(t, err, "the API server accepted an invalid object")
			require.True(t, apierrors.IsInvalid(err), "want 422 Invalid, got %v", err)
			for _, f := range tc.fields {
				assert.Contains(t, err.Error(), f)
			}
		})
	}
}

func TestRecommendationSpecIsImmutable(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	createNamespace(t, env, "immutable")
	r := validRecommendation("immutable", "r")
	require.NoError(t, env.Client.Create(ctx, r))
	r.Spec.Prefetch.Concurrency = 99
	err := env.Client.Update(ctx, r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec is immutable")
}

func TestPrinterColumnsMakeAReviewScreen(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	samples, err := config.Samples()
	require.NoError(t, err)
	for _, s := range samples {
		require.NoError(t, env.Client.Create(ctx, s.Object.DeepCopy()))
	}
	out, err := env.Kubectl(ctx, "get", "recommendations", "-n", "eddy-demo")
	require.NoError(t, err)
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	assert.Equal(t, []string{"NAME", "PHASE", "ACTION", "TARGET", "DATASET", "CLASS", "CONFIDENCE", "EXPECTED", "AGE"}, header)
	assert.Contains(t, out, "resnet-train.imagenet.prefetch")
	assert.Contains(t, out, "ShuffledEpochs")
	assert.Contains(t, out, "read wait 41% → 6% of wall time")

	out, err = env.Kubectl(ctx, "get", "rec,atp,aprof", "-n", "eddy-demo")
	require.NoError(t, err, "short names must resolve")
	assert.Contains(t, out, "autotunepolicy.eddy.io/default")
	assert.Contains(t, out, "Auto")

	out, err = env.Kubectl(ctx, "get", "eddy", "-n", "eddy-demo", "-o", "name")
	require.NoError(t, err, "the eddy category must list all kinds")
	assert.Contains(t, out, "accessprofile.eddy.io/resnet-train.imagenet")
}

func createNamespace(t *testing.T, env *controlplane.Env, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	require.NoError(t, env.Client.Create(context.Background(), ns))
}

func unstructuredPolicy(ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "eddy.io/v1alpha1",
		"kind":       "AutotunePolicy",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
	return u
}

func validRecommendation(ns, name string) *v1.Recommendation {
	return &v1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.RecommendationSpec{
			TargetRef: &v1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train"},
			Dataset:   v1.DatasetReference{Name: "imagenet"},
			Action:    v1.ActionPrefetch,
			Prefetch: &v1.PrefetchParameters{
				Strategy:    v1.StrategySequential,
				BlockSize:   resource.MustParse("16Mi"),
				Concurrency: 8,
			},
			Evidence: v1.Evidence{Class: v1.ClassSequentialScan, Confidence: 0.9},
		},
	}
}
