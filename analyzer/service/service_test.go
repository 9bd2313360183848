package service_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/internal/simulate"
	"github.com/eddy-autotune/eddy/analyzer/service"
)

// shuffledWindows simulates a training job reading 200 small files whole in
// a new order each of 4 epochs, ending now, and numbers the windows 1..n.
func shuffledWindows(t *testing.T) []*accessv1.AccessWindow {
	files := simulate.Files(200, 1<<20)
	sim := simulate.New(files)
	sim.Window = time.Second
	sim.Latency = 2 * time.Millisecond
	ops := simulate.Shuffled(files, 256<<10, 4, rand.New(rand.NewPCG(1, 2)))
	sim.Start = time.Now().Add(-time.Duration(len(ops)) * (sim.Latency + sim.Compute))
	ws, _ := sim.Run(ops)
	require.Greater(t, len(ws), 4)
	for i, w := range ws {
		w.Sequence = uint64(i + 1)
	}
	return ws
}

func start(t *testing.T, ctx context.Context, c client.Client) (*service.Service, context.CancelFunc, chan error) {
	t.Helper()
	svc, err := service.New(ctx, service.Options{
		Client: c, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "test", StableAssessments: 2,
	})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	return svc, cancel, done
}

func ship(t *testing.T, addr string, ws []*accessv1.AccessWindow) uint64 {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	reply, err := accessv1.NewAccessIntakeClient(conn).Ship(context.Background(), &accessv1.ShipRequest{Collector: "node-a/1", Windows: ws})
	require.NoError(t, err)
	return reply.GetAckedSequence()
}

// TestRestartMidStreamKeepsProfilesAndRecommendations runs the analyzer
// against a real API server, restarts it in the middle of a stream whose
// collector resends everything it was not acknowledged (and some it was),
// and checks that the learned history equals one built from every window
// exactly once, and that no recommendation was proposed twice.
func TestRestartMidStreamKeepsProfilesAndRecommendations(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	ws := shuffledWindows(t)
	half := len(ws) / 2

	svc, stop, done := start(t, ctx, env.Client)
	assert.EqualValues(t, 0, ship(t, svc.Addr(), ws[:half]), "nothing is acknowledged before a checkpoint")
	require.NoError(t, svc.Flush(ctx))
	assert.EqualValues(t, half, ship(t, svc.Addr(), nil), "a flush makes what it covered durable")

	// Applied but not yet flushed when the analyzer stops uncleanly: these
	// must come back from the collector, not from the analyzer's memory.
	assert.EqualValues(t, half, ship(t, svc.Addr(), ws[half:half+2]))
	svc.Stop() // a crash: no final flush
	require.NoError(t, <-done)
	stop()

	var profiles v1.AccessProfileList
	require.NoError(t, env.Client.List(ctx, &profiles, client.InNamespace("ml")))
	require.Len(t, profiles.Items, 1)
	prof := profiles.Items[0]
	assert.Equal(t, "job-train.images", prof.Name)
	assert.NotEmpty(t, prof.Status.Class)
	require.NotNil(t, prof.Status.Checkpoint)

	// Restart: state comes back from the checkpoint; the collector resends
	// from its last acknowledged window, overlapping what was applied.
	svc2, stop2, done2 := start(t, ctx, env.Client)
	ship(t, svc2.Addr(), ws[half-3:]) // 3 windows before the ack: duplicates
	require.NoError(t, svc2.Flush(ctx))
	require.NoError(t, svc2.Flush(ctx))
	require.NoError(t, svc2.Flush(ctx))
	assert.EqualValues(t, len(ws), ship(t, svc2.Addr(), nil))

	// The history equals one built from every window once.
	ref := analyzer.NewTracker(analyzer.Options{})
	for _, w := range ws {
		ref.Observe(w)
	}
	key := analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Job", WorkloadName: "train", DatasetNamespace: "ml", DatasetName: "images"}
	want, err := ref.Checkpoint(key)
	require.NoError(t, err)
	var got []byte
	require.True(t, svc2.Store.History(key, func(tr *analyzer.Tracker, k analyzer.Key) {
		got, err = tr.Checkpoint(k)
	}))
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got), "restored + resent history must equal the reference")

	var recs v1.RecommendationList
	require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace("ml")))
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(&prof), &prof))
	js, _ := json.MarshalIndent(prof.Status, "", "  ")
	t.Logf("profile %s: %s", prof.Name, js)
	require.NotEmpty(t, recs.Items, "a shuffled multi-epoch workload gets recommendations")
	names := map[string]bool{}
	for _, r := range recs.Items {
		assert.False(t, names[r.Name])
		names[r.Name] = true
		assert.Equal(t, "Job", r.Spec.TargetRef.Kind)
		assert.Equal(t, prof.Name, r.Spec.Evidence.Profile)
	}
	before := len(recs.Items)

	// Another restart and the same stream again: nothing new is proposed.
	stop2()
	require.NoError(t, <-done2)
	svc3, stop3, done3 := start(t, ctx, env.Client)
	ship(t, svc3.Addr(), ws)
	for range 3 {
		require.NoError(t, svc3.Flush(ctx))
	}
	require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace("ml")))
	assert.Len(t, recs.Items, before, "a restart must not re-propose")
	stop3()
	require.NoError(t, <-done3)

	lease := &coordinationv1.Lease{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "eddy-system", Name: service.HeartbeatLease}, lease))
	assert.WithinDuration(t, time.Now(), lease.Spec.RenewTime.Time, time.Minute)
}
