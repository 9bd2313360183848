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
	"google.golang.org/protobuf/proto"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/internal/simulate"
	"github.com/eddy-autotune/eddy/analyzer/service"
)

// shuffledWindows simulates a training job reading 200 small files whole in
// a new order each of 4 epochs, ending a minute ago (a run that ended: a
// workload is advised from a whole run), and numbers the windows 1..n.
func shuffledWindows(t *testing.T) []*accessv1.AccessWindow {
	return shuffledWindowsEnding(t, time.Now().Add(-time.Minute))
}

// shuffledWindowsEnding is shuffledWindows with the last read at end.
func shuffledWindowsEnding(t *testing.T, end time.Time) []*accessv1.AccessWindow {
	files := simulate.Files(200, 1<<20)
	sim := simulate.New(files)
	sim.Window = time.Second
	sim.Latency = 2 * time.Millisecond
	ops := simulate.Shuffled(files, 256<<10, 4, rand.New(rand.NewPCG(1, 2)))
	sim.Start = end.Add(-time.Duration(len(ops)) * (sim.Latency + sim.Compute))
	ws, _ := sim.Run(ops)
	require.Greater(t, len(ws), 4)
	for i, w := range ws {
		w.Sequence = uint64(i + 1)
	}
	return ws
}

func start(t *testing.T, ctx context.Context, c client.Client) (*service.Service, context.CancelFunc, chan error) {
	t.Helper()
	return startWith(t, ctx, c, 0)
}

// startWith is start with the analyzer's --run-ended-after (0: default).
func startWith(t *testing.T, ctx context.Context, c client.Client, runEndedAfter time.Duration) (*service.Service, context.CancelFunc, chan error) {
	t.Helper()
	svc, err := service.New(ctx, service.Options{
		Client: c, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "test", StableAssessments: 2, RunEndedAfter: runEndedAfter,
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

// TestAdvisedFromAWholeRun: a workload still in its first run is not
// advised, however stable its assessments (its first minutes can look like
// another class than the run: the real node saw a first run proposed a
// SequentialScan Prefetch, applied on Auto and superseded by ShuffledEpochs
// seconds later, when the run ended); once the run ended, it is.
func TestAdvisedFromAWholeRun(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	const endedAfter = 3 * time.Second
	svc, stop, done := startWith(t, ctx, env.Client, endedAfter)
	defer func() { stop(); <-done }()

	ship(t, svc.Addr(), shuffledWindowsEnding(t, time.Now()))
	for range 3 {
		require.NoError(t, svc.Flush(ctx))
	}
	var recs v1.RecommendationList
	require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace("ml")))
	assert.Empty(t, recs.Items, "advice while the only run is still reading")
	var prof v1.AccessProfile
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "ml", Name: "job-train.images"}, &prof))
	require.Len(t, prof.Status.RecentRuns, 1)
	assert.False(t, prof.Status.RecentRuns[0].Ended)
	assert.NotEmpty(t, prof.Status.Class, "classified all the same")

	time.Sleep(endedAfter)
	for range 2 {
		require.NoError(t, svc.Flush(ctx))
	}
	require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace("ml")))
	assert.NotEmpty(t, recs.Items, "advice once the run ended")
}

// TestABadKeyHoldsBackNobody: one collector's window carries a record for a
// namespace that does not exist (admission, which would refuse it, is off
// here so that the flush itself is tested). Today's main failed every flush
// and acknowledged nobody; now the bad key is quarantined at once (retrying
// cannot create a namespace) and both collectors are acknowledged.
func TestABadKeyHoldsBackNobody(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	svc, stop, done := start(t, ctx, env.Client)
	defer func() { stop(); <-done }()
	ws := shuffledWindows(t)
	bad := proto.Clone(ws[0].Files[0]).(*accessv1.FileAccess)
	bad.Workload.Namespace, bad.Dataset.Namespace = "gone", "gone"
	poisoned := proto.Clone(ws[1]).(*accessv1.AccessWindow)
	poisoned.Sequence = 1
	poisoned.Files = append(poisoned.Files, bad)

	shipAs(t, svc.Addr(), "node-b/1", poisoned)
	shipAs(t, svc.Addr(), "node-a/1", ws...)
	require.Error(t, svc.Flush(ctx), "the bad key's write fails")
	assert.EqualValues(t, len(ws), shipAs(t, svc.Addr(), "node-a/1"), "a healthy collector is acknowledged")
	assert.EqualValues(t, 1, shipAs(t, svc.Addr(), "node-b/1"), "and so is the one whose bad record was quarantined")
	require.NoError(t, svc.Flush(ctx), "the quarantined key is not tried again")
	var profiles v1.AccessProfileList
	require.NoError(t, env.Client.List(ctx, &profiles, client.InNamespace("ml")))
	assert.Len(t, profiles.Items, 1)
}

