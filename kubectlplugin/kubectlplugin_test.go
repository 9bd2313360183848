package kubectlplugin_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/kubectlplugin"
	"github.com/eddy-autotune/eddy/operator"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestReviewCommandsAgainstAPIServer drives every kubectl eddy command
// against a real API server: the review table shows evidence, approve and
// reject write conditions through the status subresource (and are refused
// for a user without the right), explain and status summarise.
func TestReviewCommandsAgainstAPIServer(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	require.NoError(t, c.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "eddy-system", Name: "eddy-analyzer"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("analyzer-0"), RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}))
	require.NoError(t, c.Create(ctx, &eddyv1alpha1.AutotunePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "default"},
		Spec:       eddyv1alpha1.AutotunePolicySpec{Mode: eddyv1alpha1.ModeAuto, AutoApply: []eddyv1alpha1.Action{eddyv1alpha1.ActionPrefetch}, CacheWorkers: &eddyv1alpha1.CacheWorkerBounds{Min: 1, Max: 8}},
	}))
	feat := &eddyv1alpha1.AccessFeatures{BytesRead: 50 << 30, ReadOps: 400000, Files: 120000, SequentialRatio: 0.05, WholeFileRatio: 0.98, Coverage: 1, Epochs: 3,
		WorkingSetBytes: 140 << 30, ThroughputBytesPerSecond: 300 << 20, ReadWaitShare: 0.42, HotSetShare: 0.21, ReadLatencyP50Seconds: 0.002, ReadLatencyP99Seconds: 0.04}
	prof := &eddyv1alpha1.AccessProfile{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-imagenet"},
		Spec: eddyv1alpha1.AccessProfileSpec{
			WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train", Rule: eddyv1alpha1.RuleNameSuffix},
			Dataset:     eddyv1alpha1.DatasetReference{Name: "imagenet", Source: "Fluid"},
		},
	}
	require.NoError(t, c.Create(ctx, prof))
	now := metav1.Now()
	runs := []eddyv1alpha1.RunSummary{
		{Pod: "train-1-x7k2p", Object: "train-1", Start: now, End: now, Ended: true, BytesRead: 50 << 30, WallSeconds: 170.7, ReadWaitShare: 0.42, ThroughputBytesPerSecond: 300 << 20},
		{Pod: "train-2-q9z8m", Object: "train-2", Recommendations: []string{"imagenet-prefetch"}, Start: now, End: now, Ended: true, BytesRead: 50 << 30, WallSeconds: 60.1, ReadWaitShare: 0.09, ThroughputBytesPerSecond: 852 << 20},
	}
	prof.Status = eddyv1alpha1.AccessProfileStatus{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.93, Features: feat, ObservedPods: 4, Windows: 30, LastSeen: &now, FirstSeen: &now, RecentRuns: runs,
		Decisions: []eddyv1alpha1.Decision{
			{Rule: "whole files", Feature: "wholeFileRatio", Value: 0.98, Threshold: 0.9, Held: true},
			{Rule: "not sequential across files", Feature: "orderCorrelation", Value: 0.02, Threshold: 0.5, Held: true},
		}}
	require.NoError(t, c.Status().Update(ctx, prof))

	scale := &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "imagenet-cache"},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef:  &prof.Spec.WorkloadRef,
			Dataset:    prof.Spec.Dataset,
			Action:     eddyv1alpha1.ActionScaleCache,
			ScaleCache: &eddyv1alpha1.ScaleCacheParameters{Replicas: 4},
			Evidence: eddyv1alpha1.Evidence{Profile: prof.Name, Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.93, Features: feat,
				ExpectedBenefit: &eddyv1alpha1.Benefit{Summary: "working set 140Gi fits 4 workers"}},
		},
	}
	prefetch := &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "imagenet-prefetch"},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef: &prof.Spec.WorkloadRef,
			Dataset:   prof.Spec.Dataset,
			Action:    eddyv1alpha1.ActionPrefetch,
			Prefetch:  &eddyv1alpha1.PrefetchParameters{Strategy: eddyv1alpha1.StrategyOrdered, BlockSize: resource.MustParse("8Mi"), Concurrency: 16},
			Evidence: eddyv1alpha1.Evidence{Profile: prof.Name, Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.93, Features: feat,
				ExpectedBenefit: &eddyv1alpha1.Benefit{Summary: "read wait 42% → 8%"}},
		},
	}
	require.NoError(t, c.Create(ctx, scale))
	require.NoError(t, c.Create(ctx, prefetch))
	scale.Status.Phase = eddyv1alpha1.PhaseProposed
	require.NoError(t, c.Status().Update(ctx, scale))
	applied := metav1.Now()
	prefetch.Status = eddyv1alpha1.RecommendationStatus{Phase: eddyv1alpha1.PhaseVerified, AppliedAt: &applied,
		Outcome: &eddyv1alpha1.Benefit{Summary: "helped: read wait 42% → 9% of wall time"},
		Verification: &eddyv1alpha1.Verification{
			Before: eddyv1alpha1.RunStats{Runs: 1, BytesRead: 50 << 30, WallSeconds: 170.7, ReadWaitShare: 0.42, ThroughputBytesPerSecond: 300 << 20},
			After:  eddyv1alpha1.RunStats{Runs: 1, BytesRead: 50 << 30, WallSeconds: 60.1, ReadWaitShare: 0.09, ThroughputBytesPerSecond: 852 << 20},
			Runs:   []string{"train-2-q9z8m"}}}
	require.NoError(t, c.Status().Update(ctx, prefetch))

	var out bytes.Buffer
	require.NoError(t, kubectlplugin.Recommendations(ctx, c, &out, kubectlplugin.ListOptions{Namespace: "ml"}))
	table := out.String()
	for _, want := range []string{"NAME", "EVIDENCE", "imagenet-cache", "Proposed", "4 cache workers", "Job/train", "ShuffledEpochs", "0.93", "wait 42%", "300 MiB/s", "ws 140 GiB", "working set 140Gi fits 4 workers"} {
		require.Contains(t, table, want)
	}
	require.NotContains(t, table, "imagenet-prefetch", "closed (Verified) recommendations are hidden without --all")
	out.Reset()
	require.NoError(t, kubectlplugin.Recommendations(ctx, c, &out, kubectlplugin.ListOptions{All: true}))
	require.Contains(t, out.String(), "NAMESPACE")
	require.Contains(t, out.String(), "measured: helped: read wait 42% → 9%")

	// A user without rights on recommendations/status cannot approve.
	viewerCfg := rest.CopyConfig(env.Config)
	viewerCfg.Impersonate = rest.ImpersonationConfig{UserName: "viewer", Groups: []string{"system:authenticated"}}
	viewer, err := client.New(viewerCfg, client.Options{Scheme: operator.Scheme()})
	require.NoError(t, err)
	_, err = kubectlplugin.Approve(ctx, viewer, "ml", "imagenet-cache", "sneaky")
	require.Error(t, err)
	require.Contains(t, err.Error(), "'approve' verb on recommendations.eddy.io")

	rec, err := kubectlplugin.Approve(ctx, c, "ml", "imagenet-cache", "capacity is there")
	require.NoError(t, err)
	got := &eddyv1alpha1.Recommendation{}
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(rec), got))
	cond := meta.FindStatusCondition(got.Status.Conditions, eddyv1alpha1.ConditionApproved)
	require.NotNil(t, cond)
	require.Equal(t, metav1.ConditionTrue, cond.Status)
	require.Equal(t, "capacity is there", cond.Message)
	require.Equal(t, eddyv1alpha1.PhaseProposed, got.Status.Phase, "the phase is the operator's to move")

	_, err = kubectlplugin.Approve(ctx, c, "ml", "imagenet-prefetch", "again")
	require.ErrorContains(t, err, "is Verified: only a Proposed one can be approved")
	_, err = kubectlplugin.Reject(ctx, c, "ml", "imagenet-prefetch", "it costs too much")
	require.NoError(t, err)
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(prefetch), got))
	require.True(t, meta.IsStatusConditionTrue(got.Status.Conditions, eddyv1alpha1.ConditionDenied))
	_, err = kubectlplugin.Approve(ctx, c, "ml", "missing", "")
	require.ErrorContains(t, err, "not found")

	out.Reset()
	require.NoError(t, kubectlplugin.Explain(ctx, c, &out, "ml", "Job/train"))
	explain := out.String()
	for _, want := range []string{"Job/train reading dataset imagenet (Fluid)", "ShuffledEpochs (confidence 0.93, 4 pods", "read wait 42% of wall time",
		"working set 140 GiB", "✓ whole files: wholeFileRatio = 0.98 (threshold 0.9)", "imagenet-prefetch: Prefetch Ordered 8Mi×16 — Verified, applied",
		"helped: read wait 42% → 9%", "imagenet-cache: ScaleCache 4 cache workers — Proposed",
		"run family train (rule NameSuffix: Jobs named train-<run number or date>); recent runs train-1, train-2; label runs eddy.io/workload=NAME",
		"train-1-x7k2p: 50 GiB in 170.7s", "read wait 9%; applied: imagenet-prefetch",
		"before: 1 run(s): 50 GiB read in 170.7s, throughput 300 MiB/s, read wait 42%",
		"after:  1 run(s): 50 GiB read in 60.1s, throughput 852 MiB/s, read wait 9% (train-2-q9z8m)"} {
		require.Contains(t, explain, want)
	}
	out.Reset()
	require.NoError(t, kubectlplugin.Explain(ctx, c, &out, "ml", "train-2"), "a run's object name finds its family")
	require.Contains(t, out.String(), "Job/train reading dataset imagenet")
	require.ErrorContains(t, kubectlplugin.Explain(ctx, c, &out, "ml", "Deployment/nobody"), "no AccessProfile or recommendation for workload")

	// A workload in its first run is not advised yet, and explain says why.
	first := &eddyv1alpha1.AccessProfile{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "etl-logs"},
		Spec: eddyv1alpha1.AccessProfileSpec{
			WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "etl", Rule: eddyv1alpha1.RuleObject},
			Dataset:     eddyv1alpha1.DatasetReference{Name: "logs", Source: "PVC"},
		},
	}
	require.NoError(t, c.Create(ctx, first))
	first.Status = eddyv1alpha1.AccessProfileStatus{Class: eddyv1alpha1.ClassSequentialScan, Confidence: 0.7, Features: feat, ObservedPods: 1, Windows: 3, LastSeen: &now, FirstSeen: &now,
		RecentRuns: []eddyv1alpha1.RunSummary{{Pod: "etl-abcde", Object: "etl", Start: now, End: now, BytesRead: 1 << 30, WallSeconds: 20}}}
	require.NoError(t, c.Status().Update(ctx, first))
	out.Reset()
	require.NoError(t, kubectlplugin.Explain(ctx, c, &out, "ml", "Job/etl"))
	require.Contains(t, out.String(), "(still reading)")
	require.Contains(t, out.String(), "Recommended: nothing yet: a workload is advised once one of its runs ended, or has read for 10m0s")

	out.Reset()
	require.NoError(t, kubectlplugin.Status(ctx, c, &out, kubectlplugin.StatusOptions{Namespace: "ml", OperatorNamespace: "eddy-system", AnalyzerLease: "eddy-analyzer"}))
	status := out.String()
	for _, want := range []string{"Analyzer heartbeat: renewed", "by analyzer-0", "Namespace ml", "mode Auto, auto-apply [Prefetch]", "cache workers 1..8",
		"Recommendations: Proposed 1, Verified 1", "Profiles:    SequentialScan 1, ShuffledEpochs 1"} {
		require.Contains(t, status, want)
	}
}
