package cgroupv2

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMountinfo(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	mp, err := parseMountinfo(strings.NewReader(hybrid))
	require.NoError(t, err)
	assert.Equal(t, "/sys/fs/cgroup/unified", mp)

	unified := `25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`
	mp, err = parseMountinfo(strings.NewReader(unified))
	require.NoError(t, err)
	assert.Equal(t, "/sys/fs/cgroup", mp, "optional fields before the separator must not shift the mount point")

	escaped := `41 31 0:38 / /mnt/with\040space rw - cgroup2 none rw
`
	mp, err = parseMountinfo(strings.NewReader(escaped))
	require.NoError(t, err)
	assert.Equal(t, "/mnt/with space", mp)

	_, err = parseMountinfo(strings.NewReader("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"))
	assert.ErrorContains(t, err, "no cgroup2")
}

func requireRoot(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping cgroup test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	mp, err := Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 mount: %v", err)
	}
	return mp
}

// TestStartPlacesChildInGroup checks the child is in the group from its
// first instruction: the child reports its own /proc/self/cgroup, which it
// reads before doing anything else.
func TestStartPlacesChildInGroup(t *testing.T) {
	mp := requireRoot(t)
	parent := fmt.Sprintf("eddy-test-%d/kubepods/besteffort/podabc", os.Getpid())
	g, err := Create(parent, "ctr1")
	require.NoError(t, err)
	t.Cleanup(func() { _ = (&Group{Path: filepath.Join(mp, fmt.Sprintf("eddy-test-%d", os.Getpid()))}).Remove() })
	assert.Equal(t, filepath.Join(mp, parent, "ctr1"), g.Path)

	id, err := g.ID()
	require.NoError(t, err)
	assert.NotZero(t, id)

	cmd := exec.Command("/bin/cat", "/proc/self/cgroup")
	var out strings.Builder
	cmd.Stdout = &out
	require.NoError(t, g.Start(cmd))
	require.NoError(t, cmd.Wait())
	assert.Contains(t, out.String(), "0::/"+parent+"/ctr1\n")

	// A long-running member keeps the group busy until it exits.
	sleeper := exec.Command("/bin/sleep", "0.3")
	require.NoError(t, g.Start(sleeper))
	pids, err := g.Pids()
	require.NoError(t, err)
	assert.Equal(t, []int{sleeper.Process.Pid}, pids)
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	require.NoError(t, g.Remove(), "Remove must wait for the member to exit")
	require.NoError(t, <-done)
	_, err = os.Stat(g.Path)
	assert.True(t, os.IsNotExist(err), "group directory still exists")
}

func TestAddProcessAndOpen(t *testing.T) {
	requireRoot(t)
	g, err := Create("", "eddy-test-add-"+strconv.Itoa(os.Getpid()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Remove() })

	cmd := exec.Command("/bin/sleep", "10")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.NoError(t, g.AddProcess(cmd.Process.Pid))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	require.NoError(t, err)
	assert.Contains(t, string(b), "0::/"+filepath.Base(g.Path)+"\n")

	same, err := Open(filepath.Base(g.Path))
	require.NoError(t, err)
	assert.Equal(t, g.Path, same.Path)
	_, err = Open("does-not-exist-" + strconv.Itoa(os.Getpid()))
	assert.Error(t, err)
	_, err = Create("../escape", "x")
	assert.Error(t, err)
}

func TestResolveFindsCgroup2OnThisHost(t *testing.T) {
	mp, err := Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	got, err := Resolve(mp)
	if err != nil || got != mp {
		t.Fatalf("Resolve(%s) = %q, %v; want the mount itself", mp, got, err)
	}
	if filepath.Base(mp) == "unified" {
		got, err := Resolve(filepath.Dir(mp))
		if err != nil || got != mp {
			t.Fatalf("Resolve(%s) on a hybrid host = %q, %v; want %s", filepath.Dir(mp), got, err, mp)
		}
	}
	if _, err := Resolve(t.TempDir()); err == nil {
		t.Fatal("Resolve of a plain folder succeeded")
	}
}
