package prefetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/prefetch/internal/slowlink"
)

// remote is a real slow remote store behind a FUSE mount with a local
// cache, the shape of a Fluid runtime: rclone serves a folder over WebDAV,
// a slowlink proxy adds latency and a bandwidth cap between server and
// client, and every mount is `rclone mount --vfs-cache-mode full` with a
// fresh cache, so each mount starts cold.
type remote struct {
	src   string
	proxy *slowlink.Proxy
	tmp   string
}

// needRemote skips unless this machine can run the real remote.
func needRemote(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("the slow-remote tests mount FUSE file systems: run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		tb.Skipf("the slow-remote tests need /dev/fuse: %v", err)
	}
	for _, bin := range []string{"rclone", "fusermount3"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("the slow-remote tests need %s (apt-get install rclone fuse3)", bin)
		}
	}
}

// startRemote serves src through a link with the given one-way delay and
// bandwidth (bytes/s).
func startRemote(tb testing.TB, src string, delay time.Duration, bandwidth int64) *remote {
	tb.Helper()
	cleanStaleMounts(tb)
	tmp, err := os.MkdirTemp("", "eddy-remote-")
	require.NoError(tb, err)
	tb.Cleanup(func() { os.RemoveAll(tmp) })
	port := freePort(tb)
	serve := exec.Command("rclone", "serve", "webdav", src, "--addr", "127.0.0.1:"+port,
		"--config", filepath.Join(tmp, "rclone.conf"), "--log-file", filepath.Join(tmp, "serve.log"))
	serve.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(tb, serve.Start())
	tb.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
	})
	waitPort(tb, "127.0.0.1:"+port)
	proxy, err := slowlink.Start("127.0.0.1:0", "127.0.0.1:"+port, delay, bandwidth)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = proxy.Close() })
	return &remote{src: src, proxy: proxy, tmp: tmp}
}

// mount mounts the remote with a fresh cache and returns the mount point;
// it is unmounted when the test ends, pass or fail. rclone runs in the
// foreground as our child with a parent-death signal, so even a test binary
// killed by its timeout leaves no mount behind (rclone unmounts on SIGTERM).
func (r *remote) mount(tb testing.TB, name string) string {
	tb.Helper()
	dir, err := os.MkdirTemp(r.tmp, name+"-") // a fresh cache every time
	require.NoError(tb, err)
	mnt := filepath.Join(dir, "mnt")
	cache := filepath.Join(dir, "cache")
	require.NoError(tb, os.MkdirAll(mnt, 0o755))
	require.NoError(tb, os.MkdirAll(cache, 0o755))
	cmd := exec.Command("rclone", "mount", ":webdav:", mnt,
		"--webdav-url", "http://"+r.proxy.Addr(),
		"--vfs-cache-mode", "full", "--cache-dir", cache,
		"--dir-cache-time", "1h", "--config", filepath.Join(r.tmp, "rclone.conf"),
		"--log-file", filepath.Join(dir, "mount.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	require.NoError(tb, cmd.Start(), "rclone mount %s", mnt)
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		unmount(tb, mnt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !isMountPoint(mnt) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "mount.log"))
			tb.Fatalf("rclone mount %s exited: %v: %s", mnt, waitErr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("rclone mount %s: not mounted after 20s", mnt)
		}
	}
	return mnt
}

// unmount detaches mnt (lazily if it is busy); rclone then exits.
func unmount(tb testing.TB, mnt string) {
	if !isMountPoint(mnt) {
		return
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		tb.Logf("fusermount3 -u %s: %v: %s; unmounting lazily", mnt, err, bytes.TrimSpace(out))
		_ = exec.Command("fusermount3", "-uz", mnt).Run()
	}
}

// cleanStaleMounts detaches mounts left by an earlier run of these tests
// that was killed before its cleanup: only our own mount points (under an
// eddy-remote- temporary folder) whose rclone is gone (ENOTCONN).
func cleanStaleMounts(tb testing.TB) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	prefix := filepath.Join(os.TempDir(), "eddy-remote-")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[4], prefix) {
			continue
		}
		if _, err := os.Stat(f[4]); errors.Is(err, syscall.ENOTCONN) {
			tb.Logf("detaching %s, left by an earlier run", f[4])
			_ = exec.Command("fusermount3", "-uz", f[4]).Run()
			_ = os.RemoveAll(filepath.Dir(filepath.Dir(f[4])))
		}
	}
}

func isMountPoint(p string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func freePort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func waitPort(tb testing.TB, addr string) {
	require.Eventually(tb, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "rclone serve on %s", addr)
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
