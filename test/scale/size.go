// Package scale is eddy's scale benchmark (issue 19): a real control plane
// with kwok fake nodes, the real analyzer, webhook and operator binaries as
// processes under their own service accounts, and one collector identity
// per node shipping windows through the analyzer's authenticated gRPC intake
// with the collector's own shipper (collector/ship). It measures, from one
// run: new records/s accepted against offered and the share of duplicate
// windows, flush durations, the heartbeat Lease's age, how far behind the
// published profiles are, the analyzer's RSS per workload, the webhook's
// RSS per 1,000 pods opted in and not, and the operator's convergence on a
// recommendation per workload with its requests and events per reconcile.
package scale

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Size is what a run loads the cluster with.
type Size struct {
	// Name says which size this is in the report.
	Name string
	// Nodes is the number of kwok nodes; each has one collector identity (a
	// pod of eddy-system/eddy-collector bound to the node, with its token).
	Nodes int
	// Workloads is the number of Deployments in opted-in namespaces, each
	// one AccessProfile (its pods read one dataset).
	Workloads int
	// PodsPerWorkload is each Deployment's replicas.
	PodsPerWorkload int
	// FilesPerPod is how many file records a pod's collector reports for it
	// in each window.
	FilesPerPod int
	// DatasetFiles is how many files a workload's dataset has; its pods read
	// them in order, round and round (epochs), FilesPerPod per window.
	DatasetFiles int
	// PlainPods is the number of pods in namespaces not opted in: the
	// webhook is not called for them, but what it caches may grow with them.
	PlainPods int
	// Namespaces is the number of opted-in namespaces (and as many not).
	Namespaces int
	// Interval is the collectors' window and the analyzer's flush interval.
	Interval time.Duration
	// Warmup is how many intervals run before measuring (the first flush
	// creates every profile); Windows how many are measured.
	Warmup, Windows int
}

// Small is sized for a quick run on a 2-core machine (about 6 minutes).
func Small() Size {
	return Size{Name: "small", Nodes: 50, Workloads: 200, PodsPerWorkload: 2, FilesPerPod: 50, DatasetFiles: 500,
		PlainPods: 400, Namespaces: 10, Interval: 10 * time.Second, Warmup: 2, Windows: 6}
}

// Full is issue 19's size: 2,000 workloads on 1,000 nodes with 10 s
// windows (10,000 pods; 100k records/s offered).
func Full() Size {
	return Size{Name: "full", Nodes: 1000, Workloads: 2000, PodsPerWorkload: 5, FilesPerPod: 100, DatasetFiles: 1000,
		PlainPods: 5000, Namespaces: 20, Interval: 10 * time.Second, Warmup: 3, Windows: 12}
}

// SizeFromEnv is Small, or Full when EDDY_SCALE=full, with any field
// overridden by EDDY_SCALE_NODES, _WORKLOADS, _PODS_PER_WORKLOAD,
// _FILES_PER_POD, _PLAIN_PODS and _WINDOWS.
func SizeFromEnv() (Size, error) {
	s := Small()
	switch v := os.Getenv("EDDY_SCALE"); v {
	case "", "small":
	case "full":
		s = Full()
	default:
		return s, fmt.Errorf("EDDY_SCALE=%q: want small or full", v)
	}
	for name, field := range map[string]*int{
		"EDDY_SCALE_NODES": &s.Nodes, "EDDY_SCALE_WORKLOADS": &s.Workloads, "EDDY_SCALE_PODS_PER_WORKLOAD": &s.PodsPerWorkload,
		"EDDY_SCALE_FILES_PER_POD": &s.FilesPerPod, "EDDY_SCALE_PLAIN_PODS": &s.PlainPods, "EDDY_SCALE_WINDOWS": &s.Windows,
	} {
		v := os.Getenv(name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("%s=%q: want a positive number", name, v)
		}
		*field = n
		s.Name = "custom"
	}
	return s, nil
}

// Pods is the number of pods in opted-in namespaces.
func (s Size) Pods() int { return s.Workloads * s.PodsPerWorkload }

// OfferedPerSecond is the records per second the collectors send.
func (s Size) OfferedPerSecond() float64 {
	return float64(s.Pods()*s.FilesPerPod) / s.Interval.Seconds()
}
