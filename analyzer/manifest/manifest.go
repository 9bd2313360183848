// Package manifest keeps, per (workload, dataset), the files a prefetcher
// should read — in the order they were last read, and the hot set — and
// serves them over HTTPS to callers that prove who they are with a
// Kubernetes token. Manifests are too large for API objects; they are
// persisted in a state folder (a PVC in a cluster) and survive restarts.
package manifest

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/internal/gz"
)

// DefaultMaxFiles bounds the files remembered per key.
const DefaultMaxFiles = 200_000

// MaxPathBytesPerKey bounds the bytes of paths remembered per key: with
// DefaultMaxFiles, a key's paths average at most 168 bytes, so no workload
// can make the analyzer hold much more than this for it whatever it opens.
const MaxPathBytesPerKey = 32 << 20

type fileEntry struct {
	// Order is the time of the latest pass (or first access), unix ns.
	Order int64   `json:"o"`
	Bytes float64 `json:"b"`
	Size  int64   `json:"s,omitempty"`
	// Ranges are the byte ranges the latest run read of a file it read at
	// random offsets, sorted and disjoint; RangePods are the pods of that
	// run and RangesLast its last access, unix ns (see observeRanges).
	Ranges     []manifestv1.Range `json:"r,omitempty"`
	RangePods  []string           `json:"rp,omitempty"`
	RangesLast int64              `json:"rl,omitempty"`
}

type keyState struct {
	Files   map[string]*fileEntry `json:"files"`
	Dropped uint64                `json:"dropped,omitempty"`
	// RangesDropped counts ranges not kept: beyond MaxRangesPerKey, or
	// left out by the collector.
	RangesDropped uint64 `json:"rangesDropped,omitempty"`
	// pathBytes is the sum of the lengths of Files' paths; ranges the
	// number of ranges held in Files.
	pathBytes int
	ranges    int
}

// MaxRangesPerKey bounds the read ranges remembered per key (16 bytes
// each): what one manifest may carry.
const MaxRangesPerKey = manifestv1.MaxRanges

// maxRangePods bounds the pods remembered as one run's readers of a file.
const maxRangePods = 64

// Store is safe for concurrent use.
type Store struct {
	dir      string
	maxFiles int

	mu    sync.Mutex
	keys  map[analyzer.Key]*keyState
	dirty map[analyzer.Key]bool
}

// NewStore returns a Store persisting to dir ("" keeps manifests in memory
// only) and loads what dir holds.
func NewStore(dir string, maxFiles int) (*Store, error) {
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	s := &Store{dir: dir, maxFiles: maxFiles, keys: map[analyzer.Key]*keyState{}, dirty: map[analyzer.Key]bool{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("manifest state folder %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() && strings.HasPrefix(e.Name(), tempPrefix) {
			// Left by a flush a crash interrupted: never renamed, never read.
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if e.IsDir() || filepath.Ext(e.Name()) != ".gz" {
			continue
		}
		k, st, err := load(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("load manifest %s: %w (remove the file to start that manifest afresh)", e.Name(), err)
		}
		s.keys[k] = st
	}
	return s, nil
}

// Observe records the paths of records attributed to one key.
func (s *Store) Observe(recs []*accessv1.FileAccess) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if r.GetPath() == "" || r.GetWorkload().GetName() == "" || r.GetDataset().GetName() == "" || r.GetReadOps() == 0 {
			continue
		}
		k := analyzer.KeyOf(r)
		st := s.keys[k]
		if st == nil {
			st = &keyState{Files: map[string]*fileEntry{}}
			s.keys[k] = st
		}
		fe := st.Files[r.GetPath()]
		if fe == nil {
			if len(st.Files) >= s.maxFiles || st.pathBytes+len(r.GetPath()) > MaxPathBytesPerKey {
				st.Dropped++
				continue
			}
			fe = &fileEntry{}
			st.Files[r.GetPath()] = fe
			st.pathBytes += len(r.GetPath())
		}
		order := r.GetLastPassUnixNano()
		if order == 0 {
			order = r.GetFirstAccessUnixNano()
		}
		if order > fe.Order {
			fe.Order = order
		}
		fe.Bytes += float64(r.GetReadBytes())
		if r.GetFileSize() > 0 {
			fe.Size = r.GetFileSize()
		}
		st.observeRanges(fe, r)
		s.dirty[k] = true
	}
}

