package prefetch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/test/slowremote"
)

// remote is the slow remote of test/slowremote, with a temporary folder
// that the test's cleanup removes.
type remote struct {
	*slowremote.Remote
	tmp string
}

// needRemote skips unless this machine can run the real remote.
func needRemote(tb testing.TB) {
	tb.Helper()
	if why := slowremote.Unavailable(); why != "" {
		tb.Skip("the slow-remote tests cannot run: " + why)
	}
}

// startRemote serves src through a link with the given one-way delay and
// bandwidth (bytes/s).
func startRemote(tb testing.TB, src string, delay time.Duration, bandwidth int64) *remote {
	tb.Helper()
	prefix := filepath.Join(os.TempDir(), "eddy-remote-")
	for _, p := range slowremote.CleanStale(prefix) {
		tb.Logf("detached %s, left by an earlier run", p)
		_ = os.RemoveAll(filepath.Dir(filepath.Dir(p)))
	}
	tmp, err := os.MkdirTemp("", "eddy-remote-")
	require.NoError(tb, err)
	tb.Cleanup(func() { os.RemoveAll(tmp) })
	r, err := slowremote.Start(src, tmp, delay, bandwidth)
	require.NoError(tb, err)
	tb.Cleanup(r.Close)
	return &remote{Remote: r, tmp: tmp}
}

// mount mounts the remote with a fresh cache (and rclone's args) and
// returns the mount point;
// it is unmounted when the test ends, pass or fail.
func (r *remote) mount(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	dir, err := os.MkdirTemp(r.tmp, name+"-") // a fresh cache every time
	require.NoError(tb, err)
	m, err := r.Mount(dir, args...)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Log(err)
		}
	})
	return m.Path
}

// unmount detaches mnt (lazily if it is busy); rclone then exits.
func unmount(tb testing.TB, mnt string) {
	if err := slowremote.Unmount(mnt); err != nil {
		tb.Log(err)
	}
}

// makeDataset writes n files of size bytes in a few folders and returns
// their paths relative to dir, in lexical order.
func makeDataset(tb testing.TB, dir string, n, size int) []string {
	tb.Helper()
	var names []string
	data := make([]byte, size)
	for i := range n {
		name := fmt.Sprintf("class%02d/img%04d.bin", i%4, i)
		for j := range data {
			data[j] = byte(i + j)
		}
		p := filepath.Join(dir, name)
		require.NoError(tb, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(tb, os.WriteFile(p, data, 0o644))
		names = append(names, name)
	}
	return names
}

// readAll reads every file under root once, in lexical order, one at a
// time (an application's pass over its dataset), and returns the time.
func readAll(tb testing.TB, root string, names []string) (time.Duration, int64) {
	tb.Helper()
	start := time.Now()
	var total int64
	buf := make([]byte, 1<<20)
	for _, n := range names {
		f, err := os.Open(filepath.Join(root, n))
		require.NoError(tb, err)
		for {
			k, err := f.Read(buf)
			total += int64(k)
			if err != nil {
				break
			}
		}
		f.Close()
	}
	return time.Since(start), total
}

func runPrefetcher(tb testing.TB, opts Options, log logr.Logger) *Prefetcher {
	tb.Helper()
	p, err := New(opts, log)
	require.NoError(tb, err)
	tb.Cleanup(p.Close)
	return p
}

func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
