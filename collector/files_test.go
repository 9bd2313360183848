package collector

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/bpf"
)

func keyOf(t *testing.T, cgroup uint64, p string) bpf.FileKey {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	return bpf.FileKey{CgroupID: cgroup, Dev: kernelDev(st.Dev), Ino: st.Ino}
}

func TestFileTablePaths(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.bin")
	closed := filepath.Join(dir, "closed.bin")
	require.NoError(t, os.WriteFile(open, []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(closed, []byte("x"), 0o644))
	f, err := os.Open(open)
	require.NoError(t, err)
	defer f.Close()
	cwd, err := os.Getwd()
	require.NoError(t, err)
	pid := uint32(os.Getpid())

	pathOf := func(ft *fileTable, k bpf.FileKey) string {
		p, seen := ft.lookup(k)
		assert.True(t, seen, "the file's event was taken")
		return p
	}
	ft := newFileTable("/proc", 5)
	kOpen, kClosed := keyOf(t, 1, open), keyOf(t, 1, closed)
	ft.add(bpf.FileEvent{Key: kOpen, Pid: pid})
	assert.Equal(t, open, pathOf(ft, kOpen), "a path-less event is resolved from the process's open files")
	ft.add(bpf.FileEvent{Key: kClosed, Pid: pid})
	assert.Empty(t, pathOf(ft, kClosed), "a file the process no longer holds stays unknown")

	kRel := bpf.FileKey{CgroupID: 1, Ino: 99}
	ft.add(bpf.FileEvent{Key: kRel, Path: "sub/../a.txt", Pid: pid})
	assert.Equal(t, filepath.Join(cwd, "a.txt"), pathOf(ft, kRel))
	kGone := bpf.FileKey{CgroupID: 1, Ino: 100}
	ft.add(bpf.FileEvent{Key: kGone, Path: "a.txt", Pid: 1 << 30})
	assert.Empty(t, pathOf(ft, kGone), "relative path of an exited process stays unknown")

	k2 := bpf.FileKey{CgroupID: 2, Ino: 1}
	ft.add(bpf.FileEvent{Key: k2, Path: "/abs//x"})
	assert.Equal(t, "/abs/x", pathOf(ft, k2))
	_, seen := ft.lookup(bpf.FileKey{CgroupID: 2, Ino: 7})
	assert.False(t, seen, "no event taken for it")
	assert.Equal(t, 5, ft.len(), "unknown paths are remembered too: their records need not wait for an event")
	ft.add(bpf.FileEvent{Key: bpf.FileKey{CgroupID: 2, Ino: 2}, Path: "/over"})
	assert.Equal(t, 5, ft.len(), "the table is bounded")
	assert.Equal(t, uint64(1), ft.overflow)

	// A path cut short by the kernel is replaced by the open file's full path.
	ft2 := newFileTable("/proc", 0)
	ft2.add(bpf.FileEvent{Key: kOpen, Path: open[:len(open)-3], Truncated: true, Pid: pid})
	assert.Equal(t, open, pathOf(ft2, kOpen))
	ft2.add(bpf.FileEvent{Key: kClosed, Path: "/data/very/long/pa", Truncated: true, Pid: pid})
	assert.Equal(t, "/data/very/long/pa", pathOf(ft2, kClosed), "when the file is not open, the cut path still names its mount")

	ft.forget(func(id uint64) bool { return id != 1 })
	assert.Equal(t, 1, ft.len())
	assert.Equal(t, "/abs/x", pathOf(ft, k2))
}

func TestKernelDev(t *testing.T) {
	// 8:1 (sda1) and 259:65537 (an NVMe partition with a large minor).
	assert.Equal(t, uint64(8<<20|1), kernelDev(unix.Mkdev(8, 1)))
	assert.Equal(t, uint64(259<<20|65537), kernelDev(unix.Mkdev(259, 65537)))
}
