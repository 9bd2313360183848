package profile

import (
	"cmp"
	"path/filepath"
	"slices"
	"strings"

	"github.com/eddy-autotune/eddy/bpf"
)

// How eddy profile finds dataset roots when --data names none. The data
// files (what is left once the program's own files are out, see notData)
// are put in groups of files read alike: the same device (a file system: two
// mounts are never one root) and the same way, at random offsets (more
// random than sequential steps between reads, as the kernel counted them) or
// in order (whole small files, scans). In each group, the root is the
// deepest directory holding at least RootShare of the group's bytes (read
// plus written); the files outside it form a group of their own, found the
// same way. A candidate holding less than MinRootShare of all data bytes is
// no root. Each data file then belongs to the deepest root on its device
// that holds it, and a file under no root is left out
// (ExcludeOutsideRoots): a small file read apart from the data, like the
// configuration, vocabulary or metadata a program reads once at start, does
// not blend into a root's class. That is a consequence of the rule, not a
// rule of its own: files read at start under a root are part of it (a
// labels file beside the images is the dataset's).
//
// Two datasets read the same way under one directory make one root (their
// common directory) when neither holds RootShare of the bytes; --data names
// them apart.
const (
	RootShare    = 0.9
	MinRootShare = 0.02
)

// root is a dataset root: a directory, on one device unless --data named it.
type root struct {
	dir   string
	dev   uint64
	named bool
}

// dataFile is what root finding knows of a data file.
type dataFile struct {
	key    bpf.FileKey
	path   string
	weight uint64 // bytes read plus written
	random bool
}

// findRoots returns the dataset roots of files: the directories of named
// (each cleaned, one root however many devices it spans) or, without named,
// those the rule above finds.
func findRoots(files []dataFile, named []string) []root {
	if len(named) > 0 {
		var out []root
		for _, d := range named {
			r := root{dir: filepath.Clean(d), named: true}
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
		return out
	}
	var all uint64
	for _, f := range files {
		all += f.weight
	}
	groups := map[[2]uint64][]dataFile{}
	for _, f := range files {
		if all == 0 {
			// Nothing read or written: count files instead of bytes.
			f.weight = 1
		}
		k := [2]uint64{f.key.Dev, 0}
		if f.random {
			k[1] = 1
		}
		groups[k] = append(groups[k], f)
	}
	var out []root
	if all == 0 {
		all = uint64(len(files))
	}
	for _, k := range sortedKeys(groups) {
		for _, dir := range splitGroup(groups[k], all) {
			r := root{dir: dir, dev: k[0]}
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

func sortedKeys(m map[[2]uint64][]dataFile) [][2]uint64 {
	keys := make([][2]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]uint64) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	})
	return keys
}

// splitGroup returns the root directories of one group of files read alike;
// all is the weight of every data file.
func splitGroup(files []dataFile, all uint64) []string {
	var dirs []string
	for len(files) > 0 {
		var total uint64
		byDir := map[string]uint64{}
		for _, f := range files {
			w := f.weight
			total += w
			for d := filepath.Dir(f.path); ; d = filepath.Dir(d) {
				byDir[d] += w
				if d == "/" || d == "." {
					break
				}
			}
		}
		if float64(total) < MinRootShare*float64(all) || total == 0 {
			break
		}
		best := ""
		for d, w := range byDir {
			if float64(w) < RootShare*float64(total) {
				continue
			}
			if best == "" || depth(d) > depth(best) || (depth(d) == depth(best) && d < best) {
				best = d
			}
		}
		dirs = append(dirs, best)
		rest := files[:0:0]
		for _, f := range files {
			if !under(best, f.path) {
				rest = append(rest, f)
			}
		}
		files = rest
	}
	return dirs
}

// depth counts the directories below "/" (or "." for relative paths).
func depth(dir string) int {
	if dir == "/" || dir == "." {
		return 0
	}
	return strings.Count(strings.Trim(dir, "/"), "/") + 1
}

// under reports whether path lies in dir: "/" holds every absolute path and
// "." every relative one.
func under(dir, path string) bool {
	switch dir {
	case "/":
		return filepath.IsAbs(path)
	case ".":
		return path != "" && !filepath.IsAbs(path)
	}
	dir = strings.TrimSuffix(dir, "/")
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// rootOf returns the index in roots of the deepest root holding the file at
// path on device dev, or -1.
func rootOf(roots []root, dev uint64, path string) int {
	best := -1
	for i, r := range roots {
		if (!r.named && r.dev != dev) || !under(r.dir, path) {
			continue
		}
		if best < 0 || depth(r.dir) > depth(roots[best].dir) {
			best = i
		}
	}
	return best
}
