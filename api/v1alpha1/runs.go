package v1alpha1

import "time"

// DefaultLongRunAfter is how long a run that has not ended must have been
// read before its workload is advised (the analyzer's --long-run-after).
const DefaultLongRunAfter = 10 * time.Minute

// RunSeenWhole reports whether a workload's advice may rest on its runs: one
// of them ended, or one has been read for longRunAfter (a job of hours, a
// server that never ends). The first minutes of a run can look like another
// class than the run (a shuffled epoch loop's first files read in order look
// like a scan), and a change applied from them is superseded as soon as the
// run ends, spending the policy's budget of changes on nothing.
func RunSeenWhole(runs []RunSummary, longRunAfter time.Duration) bool {
	for _, r := range runs {
		if r.Ended || r.WallSeconds >= longRunAfter.Seconds() {
			return true
		}
	}
	return false
}
