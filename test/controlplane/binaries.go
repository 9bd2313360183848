package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// provider says, for each binary the control plane needs, what installs it.
var provider = map[string]string{
	"kube-apiserver":          "make kube-binaries (builds the pinned k8s.io/kubernetes into bin/)",
	"kube-controller-manager": "make kube-binaries",
	"kube-scheduler":          "make kube-binaries",
	"etcd":                    "apt-get install etcd-server, then make tools (links /usr/bin/etcd into bin/)",
	"kubectl":                 "make tools",
	"kwok":                    "make tools (go install sigs.k8s.io/kwok/cmd/kwok)",
}

// findBinDir returns the folder holding the control-plane binaries.
func findBinDir(explicit string) (string, error) {
	for _, d := range []string{explicit, os.Getenv("EDDY_BIN_DIR"), os.Getenv("KUBEBUILDER_ASSETS")} {
		if d != "" {
			return filepath.Abs(d)
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("no control-plane binaries: set EDDY_BIN_DIR, or run from an eddy checkout after `make tools`: %w", err)
	}
	return filepath.Join(root, "bin"), nil
}

// RepoRoot walks up from the working directory to the eddy checkout's root.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/eddy-autotune/eddy\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("working directory is not inside the eddy repository")
		}
		dir = parent
	}
}

// checkBinaries reports every missing binary at once, each with what provides it.
func checkBinaries(dir string, names []string) error {
	var missing []string
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, fmt.Sprintf("  %s: %s", n, provider[n]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("control-plane binaries missing in %s:\n%s", dir, strings.Join(missing, "\n"))
	}
	return nil
}
