package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Entry is one container cgroup found in the hierarchy.
type Entry struct {
	// ID is the cgroup id: the inode of the cgroup's directory, which is
	// what bpf_get_current_cgroup_id returns for tasks inside it.
	ID uint64
	// Path is relative to the cgroup2 mount, with a leading slash.
	Path string
	Container
}

// Resolver maps cgroup ids and container ids to the container cgroups under
// the kubelet's kubepods subtree. It caches what it found and rescans when
// asked about an id it does not know, at most once per MinRescanInterval.
// A Resolver is safe for concurrent use.
type Resolver struct {
	root              string
	minRescanInterval time.Duration
	maxAge            time.Duration
	now               func() time.Time

	mu       sync.Mutex
	byID     map[uint64]Entry
	byCtr    map[string][]Entry
	byPod    map[string]uint64
	lastScan time.Time
	scans    int
}

// ResolverOptions configure a Resolver. The zero value of each field picks
// the documented default.
type ResolverOptions struct {
	// MinRescanInterval bounds how often an unknown id triggers a rescan
	// (default 1s): a busy node must not walk cgroupfs on every miss.
	MinRescanInterval time.Duration
	// MaxAge makes ContainerCgroups rescan (rate-limited) when the last
	// walk is older, so cgroups nested in a container after it started are
	// found (default 30s).
	MaxAge time.Duration
}

// NewResolver returns a Resolver over the cgroup2 hierarchy mounted at root
// (for example /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).
func NewResolver(root string, opts ResolverOptions) *Resolver {
	if opts.MinRescanInterval == 0 {
		opts.MinRescanInterval = time.Second
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = 30 * time.Second
	}
	return &Resolver{
		root:              root,
		minRescanInterval: opts.MinRescanInterval,
		maxAge:            opts.MaxAge,
		now:               time.Now,
		byID:              map[uint64]Entry{},
		byCtr:             map[string][]Entry{},
		byPod:             map[string]uint64{},
	}
}

// Root is the cgroup2 mount point the Resolver walks.
func (r *Resolver) Root() string { return r.root }

// Lookup returns the container cgroup with the given cgroup id, rescanning
// (rate-limited) when the id is unknown.
func (r *Resolver) Lookup(cgroupID uint64) (Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[cgroupID]; ok {
		return e, true
	}
	if r.rescanLocked(false) != nil {
		return Entry{}, false
	}
	e, ok := r.byID[cgroupID]
	return e, ok
}

// LookupContainer returns the cgroup of the container with the given runtime
// id (without "containerd://"), rescanning (rate-limited) when unknown.
func (r *Resolver) LookupContainer(containerID string) (Entry, bool) {
	es, ok := r.ContainerCgroups(containerID)
	if !ok {
		return Entry{}, false
	}
	return es[0], true
}

// ContainerCgroups returns every cgroup of the container with the given
// runtime id: its own first, then any nested in it (tasks in those report
// the nested cgroup's id). It rescans (rate-limited) when the container is
// unknown or the last walk is older than MaxAge.
func (r *Resolver) ContainerCgroups(containerID string) ([]Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	es, ok := r.byCtr[containerID]
	if ok && r.now().Sub(r.lastScan) < r.maxAge {
		return es, true
	}
	if r.rescanLocked(false) != nil {
		return es, ok
	}
	es, ok = r.byCtr[containerID]
	return es, ok
}

// FreshContainerCgroups is ContainerCgroups from a walk no older than
// maxStale (walking again when it is older, whatever the rate limit): for a
// container whose cgroup the kernel already records, under a pod it observes.
func (r *Resolver) FreshContainerCgroups(containerID string, maxStale time.Duration) ([]Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	es, ok := r.byCtr[containerID]
	if !ok && r.now().Sub(r.lastScan) >= maxStale {
		_ = r.rescanLocked(true)
		es, ok = r.byCtr[containerID]
	}
	return es, ok
}

// PodCgroups returns the container cgroups under the pod with this UID,
// from a walk no older than maxStale (walking again when it is older,
// whatever the rate limit): while a pod starts, its containers' cgroups
// appear before its status names them.
func (r *Resolver) PodCgroups(podUID string, maxStale time.Duration) []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.now().Sub(r.lastScan) >= maxStale {
		_ = r.rescanLocked(true)
	}
	var out []Entry
	for _, e := range r.byID {
		if e.PodUID == podUID {
			out = append(out, e)
		}
	}
	return out
}

// PodCgroupID returns the id of the pod's own cgroup (the one its
// containers' cgroups are created in), from a walk no older than maxStale.
func (r *Resolver) PodCgroupID(podUID string, maxStale time.Duration) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.now().Sub(r.lastScan) >= maxStale {
		_ = r.rescanLocked(true)
	}
	id, ok := r.byPod[podUID]
	return id, ok
}

// Rescan walks the hierarchy now, regardless of the rate limit.
func (r *Resolver) Rescan() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rescanLocked(true)
}

// Scans reports how many walks the Resolver has made.
func (r *Resolver) Scans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scans
}

func (r *Resolver) rescanLocked(force bool) error {
	now := r.now()
	if !force && !r.lastScan.IsZero() && now.Sub(r.lastScan) < r.minRescanInterval {
		return errRateLimited
	}
	r.lastScan = now
	r.scans++
	byID, byCtr, byPod, err := scan(r.root)
	if err != nil {
		return err
	}
	r.byID, r.byCtr, r.byPod = byID, byCtr, byPod
	return nil
}

var errRateLimited = errors.New("cgroup rescan rate-limited")

// scan finds the kubepods subtrees (at most three levels below root, to allow
// for a kubelet --cgroup-root or a nested node) and indexes every container
// cgroup in them.
func scan(root string) (map[uint64]Entry, map[string][]Entry, map[string]uint64, error) {
	byID := map[uint64]Entry{}
	byCtr := map[string][]Entry{}
	byPod := map[string]uint64{}
	var tops []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return fs.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		depth := 0
		if rel != "." {
			depth = strings.Count(rel, string(filepath.Separator)) + 1
		}
		if d.Name() == "kubepods" || d.Name() == "kubepods.slice" {
			tops = append(tops, p)
			return fs.SkipDir
		}
		if depth >= 3 {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("walk cgroup hierarchy %s: %w", root, err)
	}
	for _, top := range tops {
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				// Cgroups vanish while we walk; that is not an error.
				if errors.Is(err, fs.ErrNotExist) && p != top {
					return fs.SkipDir
				}
				return err
			}
			if !d.IsDir() {
				return nil
			}
			rel := "/" + filepath.ToSlash(mustRel(root, p))
			c, ok := ParsePath(rel)
			if !ok {
				if uid, isPod := ParsePodPath(rel); isPod {
					if id, err := inode(p); err == nil {
						byPod[uid] = id
					}
				}
				return nil
			}
			id, err := inode(p)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fs.SkipDir
				}
				return err
			}
			e := Entry{ID: id, Path: rel, Container: c}
			byID[id] = e
			// WalkDir visits a directory before its children, so the
			// container's own cgroup comes first.
			byCtr[c.ContainerID] = append(byCtr[c.ContainerID], e)
			return nil
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("walk kubepods cgroups under %s: %w", top, err)
		}
	}
	return byID, byCtr, byPod, nil
}

func mustRel(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return rel
}

// CgroupID returns the id of the cgroup at dir (its directory inode).
func CgroupID(dir string) (uint64, error) {
	id, err := inode(dir)
	if err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	return id, nil
}

func inode(p string) (uint64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode in %T", p, fi.Sys())
	}
	return st.Ino, nil
}
