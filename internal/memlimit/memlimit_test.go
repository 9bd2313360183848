package memlimit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMemoryLimitFromCgroupFiles(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content+"\n"), 0o644))
	}
	write("v2/kubepods/pod1/c1/memory.max", "1073741824")
	write("v2/other/memory.max", "max")
	write("v1/kubepods/pod2/c2/memory.limit_in_bytes", "536870912")
	write("v1/memory.limit_in_bytes", "9223372036854771712")
	write("v1ns/memory.limit_in_bytes", "268435456")
	for _, c := range []struct {
		name, proc, v2, v1 string
		want               int64
	}{
		{"v2", "0::/kubepods/pod1/c1\n", "v2", "v1", 1 << 30},
		{"v2 without a limit", "0::/other\n", "v2", "v1", 0},
		{"v1 on a hybrid host", "4:memory:/kubepods/pod2/c2\n0::/\n", "v2", "v1", 512 << 20},
		{"v1 without a limit", "4:memory:/\n", "", "v1", 0},
		{"v1 in a container: the host's path, its own group at the root", "7:cpuacct,memory:/kubepods/pod9/c9\n", "", "v1ns", 256 << 20},
		{"no memory controller", "1:cpu:/x\n", "v2", "v1", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			v2 := ""
			if c.v2 != "" {
				v2 = filepath.Join(root, c.v2)
			}
			got, ok := memoryLimit(c.proc, v2, filepath.Join(root, c.v1))
			require.Equal(t, c.want != 0, ok)
			require.Equal(t, c.want, got)
		})
	}
}

// TestMemoryLimitInACgroup runs this test binary in a memory cgroup of
// 256 MiB (v1 on hybrid hosts like this one's, where the kubelet's pod
// limits are) and checks the Go runtime's soft limit it set: 90% of it,
// and none when GOMEMLIMIT is given.
func TestMemoryLimitInACgroup(t *testing.T) {
	if v := os.Getenv("EDDY_TEST_PRINT_MEMLIMIT"); v != "" {
		set := Set()
		fmt.Printf("memlimit %d %d\n", set, debug.SetMemoryLimit(-1))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a cgroup")
	}
	dir := "/sys/fs/cgroup/memory"
	file := "memory.limit_in_bytes"
	if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
		t.Skipf("no cgroup v1 memory controller at %s (v2 is covered by the file test)", dir)
	}
	g := filepath.Join(dir, fmt.Sprintf("eddy-test-memlimit-%d", os.Getpid()))
	require.NoError(t, os.Mkdir(g, 0o755))
	defer os.Remove(g)
	require.NoError(t, os.WriteFile(filepath.Join(g, file), []byte("268435456"), 0o644))
	run := func(env ...string) (set, limit int64) {
		cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && shift && exec "$@"`, "sh", g, os.Args[0], "-test.run=^TestMemoryLimitInACgroup$")
		cmd.Env = append(os.Environ(), append(env, "EDDY_TEST_PRINT_MEMLIMIT=1")...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "memlimit" {
				set, _ = strconv.ParseInt(f[1], 10, 64)
				limit, _ = strconv.ParseInt(f[2], 10, 64)
				return set, limit
			}
		}
		t.Fatalf("no memlimit line in %s", out)
		return 0, 0
	}
	set, limit := run()
	share := memoryLimitShare
	require.Equal(t, int64(268435456*share), set)
	require.Equal(t, set, limit)
	set, limit = run("GOMEMLIMIT=100MiB")
	require.Zero(t, set)
	require.Equal(t, int64(100<<20), limit)
}
