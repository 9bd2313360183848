package history

import (
	"slices"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// DefaultMaxRuns is how many runs a History keeps by default.
const DefaultMaxRuns = 8

// Run is what one pod of the workload read: its own totals, not decayed, so
// that a change is judged by the runs after it rather than by the history
// before it. Reads of containers eddy injected are never part of it (the
// collector does not record them).
type Run struct {
	PodUID string `json:"uid"`
	Pod    string `json:"pod"`
	// Object is the pod's top-level object (train-2 of family train).
	Object string `json:"obj,omitempty"`
	// Recommendations are those the webhook applied to the pod.
	Recommendations []string `json:"recs,omitempty"`
	// First and Last bound its reads (unix ns).
	First int64 `json:"f"`
	Last  int64 `json:"l"`
	// ReadBytes, ReadOps and ReadWaitNano are summed over its reads.
	ReadBytes    uint64 `json:"b"`
	ReadOps      uint64 `json:"n"`
	ReadWaitNano uint64 `json:"w"`
}

// WallSeconds is the time from the run's first read to its last.
func (r *Run) WallSeconds() float64 { return float64(max(r.Last-r.First, 0)) / 1e9 }

// ReadWaitShare is the share of that time spent inside reads (summed over
// the run's threads, so capped at 1).
func (r *Run) ReadWaitShare() float64 {
	w := r.WallSeconds()
	if w <= 0 {
		return 0
	}
	return min(float64(r.ReadWaitNano)/1e9/w, 1)
}

// Throughput is bytes read per second of that time.
func (r *Run) Throughput() float64 {
	w := r.WallSeconds()
	if w <= 0 {
		return 0
	}
	return float64(r.ReadBytes) / w
}

// observeRun adds a record's reads to its pod's run. Runs are kept in order
// of their first read; past MaxRuns the one whose last read is oldest goes.
func (h *History) observeRun(r *accessv1.FileAccess) {
	if r.ReadOps == 0 && r.MmapFaults == 0 || r.PodUid == "" {
		return
	}
	i := slices.IndexFunc(h.Runs, func(run Run) bool { return run.PodUID == r.PodUid })
	if i < 0 {
		if len(h.Runs) >= h.Config.MaxRuns {
			oldest := 0
			for j := range h.Runs {
				if h.Runs[j].Last < h.Runs[oldest].Last {
					oldest = j
				}
			}
			if h.Runs[oldest].Last > r.LastAccessUnixNano {
				// A run older than every run kept: nothing to learn from it.
				return
			}
			h.Runs = slices.Delete(h.Runs, oldest, oldest+1)
		}
		run := Run{PodUID: r.PodUid, Pod: r.Pod, Recommendations: slices.Clone(r.Recommendations), First: r.FirstAccessUnixNano, Last: r.LastAccessUnixNano}
		if w := r.Workload; w != nil {
			run.Object = w.Object
		}
		h.Runs = append(h.Runs, run)
		i = len(h.Runs) - 1
	}
	run := &h.Runs[i]
	moved := i == len(h.Runs)-1
	if t := r.FirstAccessUnixNano; t > 0 && (run.First == 0 || t < run.First) {
		run.First, moved = t, true
	}
	run.Last = max(run.Last, r.LastAccessUnixNano)
	run.ReadBytes += r.ReadBytes
	run.ReadOps += r.ReadOps
	run.ReadWaitNano += r.ReadWaitNano
	if moved {
		slices.SortStableFunc(h.Runs, func(a, b Run) int { return cmpI64(a.First, b.First) })
	}
}

func cmpI64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
