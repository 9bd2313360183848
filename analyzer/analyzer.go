// Package analyzer is eddy's brain: it keeps a decaying History per
// (workload, dataset) from collector windows and assesses each one into
// features, an access-pattern class with its explanation, and advice.
//
// The pieces live in subpackages: history (state, decay, sampling,
// checkpoints), features, classify and advice. Tracker ties them together.
package analyzer

import (
	"encoding/json"
	"fmt"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/features"
	"github.com/eddy-autotune/eddy/analyzer/history"
)

// Key identifies what a History is kept for: one workload reading one
// dataset.
type Key struct {
	WorkloadNamespace string `json:"workloadNamespace"`
	WorkloadKind      string `json:"workloadKind"`
	WorkloadName      string `json:"workloadName"`
	DatasetNamespace  string `json:"datasetNamespace"`
	DatasetName       string `json:"datasetName"`
}

// String is "namespace/Kind/name@datasetNamespace/dataset".
func (k Key) String() string {
	return fmt.Sprintf("%s/%s/%s@%s/%s", k.WorkloadNamespace, k.WorkloadKind, k.WorkloadName, k.DatasetNamespace, k.DatasetName)
}

// WorkloadKey is the workload part of a Key.
type WorkloadKey struct{ Namespace, Kind, Name string }

// Workload is k's workload.
func (k Key) Workload() WorkloadKey {
	return WorkloadKey{k.WorkloadNamespace, k.WorkloadKind, k.WorkloadName}
}

// WorkloadKeyOf is the WorkloadKey of a collector's workload reference.
func WorkloadKeyOf(w *accessv1.WorkloadRef) WorkloadKey {
	return WorkloadKey{w.GetNamespace(), w.GetKind(), w.GetName()}
}

// Watched records that k's workload was observed through a window ending at
// end (history.History.Watched); it does nothing for a key not tracked.
func (t *Tracker) Watched(k Key, end int64) {
	if h := t.hist[k]; h != nil {
		h.Watched(end)
	}
}

// KeyOf returns the key a record is attributed to.
func KeyOf(r *accessv1.FileAccess) Key {
	var k Key
	if w := r.Workload; w != nil {
		k.WorkloadNamespace, k.WorkloadKind, k.WorkloadName = w.Namespace, w.Kind, w.Name
	}
	if d := r.Dataset; d != nil {
		k.DatasetNamespace, k.DatasetName = d.Namespace, d.Name
	}
	return k
}

// Options configure a Tracker; zero values mean defaults.
type Options struct {
	History  history.Config
	Classify classify.Options
	Bounds   advice.Bounds
}

// Assessment is everything the analyzer concludes about one key.
type Assessment struct {
	Key      Key               `json:"key"`
	Features features.Features `json:"features"`
	Decision classify.Decision `json:"decision"`
	Advice   advice.Advice     `json:"advice"`
}

// Tracker keeps one History per key. It is not safe for concurrent use;
// shard keys across Trackers to use more cores.
type Tracker struct {
	opt     Options
	hist    map[Key]*history.History
	groups  map[Key][]*accessv1.FileAccess
	extract features.Extractor
}

// NewTracker returns an empty Tracker.
func NewTracker(opt Options) *Tracker {
	opt.History = opt.History.WithDefaults()
	return &Tracker{opt: opt, hist: map[Key]*history.History{}, groups: map[Key][]*accessv1.FileAccess{}}
}

// Len is the number of keys tracked.
func (t *Tracker) Len() int { return len(t.hist) }

// Keys returns the tracked keys in no particular order.
func (t *Tracker) Keys() []Key {
	ks := make([]Key, 0, len(t.hist))
	for k := range t.hist {
		ks = append(ks, k)
	}
	return ks
}

// History returns the History of k, or nil.
func (t *Tracker) History(k Key) *history.History { return t.hist[k] }

// Observe folds a window into the histories of the keys its records are
// attributed to, and records every key of a workload whose pod it says was
// observed through it as watched until its end.
func (t *Tracker) Observe(w *accessv1.AccessWindow) {
	if obs := w.GetObserved(); len(obs) > 0 {
		watched := map[WorkloadKey]bool{}
		for _, o := range obs {
			watched[WorkloadKeyOf(o.GetWorkload())] = true
		}
		for k, h := range t.hist {
			if watched[k.Workload()] {
				h.Watched(w.GetEndUnixNano())
			}
		}
	}
	for k, g := range t.groups {
		t.groups[k] = g[:0]
	}
	for _, r := range w.Files {
		if r == nil {
			continue
		}
		k := KeyOf(r)
		t.groups[k] = append(t.groups[k], r)
	}
	for k, g := range t.groups {
		if len(g) == 0 {
			delete(t.groups, k)
			continue
		}
		h := t.hist[k]
		if h == nil {
			h = history.New(t.opt.History)
			t.hist[k] = h
		}
		h.Observe(w.StartUnixNano, w.EndUnixNano, g)
		// Keep the group's storage but not the window's records.
		clear(g)
	}
}

// Assess computes the features, class and advice of k at now (unix ns). It
// reports false when k is not tracked.
func (t *Tracker) Assess(k Key, now int64) (Assessment, bool) {
	h := t.hist[k]
	if h == nil {
		return Assessment{}, false
	}
	return t.assess(k, h, now), true
}

func (t *Tracker) assess(k Key, h *history.History, now int64) Assessment {
	a := Assessment{Key: k}
	t.extract.Extract(h, now, &a.Features)
	a.Decision = classify.Classify(&a.Features, t.opt.Classify)
	a.Advice = advice.Advise(&a.Features, &a.Decision, t.opt.Bounds)
	return a
}

// Assess computes the assessment of a single History at now.
func Assess(h *history.History, now int64, copt classify.Options, b advice.Bounds) Assessment {
	f := features.Extract(h, now)
	d := classify.Classify(&f, copt)
	return Assessment{Features: f, Decision: d, Advice: advice.Advise(&f, &d, b)}
}

// Checkpoint serializes the History of k (JSON), for storing in an API
// object; Restore brings it back.
func (t *Tracker) Checkpoint(k Key) ([]byte, error) {
	h := t.hist[k]
	if h == nil {
		return nil, fmt.Errorf("checkpoint %s: not tracked", k)
	}
	return json.Marshal(h)
}

// Restore replaces the History of k with a checkpoint.
func (t *Tracker) Restore(k Key, data []byte) error {
	h, err := history.Restore(data)
	if err != nil {
		return fmt.Errorf("restore %s: %w", k, err)
	}
	t.hist[k] = h
	return nil
}

// Forget drops k's History.
func (t *Tracker) Forget(k Key) { delete(t.hist, k) }