// observeRanges keeps the read ranges of files read at random offsets, or
// in a single read so far (a random reader's first window may hold one);
// a scan's one range per open is of no use to a prefetcher. Of each file it
// keeps those of the latest run that read it: a record of a pod that is
// not among the run's readers, whose reads began after the run's last
// access, starts a new run; pods reading at the same time (a job's
// parallel workers) join the run.
func (st *keyState) observeRanges(fe *fileEntry, r *accessv1.FileAccess) {
	st.RangesDropped += r.GetReadRangesDropped()
	if len(r.GetReadRanges()) == 0 || r.GetRandSteps() == 0 && r.GetSeqSteps() > 0 {
		return
	}
	pod := r.GetPodUid()
	if !slices.Contains(fe.RangePods, pod) {
		if r.GetFirstAccessUnixNano() > fe.RangesLast {
			st.ranges -= len(fe.Ranges)
			fe.Ranges, fe.RangePods = nil, nil
		}
		if len(fe.RangePods) < maxRangePods {
			fe.RangePods = append(fe.RangePods, pod)
		}
	}
	fe.RangesLast = max(fe.RangesLast, r.GetLastAccessUnixNano())
	before := len(fe.Ranges)
	for _, rr := range r.GetReadRanges() {
		if st.ranges+len(fe.Ranges)-before >= MaxRangesPerKey {
			st.RangesDropped++
			continue
		}
		if rr.GetEnd() > rr.GetOffset() && rr.GetEnd() <= math.MaxInt64 {
			fe.Ranges = append(fe.Ranges, manifestv1.Range{int64(rr.GetOffset()), int64(rr.GetEnd())})
		}
	}
	fe.Ranges = mergeRanges(fe.Ranges)
	st.ranges += len(fe.Ranges) - before
}

// mergeRanges sorts rs and joins ranges that overlap or touch.
func mergeRanges(rs []manifestv1.Range) []manifestv1.Range {
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// Ranges returns the files of k's latest run that were read at random
// offsets, in access order, with the ranges read of each; at most limit
// files (0: no limit).
func (s *Store) Ranges(k analyzer.Key, limit int) ([]manifestv1.FileRanges, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.keys[k]
	if st == nil {
		return nil, false
	}
	type pf struct {
		path string
		e    *fileEntry
	}
	var with []pf
	for p, e := range st.Files {
		if len(e.Ranges) > 0 {
			with = append(with, pf{p, e})
		}
	}
	sort.Slice(with, func(i, j int) bool {
		if with[i].e.Order != with[j].e.Order {
			return with[i].e.Order < with[j].e.Order
		}
		return with[i].path < with[j].path
	})
	if limit > 0 && len(with) > limit {
		with = with[:limit]
	}
	out := make([]manifestv1.FileRanges, len(with))
	for i, f := range with {
		out[i] = manifestv1.FileRanges{Path: f.path, Ranges: slices.Clone(f.e.Ranges)}
	}
	return out, true
}

// Find returns a key held that match accepts.
func (s *Store) Find(match func(analyzer.Key) bool) (analyzer.Key, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.keys {
		if match(k) {
			return k, true
		}
	}
	return analyzer.Key{}, false
}

// Get returns k's manifest with at most limit files (0: no limit) and the
// hot set covering hotShare of bytes read.
func (s *Store) Get(k analyzer.Key, limit int, hotShare float64) (manifestv1.Document, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.keys[k]
	if st == nil {
		return manifestv1.Document{}, false
	}
	type pf struct {
		path string
		e    *fileEntry
	}
	all := make([]pf, 0, len(st.Files))
	var total float64
	for p, e := range st.Files {
		all = append(all, pf{p, e})
		total += e.Bytes
	}
	m := manifestv1.Document{Workload: k.WorkloadKind + "/" + k.WorkloadName, Dataset: k.DatasetName, HotShare: hotShare, Truncated: st.Dropped > 0}
	sort.Slice(all, func(i, j int) bool {
		if all[i].e.Order != all[j].e.Order {
			return all[i].e.Order < all[j].e.Order
		}
		return all[i].path < all[j].path
	})
	n := len(all)
	if limit > 0 && n > limit {
		n = limit
		m.Truncated = true
	}
	m.Files = make([]string, n)
	for i := range n {
		m.Files[i] = all[i].path
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].e.Bytes != all[j].e.Bytes {
			return all[i].e.Bytes > all[j].e.Bytes
		}
		return all[i].path < all[j].path
	})
	var acc float64
	for _, f := range all {
		if acc >= hotShare*total || (limit > 0 && len(m.Hot) >= limit) {
			break
		}
		m.Hot = append(m.Hot, f.path)
		acc += f.e.Bytes
	}
	return m, true
}

