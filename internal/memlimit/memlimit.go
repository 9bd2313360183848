// Package memlimit gives the Go runtime a soft memory limit under the
// container's own, for eddy's binaries.
package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// memoryLimitShare is the share of the container's memory limit given to
// the Go runtime as its soft limit: the rest is for what the runtime does
// not count (the binary's text, kernel memory charged to the container).
const memoryLimitShare = 0.9

// Set gives the Go runtime a soft memory limit under the
// container's own, unless GOMEMLIMIT is set: without one Go's garbage collector
// lets the heap grow to twice what is live before collecting, and the scale
// benchmark's analyzer (2,000 workloads, 537 MiB live) reached 1.24 GiB of
// RSS, over config/'s 1 Gi limit — an OOM kill where a collection would
// have done. It returns the limit set, 0 when there is none to follow.
func Set() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	v2 := ""
	if mp, err := cgroupv2.Mountpoint(); err == nil {
		v2 = mp
	}
	max, ok := memoryLimit(string(data), v2, "/sys/fs/cgroup/memory")
	if !ok {
		return 0
	}
	limit := int64(float64(max) * memoryLimitShare)
	debug.SetMemoryLimit(limit)
	return limit
}

// memoryLimit finds the memory limit of the cgroup a process is in, from
// its /proc/PID/cgroup text: cgroup v2's memory.max under v2Root, or v1's
// memory.limit_in_bytes under v1Root (hybrid hosts). In a container the
// path /proc names may be the host's while the container's own group is
// mounted at the root, so the root's file is read when the path's is not
// there. No limit ("max", or v1's page-rounded 2^63) is false.
func memoryLimit(procCgroup, v2Root, v1Root string) (int64, bool) {
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var root, file string
		switch {
		case parts[0] == "0" && parts[1] == "" && v2Root != "":
			root, file = v2Root, "memory.max"
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			root, file = v1Root, "memory.limit_in_bytes"
		default:
			continue
		}
		for _, dir := range []string{filepath.Join(root, parts[2]), root} {
			data, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				continue
			}
			s := strings.TrimSpace(string(data))
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 || n >= 1<<62 {
				break // "max", or v1's no limit
			}
			return n, true
		}
	}
	return 0, false
}
