package sdk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInstallWritesEmbeddedSDK(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Install(dir))
	require.NoError(t, Install(dir), "a second install replaces the first")
	assert.Equal(t, []string{"eddy_sdk/__init__.py", "eddy_sdk/_core.py", "sitecustomize.py"}, Files())
	for _, name := range Files() {
		want, err := os.ReadFile(filepath.Join("python", filepath.FromSlash(name)))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), name)
	}
	leftovers, err := filepath.Glob(filepath.Join(dir, "*", ".*.tmp"))
	require.NoError(t, err)
	assert.Empty(t, leftovers)
	assert.Equal(t, dir, PythonPath(dir))
}

// TestPythonSDK runs the SDK's unittest suite against the installed copy,
// with every Python 3 on the machine: the first on PATH, and Debian's
// /usr/bin/python3 (the one PyTorch is packaged for). Torch tests skip
// themselves, saying why, where torch cannot be imported.
func TestPythonSDK(t *testing.T) {
	pythons := map[string]bool{}
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if path, err := exec.LookPath(p); err == nil {
			if real, err := filepath.EvalSymlinks(path); err == nil {
				pythons[real] = true
			}
		}
	}
	if len(pythons) == 0 {
		t.Skip("no python3 on this machine: the Python SDK is not tested")
	}
	dir := t.TempDir()
	require.NoError(t, Install(dir))
	tests, err := filepath.Abs("pytests")
	require.NoError(t, err)
	for py := range pythons {
		t.Run(py, func(t *testing.T) {
			if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
				t.Logf("%s cannot import torch: the PyTorch tests skip (apt-get install python3-torch for Debian's python3)", py)
			}
			cmd := exec.Command(py, "-m", "unittest", "discover", "-v", "-s", tests)
			cmd.Env = append(os.Environ(), "PYTHONPATH="+PythonPath(dir)+string(os.PathListSeparator)+tests,
				"PYTHONDONTWRITEBYTECODE=1")
			cmd.Dir = t.TempDir()
			out, err := cmd.CombinedOutput()
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "skipped") || strings.HasPrefix(line, "Ran ") {
					t.Log(line)
				}
			}
			require.NoError(t, err, "python unittest failed:\n%s", out)
		})
	}
}
