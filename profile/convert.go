package profile

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
)

// FileAccess converts a drained kernel record into the collector→analyzer
// form. monoToUnix is added to the kernel's CLOCK_MONOTONIC times to make
// them unix times. The record carries no path: files are identified by
// device and inode, which are exact, while the paths the kernel sees at open
// may be relative.
func FileAccess(r *bpf.Record, workload *accessv1.WorkloadRef, monoToUnix int64) *accessv1.FileAccess {
	unixNs := func(mono uint64) int64 {
		if mono == 0 {
			return 0
		}
		return int64(mono) + monoToUnix
	}
	return &accessv1.FileAccess{
		Workload:            workload,
		Dev:                 r.Key.Dev,
		Ino:                 r.Key.Ino,
		FileSize:            int64(r.FileSize),
		ReadOps:             r.ReadOps,
		ReadBytes:           r.ReadBytes,
		WriteOps:            r.WriteOps,
		WriteBytes:          r.WriteBytes,
		SeqSteps:            r.SeqSteps,
		RandSteps:           r.RandSteps,
		ReadSizeLog2:        append([]uint64(nil), r.ReadSizeLog2[:]...),
		ReadLatencyLog2:     append([]uint64(nil), r.ReadLatencyLog2[:]...),
		ReadWaitNano:        r.ReadWaitNs,
		PagesRequested:      r.PagesRequested,
		PagesAdded:          r.PagesAdded,
		MmapFaults:          r.MmapFaults,
		MappedReadBytes:     r.MappedReadBytes,
		ExecFaults:          r.ExecFaults,
		DirectReads:         r.DirectReads,
		FirstAccessUnixNano: unixNs(r.FirstNs),
		LastAccessUnixNano:  unixNs(r.LastNs),
		Passes:              r.Passes,
		LastPassUnixNano:    unixNs(r.LastPassNs),
		MaxOffset:           r.MaxOffset,
		Opens:               r.Opens,
	}
}

// DefaultExcludes are path prefixes of system files (programs, libraries,
// interpreters' modules, pseudo file systems) left out of a profile unless
// --data selects them: they are not the data a command works on.
var DefaultExcludes = []string{"/usr/", "/lib/", "/lib32/", "/lib64/", "/bin/", "/sbin/", "/etc/", "/proc/", "/sys/", "/dev/", "/run/", "/var/lib/", "/var/cache/", "/snap/"}

// selected reports whether a file at path (absolute, or "" when unknown)
// belongs to the profiled data: under one of include when include is set,
// else under none of exclude. Unknown paths are kept.
func selected(path string, include, exclude []string) bool {
	if path == "" || !filepath.IsAbs(path) {
		return len(include) == 0
	}
	if len(include) > 0 {
		for _, p := range include {
			if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
				return true
			}
		}
		return false
	}
	for _, p := range exclude {
		if strings.HasPrefix(path, p) {
			return false
		}
	}
	return true
}

// resolvePath turns a path as passed to open into an absolute one by looking
// for an open descriptor of the reading process on the same device and inode
// (exact, and right for openat relative to a directory descriptor). When the
// process has closed the file or exited, a relative path is returned as it
// was: joining it to the working directory would be a guess, wrong for openat
// relative to a directory descriptor.
func resolvePath(ev bpf.FileEvent) string {
	p := ev.Path
	if filepath.IsAbs(p) && !ev.Truncated {
		return filepath.Clean(p)
	}
	proc := "/proc/" + strconv.Itoa(int(ev.Pid))
	if fds, err := os.ReadDir(proc + "/fd"); err == nil {
		for i := len(fds) - 1; i >= 0; i-- {
			fd := proc + "/fd/" + fds[i].Name()
			var st unix.Stat_t
			if unix.Stat(fd, &st) != nil || st.Ino != ev.Key.Ino || !sameDev(st.Dev, ev.Key.Dev) {
				continue
			}
			if target, err := os.Readlink(fd); err == nil && filepath.IsAbs(target) {
				return target
			}
		}
	}
	return p
}

// sameDev compares a stat(2) device number with the kernel's internal
// encoding (major<<20 | minor) that BPF reports.
func sameDev(statDev, kernelDev uint64) bool {
	return uint64(unix.Major(statDev)) == kernelDev>>20 && uint64(unix.Minor(statDev)) == kernelDev&(1<<20-1)
}
