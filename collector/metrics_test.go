package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/collector/ship"
)

func TestMetricsFromWindows(t *testing.T) {
	m := NewMetrics(time.Hour)
	m.SetShipperStats(func() ship.Stats {
		return ship.Stats{Buffered: 3, Dropped: 2, Lost: map[ship.LossReason]uint64{ship.LossBufferFull: 2}, Shipped: 10, Failures: 1}
	})
	wl := &accessv1.WorkloadRef{Namespace: "ml", Kind: "Deployment", Name: "web"}
	ds := &accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid"}
	w := &accessv1.AccessWindow{Files: []*accessv1.FileAccess{
		{Workload: wl, Pod: "web-1", Dataset: ds, Path: "train/a.jpg", ReadBytes: 1000, ReadOps: 2, SeqSteps: 1, RandSteps: 1, PagesAdded: 3, ReadWaitNano: 5e8},
		{Workload: wl, Pod: "web-1", Dataset: ds, Path: "train/b.jpg", ReadBytes: 24, ReadOps: 1, SeqSteps: 1, ReadWaitNano: 5e8},
	}}
	src := SourceStats{EventsLost: 4, MapEntries: 250, MapCapacity: 1000, MissingHooks: []string{"tp_btf/mm_filemap_get_pages"},
		Programs:    map[string]ProgramStats{"read_exit": {RunTime: 1500 * time.Millisecond, RunCount: 7}},
		RawSyscalls: true, DeferredBatches: 3, InheritedAllows: 6, ProgramsAttached: 15}
	m.observeWindow(w, src, windowState{unattributed: 2, observed: 5, pending: 1, paths: 9, held: 3})
	m.observeWindow(w, src, windowState{observed: 5, pending: 1, paths: 9, held: 3})
	m.ObserveDrain(3 * time.Millisecond)

	expected := `
# HELP eddy_collector_read_bytes_total Bytes read by observed containers.
# TYPE eddy_collector_read_bytes_total counter
eddy_collector_read_bytes_total{dataset="imagenet",namespace="ml",pod="web-1",workload="web",workload_kind="Deployment"} 2048
# HELP eddy_collector_read_steps_total Reads classified against the previous read of the same open file: pattern is sequential or random.
# TYPE eddy_collector_read_steps_total counter
eddy_collector_read_steps_total{dataset="imagenet",namespace="ml",pattern="random",pod="web-1",workload="web",workload_kind="Deployment"} 2
eddy_collector_read_steps_total{dataset="imagenet",namespace="ml",pattern="sequential",pod="web-1",workload="web",workload_kind="Deployment"} 4
# HELP eddy_collector_read_wait_seconds_total Time observed containers spent inside read calls.
# TYPE eddy_collector_read_wait_seconds_total counter
eddy_collector_read_wait_seconds_total{dataset="imagenet",namespace="ml",pod="web-1",workload="web",workload_kind="Deployment"} 2
# HELP eddy_collector_map_fill_ratio Entries in the kernel's per-file map over its capacity, at the last drain.
# TYPE eddy_collector_map_fill_ratio gauge
eddy_collector_map_fill_ratio 0.25
# HELP eddy_collector_windows_dropped_total Windows lost since the collector started, by reason: buffer_full (analyzer unreachable for too long), store_failed (state directory full or failing), too_large (one window over the analyzer's message limit). Each leaves a gap in the sequence the analyzer sees.
# TYPE eddy_collector_windows_dropped_total counter
eddy_collector_windows_dropped_total{reason="buffer_full"} 2
eddy_collector_windows_dropped_total{reason="store_failed"} 0
eddy_collector_windows_dropped_total{reason="too_large"} 0
# HELP eddy_collector_unattributed_records_total Drained records whose cgroup matched no observed container.
# TYPE eddy_collector_unattributed_records_total counter
eddy_collector_unattributed_records_total 2
# HELP eddy_collector_hook_missing 1 for each kernel hook that could not be attached; what it counts stays zero.
# TYPE eddy_collector_hook_missing gauge
eddy_collector_hook_missing{hook="tp_btf/mm_filemap_get_pages"} 1
# HELP eddy_collector_bpf_run_time_seconds_total Time the kernel spent running each eBPF program (needs kernel.bpf_stats_enabled=1).
# TYPE eddy_collector_bpf_run_time_seconds_total counter
eddy_collector_bpf_run_time_seconds_total{program="read_exit"} 1.5
# HELP eddy_collector_raw_syscall_hooks 1 when the syscall hooks fell back to raw_syscalls (tracefs not mounted): every syscall on the node runs a program.
# TYPE eddy_collector_raw_syscall_hooks gauge
eddy_collector_raw_syscall_hooks 1
# HELP eddy_collector_deferred_batches_total Per-thread read batches a drain found busy and left to a later drain.
# TYPE eddy_collector_deferred_batches_total counter
eddy_collector_deferred_batches_total 3
# HELP eddy_collector_inherited_allows_total Container cgroups the kernel allowed as they were created in an observed pod's cgroup.
# TYPE eddy_collector_inherited_allows_total counter
eddy_collector_inherited_allows_total 6
# HELP eddy_collector_programs_attached eBPF programs attached at the last drain. The per-syscall and page-cache programs are attached only while an observed container runs on the node (--attach=observed); the cgroup and thread exit hooks always.
# TYPE eddy_collector_programs_attached gauge
eddy_collector_programs_attached 15
# HELP eddy_collector_held_records Drained records held for a later drain because their container was not known yet (a container seen by the kernel before the kubelet's status names it).
# TYPE eddy_collector_held_records gauge
eddy_collector_held_records 3
`
	require.NoError(t, testutil.CollectAndCompare(m, strings.NewReader(expected),
		"eddy_collector_read_bytes_total", "eddy_collector_read_steps_total", "eddy_collector_read_wait_seconds_total",
		"eddy_collector_map_fill_ratio", "eddy_collector_windows_dropped_total", "eddy_collector_unattributed_records_total",
		"eddy_collector_hook_missing", "eddy_collector_bpf_run_time_seconds_total",
		"eddy_collector_raw_syscall_hooks", "eddy_collector_deferred_batches_total", "eddy_collector_inherited_allows_total",
		"eddy_collector_held_records", "eddy_collector_programs_attached"))

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				assert.NotEqual(t, "path", l.GetName(), "%s has a path label", f.GetName())
				assert.NotContains(t, l.GetValue(), ".jpg", "%s leaks a file name", f.GetName())
			}
		}
	}
}

func TestMetricsForgetIdleSeries(t *testing.T) {
	m := NewMetrics(time.Minute)
	clock := time.Now()
	m.now = func() time.Time { return clock }
	w := &accessv1.AccessWindow{Files: []*accessv1.FileAccess{{Workload: &accessv1.WorkloadRef{Namespace: "ml", Kind: "Pod", Name: "p"}, Pod: "p", ReadBytes: 1}}}
	m.observeWindow(w, SourceStats{}, windowState{})
	assert.Equal(t, 1, testutil.CollectAndCount(m, "eddy_collector_read_bytes_total"))
	clock = clock.Add(2 * time.Minute)
	m.observeWindow(&accessv1.AccessWindow{}, SourceStats{}, windowState{})
	assert.Equal(t, 0, testutil.CollectAndCount(m, "eddy_collector_read_bytes_total"))
}
