package prefetch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the prefetcher's Prometheus series. Each Prefetcher has its
// own registry, served on /metrics.
type metrics struct {
	registry       *prometheus.Registry
	bytes          prometheus.Counter
	files          prometheus.Counter
	errors         prometheus.Counter
	rejected       prometheus.Counter
	hints          prometheus.Counter
	inflight       prometheus.Gauge
	concurrency    prometheus.Gauge
	warmRatio      prometheus.Gauge
	selectionBytes prometheus.Gauge
	readLatency    prometheus.Histogram
	touches        prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_bytes_total", Help: "Bytes read ahead.",
		}),
		files: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_files_total", Help: "Files read ahead completely.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_errors_total", Help: "Reads that failed (the file is skipped).",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_rejected_paths_total", Help: "Manifest or hint paths refused because they lead outside the dataset roots.",
		}),
		hints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_hints_total", Help: "Read-order hints received from the SDK.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_prefetch_inflight", Help: "Reads in flight.",
		}),
		concurrency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_prefetch_concurrency_limit", Help: "Current adaptive limit of reads in flight.",
		}),
		warmRatio: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_prefetch_warm_ratio", Help: "Share of the selection's bytes read ahead (0..1).",
		}),
		selectionBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_prefetch_selection_bytes", Help: "Bytes the warm ratio is measured against.",
		}),
		touches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_prefetch_resident_touches_total", Help: "Resident: opens of a kept file (its first byte read) to keep it in the cache.",
		}),
		readLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "eddy_prefetch_read_duration_seconds",
			Help:    "Time to read one block (rate-limit waits excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	m.registry.MustRegister(m.bytes, m.files, m.errors, m.rejected, m.hints, m.inflight, m.concurrency,
		m.warmRatio, m.selectionBytes, m.readLatency, m.touches,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
