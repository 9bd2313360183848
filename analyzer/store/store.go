// Package store keeps the analyzer's learned state — one decaying history per
// (workload, dataset) — together with what is needed to persist it exactly
// once: for each key, the highest window sequence of each collector already
// folded in. Checkpoints carry that vector, so windows a collector resends
// after an analyzer restart are skipped for the keys that already hold them.
package store

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/history"
)

// CheckpointVersion is the encoding version of Checkpoint data.
const CheckpointVersion = 1

// maxPods bounds the distinct pods remembered per key.
const maxPods = 1024

// Meta is what the store knows of a key beyond its history.
type Meta struct {
	// Applied is, per collector, the highest window sequence folded in.
	Applied map[string]uint64 `json:"applied"`
	// Pods are the distinct pod UIDs seen (at most 1024).
	Pods map[string]struct{} `json:"-"`
	// PodList carries Pods in checkpoints.
	PodList []string `json:"pods"`
	// FirstSeen and LastSeen bound the reads, unix ns.
	FirstSeen int64 `json:"firstSeen"`
	LastSeen  int64 `json:"lastSeen"`
	// Windows is how many windows contributed.
	Windows int64 `json:"windows"`
	// Workload and Dataset as last reported by a collector.
	Workload *accessv1.WorkloadRef `json:"workload"`
	Dataset  *accessv1.DatasetRef  `json:"dataset"`
}

// Store is safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	tracker *analyzer.Tracker
	meta    map[analyzer.Key]*Meta
	dirty   map[analyzer.Key]bool

	groups  map[analyzer.Key][]*accessv1.FileAccess
	scratch accessv1.AccessWindow
}

// New returns an empty Store.
func New(opt analyzer.Options) *Store {
	return &Store{
		tracker: analyzer.NewTracker(opt),
		meta:    map[analyzer.Key]*Meta{},
		dirty:   map[analyzer.Key]bool{},
		groups:  map[analyzer.Key][]*accessv1.FileAccess{},
	}
}

// Apply folds a window from collector into the histories of its keys,
// skipping keys whose state already holds this (collector, sequence).
// Records without a workload cannot be placed (the collector counts them as
// unattributed); records without a dataset are of files outside every pod
// volume (collectors leave them out; older ones sent them), nothing to learn.
func (s *Store) Apply(collector string, w *accessv1.AccessWindow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.groups {
		delete(s.groups, k)
	}
	for _, r := range w.GetFiles() {
		if r == nil {
			continue
		}
		if r.GetWorkload().GetName() == "" || r.GetDataset().GetName() == "" {
			continue
		}
		k := analyzer.KeyOf(r)
		s.groups[k] = append(s.groups[k], r)
	}
	seq := w.GetSequence()
	s.scratch.Files = s.scratch.Files[:0]
	s.scratch.StartUnixNano, s.scratch.EndUnixNano = w.GetStartUnixNano(), w.GetEndUnixNano()
	for k, recs := range s.groups {
		m := s.meta[k]
		if m == nil {
			m = &Meta{Applied: map[string]uint64{}, Pods: map[string]struct{}{}, FirstSeen: w.GetStartUnixNano()}
			s.meta[k] = m
		}
		if m.Applied[collector] >= seq {
			continue
		}
		m.Applied[collector] = seq
		m.Windows++
		m.Workload, m.Dataset = recs[0].GetWorkload(), recs[0].GetDataset()
		for _, r := range recs {
			if uid := r.GetPodUid(); uid != "" && len(m.Pods) < maxPods {
				m.Pods[uid] = struct{}{}
			}
			if t := r.GetLastAccessUnixNano(); t > m.LastSeen {
				m.LastSeen = t
			}
			if t := r.GetFirstAccessUnixNano(); t > 0 && (m.FirstSeen == 0 || t < m.FirstSeen) {
				m.FirstSeen = t
			}
		}
		s.scratch.Files = append(s.scratch.Files, recs...)
		s.dirty[k] = true
	}
	if len(s.scratch.Files) > 0 {
		s.tracker.Observe(&s.scratch)
	}
}

// Entry is one key's state at a point in time, for publishing.
type Entry struct {
	Key        analyzer.Key
	Meta       Meta
	Assessment analyzer.Assessment
	// Runs are the key's recent runs, oldest first.
	Runs []history.Run
	// Checkpoint is the compressed, versioned state of the key.
	Checkpoint []byte
}

// TakeDirty assesses every key changed since the last call at now (unix
// ns), encodes its checkpoint, and clears the dirty set. On error the keys
// stay dirty.
func (s *Store) TakeDirty(now int64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0, len(s.dirty))
	for k := range s.dirty {
		e, err := s.entry(k, now)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	for _, e := range out {
		delete(s.dirty, e.Key)
	}
	return out, nil
}

// MarkDirty makes k part of the next TakeDirty (after a failed write).
func (s *Store) MarkDirty(k analyzer.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.meta[k] != nil {
		s.dirty[k] = true
	}
}

// History gives fn the key's history under the store's lock (for the
// manifest endpoint); fn must not keep it.
func (s *Store) History(k analyzer.Key, fn func(*analyzer.Tracker, analyzer.Key)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.meta[k] == nil {
		return false
	}
	fn(s.tracker, k)
	return true
}

func (s *Store) entry(k analyzer.Key, now int64) (Entry, error) {
	m := s.meta[k]
	a, _ := s.tracker.Assess(k, now)
	hist, err := s.tracker.Checkpoint(k)
	if err != nil {
		return Entry{}, err
	}
	snap := *m
	snap.Applied = make(map[string]uint64, len(m.Applied))
	for c, v := range m.Applied {
		snap.Applied[c] = v
	}
	snap.PodList = make([]string, 0, len(m.Pods))
	for p := range m.Pods {
		snap.PodList = append(snap.PodList, p)
	}
	data, err := encode(checkpoint{Version: CheckpointVersion, History: hist, Meta: snap})
	if err != nil {
		return Entry{}, fmt.Errorf("checkpoint %s: %w", k, err)
	}
	var runs []history.Run
	if h := s.tracker.History(k); h != nil {
		runs = slices.Clone(h.Runs)
	}
	return Entry{Key: k, Meta: snap, Assessment: a, Runs: runs, Checkpoint: data}, nil
}

// Restore loads a checkpoint written by TakeDirty for k. Restoring replaces
// what the store held for k.
func (s *Store) Restore(k analyzer.Key, data []byte) error {
	var c checkpoint
	if err := decode(data, &c); err != nil {
		return fmt.Errorf("restore %s: %w", k, err)
	}
	if c.Version != CheckpointVersion {
		return fmt.Errorf("restore %s: checkpoint version %d, this analyzer reads %d", k, c.Version, CheckpointVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.tracker.Restore(k, c.History); err != nil {
		return err
	}
	m := c.Meta
	if m.Applied == nil {
		m.Applied = map[string]uint64{}
	}
	m.Pods = make(map[string]struct{}, len(m.PodList))
	for _, p := range m.PodList {
		m.Pods[p] = struct{}{}
	}
	m.PodList = nil
	s.meta[k] = &m
	return nil
}

type checkpoint struct {
	Version int             `json:"v"`
	History json.RawMessage `json:"history"`
	Meta    Meta            `json:"meta"`
}

func encode(c checkpoint) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(c); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decode(data []byte, c *checkpoint) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("checkpoint is not gzip: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, c)
}
