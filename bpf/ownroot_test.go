package bpf

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestFilesOnAContainersOwnRootAreNotRecorded lays out what a container
// sees: a root file system of its own (a tmpfs here, an overlay of its image
// in a pod) with the program, its libraries and other files, and a volume
// bind-mounted into it from another file system. Run chrooted there, in an
// allowed cgroup, a program's reads of its own root's files, and the faults
// that run its binary, leave no record and no event; its reads through the
// volume are recorded in full. The same file of that root read by a process
// of the same cgroup whose root is the host's is recorded, once: what is
// left out depends on the reader's root, not on the file system.
func TestFilesOnAContainersOwnRootAreNotRecorded(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "ownroot")
	var hostSB uint64
	require.NoError(t, r.maps.Settings.Lookup(uint32(settingHostRootSB), &hostSB))
	require.NotZero(t, hostSB, "the thread iterator, run by Allow, found the host's root file system")

	busybox := "/bin/busybox"
	if out, err := exec.Command("file", "-L", busybox).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("statically linked")) {
		t.Skipf("%s is not a static busybox (hack/install-deps.sh installs busybox-static): %s", busybox, out)
	}
	root := t.TempDir()
	require.NoError(t, unix.Mount("eddy-test-root", root, "tmpfs", 0, "size=64m,mode=0755"))
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	copyFile(t, busybox, filepath.Join(root, "busybox"), 0o755)
	const size = 256 << 10
	own := filepath.Join(root, "own.bin")
	writeFile(t, own, size)

	data := dataDir(t)
	vol := filepath.Join(data, "vol.bin")
	writeFile(t, vol, size)
	mnt := filepath.Join(root, "data")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(data, mnt, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })

	// In the container: md5sum reads each file whole with read(2).
	cmd := exec.Command("/busybox", "md5sum", "/own.bin", "/data/vol.bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cg.group.Start(cmd))
	require.NoError(t, cmd.Wait(), "chrooted md5sum: %s", out.String())
	// On the host's root, in the same cgroup.
	cg.run(t, "seqread", own, "4096")

	recs := r.drainCgroup(t, cg.id)
	_, volIno := keyOf(t, vol)
	_, ownIno := keyOf(t, own)
	_, binIno := keyOf(t, filepath.Join(root, "busybox"))
	if rec, ok := recs[volIno]; assert.True(t, ok, "the volume's file, read in the container, is recorded") {
		assert.EqualValues(t, size, rec.ReadBytes)
		assert.EqualValues(t, 1, rec.Opens)
	}
	if rec, ok := recs[ownIno]; assert.True(t, ok, "the container's file, read by a process whose root is the host's, is recorded") {
		assert.EqualValues(t, size, rec.ReadBytes, "once: the container's own read of it is left out")
		assert.EqualValues(t, 1, rec.Opens)
	}
	_, ok := recs[binIno]
	assert.False(t, ok, "the container's binary, run and faulted in from its own root, is not recorded")

	for _, ev := range r.eventsOf(cg.id) {
		assert.NotEqual(t, "/own.bin", ev.Path, "no event from the container's read of its own file")
		assert.NotEqual(t, binIno, ev.Key.Ino, "no event for the container's binary")
	}
	_, ok = r.waitEvent(t, func(ev FileEvent) bool {
		return ev.Key.CgroupID == cg.id && ev.Key.Ino == volIno && ev.Path == "/data/vol.bin"
	})
	assert.True(t, ok, "the volume's file is announced with the container's path")
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
}
