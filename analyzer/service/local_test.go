package service_test

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/service"
)

// gatedClient holds every AccessProfile status write until open is closed
// (or the write's context ends): an API server that does not keep up,
// stood in for by a gate because the real one here answers in
// milliseconds. Everything else, and every write once open, goes to the
// real API server.
type gatedClient struct {
	client.Client
	open chan struct{}
}

func (c *gatedClient) Status() client.SubResourceWriter {
	return &gatedStatus{SubResourceWriter: c.Client.Status(), open: c.open}
}

type gatedStatus struct {
	client.SubResourceWriter
	open chan struct{}
}

func (s *gatedStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	select {
	case <-s.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

var trainKey = analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Job", WorkloadName: "train", DatasetNamespace: "ml", DatasetName: "images"}

// assertHistoryOfEveryWindowOnce checks that svc's history of trainKey is
// the one built from every window of ws exactly once.
func assertHistoryOfEveryWindowOnce(t *testing.T, svc *service.Service, ws []*accessv1.AccessWindow, msg string) {
	t.Helper()
	ref := analyzer.NewTracker(analyzer.Options{})
	for _, w := range ws {
		ref.Observe(w)
	}
	want, err := ref.Checkpoint(trainKey)
	require.NoError(t, err)
	var got []byte
	require.True(t, svc.Store.History(trainKey, func(tr *analyzer.Tracker, k analyzer.Key) {
		got, err = tr.Checkpoint(k)
	}), "%s: the key is not restored", msg)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got), msg)
}

// TestLocalCheckpointsAcknowledgeAheadOfTheAPIServer runs the analyzer with
// a local checkpoint log against a real API server whose profile status
// writes are held: a flush acknowledges the windows it made durable in the
// log though no profile holds them. A crash, a restart on the same folder
// and the collector resending from its acknowledgement give the history of
// every window once; the profiles catch up behind. A new folder (the pod's
// emptyDir gone) restores from the profiles; a torn last write or damage in
// the log falls back to them, without failing the start.
func TestLocalCheckpointsAcknowledgeAheadOfTheAPIServer(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	namespaces(t, env.Client, "ml", "eddy-system")
	dir := t.TempDir()
	opts := func(c client.Client, dir string) service.Options {
		return service.Options{Client: c, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", FlushInterval: time.Hour,
			LeaseNamespace: "eddy-system", Identity: "test", StableAssessments: 2, CheckpointDir: dir}
	}
	ws := shuffledWindows(t)
	half := len(ws) / 2

	gated := &gatedClient{Client: env.Client, open: make(chan struct{})}
	svc, _, done := runService(t, opts(gated, dir))
	assert.EqualValues(t, 0, ship(t, svc.Addr(), ws[:half]), "nothing is acknowledged before a flush")
	require.NoError(t, svc.Flush(ctx), "a flush does not wait for the API server")
	assert.EqualValues(t, half, ship(t, svc.Addr(), nil), "what the local log holds is acknowledged")
	var profiles v1.AccessProfileList
	require.NoError(t, env.Client.List(ctx, &profiles, client.InNamespace("ml")))
	for _, p := range profiles.Items {
		assert.Nil(t, p.Status.Checkpoint, "no profile status was written: the acknowledgement came from the local log alone")
	}
	// Applied, not flushed, when the analyzer crashes: the collector still
	// holds them.
	assert.EqualValues(t, half, ship(t, svc.Addr(), ws[half:half+2]))
	svc.Stop()
	require.NoError(t, <-done)

	svc, cancel, done := runService(t, opts(env.Client, dir))
	ship(t, svc.Addr(), ws[half-3:]) // from before the acknowledgement: 3 duplicates
	require.NoError(t, svc.Flush(ctx))
	assert.EqualValues(t, len(ws), ship(t, svc.Addr(), nil))
	assertHistoryOfEveryWindowOnce(t, svc, ws, "restored from the local log + resent")
	waitCtx, waitCancel := context.WithTimeout(ctx, time.Minute)
	defer waitCancel()
	require.NoError(t, svc.WaitPublished(waitCtx))
	var prof v1.AccessProfile
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "ml", Name: "job-train.images"}, &prof))
	require.NotNil(t, prof.Status.Checkpoint, "the publisher wrote the profile behind the log")
	assert.NotEmpty(t, prof.Status.Class)
	cancel()
	require.NoError(t, <-done)

	// A new, empty folder: the profile's checkpoint is all there is.
	svc, cancel, done = runService(t, opts(env.Client, t.TempDir()))
	assertHistoryOfEveryWindowOnce(t, svc, ws, "restored from the profile")
	cancel()
	require.NoError(t, <-done)

	logs, err := filepath.Glob(filepath.Join(dir, "checkpoints-*.log"))
	require.NoError(t, err)
	require.Len(t, logs, 1)
	name := logs[0]
	intact, err := os.ReadFile(name)
	require.NoError(t, err)
	// The log holds the state of the first flush (half the windows, written
	// again when the folder was opened), then all of them, at least once.
	for _, tc := range []struct {
		name, source string
		damage       func([]byte) []byte
	}{
		{"a write torn after the first record", "the profile's checkpoint, newer than the log's first record", func(b []byte) []byte {
			first := len("EDDYCKP1") + 8 + int(binary.LittleEndian.Uint32(b[len("EDDYCKP1"):]))
			require.Greater(t, len(b), first+20, "the log holds more than the first record")
			return b[:first+20]
		}},
		{"damage in the first record", "the profile's checkpoint, newer than what the log still holds", func(b []byte) []byte {
			b = append([]byte(nil), b...)
			b[len("EDDYCKP1")+8+20] ^= 0xff
			return b
		}},
		{"not a log", "the profile's checkpoint", func([]byte) []byte { return []byte("{}\n") }},
	} {
		old, err := filepath.Glob(filepath.Join(dir, "checkpoints*"))
		require.NoError(t, err)
		for _, f := range old {
			require.NoError(t, os.Remove(f))
		}
		require.NoError(t, os.WriteFile(name, tc.damage(intact), 0o600))
		svc, cancel, done = runService(t, opts(env.Client, dir))
		assertHistoryOfEveryWindowOnce(t, svc, ws, tc.name+": "+tc.source)
		cancel()
		require.NoError(t, <-done)
	}
}
