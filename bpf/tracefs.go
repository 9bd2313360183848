package bpf

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TraceFSPath is where EnsureTraceFS mounts tracefs.
const TraceFSPath = "/sys/kernel/tracing"

// traceFSPaths are where the syscalls trace events are looked up (the
// kernel's own mount point, and the older one under debugfs).
var traceFSPaths = []string{TraceFSPath, "/sys/kernel/debug/tracing"}

// TraceFSMounted reports whether tracefs is mounted where the syscalls trace
// events are looked up. Without it Load falls back to the raw_syscalls hooks.
func TraceFSMounted() bool {
	for _, p := range traceFSPaths {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return true
		}
	}
	return false
}

// EnsureTraceFS mounts tracefs at TraceFSPath unless it is mounted already,
// and reports whether it mounted it. It needs CAP_SYS_ADMIN. A fresh machine
// (a new VM, a minimal container host) often has no tracefs, and then every
// syscall of the node would pay for the raw_syscalls fallback; hosts that
// run the collector mount it once at boot (hack/install-deps.sh does here).
func EnsureTraceFS() (bool, error) {
	if TraceFSMounted() {
		return false, nil
	}
	if _, err := os.Stat(TraceFSPath); err != nil {
		return false, fmt.Errorf("mount tracefs: %w", err)
	}
	if err := unix.Mount("nodev", TraceFSPath, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return false, fmt.Errorf("mount tracefs at %s: %w", TraceFSPath, err)
	}
	return true, nil
}
