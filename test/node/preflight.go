package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// ErrNotRoot is returned when the caller cannot run a node: containerd,
// runc, the CNI bridge and iptables all need root.
var ErrNotRoot = errors.New("a real node needs root (containerd, runc, CNI bridge, iptables); run as root")

// requirement is one host program a real node needs and what provides it.
type requirement struct {
	name    string
	paths   []string // absolute candidates; empty means look up in PATH
	install string
}

// hostRequirements are the Debian programs; hack/install-deps.sh installs them.
var hostRequirements = []requirement{
	{name: "containerd", install: "apt-get install containerd"},
	{name: "ctr", install: "apt-get install containerd"},
	{name: "runc", paths: []string{"/usr/sbin/runc", "/usr/bin/runc"}, install: "apt-get install runc"},
	{name: "bridge (CNI plugin)", paths: []string{"/usr/lib/cni/bridge", "/opt/cni/bin/bridge"}, install: "apt-get install containernetworking-plugins"},
	{name: "iptables", install: "apt-get install iptables"},
	{name: "jq", install: "apt-get install jq"},
	{name: "busybox", paths: []string{"/bin/busybox", "/usr/bin/busybox"}, install: "apt-get install busybox-static"},
	{name: "ip", install: "apt-get install iproute2"},
}

// datasetRequirements are needed only for the FUSE-backed remote dataset.
var datasetRequirements = []requirement{
	{name: "rclone", install: "apt-get install rclone"},
	{name: "fusermount3", install: "apt-get install fuse3"},
}

// binRequirements are built into bin/ by make.
var binRequirements = []requirement{
	{name: "kubelet", install: "make node-binaries"},
	{name: "kube-proxy", install: "make node-binaries"},
}

// hostTools resolves the host programs, reporting every missing one at once.
type hostTools struct {
	containerd, ctr, runc, cniBin, iptables, jq, busybox string
	rclone, fusermount                                   string
	kubelet, kubeProxy, coredns                          string
}

// MissingHostProgramsError lists host programs (Debian packages) a real
// node needs and does not find.
type MissingHostProgramsError struct {
	// Missing are lines "program: how to install it".
	Missing []string
}

func (e *MissingHostProgramsError) Error() string {
	return "a real node needs programs that are missing (or run hack/install-deps.sh):\n" + strings.Join(e.Missing, "\n")
}

// Preflight checks that a real node can run here: root, the Debian
// programs (*MissingHostProgramsError when some are missing), and kubelet
// and kube-proxy in binDir (empty: bin/ of the eddy checkout).
func Preflight(binDir string, remoteDatasets bool) error {
	if binDir == "" {
		root, err := controlplane.RepoRoot()
		if err != nil {
			return err
		}
		binDir = filepath.Join(root, "bin")
	}
	_, err := findTools(binDir, remoteDatasets)
	return err
}

func findTools(binDir string, remoteDatasets bool) (*hostTools, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	found := map[string]string{}
	check := func(reqs []requirement, dir string) (missing []string) {
		for _, r := range reqs {
			cands := r.paths
			if dir != "" {
				cands = []string{filepath.Join(dir, r.name)}
			}
			path := ""
			if len(cands) == 0 {
				path, _ = exec.LookPath(r.name)
			}
			for _, c := range cands {
				if isExecutable(c) {
					path = c
					break
				}
			}
			if path == "" {
				missing = append(missing, fmt.Sprintf("  %s: %s", r.name, r.install))
			}
			found[r.name] = path
		}
		return missing
	}
	missing := check(hostRequirements, "")
	if remoteDatasets {
		missing = append(missing, check(datasetRequirements, "")...)
	}
	if len(missing) > 0 {
		return nil, &MissingHostProgramsError{Missing: missing}
	}
	if missing := check(binRequirements, binDir); len(missing) > 0 {
		return nil, fmt.Errorf("a real node needs binaries missing in %s:\n%s", binDir, strings.Join(missing, "\n"))
	}
	t := &hostTools{
		containerd: found["containerd"], ctr: found["ctr"], runc: found["runc"],
		cniBin: filepath.Dir(found["bridge (CNI plugin)"]), iptables: found["iptables"], jq: found["jq"],
		busybox: found["busybox"], rclone: found["rclone"], fusermount: found["fusermount3"],
		kubelet: found["kubelet"], kubeProxy: found["kube-proxy"],
	}
	if p := filepath.Join(binDir, "coredns"); isExecutable(p) {
		t.coredns = p
	}
	return t, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
