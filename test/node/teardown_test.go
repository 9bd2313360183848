package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestTeardownFindsAndRemovesLeftovers plants what a crashed node leaves
// (a mount under its folder, a kube-proxy-like iptables chain, a pod cgroup
// with the pod known to the kubelet's folder) and checks that Leftovers
// reports each and Teardown removes them.
func TestTeardownFindsAndRemovesLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts, iptables and cgroups need root")
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("iptables not installed: apt-get install iptables")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("/tmp", "eddy-teardown-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	const uid = "0edd0000-0000-4000-8000-000000000001"
	mnt := filepath.Join(dir, "kubelet", "root", "pods", uid, "volumes", "token")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) }()
	const chain = "KUBE-EDDY-TEARDOWN-TEST"
	if out, err := exec.Command("iptables", "-t", "nat", "-N", chain).CombinedOutput(); err != nil {
		t.Fatalf("iptables -N: %v: %s", err, out)
	}
	if out, err := exec.Command("iptables", "-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.250/32", "-j", chain).CombinedOutput(); err != nil {
		t.Fatalf("iptables -A: %v: %s", err, out)
	}
	defer func() {
		_ = exec.Command("iptables", "-t", "nat", "-D", "OUTPUT", "-d", "192.0.2.250/32", "-j", chain).Run()
		_ = exec.Command("iptables", "-t", "nat", "-X", chain).Run()
	}()
	cg := filepath.Join("/sys/fs/cgroup/pids", KubeletCgroupRoot, "kubepods/besteffort", "pod"+uid)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Skipf("no cgroup v1 pids hierarchy to plant a pod cgroup in: %v", err)
	}
	defer os.Remove(cg)

	left := strings.Join(Leftovers(ctx, dir, []string{uid}, vethNames()), "\n")
	for _, want := range []string{"mount " + mnt, "iptables nat chain " + chain, "cgroup " + cg} {
		if !strings.Contains(left, want) {
			t.Errorf("Leftovers did not report %q; reported:\n%s", want, left)
		}
	}
	if err := Teardown(ctx, dir); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := Leftovers(ctx, dir, []string{uid}, vethNames()); len(left) > 0 {
		t.Fatalf("after Teardown still left: %v", left)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("pod cgroup %s still there", cg)
	}
}
