package scale

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// metrics is one scrape of a component's /metrics: each sample's name with
// its labels as exposed ("name{a=\"b\"}") → value.
type metrics map[string]float64

// scrape reads the Prometheus text exposition at url.
func scrape(ctx context.Context, url string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// heapTop is the heap profile at url (a process's /debug/pprof; the heap
// taken after a collection) as `go tool pprof -top` prints it, live bytes by
// function, its first lines, and the live bytes in all; on failure, why
// and 0.
func heapTop(ctx context.Context, url string) (string, uint64) {
	return pprofTop(ctx, "-sample_index=inuse_space", url+"/heap?gc=1")
}

// cpuTop is a CPU profile of seconds at url (a process's /debug/pprof) as
// `go tool pprof -top` prints it (cumulative, so that eddy's own functions
// show where the time goes).
func cpuTop(ctx context.Context, url string, seconds int) string {
	top, _ := pprofTop(ctx, "-cum", fmt.Sprintf("%s/profile?seconds=%d", url, seconds))
	return top
}

// pprofTop runs `go tool pprof -top` on a profile URL and returns its first
// lines from the totals on, and the total (for a heap profile, live bytes).
func pprofTop(ctx context.Context, option, url string) (string, uint64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", option, url).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("no profile: %v: %s", err, bytes.TrimSpace(out)), 0
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var total uint64
	for i, l := range lines {
		// "Showing nodes accounting for 32087.56kB, 95.43% of 33623.68kB total"
		if _, rest, ok := strings.Cut(l, "% of "); ok && total == 0 {
			total = pprofBytes(strings.TrimSuffix(strings.TrimSpace(rest), " total"))
		}
		if strings.HasPrefix(strings.TrimSpace(l), "flat ") {
			return strings.Join(lines[max(0, i-2):], "\n"), total
		}
	}
	return strings.Join(lines, "\n"), total
}

// pprofBytes reads a size as pprof prints it ("33623.68kB", "1.2GB"; powers
// of 1024); 0 when it cannot.
func pprofBytes(s string) uint64 {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0
			}
			return uint64(f * u.mult)
		}
	}
	return 0
}

// sum adds every sample of the metric name (all label sets) whose labels
// contain each of with ("result=\"duplicate\"").
func (m metrics) sum(name string, with ...string) float64 {
	total := 0.0
	for k, v := range m {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, w := range with {
			ok = ok && strings.Contains(labels, w)
		}
		if ok {
			total += v
		}
	}
	return total
}

// memory is a process's resident memory: now (VmRSS) and its peak (VmHWM).
type memory struct{ RSS, HWM uint64 }

// procMemory reads pid's memory from /proc.
func procMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb uint64
		if _, err := fmt.Sscanf(sc.Text(), "VmRSS: %d kB", &kb); err == nil {
			m.RSS = kb << 10
		}
		if _, err := fmt.Sscanf(sc.Text(), "VmHWM: %d kB", &kb); err == nil {
			m.HWM = kb << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, sc.Err()
}

// loadAverage is /proc/loadavg's first three fields: the benchmark shares
// its machine, and its numbers mean little without it.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
