package collector

import (
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/bpf"
)

// fileTable remembers the path of every file a container was first seen
// touching, from the kernel's file events. The kernel sends a path once per
// (cgroup, file); records carry only (device, inode).
type fileTable struct {
	procRoot string
	max      int

	mu sync.Mutex
	// paths is keyed by cgroup first, so that forgetting a cgroup's files
	// does not walk everyone else's.
	paths map[uint64]map[devIno]string
	n     int
	// overflow counts events not remembered because the table was full.
	overflow uint64
}

type devIno struct{ dev, ino uint64 }

func newFileTable(procRoot string, max int) *fileTable {
	if max <= 0 {
		max = 1 << 20
	}
	return &fileTable{procRoot: procRoot, max: max, paths: map[uint64]map[devIno]string{}}
}

// add records an event's path. A relative path is resolved against the
// process's working directory, and an event without a path (or with one cut
// short) by looking for the file among the process's open files, while the
// process is (usually) still alive; when it is gone, a relative path stays
// unknown rather than wrong.
func (t *fileTable) add(ev bpf.FileEvent) {
	p := ev.Path
	switch {
	case p == "" || ev.Truncated:
		// The first access was a read of a file opened before the cgroup
		// was allowed (or before the collector started), or the path was
		// longer than the kernel copies.
		if open := t.openFilePath(ev.Pid, ev.Key.Dev, ev.Key.Ino); open != "" {
			p = open
		} else if p == "" || !path.IsAbs(p) {
			p = ""
		}
	case !path.IsAbs(p):
		cwd, err := os.Readlink(filepath.Join(t.procRoot, strconv.FormatUint(uint64(ev.Pid), 10), "cwd"))
		if err != nil || !path.IsAbs(cwd) {
			p = ""
		} else {
			p = path.Join(cwd, p)
		}
	default:
		p = path.Clean(p)
	}
	t.put(ev.Key, p)
}

// markUnknown remembers that the file's path is not known and will not be:
// its event was lost, or came with no path to resolve.
func (t *fileTable) markUnknown(k bpf.FileKey) { t.put(k, "") }

// put remembers p ("" for unknown) as the path of k, unless one is known.
func (t *fileTable) put(key bpf.FileKey, p string) {
	k := devIno{key.Dev, key.Ino}
	t.mu.Lock()
	defer t.mu.Unlock()
	files := t.paths[key.CgroupID]
	if old, ok := files[k]; ok {
		if old == "" && p != "" {
			files[k] = p
		}
		return
	}
	if t.n >= t.max {
		t.overflow++
		return
	}
	if files == nil {
		files = map[devIno]string{}
		t.paths[key.CgroupID] = files
	}
	t.n++
	files[k] = p
}

// lookup returns the file's path ("" when unknown) and whether its event
// was seen: the kernel sends the event, with the path of its open, before
// any record of the file, but user space may take it after the record.
func (t *fileTable) lookup(k bpf.FileKey) (path string, seen bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	path, seen = t.paths[k.CgroupID][devIno{k.Dev, k.Ino}]
	return path, seen
}

// forget drops the paths of cgroups for which keep returns false.
func (t *fileTable) forget(keep func(cgroupID uint64) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, files := range t.paths {
		if !keep(id) {
			t.n -= len(files)
			delete(t.paths, id)
		}
	}
}

// full reports whether no more paths can be remembered.
func (t *fileTable) full() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n >= t.max
}

func (t *fileTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// maxFDScan bounds the descriptors looked at for one event.
const maxFDScan = 4096

// openFilePath returns the path under which process pid has the file
// (dev, ino) open, dev in the kernel's encoding. Links in /proc/<pid>/fd read
// as the process sees them, so a container's files keep container paths.
func (t *fileTable) openFilePath(pid uint32, dev, ino uint64) string {
	if pid == 0 {
		return ""
	}
	dir := filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for i, e := range entries {
		if i >= maxFDScan {
			break
		}
		fd := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Stat(fd, &st) != nil || st.Ino != ino || kernelDev(st.Dev) != dev {
			continue
		}
		target, err := os.Readlink(fd)
		if err != nil || !path.IsAbs(target) || strings.HasSuffix(target, " (deleted)") {
			continue
		}
		return target
	}
	return ""
}

// kernelDev converts a device number from stat(2) to the kernel's internal
// encoding (major<<20 | minor) that BPF programs read from s_dev.
func kernelDev(statDev uint64) uint64 {
	return uint64(unix.Major(statDev))<<20 | uint64(unix.Minor(statDev))
}
