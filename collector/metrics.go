package collector

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/collector/ship"
)

// Label names of the per-workload metrics. Paths are never labels: a
// dataset may hold millions of files.
var workloadLabels = []string{"namespace", "pod", "workload_kind", "workload", "dataset"}

// Metrics exposes what the collector counted as Prometheus metrics. It
// implements prometheus.Collector by reading the state the drain loop keeps;
// a scrape does no work beyond copying it.
type Metrics struct {
	ttl time.Duration
	now func() time.Time

	mu              sync.Mutex
	series          map[seriesKey]*seriesValues
	source          SourceStats
	shipper         func() ship.Stats
	unattrib        uint64
	outside         uint64
	resolveFailures uint64
	observed        int
	pending         int
	paths           int
	held            int
	drainHist       prometheus.Histogram

	readBytes, readOps, steps, missPages, waitSeconds         *prometheus.Desc
	eventsLost, mapFull, mapFill, progTime, progRuns, missing *prometheus.Desc
	buffered, droppedWin, shipped, shipFailures, unattrDesc   *prometheus.Desc
	observedDesc, pendingDesc, pathsDesc, heldDesc            *prometheus.Desc
	rawSyscalls, deferred, inherited, attached                *prometheus.Desc
	outsideDesc, resolveDesc, storeFailures                   *prometheus.Desc
}

type seriesKey struct{ namespace, pod, workloadKind, workload, dataset string }

type seriesValues struct {
	readBytes, readOps, seqSteps, randSteps, pagesAdded uint64
	readWaitNs                                          uint64
	updated                                             time.Time
}

// NewMetrics returns the collector's metrics. Per-workload series not
// updated for ttl (default 1h: pods come and go) are dropped.
func NewMetrics(ttl time.Duration) *Metrics {
	if ttl == 0 {
		ttl = time.Hour
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("eddy_collector_"+name, help, labels, nil)
	}
	wl := workloadLabels
	return &Metrics{
		ttl: ttl, now: time.Now,
		series: map[seriesKey]*seriesValues{},
		drainHist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "eddy_collector_drain_duration_seconds",
			Help:    "Time to drain the kernel maps and assemble one window.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		readBytes:     d("read_bytes_total", "Bytes read by observed containers.", wl...),
		readOps:       d("read_operations_total", "Read calls by observed containers.", wl...),
		steps:         d("read_steps_total", "Reads classified against the previous read of the same open file: pattern is sequential or random.", append(append([]string{}, wl...), "pattern")...),
		missPages:     d("cache_miss_pages_total", "Pages brought into the page cache for observed containers (misses and read-ahead).", wl...),
		waitSeconds:   d("read_wait_seconds_total", "Time observed containers spent inside read calls.", wl...),
		eventsLost:    d("events_lost_total", "File events lost between kernel and collector (their files have no path)."),
		mapFull:       d("map_full_total", "Kernel map updates refused because a map was full."),
		mapFill:       d("map_fill_ratio", "Entries in the kernel's per-file map over its capacity, at the last drain."),
		progTime:      d("bpf_run_time_seconds_total", "Time the kernel spent running each eBPF program (needs kernel.bpf_stats_enabled=1).", "program"),
		progRuns:      d("bpf_run_count_total", "Runs of each eBPF program (needs kernel.bpf_stats_enabled=1).", "program"),
		missing:       d("hook_missing", "1 for each kernel hook that could not be attached; what it counts stays zero.", "hook"),
		buffered:      d("windows_buffered", "Windows stored in the state directory and not yet acknowledged by the analyzer."),
		droppedWin:    d("windows_dropped_total", "Windows lost since the collector started, by reason: buffer_full (analyzer unreachable for too long), store_failed (state directory full or failing), too_large (one window over the analyzer's message limit). Each leaves a gap in the sequence the analyzer sees.", "reason"),
		storeFailures: d("state_write_failures_total", "Failed writes to the collector's state directory since it started (windows, acknowledgements)."),
		shipped:       d("windows_shipped_total", "Windows acknowledged by the analyzer since the collector started."),
		shipFailures:  d("ship_failures_total", "Failed calls to the analyzer since the collector started."),
		unattrDesc:    d("unattributed_records_total", "Drained records whose cgroup matched no observed container."),
		observedDesc:  d("observed_containers", "Containers on the kernel's allow-list."),
		pendingDesc:   d("pending_containers", "Opted-in containers whose cgroup was not found on this node."),
		pathsDesc:     d("file_paths", "File paths remembered from the kernel's file events."),
		heldDesc:      d("held_records", "Drained records held for a later drain because their container was not known yet (a container seen by the kernel before the kubelet's status names it)."),
		rawSyscalls:   d("raw_syscall_hooks", "1 when the syscall hooks fell back to raw_syscalls (tracefs not mounted): every syscall on the node runs a program."),
		deferred:      d("deferred_batches_total", "Per-thread read batches a drain found busy and left to a later drain."),
		inherited:     d("inherited_allows_total", "Container cgroups the kernel allowed as they were created in an observed pod's cgroup."),
		attached:      d("programs_attached", "eBPF programs attached at the last drain. The per-syscall and page-cache programs are attached only while an observed container runs on the node (--attach=observed); the cgroup and thread exit hooks always."),
		outsideDesc:   d("records_outside_datasets_total", "Drained records of files outside every pod volume (files the runtime mounts in, such as /etc/hosts; those of a container's own root file system, its binary and libraries, the kernel programs leave out): not shipped, nothing to profile."),
		resolveDesc:   d("workload_resolve_failures_total", "Pods whose owner chain could not be read to the top: their reads went to the highest owner known."),
	}
}

