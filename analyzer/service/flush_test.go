package service_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer/service"
)

// observedClient counts the analyzer's reads of AccessProfiles and its
// status writes, and delays each status write by delay: a stand-in for an
// API server under load, since a real one here answers in milliseconds.
// Everything still goes to the real API server.
type observedClient struct {
	client.Client
	delay   time.Duration
	gets    atomic.Int64
	patches atomic.Int64
}

func (c *observedClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*v1.AccessProfile); ok {
		c.gets.Add(1)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func (c *observedClient) Status() client.SubResourceWriter {
	return &observedStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type observedStatus struct {
	client.SubResourceWriter
	c *observedClient
}

func (s *observedStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	select {
	case <-time.After(s.c.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	err := s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if err == nil {
		s.c.patches.Add(1)
	}
	return err
}

func namespaces(t *testing.T, c client.Client, names ...string) {
	t.Helper()
	for _, ns := range names {
		require.NoError(t, c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
}

func runService(t *testing.T, opt service.Options) (*service.Service, context.CancelFunc, chan error) {
	t.Helper()
	svc, err := service.New(context.Background(), opt)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return svc, cancel, done
}

// checkpointed counts the AccessProfiles in ns whose checkpoint covers
// window seq of collector.
func checkpointed(t *testing.T, c client.Client, ns string, windows int64) int {
	t.Helper()
	var list v1.AccessProfileList
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace(ns)))
	n := 0
	for _, p := range list.Items {
		if p.Status.Checkpoint != nil && p.Status.Windows >= windows {
			n++
		}
	}
	return n
}

// TestLeaseIsRenewedWhileALongFlushWrites: a flush that takes several
// progress windows (60 keys written one at a time, 150 ms each, against a
// 1 s flush interval, so a 3 s progress window) keeps the heartbeat Lease
// fresh, because every key it writes is progress. Before, progress was
// counted only when a flush ended, and the Lease went stale in the middle
// of every long flush.
func TestLeaseIsRenewedWhileALongFlushWrites(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	namespaces(t, env.Client, "ml", "eddy-system")
	c := &observedClient{Client: env.Client, delay: 150 * time.Millisecond}
	svc, cancel, done := runService(t, service.Options{Client: c, Log: testr.New(t), GRPCAddr: "127.0.0.1:0",
		FlushInterval: time.Second, LeaseNamespace: "eddy-system", Identity: "test", PublishWorkers: 1})
	defer func() { cancel(); <-done }()
	const keys = 60
	shipAs(t, svc.Addr(), "node-a/1", keysWindow("w", 1, keys, []string{"ml"}))

	lease := &coordinationv1.Lease{}
	leaseKey := client.ObjectKey{Namespace: "eddy-system", Name: service.HeartbeatLease}
	var oldest time.Duration
	start := time.Now()
	for c.patches.Load() < keys {
		require.Less(t, time.Since(start), time.Minute, "the flush did not end")
		if err := env.Client.Get(context.Background(), leaseKey, lease); err == nil && lease.Spec.RenewTime != nil {
			oldest = max(oldest, time.Since(lease.Spec.RenewTime.Time))
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("flush of %d keys took %s; the Lease was at most %s old", keys, took.Round(time.Millisecond), oldest.Round(time.Millisecond))
	require.Greater(t, took, 6*time.Second, "the flush must outlast the progress window twice over for this test to mean anything")
	assert.Less(t, oldest, 2500*time.Millisecond, "the Lease is renewed every second while keys are being written")
}

// TestShutdownLetsTheFlushInProgressFinish: on SIGTERM (Run's context
// ends) in the middle of a flush that takes longer than the 10 s the final
// flush used to have, every key is still written within
// ShutdownFlushTimeout; with a shorter timeout, Run gives up on time and
// says so.
func TestShutdownLetsTheFlushInProgressFinish(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	namespaces(t, env.Client, "ml", "short", "eddy-system")
	const keys = 30
	for _, tc := range []struct {
		ns      string
		timeout time.Duration
		all     bool
	}{
		{ns: "ml", timeout: 30 * time.Second, all: true},
		{ns: "short", timeout: time.Second, all: false},
	} {
		c := &observedClient{Client: env.Client, delay: 400 * time.Millisecond}
		svc, cancel, done := runService(t, service.Options{Client: c, Log: testr.New(t), GRPCAddr: "127.0.0.1:0",
			FlushInterval: time.Second, LeaseNamespace: "eddy-system", Identity: "test-" + tc.ns, PublishWorkers: 1,
			ShutdownFlushTimeout: tc.timeout})
		shipAs(t, svc.Addr(), "node-a/1", keysWindow(tc.ns, 1, keys, []string{tc.ns}))
		require.Eventually(t, func() bool { return c.patches.Load() >= 2 }, 30*time.Second, 50*time.Millisecond, "a flush is in progress")
		cancel()
		stopped := time.Now()
		err := <-done
		took := time.Since(stopped)
		written := checkpointed(t, env.Client, tc.ns, 1)
		t.Logf("timeout %s: Run returned after %s with %v; %d of %d keys written", tc.timeout, took.Round(time.Millisecond), err, written, keys)
		if tc.all {
			require.NoError(t, err)
			assert.Equal(t, keys, written, "every key is written after SIGTERM")
			assert.Greater(t, took, 10*time.Second, "longer than the final flush used to have")
		} else {
			require.Error(t, err, "the writes cut short by the timeout are reported")
			assert.Less(t, written, keys)
			assert.Less(t, took, 5*time.Second, "the timeout bounds the shutdown")
		}
	}
}

// TestFlushWritesWithoutReadingFirst: after a restart, the analyzer writes
// the profiles it restored without reading any of them again; a profile
// someone else changed since is read once and written; and a flush that
// would change nothing but the checkpoint's time writes nothing.
func TestFlushWritesWithoutReadingFirst(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	namespaces(t, env.Client, "ml", "eddy-system")
	ctx := context.Background()
	const keys = 20
	opt := service.Options{Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
		LeaseNamespace: "eddy-system", Identity: "test"}

	first := &observedClient{Client: env.Client}
	opt.Client = first
	svc, cancel, done := runService(t, opt)
	shipAs(t, svc.Addr(), "node-a/1", keysWindow("w", 1, keys, []string{"ml"}))
	require.NoError(t, svc.Flush(ctx))
	assert.EqualValues(t, 0, first.gets.Load(), "new profiles are created, not looked for first")
	assert.EqualValues(t, keys, first.patches.Load())
	svc.Stop()
	cancel()
	require.NoError(t, <-done)

	// Someone else changes one profile while the analyzer is down.
	var list v1.AccessProfileList
	require.NoError(t, env.Client.List(ctx, &list, client.InNamespace("ml")))
	require.Len(t, list.Items, keys)

	c := &observedClient{Client: env.Client}
	opt.Client = c
	svc, cancel, done = runService(t, opt)
	defer func() { cancel(); <-done }()
	changed := list.Items[0]
	changed.Labels["team"] = "vision"
	require.NoError(t, env.Client.Update(ctx, &changed))
	shipAs(t, svc.Addr(), "node-a/1", keysWindow("w", 2, keys, []string{"ml"}))
	require.NoError(t, svc.Flush(ctx))
	assert.EqualValues(t, 1, c.gets.Load(), "only the profile changed by someone else is read again")
	assert.EqualValues(t, keys, c.patches.Load())
	assert.Equal(t, keys, checkpointed(t, env.Client, "ml", 2), "every key's checkpoint covers both windows")
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(&changed), &changed))
	assert.Equal(t, "vision", changed.Labels["team"], "the other writer's change is kept")

	// Runs still open are assessed again at the next flush, without new
	// windows: nothing material changed, so nothing is written.
	require.NoError(t, svc.Flush(ctx))
	assert.EqualValues(t, keys, c.patches.Load(), "an assessment that changes nothing is not written")
	assert.EqualValues(t, 2, shipAs(t, svc.Addr(), "node-a/1"), "and everything stays acknowledged")
}
