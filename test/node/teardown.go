package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Teardown removes whatever a real node that ran in dir left on the
// machine, whether or not the process that started it is still alive:
// processes whose command line names dir (containerd, its shims, kubelet,
// kube-proxy, CoreDNS, rclone) and the processes of the node's pods; mounts
// under dir (overlay root filesystems, network namespaces, token volumes,
// FUSE datasets); the cni0 bridge and the pods' veths; kube-proxy's and the
// CNI plugins' iptables chains; the pods' cgroups; the sysctls the node
// changed; the kubelet's log links. It then checks and returns an error
// listing anything still there. Files inside dir are left for the caller.
func Teardown(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder: choose another cluster folder", dir)
	}
	var state nodeState
	if data, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		_ = json.Unmarshal(data, &state)
	}
	pods := podUIDs(dir)

	for attempt := 0; attempt < 3; attempt++ {
		pids := processesUsing(dir)
		pids = append(pids, podProcesses(pods)...)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		waitGone(pids, 5*time.Second)
	}
	unmountUnder(dir)
	deleteLinks(state)
	cleanIPTables(ctx)
	removePodCgroups(pods)
	restoreSysctls(state.Sysctls)
	removeLogLinks(dir)
	removeCNICache()
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	if left := Leftovers(ctx, dir, pods, state.Veths); len(left) > 0 {
		return fmt.Errorf("teardown of the real node in %s left:\n  %s", dir, strings.Join(left, "\n  "))
	}
	return nil
}

// Leftovers lists what a node in dir left behind: processes naming dir,
// mounts under dir, the cni0 bridge, veths not in vethsBefore, iptables
// chains of kube-proxy or the CNI plugins, and cgroups of the given pods (or
// kubepods cgroups holding nothing else). Empty means clean.
func Leftovers(ctx context.Context, dir string, podUIDs []string, vethsBefore []string) []string {
	var left []string
	for _, pid := range processesUsing(dir) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(strings.TrimSpace(string(cmd)), "\x00", " ")))
	}
	for _, m := range mountsUnder(dir) {
		left = append(left, "mount "+m)
	}
	if _, err := net.InterfaceByName(BridgeName); err == nil {
		left = append(left, "network device "+BridgeName)
	}
	before := map[string]bool{}
	for _, v := range vethsBefore {
		before[v] = true
	}
	for _, v := range vethNames() {
		if !before[v] {
			left = append(left, "network device "+v)
		}
	}
	left = append(left, clusterChains(ctx)...)
	for _, c := range podCgroups(podUIDs) {
		left = append(left, "cgroup "+c)
	}
	for _, c := range emptyKubepods() {
		left = append(left, "cgroup "+c)
	}
	return left
}

// nodeCommands are the process names (as in /proc/PID/comm, at most 15
// characters) of what a node and its control plane run.
var nodeCommands = []string{"containerd", "containerd-shim", "runc", "runc-wrapper", "kubelet", "kube-proxy",
	"coredns", "rclone", "kube-apiserver", "kube-controller", "kube-scheduler", "etcd", "kwok"}

func isNodeCommand(pid int) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return false
	}
	name := strings.TrimSpace(string(comm))
	for _, c := range nodeCommands {
		if name == c || strings.HasPrefix(name, c) {
			return true
		}
	}
	return false
}

// processesUsing returns the node components whose command line mentions
// dir. Other programs that merely name dir (a shell, make, eddy-cluster
// down) are left alone, and so are this process and its ancestors.
func processesUsing(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	skip := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !skip[pid]; pid = parentPID(pid) {
		skip[pid] = true
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmd) == 0 {
			continue
		}
		if (strings.Contains(string(cmd), dir+"/") || strings.Contains(string(cmd), dir+"\x00")) && isNodeCommand(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func parentPID(pid int) int {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; fields after its closing parenthesis are fixed.
	fields := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// podUIDs are the pods the node's kubelet ran (its pods/ folder).
func podUIDs(dir string) []string {
	entries, _ := os.ReadDir(filepath.Join(dir, "kubelet", "root", "pods"))
	var uids []string
	for _, e := range entries {
		uids = append(uids, e.Name())
	}
	return uids
}

// cgroupRoots are the mounted cgroup hierarchies (v1 controllers and v2).
func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				roots = append(roots, unescapeMount(fields[4]))
			}
		}
	}
	return roots
}

var podDir = regexp.MustCompile(`^pod([0-9a-f-]{36})$`)

// podCgroups lists the cgroups of the given pods in every hierarchy,
// deepest first.
func podCgroups(uids []string) []string {
	want := map[string]bool{}
	for _, u := range uids {
		want[u] = true
	}
	var found []string
	for _, root := range cgroupRoots() {
		kp := filepath.Join(root, KubeletCgroupRoot, "kubepods")
		_ = filepath.WalkDir(kp, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if m := podDir.FindStringSubmatch(d.Name()); m != nil && want[m[1]] {
				_ = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
					if err == nil && d.IsDir() {
						found = append(found, p)
					}
					return nil
				})
				return filepath.SkipDir
			}
			return nil
		})
	}
	sort.Slice(found, func(i, j int) bool { return len(found[i]) > len(found[j]) })
	return found
}

