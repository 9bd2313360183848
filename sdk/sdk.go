// Package sdk holds the SDKs eddy injects into application containers
// without changing their images, embedded in the eddy binary, and writes
// them out (`eddy sdk install --to DIR`, run by the webhook's init
// container into the shared emptyDir).
//
// The Python SDK follows PyTorch DataLoader iteration and sends each epoch's
// upcoming file order to the prefetch sidecar over a unix socket; the
// protocol is prefetch.Hint (newline-delimited JSON, see README.md).
package sdk

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// embeddedPython is the folder of the embedded tree that holds the Python
// SDK; it is installed at the top of the install directory.
const embeddedPython = "python"

// SocketEnv names the environment variable the SDK reads for the hint
// socket's path; without it the SDK uses prefetch.SDKMountPath/HintSocketName.
const SocketEnv = "EDDY_PREFETCH_SOCKET"

//go:embed python/sitecustomize.py python/eddy_sdk/*.py
var files embed.FS

// PythonPath is the PYTHONPATH entry that activates the Python SDK
// installed into dir: dir itself, which holds sitecustomize.py and the
// eddy_sdk package (and, in a pod, the prefetcher's socket, which Python
// ignores).
func PythonPath(dir string) string {
	return dir
}

// Files lists the files Install writes, slash-separated and relative to the
// install directory, in lexical order.
func Files() []string {
	var out []string
	_ = fs.WalkDir(files, embeddedPython, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, embeddedPython+"/"))
		}
		return nil
	})
	return out
}

// Install writes the SDKs into dir (created if missing), replacing files
// from an earlier install. Each file is written to a temporary name and
// renamed, so a reader never sees half a file.
func Install(dir string) error {
	for _, name := range Files() {
		data, err := files.ReadFile(path.Join(embeddedPython, name))
		if err != nil {
			return fmt.Errorf("read embedded %s: %w", name, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("install SDK into %s: %w", dir, err)
		}
		tmp := filepath.Join(filepath.Dir(dst), "."+path.Base(name)+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return fmt.Errorf("install SDK into %s: %w", dir, err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("install SDK into %s: %w", dir, err)
		}
	}
	return nil
}
