// Package cgroupv2 creates cgroup v2 groups and starts processes inside them.
// eddy uses it to run a profiled command in a cgroup of its own, and tests
// use it to stand in for the pod cgroups the kubelet creates
// (<cgroup2>/kubepods/besteffort/pod<UID>/<containerID>). The cgroup id BPF
// reports for a process (bpf_get_current_cgroup_id) is the inode number of
// its cgroup's directory, which Group.ID returns.
package cgroupv2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRemoveTimeout bounds how long Remove waits for a group to empty.
const DefaultRemoveTimeout = 10 * time.Second

// Mountpoint returns where the cgroup2 file system is mounted, read from
// /proc/self/mountinfo: /sys/fs/cgroup on unified hosts,
// /sys/fs/cgroup/unified on hybrid (v1 plus v2) hosts.
func Mountpoint() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	mp, err := parseMountinfo(f)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	return mp, nil
}

// Resolve returns the cgroup2 file system at or directly under root: root
// itself on a unified host, root/unified on a hybrid one (v1 controllers
// with cgroup2 beside them). A collector in a container mounts the host's
// /sys/fs/cgroup somewhere and need not know which kind of host it is on.
func Resolve(root string) (string, error) {
	for _, p := range []string{root, filepath.Join(root, "unified")} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) && p != root {
				continue
			}
			return "", fmt.Errorf("cgroup root %s: %w", p, err)
		}
		if st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", fmt.Errorf("no cgroup2 file system at %s or %s", root, filepath.Join(root, "unified"))
}

// parseMountinfo returns the mount point of the first cgroup2 file system in
// the mountinfo format of proc(5): fields, " - ", fstype, source, options.
func parseMountinfo(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields := strings.Fields(pre)
		after := strings.Fields(post)
		if len(fields) < 5 || len(after) < 1 || after[0] != "cgroup2" {
			continue
		}
		return unescapeMountPath(fields[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 file system is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")
}

// unescapeMountPath undoes the octal escapes (\040 for space and so on) that
// the kernel applies to paths in mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Group is one cgroup v2 directory.
type Group struct {
	// Path is the absolute path of the group's directory.
	Path string
}

// Create makes the group name under parentRel, a path relative to the cgroup2
// mount ("" for the root), creating missing parents. An existing group is
// reused.
func Create(parentRel, name string) (*Group, error) {
	mp, err := Mountpoint()
	if err != nil {
		return nil, err
	}
	rel := filepath.Join(parentRel, name)
	if rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(parentRel) {
		return nil, fmt.Errorf("create cgroup %q under %q: the path must be relative and inside the cgroup2 mount", name, parentRel)
	}
	p := filepath.Join(mp, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return &Group{Path: p}, nil
}

// Open returns the existing group at path, absolute or relative to the
// cgroup2 mount.
func Open(path string) (*Group, error) {
	if !filepath.IsAbs(path) {
		mp, err := Mountpoint()
		if err != nil {
			return nil, err
		}
		path = filepath.Join(mp, path)
	}
	if _, err := os.Stat(filepath.Join(path, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("open cgroup %s: not a cgroup2 directory: %w", path, err)
	}
	return &Group{Path: path}, nil
}

// ID returns the cgroup id: the inode number of the group's directory, which
// is what bpf_get_current_cgroup_id returns for its member processes.
func (g *Group) ID() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(g.Path, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", g.Path, err)
	}
	return st.Ino, nil
}

// Start starts cmd as a member of the group from its first instruction, by
// cloning it directly into the group (clone3 with CLONE_INTO_CGROUP, Linux
// 5.7+). Where that is refused, it falls back to starting cmd and then moving
// it, so the first instants of the child run in the caller's cgroup. Start
// sets cmd.SysProcAttr.UseCgroupFD and CgroupFD, keeping other attributes.
func (g *Group) Start(cmd *exec.Cmd) error {
	dir, err := os.Open(g.Path)
	if err != nil {
		return fmt.Errorf("start in cgroup %s: %w", g.Path, err)
	}
	defer dir.Close()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(dir.Fd())
	err = cmd.Start()
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("start %s in cgroup %s: %w", cmd.Path, g.Path, err)
	}
	cmd.SysProcAttr.UseCgroupFD = false
	cmd.SysProcAttr.CgroupFD = 0
	// exec.Cmd may not be started twice; a failed Start leaves it reusable
	// only while Process is nil.
	if cmd.Process != nil {
		return fmt.Errorf("start %s in cgroup %s: %w", cmd.Path, g.Path, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	if err := g.AddProcess(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	return nil
}

// AddProcess moves the process pid (all its threads) into the group.
func (g *Group) AddProcess(pid int) error {
	p := filepath.Join(g.Path, "cgroup.procs")
	if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into cgroup %s: %w", pid, g.Path, err)
	}
	return nil
}

// Pids returns the processes now in the group (not in its children).
func (g *Group) Pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(g.Path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", g.Path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list processes of cgroup %s: bad pid %q", g.Path, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Remove waits up to DefaultRemoveTimeout for the group and its child groups
// to have no processes, then deletes them. It does not kill anything.
func (g *Group) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRemoveTimeout)
	defer cancel()
	return g.RemoveContext(ctx)
}

// RemoveContext is Remove with the wait bounded by ctx instead. A group that
// no longer exists is not an error.
func (g *Group) RemoveContext(ctx context.Context) error {
	// Children first: rmdir of a group with child groups fails.
	entries, err := os.ReadDir(g.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", g.Path, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := (&Group{Path: filepath.Join(g.Path, e.Name())}).RemoveContext(ctx); err != nil {
				return err
			}
		}
	}
	delay := time.Millisecond
	for {
		err := unix.Rmdir(g.Path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", g.Path, err)
		}
		select {
		case <-ctx.Done():
			pids, _ := g.Pids()
			return fmt.Errorf("remove cgroup %s: still has processes %v: %w", g.Path, pids, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}
