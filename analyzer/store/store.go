// Package store keeps the analyzer's learned state — one decaying history per
// (workload, dataset) — together with what is needed to persist it exactly
// once: for each key, the highest window sequence of each collector already
// folded in. Checkpoints carry that vector, so windows a collector resends
// after an analyzer restart are skipped for the keys that already hold them.
package store

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/history"
	"github.com/eddy-autotune/eddy/internal/gz"
)

// CheckpointVersion is the encoding version of Checkpoint data.
const CheckpointVersion = 1

// maxPods bounds the distinct pods remembered per key.
const maxPods = 1024

// Bounds on the per-collector sequence numbers a key remembers: a
// collector not heard from for CollectorRetention is forgotten (were it to
// come back and resend windows older than that, they would count again),
// and at most MaxCollectorsPerKey are kept (the least recently heard go).
const (
	CollectorRetention  = 7 * 24 * time.Hour
	MaxCollectorsPerKey = 512
)

// Meta is what the store knows of a key beyond its history.
type Meta struct {
	// Applied is, per collector, the highest window sequence folded in.
	Applied map[string]uint64 `json:"applied"`
	// Seen is, per collector, when its last window was folded in (unix ns).
	Seen map[string]int64 `json:"seen,omitempty"`
	// Unwritten is, per collector, the first sequence folded in that no
	// successful write of this key covers yet (absent: all are written).
	Unwritten map[string]uint64 `json:"-"`
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
	mu          sync.Mutex
	tracker     *analyzer.Tracker
	meta        map[analyzer.Key]*Meta
	dirty       map[analyzer.Key]bool
	quarantined map[analyzer.Key]time.Time
	now         func() time.Time

	groups  map[analyzer.Key][]*accessv1.FileAccess
	scratch accessv1.AccessWindow
	// byWorkload indexes the keys of meta by workload, for windows that
	// say which workloads' pods were observed.
	// A workload reads a few datasets: a slice each, not a map (a map of
	// one key took ~750 bytes).
	byWorkload map[analyzer.WorkloadKey][]analyzer.Key
}

// New returns an empty Store.
func New(opt analyzer.Options) *Store {
	return &Store{
		tracker:     analyzer.NewTracker(opt),
		meta:        map[analyzer.Key]*Meta{},
		dirty:       map[analyzer.Key]bool{},
		quarantined: map[analyzer.Key]time.Time{},
		now:         time.Now,
		groups:      map[analyzer.Key][]*accessv1.FileAccess{},
		byWorkload:  map[analyzer.WorkloadKey][]analyzer.Key{},
	}
}

// index adds k to byWorkload; unindex removes it.
func (s *Store) index(k analyzer.Key) {
	w := k.Workload()
	if !slices.Contains(s.byWorkload[w], k) {
		s.byWorkload[w] = append(s.byWorkload[w], k)
	}
}

func (s *Store) unindex(k analyzer.Key) {
	w := k.Workload()
	ks := slices.DeleteFunc(s.byWorkload[w], func(x analyzer.Key) bool { return x == k })
	if len(ks) == 0 {
		delete(s.byWorkload, w)
		return
	}
	s.byWorkload[w] = ks
}