// Flush writes every manifest changed since the last flush, in one batch:
// each to a temporary file, all made durable by one sync of the state
// folder's file system, then each renamed into place and the folder synced
// once. However many manifests changed, a flush costs two syncs, and a
// crash leaves each manifest either as it was or as it is now. A manifest
// that cannot be written stays marked and is tried again by the next Flush;
// its failure holds back no other manifest. The error names every manifest
// that failed.
func (s *Store) Flush() error {
	if s.dir == "" {
		return nil
	}
	s.mu.Lock()
	type job struct {
		k    analyzer.Key
		data []byte
		tmp  string
	}
	var jobs []job
	var errs []error
	for k := range s.dirty {
		data, err := encode(k, s.keys[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("encode manifest of %s: %w", k, err))
			continue
		}
		jobs = append(jobs, job{k: k, data: data})
		delete(s.dirty, k)
	}
	s.mu.Unlock()
	failed := func(j job, err error) {
		if j.tmp != "" {
			os.Remove(j.tmp)
		}
		s.mu.Lock()
		s.dirty[j.k] = true
		s.mu.Unlock()
		errs = append(errs, fmt.Errorf("persist manifest of %s: %w", j.k, err))
	}
	written := jobs[:0]
	var tmps []string
	for _, j := range jobs {
		tmp, err := writeTemp(s.dir, j.data)
		if err != nil {
			failed(j, err)
			continue
		}
		j.tmp = tmp
		written = append(written, j)
		tmps = append(tmps, tmp)
	}
	if len(written) == 0 {
		return errors.Join(errs...)
	}
	if err := syncFiles(s.dir, tmps); err != nil {
		for _, j := range written {
			failed(j, fmt.Errorf("sync %s: %w", s.dir, err))
		}
		return errors.Join(errs...)
	}
	renamed := written[:0]
	for _, j := range written {
		if err := os.Rename(j.tmp, filepath.Join(s.dir, fileName(j.k))); err != nil {
			failed(j, err)
			continue
		}
		renamed = append(renamed, j)
	}
	if err := syncDir(s.dir); err != nil {
		for _, j := range renamed {
			j.tmp = ""
			failed(j, fmt.Errorf("sync %s: %w", s.dir, err))
		}
	}
	return errors.Join(errs...)
}

type onDisk struct {
	Key   analyzer.Key `json:"key"`
	State *keyState    `json:"state"`
}

func encode(k analyzer.Key, st *keyState) ([]byte, error) {
	return gz.Compress(gzip.DefaultCompression, func(w io.Writer) error {
		return json.NewEncoder(w).Encode(onDisk{k, st})
	})
}

func load(path string) (analyzer.Key, *keyState, error) {
	f, err := os.Open(path)
	if err != nil {
		return analyzer.Key{}, nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return analyzer.Key{}, nil, err
	}
	var d onDisk
	if err := json.NewDecoder(io.LimitReader(zr, 1<<30)).Decode(&d); err != nil {
		return analyzer.Key{}, nil, err
	}
	if d.State == nil || d.State.Files == nil {
		d.State = &keyState{Files: map[string]*fileEntry{}}
	}
	for p, fe := range d.State.Files {
		d.State.ranges += len(fe.Ranges)
		d.State.pathBytes += len(p)
	}
	return d.Key, d.State, nil
}

func fileName(k analyzer.Key) string {
	return fmt.Sprintf("%x.json.gz", sha256Sum(k.String()))
}

// tempPrefix starts the names of manifests being written.
const tempPrefix = ".tmp-"

// writeTemp writes data to a new temporary file in dir, not yet synced, and
// returns its path.
func writeTemp(dir string, data []byte) (string, error) {
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