// TestLeaseStaysStaleWhenNothingCanBeWritten: an analyzer whose writes all
// fail (here: it may not write AccessProfiles) does not renew its heartbeat,
// so the operator stops acting on what it would no longer see.
func TestLeaseStaysStaleWhenNothingCanBeWritten(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	// A user that may only read and renew the Lease and read policies.
	for _, o := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "lease-only"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{"eddy.io"}, Resources: []string{"accessprofiles", "autotunepolicies", "recommendations"}, Verbs: []string{"get", "list"}},
		}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "lease-only"}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "lease-only"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "lease-only"}}},
	} {
		require.NoError(t, env.Client.Create(ctx, o))
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "lease-only"}
	limited, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	require.NoError(t, err)
	svc, err := service.New(ctx, service.Options{Client: limited, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Second,
		LeaseNamespace: "eddy-system", Identity: "test", QuarantineAfter: 100})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	lease := &coordinationv1.Lease{}
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKey{Namespace: "eddy-system", Name: service.HeartbeatLease}, lease) == nil
	}, 10*time.Second, 100*time.Millisecond, "the heartbeat is renewed at start")
	shipAs(t, svc.Addr(), "node-a/1", shuffledWindows(t)...)
	time.Sleep(6 * time.Second)
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "eddy-system", Name: service.HeartbeatLease}, lease))
	assert.Greater(t, time.Since(lease.Spec.RenewTime.Time), 2*time.Second, "no renewal while every write fails")
}

func shipAs(t testing.TB, addr, collector string, ws ...*accessv1.AccessWindow) uint64 {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	reply, err := accessv1.NewAccessIntakeClient(conn).Ship(context.Background(), &accessv1.ShipRequest{Collector: collector, Windows: ws})
	require.NoError(t, err)
	return reply.GetAckedSequence()
}

// TestPolicyCacheCapacityShapesTheAdvice: the same shuffled run (200 MiB,
// four epochs) is advised a whole-dataset prefetch in a namespace that says
// nothing of its cache, and a Resident prefetch of a part of the cache in
// one whose policy says its cache holds 64 MiB.
func TestPolicyCacheCapacityShapesTheAdvice(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "small-cache", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	capacity := resource.MustParse("64Mi")
	require.NoError(t, env.Client.Create(ctx, &v1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "small-cache", Name: "default"},
		Spec: v1.AutotunePolicySpec{CacheCapacity: &capacity}}))
	svc, stop, done := start(t, ctx, env.Client)
	defer func() { stop(); <-done }()

	ws := shuffledWindows(t)
	other := shuffledWindows(t)
	for i, w := range other {
		w.Sequence = uint64(len(ws) + i + 1)
		for _, f := range w.Files {
			f.Workload.Namespace = "small-cache"
		}
	}
	ship(t, svc.Addr(), append(ws, other...))
	for range 2 {
		require.NoError(t, svc.Flush(ctx))
	}
	strategy := func(ns string) *v1.PrefetchParameters {
		var recs v1.RecommendationList
		require.NoError(t, env.Client.List(ctx, &recs, client.InNamespace(ns)))
		for _, r := range recs.Items {
			if r.Spec.Action == v1.ActionPrefetch {
				return r.Spec.Prefetch
			}
		}
		t.Fatalf("no Prefetch recommendation in %s (%d others)", ns, len(recs.Items))
		return nil
	}
	assert.Equal(t, v1.StrategyWholeDataset, strategy("ml").Strategy)
	p := strategy("small-cache")
	assert.Equal(t, v1.StrategyResident, p.Strategy)
	require.NotNil(t, p.BudgetBytes)
	assert.InEpsilon(t, advice.ResidentShare*float64(capacity.Value()), float64(p.BudgetBytes.Value()), 0.05, "a share of the stated cache")
}