// Apply folds a window from collector into the histories of its keys,
// skipping keys whose state already holds this (collector, sequence), and
// returns how many records it dropped for quarantined keys.
// Records without a workload cannot be placed (the collector counts them as
// unattributed); records without a dataset are of files outside every pod
// volume (collectors leave them out; older ones sent them), nothing to learn.
func (s *Store) Apply(collector string, w *accessv1.AccessWindow) (quarantined int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, r := range w.GetFiles() {
		if r == nil {
			continue
		}
		if r.GetWorkload().GetName() == "" || r.GetDataset().GetName() == "" {
			continue
		}
		k := analyzer.KeyOf(r)
		if until, ok := s.quarantined[k]; ok {
			if now.Before(until) {
				quarantined++
				continue
			}
			delete(s.quarantined, k)
		}
		s.groups[k] = append(s.groups[k], r)
	}
	seq := w.GetSequence()
	s.scratch.Files = s.scratch.Files[:0]
	s.scratch.StartUnixNano, s.scratch.EndUnixNano = w.GetStartUnixNano(), w.GetEndUnixNano()
	for k, recs := range s.groups {
		m := s.meta[k]
		if m == nil {
			m = &Meta{Applied: map[string]uint64{}, Seen: map[string]int64{}, Unwritten: map[string]uint64{}, Pods: map[string]struct{}{}, FirstSeen: w.GetStartUnixNano()}
			s.meta[k] = m
			s.index(k)
		}
		if m.Applied[collector] >= seq {
			continue
		}
		m.Applied[collector] = seq
		if m.Unwritten[collector] == 0 {
			m.Unwritten[collector] = seq
		}
		m.Seen[collector] = now.UnixNano()
		m.prune(now)
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
	// The scratch keeps its storage, not the window's records: they would
	// stay live until the next window.
	clear(s.scratch.Files)
	s.scratch.Files = s.scratch.Files[:0]
	clear(s.groups)
	// Keys of workloads watched through the window: their quiet is real.
	// This changes no profile by itself (the key is not made dirty): the
	// next assessment of the key counts it.
	for _, o := range w.GetObserved() {
		for _, k := range s.byWorkload[analyzer.WorkloadKeyOf(o.GetWorkload())] {
			s.tracker.Watched(k, w.GetEndUnixNano())
		}
	}
	return quarantined
}

// prune forgets collectors not heard from for CollectorRetention, and the
// least recently heard beyond MaxCollectorsPerKey, so that a key's metadata
// stays bounded however many collectors came and went.
func (m *Meta) prune(now time.Time) {
	for c := range m.Applied {
		if now.Sub(time.Unix(0, m.Seen[c])) > CollectorRetention {
			m.forget(c)
		}
	}
	for len(m.Applied) > MaxCollectorsPerKey {
		oldest, at := "", int64(math.MaxInt64)
		for c := range m.Applied {
			if m.Seen[c] < at {
				oldest, at = c, m.Seen[c]
			}
		}
		m.forget(oldest)
	}
}

func (m *Meta) forget(c string) {
	delete(m.Applied, c)
	delete(m.Seen, c)
	delete(m.Unwritten, c)
}

// MarkWritten records that the key's state as of applied (its Meta.Applied
// when it was taken) was written: the windows it covers are durable for it.
func (s *Store) MarkWritten(k analyzer.Key, applied map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meta[k]
	if m == nil {
		return
	}
	for c, seq := range applied {
		first, ok := m.Unwritten[c]
		switch {
		case !ok || seq < first:
		case seq >= m.Applied[c]:
			delete(m.Unwritten, c)
		default:
			// Windows folded in after the write was taken are unwritten;
			// the first of them is past what it covered.
			m.Unwritten[c] = seq + 1
		}
	}
}

// Frontier is, per collector, the highest sequence whose every window is
// durable: at most received, and below the first window not yet written of
// any key. A key that fails to be written holds back only the collectors
// whose windows touched it, and only until it is written or quarantined.
func (s *Store) Frontier(received map[string]uint64) map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(received))
	for c, seq := range received {
		out[c] = seq
	}
	for _, m := range s.meta {
		for c, first := range m.Unwritten {
			if cur, ok := out[c]; ok && first-1 < cur {
				out[c] = first - 1
			}
		}
	}
	return out
}

// Quarantine drops k's state and refuses its records until until: a key
// that cannot be written (a namespace gone, an object the API server
// refuses) must not hold back every collector's acknowledgements.
func (s *Store) Quarantine(k analyzer.Key, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quarantined[k] = until
	delete(s.meta, k)
	s.unindex(k)
	delete(s.dirty, k)
	s.tracker.Forget(k)
}

