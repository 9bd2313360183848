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

// Reasons a file is left out of a profile, as counted in Report.ExcludedBy.
const (
	ExcludeNotData     = "outside --data"
	ExcludeSystem      = "system file"
	ExcludeExecutable  = "mapped executable (program code)"
	ExcludeImage       = "mapped without an open (program image, shared memory)"
	ExcludeInterpreter = "under the interpreter's prefix"
	ExcludeScript      = "the interpreter's script"
	ExcludeNoPath      = "read without an open seen (path unknown)"
	// ExcludeOutsideRoots: data under no dataset root (see RootShare).
	ExcludeOutsideRoots = "outside any dataset root"
)

// notData says why the file of r (at path, "" when unknown) is not the
// command's data, or "" when it is. A file once left out stays out: a
// library's code faults may come in one window and its data pages in the
// next. p.mu is held.
func (p *profiler) notData(path string, r *bpf.Record) string {
	if why := p.excluded[r.Key]; why != "" {
		return why
	}
	switch {
	case len(p.opt.Data) > 0:
		// Named data directories are the whole truth.
		if !selected(path, p.opt.Data, nil) {
			return ExcludeNotData
		}
		return ""
	case r.ExecFaults > 0:
		return ExcludeExecutable
	case path == "" && r.WriteOps == 0 && r.ReadBytes == r.MappedReadBytes:
		// Never opened, read or written with a syscall, only paged in or
		// mapped: the program and its loader (mapped by exec), or shared
		// memory (SysV segments, memfd) that is no file on disk.
		return ExcludeImage
	case path == "":
		// Read, but its open was never seen (a descriptor inherited from
		// outside the command, or an open the recorder missed: seen with
		// PyTorch DataLoader workers reading the interpreter's modules), so
		// nothing says it is data. Counted in the report; --data names
		// data directories explicitly.
		return ExcludeNoPath
	case !selected(path, nil, DefaultExcludes):
		return ExcludeSystem
	case !selected(path, nil, p.prefixes):
		return ExcludeInterpreter
	case path != "" && path == p.script:
		return ExcludeScript
	}
	return ""
}

// programPrefixes returns the installation prefixes of the program at path
// when it is an interpreter installed outside the system directories: a
// virtual environment (pyvenv.cfg), a conda environment (conda-meta), or any
// installation with its own lib/pythonX.Y (pyenv versions, copies under
// /opt or a home directory). The prefix is the directory above the
// program's bin/, both as invoked and after symbolic links, each with a
// trailing slash. Its modules, compiled caches and native extensions are the
// program's own files, not data.
func programPrefixes(path string) []string {
	var out []string
	add := func(bin string) {
		if filepath.Base(filepath.Dir(bin)) != "bin" {
			return
		}
		prefix := filepath.Dir(filepath.Dir(bin))
		if prefix == "/" || !isInstallPrefix(prefix) {
			return
		}
		prefix = strings.TrimSuffix(prefix, "/") + "/"
		if !selected(prefix, nil, DefaultExcludes) {
			return
		}
		for _, o := range out {
			if o == prefix {
				return
			}
		}
		out = append(out, prefix)
	}
	if abs, err := filepath.Abs(path); err == nil {
		add(abs)
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			add(real)
		}
	}
	return out
}

// scriptOf returns the absolute path of the script an interpreter command
// runs (python3 train.py, bash run.sh, ...), or "".
func scriptOf(argv []string) string {
	if len(argv) < 2 || strings.HasPrefix(argv[1], "-") {
		return ""
	}
	base := filepath.Base(argv[0])
	interpreter := false
	for _, name := range []string{"python", "ruby", "node", "perl", "bash", "sh", "Rscript", "julia"} {
		if strings.HasPrefix(base, name) {
			interpreter = true
		}
	}
	if !interpreter {
		return ""
	}
	abs, err := filepath.Abs(argv[1])
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs
}

func isInstallPrefix(dir string) bool {
	for _, marker := range []string{"pyvenv.cfg", "conda-meta"} {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return true
		}
	}
	libs, _ := filepath.Glob(filepath.Join(dir, "lib", "python[23]*"))
	return len(libs) > 0
}

// selected reports whether a file at path (absolute, or "" when unknown)
// belongs to the profiled data: under one of include when include is set,
// else under none of exclude. Unknown paths are kept.
func selected(path string, include, exclude []string) bool {
	if path == "" || !filepath.IsAbs(path) {
		return len(include) == 0
	}
	if len(include) > 0 {
		for _, p := range include {
			if under(p, path) {
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
// process has closed the file, a relative path is joined to its working
// directory and to each directory it holds open (tar and find open a tree's
// files relative to a descriptor of their directory), and taken only where
// that names the same device and inode. When nothing matches (the process
// has exited, or closed the directory too) it is returned as it was.
func resolvePath(ev bpf.FileEvent) string {
	p := ev.Path
	if filepath.IsAbs(p) && !ev.Truncated {
		return filepath.Clean(p)
	}
	proc := "/proc/" + strconv.Itoa(int(ev.Pid))
	is := func(path string) bool {
		var st unix.Stat_t
		return unix.Stat(path, &st) == nil && st.Ino == ev.Key.Ino && sameDev(st.Dev, ev.Key.Dev)
	}
	fds, _ := os.ReadDir(proc + "/fd")
	for i := len(fds) - 1; i >= 0; i-- {
		fd := proc + "/fd/" + fds[i].Name()
		if !is(fd) {
			continue
		}
		if target, err := os.Readlink(fd); err == nil && filepath.IsAbs(target) {
			return target
		}
	}
	if filepath.IsAbs(p) || ev.Truncated {
		return p
	}
	// The file is closed already: a relative path is relative to the
	// process's working directory, or to a directory it opened the file
	// at (openat, as tar and find walk a tree), which is likely still open.
	dirs := []string{proc + "/cwd"}
	for i := len(fds) - 1; i >= 0; i-- {
		dirs = append(dirs, proc+"/fd/"+fds[i].Name())
	}
	for _, d := range dirs {
		target, err := os.Readlink(d)
		if err != nil || !filepath.IsAbs(target) {
			continue
		}
		if cand := filepath.Join(target, p); is(cand) {
			return cand
		}
	}
	return p
}

// sameDev compares a stat(2) device number with the kernel's internal
// encoding (major<<20 | minor) that BPF reports.
func sameDev(statDev, kernelDev uint64) bool {
	return uint64(unix.Major(statDev)) == kernelDev>>20 && uint64(unix.Minor(statDev)) == kernelDev&(1<<20-1)
}
