package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer/service"
)

// TestAProfileRestsAndWakesToVerify runs the analyzer against a real API
// server: a workload seen through one whole run is classified with
// confidence and its profile rests (Learning False, nextRefresh about the
// policy's refreshAfter ahead), so its next pods are not observed. When one
// of its recommendations is then applied — no window comes from a resting
// workload — the analyzer finds it and the profile learns again
// (Verifying), so the runs the recommendation is judged by are observed.
func TestAProfileRestsAndWakesToVerify(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	refresh := 3 * time.Hour
	require.NoError(t, env.Client.Create(ctx, &v1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "default"},
		Spec: v1.AutotunePolicySpec{RefreshAfter: &metav1.Duration{Duration: refresh}}}))
	svc, err := service.New(ctx, service.Options{
		Client: env.Client, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "test", StableAssessments: 2, VerifySweep: time.Nanosecond,
	})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	ship(t, svc.Addr(), shuffledWindows(t))
	for range 2 {
		require.NoError(t, svc.Flush(ctx))
	}
	var prof v1.AccessProfile
	key := client.ObjectKey{Namespace: "ml", Name: "job-train.images"}
	require.NoError(t, env.Client.Get(ctx, key, &prof))
	c := meta.FindStatusCondition(prof.Status.Conditions, v1.ConditionLearning)
	require.NotNil(t, c, "no Learning condition")
	require.Equal(t, metav1.ConditionFalse, c.Status, "%s: %s", c.Reason, c.Message)
	assert.Equal(t, v1.ReasonResting, c.Reason)
	require.NotNil(t, prof.Status.NextRefresh)
	assert.WithinDuration(t, time.Now().Add(refresh), prof.Status.NextRefresh.Time, time.Minute)
	assert.False(t, v1.Learning(&prof, time.Now()), "a resting workload's next pod would be observed")
	assert.Equal(t, "true", prof.Labels[v1.RestingLabel], "collectors watch resting profiles by their label")

	var recs v1.RecommendationList
	require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace("ml")))
	require.NotEmpty(t, recs.Items, "nothing proposed from a whole run")
	rec := &recs.Items[0]
	rec.Status.Phase = v1.PhaseApplied
	require.NoError(t, env.Client.Status().Update(ctx, rec))

	require.NoError(t, svc.Flush(ctx))
	require.NoError(t, env.Client.Get(ctx, key, &prof))
	c = meta.FindStatusCondition(prof.Status.Conditions, v1.ConditionLearning)
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionTrue, c.Status, "%s: %s", c.Reason, c.Message)
	assert.Equal(t, v1.ReasonVerifying, c.Reason)
	assert.Nil(t, prof.Status.NextRefresh)
	assert.True(t, v1.Learning(&prof, time.Now()))
	assert.NotContains(t, prof.Labels, v1.RestingLabel)
	assert.NotEqual(t, v1.ClassIdle, prof.Status.Class, "assessed after a rest, the workload read as idle")
}