// Quarantined is how many keys are quarantined now.
func (s *Store) Quarantined() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, until := range s.quarantined {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// Entry is one key's state at a point in time, for publishing.
type Entry struct {
	Key        analyzer.Key
	Meta       Meta
	Assessment analyzer.Assessment
	// Runs are the key's recent runs, oldest first.
	Runs []history.Run
	// Checkpoint is the compressed, versioned state of the key, set by
	// EncodeCheckpoints.
	Checkpoint []byte

	// pending is the state TakeDirty took, until EncodeCheckpoints
	// compresses it.
	pending *taken
}

// taken is a key's state as TakeDirty took it: a copy of its history, not
// yet its JSON, which is twice as large and would be held for every dirty
// key at once until compressed.
type taken struct {
	history *history.History
	meta    Meta
}

// TakeDirty assesses every key changed since the last call at now (unix
// ns), takes a copy of its state, and clears the dirty set; on error the
// keys stay dirty. It holds the store's lock (and its caller the intake's)
// only while copying: EncodeCheckpoints, called after, encodes and
// compresses the copies into each entry's Checkpoint.
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
	h := s.tracker.History(k)
	if h == nil {
		return Entry{}, fmt.Errorf("checkpoint %s: not tracked", k)
	}
	snap := *m
	snap.Applied = maps.Clone(m.Applied)
	snap.Seen = maps.Clone(m.Seen)
	snap.Unwritten = nil
	snap.PodList = make([]string, 0, len(m.Pods))
	for p := range m.Pods {
		snap.PodList = append(snap.PodList, p)
	}
	// The checkpoint's Meta is its own copy: the entry's is the caller's.
	cp := snap
	cp.Applied, cp.Seen = maps.Clone(snap.Applied), maps.Clone(snap.Seen)
	return Entry{Key: k, Meta: snap, Assessment: a, Runs: slices.Clone(h.Runs), pending: &taken{history: h.Clone(), meta: cp}}, nil
}

// EncodeCheckpoints encodes and compresses the state TakeDirty took of each
// entry into its Checkpoint, on every CPU, without any lock: a flush of
// thousands of keys spent most of the time it held the intake's lock
// compressing them.
func EncodeCheckpoints(entries []Entry) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for range min(runtime.GOMAXPROCS(0), len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(entries); i = int(next.Add(1) - 1) {
				e := &entries[i]
				if e.pending == nil {
					continue
				}
				hist, err := json.Marshal(e.pending.history)
				var data []byte
				if err == nil {
					data, err = encode(checkpoint{Version: CheckpointVersion, History: hist, Meta: e.pending.meta})
				}
				if err != nil {
					errMu.Lock()
					first = cmp.Or(first, fmt.Errorf("checkpoint %s: %w", e.Key, err))
					errMu.Unlock()
					continue
				}
				e.Checkpoint, e.pending = data, nil
			}
		}()
	}
	wg.Wait()
	return first
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
	if m.Seen == nil {
		// Checkpoints before Seen: count the collectors as heard now.
		m.Seen = map[string]int64{}
		for c := range m.Applied {
			m.Seen[c] = s.now().UnixNano()
		}
	}
	// What a checkpoint holds was written.
	m.Unwritten = map[string]uint64{}
	m.Pods = make(map[string]struct{}, len(m.PodList))
	for _, p := range m.PodList {
		m.Pods[p] = struct{}{}
	}
	m.PodList = nil
	s.meta[k] = &m
	s.index(k)
	return nil
}

type checkpoint struct {
	Version int             `json:"v"`
	History json.RawMessage `json:"history"`
	Meta    Meta            `json:"meta"`
}

// checkpointLevel is the checkpoints' gzip level: the fastest, 4.4× less
// compression time per flush than gzip's default for 7% more bytes
// (BenchmarkTakeDirty compares them); at 2,000 workloads compression was
// the analyzer's largest CPU cost.
var checkpointLevel = gzip.BestSpeed

// encode writes c as JSON, gzipped. The history is already JSON: it is
// written as it is (encoding/json would compact and check it again, a fifth
// of a flush's time).
func encode(c checkpoint) ([]byte, error) {
	meta, err := json.Marshal(c.Meta)
	if err != nil {
		return nil, err
	}
	history := c.History
	if len(history) == 0 {
		history = json.RawMessage("null")
	}
	return gz.Compress(checkpointLevel, func(w io.Writer) error {
		for _, part := range [][]byte{fmt.Appendf(nil, `{"v":%d,"history":`, c.Version), history, []byte(`,"meta":`), meta, []byte("}\n")} {
			if _, err := w.Write(part); err != nil {
				return err
			}
		}
		return nil
	})
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

// Covers reports whether checkpoint a holds every window checkpoint b
// holds: for each collector, a has applied b's sequence or a later one. Two
// checkpoints of one key's state over time are ordered by it; a checkpoint
// that cannot be read is an error.
func Covers(a, b []byte) (bool, error) {
	var ca, cb checkpoint
	if err := decode(a, &ca); err != nil {
		return false, err
	}
	if err := decode(b, &cb); err != nil {
		return false, err
	}
	for c, seq := range cb.Meta.Applied {
		if ca.Meta.Applied[c] < seq {
			return false, nil
		}
	}
	return true, nil
}
