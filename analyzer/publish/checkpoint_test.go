package publish_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/publish"
	"github.com/eddy-autotune/eddy/analyzer/store"
)

// TestACheckpointAloneIsWrittenEveryNowAndThen: with CheckpointEvery (the
// analyzer's durable state is its local log), a new checkpoint with nothing
// else changed is not written to the profile while the profile's is
// younger than that, and is once it is older; without, it always is.
func TestACheckpointAloneIsWrittenEveryNowAndThen(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}))
	now := time.Now()
	entry := func(name, checkpoint string) []store.Entry {
		k := analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Job", WorkloadName: name, DatasetNamespace: "ml", DatasetName: "data"}
		a := analyzer.Assessment{Key: k, Decision: classify.Decision{Class: v1.ClassSequentialScan, Confidence: 0.9, Reason: "read front to back"}}
		return []store.Entry{{Key: k, Checkpoint: []byte(checkpoint), Assessment: a, Meta: store.Meta{Windows: 100, LastSeen: now.Add(-time.Minute).UnixNano(),
			Workload: &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", ApiVersion: "batch/v1", Name: name}}}}
	}
	held := func(name string) string {
		var p v1.AccessProfile
		require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "ml", Name: "job-" + name + ".data"}, &p))
		require.NotNil(t, p.Status.Checkpoint)
		return string(p.Status.Checkpoint.Data)
	}
	for _, tc := range []struct {
		name  string
		every time.Duration
		// want is the checkpoint the profile holds after b, 1 minute
		// after a, and after c, 2 hours after a.
		wantB, wantC string
	}{
		{"local", time.Hour, "a", "c"},
		{"profiles-only", 0, "b", "c"},
	} {
		p := &publish.Publisher{Client: env.Client, Log: testr.New(t), CheckpointEvery: tc.every}
		at := now
		p.Now = func() time.Time { return at }
		_, err := p.Publish(ctx, entry(tc.name, "a"))
		require.NoError(t, err)
		require.Equal(t, "a", held(tc.name))

		at = now.Add(time.Minute)
		_, err = p.Publish(ctx, entry(tc.name, "b"))
		require.NoError(t, err)
		assert.Equal(t, tc.wantB, held(tc.name), tc.name)

		at = now.Add(2 * time.Hour)
		_, err = p.Publish(ctx, entry(tc.name, "c"))
		require.NoError(t, err)
		assert.Equal(t, tc.wantC, held(tc.name), tc.name)
	}
}
