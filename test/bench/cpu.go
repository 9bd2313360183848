package bench

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cpuTicks is the CPU time (user + system, in clock ticks) of the node's
// processes by command name (eddy's by component), from /proc: the
// benchmark logs what used the two cores during each arm beside the job, to
// tell its own start-up from what ran next to it.
func cpuTicks() map[string]int64 {
	out := map[string]int64{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(data)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 13 {
			continue
		}
		// Fields after the name: state is 0, utime 11, stime 12.
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		out[processName(p, s[open+1:close])] += u + k
	}
	return out
}

// processName is comm, and for eddy's binary also its component (its first
// argument), so that the collector's share is told from the analyzer's.
func processName(statPath, comm string) string {
	if comm != "eddy" {
		return comm
	}
	cmdline, err := os.ReadFile(filepath.Join(filepath.Dir(statPath), "cmdline"))
	if err != nil {
		return comm
	}
	args := strings.Split(string(cmdline), "\x00")
	if len(args) < 2 || args[1] == "" || strings.HasPrefix(args[1], "-") {
		return comm
	}
	return comm + "-" + args[1]
}

// topCPU says which commands used the most CPU between two cpuTicks, in
// seconds (at 100 ticks a second), n at most. Processes that ended in
// between are not counted.
func topCPU(before, after map[string]int64, n int) string {
	type use struct {
		name string
		t    int64
	}
	var uses []use
	var total int64
	for name, t := range after {
		if d := t - before[name]; d > 0 {
			uses = append(uses, use{name, d})
			total += d
		}
	}
	slices.SortFunc(uses, func(a, b use) int { return cmp.Compare(b.t, a.t) })
	var b strings.Builder
	fmt.Fprintf(&b, "CPU %.1fs:", float64(total)/100)
	for _, u := range uses[:min(n, len(uses))] {
		fmt.Fprintf(&b, " %s %.1f", u.name, float64(u.t)/100)
	}
	return b.String()
}