// podProcesses are the processes still in the given pods' cgroups.
func podProcesses(uids []string) []int {
	var pids []int
	for _, cg := range podCgroups(uids) {
		data, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// removePodCgroups removes the pods' cgroups, then the kubelet's kubepods
// and QoS cgroups where nothing else lives in them.
func removePodCgroups(uids []string) {
	for _, cg := range podCgroups(uids) {
		rmdirRetry(cg)
	}
	for _, cg := range emptyKubepods() {
		rmdirRetry(cg)
	}
}

// emptyKubepods lists the kubelet's cgroups (KubeletCgroupRoot, kubepods
// and the QoS levels) that hold no pod cgroups, deepest first: what the node
// created and nothing uses.
func emptyKubepods() []string {
	var out []string
	for _, root := range cgroupRoots() {
		own := filepath.Join(root, KubeletCgroupRoot)
		if _, err := os.Stat(own); err != nil {
			continue
		}
		kp := filepath.Join(own, "kubepods")
		if _, err := os.Stat(kp); err != nil {
			if !hasChildDirs(own) {
				out = append(out, own)
			}
			continue
		}
		busy := false
		for _, qos := range []string{"besteffort", "burstable"} {
			q := filepath.Join(kp, qos)
			if _, err := os.Stat(q); err != nil {
				continue
			}
			if hasChildDirs(q) {
				busy = true
			} else {
				out = append(out, q)
			}
		}
		if busy {
			continue
		}
		entries, _ := os.ReadDir(kp)
		other := false
		for _, e := range entries {
			if e.IsDir() && e.Name() != "besteffort" && e.Name() != "burstable" {
				other = true
			}
		}
		if !other {
			out = append(out, kp)
			if entries, _ := os.ReadDir(own); len(dirsIn(entries)) == 1 {
				out = append(out, own)
			}
		}
	}
	return out
}

func dirsIn(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func hasChildDirs(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			return true
		}
	}
	return false
}

func rmdirRetry(path string) {
	for i := 0; i < 20; i++ {
		err := syscall.Rmdir(path)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// unmountUnder detaches every mount under dir, deepest first, until none is left.
func unmountUnder(dir string) {
	for i := 0; i < 5; i++ {
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return
		}
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
}

// deleteLinks removes the bridge and any veth created since the node started.
func deleteLinks(state nodeState) {
	before := map[string]bool{}
	for _, v := range state.Veths {
		before[v] = true
	}
	for _, v := range vethNames() {
		if !before[v] {
			_, _ = run(context.Background(), "ip", "link", "delete", v)
		}
	}
	if _, err := net.InterfaceByName(BridgeName); err == nil {
		_, _ = run(context.Background(), "ip", "link", "delete", BridgeName)
	}
}

// clusterChainPrefixes name the iptables chains of kube-proxy, the kubelet
// and the CNI plugins (bridge ipMasq, portmap).
var clusterChainPrefixes = []string{"KUBE-", "CNI-"}

var iptablesTables = []string{"filter", "nat", "mangle"}

func isClusterChain(name string) bool {
	for _, p := range clusterChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// clusterChains lists "iptables|ip6tables TABLE chain NAME" for every cluster chain.
func clusterChains(ctx context.Context) []string {
	var out []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			chains, _ := savedChains(ctx, tool, table)
			for _, c := range chains {
				out = append(out, tool+" "+table+" chain "+c)
			}
		}
	}
	return out
}

func savedChains(ctx context.Context, tool, table string) (chains []string, rules []string) {
	out, err := exec.CommandContext(ctx, tool+"-save", "-t", table).Output()
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			name := strings.Fields(line[1:])[0]
			if isClusterChain(name) {
				chains = append(chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			rules = append(rules, line)
		}
	}
	return chains, rules
}

// cleanIPTables deletes the jumps from built-in chains into cluster chains,
// then flushes and deletes the cluster chains, one iptables-restore per table.
func cleanIPTables(ctx context.Context) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			chains, rules := savedChains(ctx, tool, table)
			if len(chains) == 0 {
				continue
			}
			var b strings.Builder
			fmt.Fprintf(&b, "*%s\n", table)
			for _, r := range rules {
				chain := strings.Fields(r)[1]
				if !isClusterChain(chain) {
					for _, c := range chains {
						if strings.Contains(r, " -j "+c) || strings.Contains(r, " -g "+c) {
							b.WriteString("-D" + strings.TrimPrefix(r, "-A") + "\n")
							break
						}
					}
				}
			}
			for _, c := range chains {
				fmt.Fprintf(&b, "-F %s\n", c)
			}
			for _, c := range chains {
				fmt.Fprintf(&b, "-X %s\n", c)
			}
			b.WriteString("COMMIT\n")
			cmd := exec.CommandContext(ctx, tool+"-restore", "--noflush")
			cmd.Stdin = strings.NewReader(b.String())
			_ = cmd.Run()
		}
	}
}

// removeLogLinks removes the kubelet's /var/log/containers links into dir.
func removeLogLinks(dir string) {
	entries, _ := os.ReadDir("/var/log/containers")
	for _, e := range entries {
		p := filepath.Join("/var/log/containers", e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir+"/") {
			_ = os.Remove(p)
		}
	}
}

// removeCNICache removes the CNI result cache entries of the node's network.
func removeCNICache() {
	matches, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", cniNetworkName+"-*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
					alive = true
				}
			}
		}
		if !alive {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
