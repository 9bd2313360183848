package v1alpha1

import (
	"testing"
	"time"
)

func TestRunSeenWhole(t *testing.T) {
	const long = 10 * time.Minute
	for _, c := range []struct {
		name string
		runs []RunSummary
		want bool
	}{
		{"no run", nil, false},
		{"a first run still reading", []RunSummary{{Pod: "a", WallSeconds: 30}}, false},
		{"a run ended", []RunSummary{{Pod: "a", WallSeconds: 30, Ended: true}, {Pod: "b", WallSeconds: 5}}, true},
		{"a run read for long enough", []RunSummary{{Pod: "a", WallSeconds: 600}}, true},
	} {
		if got := RunSeenWhole(c.runs, long); got != c.want {
			t.Errorf("%s: RunSeenWhole = %v, want %v", c.name, got, c.want)
		}
	}
}