// SetShipperStats makes the metrics report the shipper's counters.
func (m *Metrics) SetShipperStats(f func() ship.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shipper = f
}

// ObserveDrain records how long one drain took.
func (m *Metrics) ObserveDrain(d time.Duration) { m.drainHist.Observe(d.Seconds()) }

// windowState is the collector's state at the end of a window.
type windowState struct {
	// unattributed records were dropped in this window; outside records
	// were of files outside every volume; resolveFailures pods' owner
	// chains could not be read.
	unattributed, outside, resolveFailures uint64
	// observed and pending containers (Attributor.Observed), remembered
	// paths, records held for a later drain.
	observed, pending, paths, held int
}

// observeWindow adds a window's counters and the collector's state at its end.
func (m *Metrics) observeWindow(w *accessv1.AccessWindow, src SourceStats, st windowState) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range w.Files {
		k := seriesKey{
			namespace: f.Workload.GetNamespace(), pod: f.Pod,
			workloadKind: f.Workload.GetKind(), workload: f.Workload.GetName(),
			dataset: f.Dataset.GetName(),
		}
		s := m.series[k]
		if s == nil {
			s = &seriesValues{}
			m.series[k] = s
		}
		s.readBytes += f.ReadBytes
		s.readOps += f.ReadOps
		s.seqSteps += f.SeqSteps
		s.randSteps += f.RandSteps
		s.pagesAdded += f.PagesAdded
		s.readWaitNs += f.ReadWaitNano
		s.updated = now
	}
	for k, s := range m.series {
		if now.Sub(s.updated) > m.ttl {
			delete(m.series, k)
		}
	}
	m.source = src
	m.unattrib += st.unattributed
	m.outside += st.outside
	m.resolveFailures += st.resolveFailures
	m.observed, m.pending, m.paths, m.held = st.observed, st.pending, st.paths, st.held
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.readBytes, m.readOps, m.steps, m.missPages, m.waitSeconds,
		m.eventsLost, m.mapFull, m.mapFill, m.progTime, m.progRuns, m.missing,
		m.buffered, m.droppedWin, m.shipped, m.shipFailures, m.unattrDesc,
		m.observedDesc, m.pendingDesc, m.pathsDesc, m.heldDesc, m.rawSyscalls, m.deferred, m.inherited, m.attached, m.outsideDesc, m.resolveDesc, m.storeFailures} {
		ch <- d
	}
	m.drainHist.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for k, s := range m.series {
		l := []string{k.namespace, k.pod, k.workloadKind, k.workload, k.dataset}
		c(m.readBytes, float64(s.readBytes), l...)
		c(m.readOps, float64(s.readOps), l...)
		c(m.steps, float64(s.seqSteps), append(l, "sequential")...)
		c(m.steps, float64(s.randSteps), append(l, "random")...)
		c(m.missPages, float64(s.pagesAdded), l...)
		c(m.waitSeconds, float64(s.readWaitNs)/1e9, l...)
	}
	c(m.eventsLost, float64(m.source.EventsLost))
	c(m.mapFull, float64(m.source.MapFull))
	if m.source.MapCapacity > 0 {
		g(m.mapFill, float64(m.source.MapEntries)/float64(m.source.MapCapacity))
	}
	for name, p := range m.source.Programs {
		c(m.progTime, p.RunTime.Seconds(), name)
		c(m.progRuns, float64(p.RunCount), name)
	}
	for _, h := range m.source.MissingHooks {
		g(m.missing, 1, h)
	}
	raw := 0.0
	if m.source.RawSyscalls {
		raw = 1
	}
	g(m.rawSyscalls, raw)
	c(m.deferred, float64(m.source.DeferredBatches))
	c(m.inherited, float64(m.source.InheritedAllows))
	g(m.attached, float64(m.source.ProgramsAttached))
	if m.shipper != nil {
		st := m.shipper()
		g(m.buffered, float64(st.Buffered))
		for _, r := range ship.LossReasons {
			c(m.droppedWin, float64(st.Lost[r]), string(r))
		}
		c(m.storeFailures, float64(st.StoreFailures))
		c(m.shipped, float64(st.Shipped))
		c(m.shipFailures, float64(st.Failures))
	}
	c(m.unattrDesc, float64(m.unattrib))
	c(m.outsideDesc, float64(m.outside))
	c(m.resolveDesc, float64(m.resolveFailures))
	g(m.observedDesc, float64(m.observed))
	g(m.pendingDesc, float64(m.pending))
	g(m.pathsDesc, float64(m.paths))
	g(m.heldDesc, float64(m.held))
	m.drainHist.Collect(ch)
}
