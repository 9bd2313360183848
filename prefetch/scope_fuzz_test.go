package prefetch

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzScopeNeverLeavesRoots checks the guarantee that matters most: any
// path, from a manifest or a hint, either is refused or opens a file whose
// real location is beneath the root, even through symbolic links that try
// to lead out.
func FuzzScopeNeverLeavesRoots(f *testing.F) {
	base := f.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside} {
		require.NoError(f, os.MkdirAll(d, 0o755))
	}
	require.NoError(f, os.WriteFile(filepath.Join(root, "sub", "in"), []byte("in"), 0o644))
	require.NoError(f, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	require.NoError(f, os.Symlink("../../outside/secret", filepath.Join(root, "sub", "up")))
	require.NoError(f, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "abs")))
	require.NoError(f, os.Symlink("../outside", filepath.Join(root, "dir")))
	require.NoError(f, os.Symlink("sub/in", filepath.Join(root, "ok")))
	realRoot, err := filepath.EvalSymlinks(root)
	require.NoError(f, err)
	sc, err := newScope([]string{root}, []string{"/app=" + root})
	require.NoError(f, err)
	f.Cleanup(sc.close)

	for _, seed := range []string{"sub/in", "ok", "sub/up", "abs", "dir/secret", "../outside/secret",
		"/app/../outside/secret", "/app/sub/in", root + "/sub/../../outside/secret", "sub/./in", "//app//sub/in",
		"sub/in/..", "\x00", "/app/dir/secret", outside + "/secret"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ref, err := sc.resolve(p)
		if err != nil {
			return
		}
		fh, err := sc.open(ref)
		if err != nil {
			return
		}
		defer fh.Close()
		real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(fh.Fd())))
		require.NoError(t, err)
		if !strings.HasPrefix(real, realRoot+"/") && real != realRoot {
			t.Fatalf("path %q opened %s, outside the root %s", p, real, realRoot)
		}
	})
}
