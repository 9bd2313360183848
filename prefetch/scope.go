package prefetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// errOutsideRoots marks a path that does not stay under the roots: it is
// rejected, never read.
var errOutsideRoots = errors.New("outside the dataset roots")

// fileRef names a file as (root, path relative to that root). rel is always
// local: no "..", not absolute.
type fileRef struct {
	root int
	rel  string
}

// scope confines every read to the roots. Files are opened through os.Root,
// which resolves each component beneath the root directory and refuses
// symbolic links that lead outside it (and absolute symbolic links), so a
// path checked here cannot be swapped for one outside between check and use.
type scope struct {
	paths   []string
	roots   []*os.Root
	aliases []alias
}

type alias struct {
	app  string
	root int
}

func newScope(roots, aliases []string) (*scope, error) {
	s := &scope{}
	for _, r := range roots {
		root, err := os.OpenRoot(r)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("open dataset root --root=%s: %w", r, err)
		}
		s.paths = append(s.paths, filepath.Clean(r))
		s.roots = append(s.roots, root)
	}
	for _, a := range aliases {
		app, root, err := parseAlias(a, roots)
		if err != nil {
			s.close()
			return nil, err
		}
		for i, p := range s.paths {
			if p == root {
				s.aliases = append(s.aliases, alias{app: app, root: i})
			}
		}
	}
	// Longest application path first, so nested aliases map correctly.
	sort.SliceStable(s.aliases, func(i, j int) bool { return len(s.aliases[i].app) > len(s.aliases[j].app) })
	return s, nil
}

func (s *scope) close() {
	for _, r := range s.roots {
		_ = r.Close()
	}
}

// display is the path of ref as the prefetcher sees it.
func (s *scope) display(ref fileRef) string {
	return filepath.Join(s.paths[ref.root], filepath.FromSlash(ref.rel))
}

// key identifies ref uniquely within the scope.
func (ref fileRef) key() string {
	return fmt.Sprintf("%d:%s", ref.root, ref.rel)
}

// resolve maps a manifest or hint path to a file under a root. An absolute
// path must lie under a root (or an application path with an alias); a
// relative path is taken relative to the first root holding it. Paths that
// climb out with ".." are rejected before any file system access; symbolic
// links are checked when the file is opened.
func (s *scope) resolve(p string) (fileRef, error) {
	if p == "" {
		return fileRef{}, fmt.Errorf("empty path: %w", errOutsideRoots)
	}
	if filepath.IsAbs(p) {
		clean := filepath.Clean(p)
		for _, a := range s.aliases {
			if rel, ok := under(clean, a.app); ok {
				return fileRef{root: a.root, rel: rel}, nil
			}
		}
		for i, r := range s.paths {
			if rel, ok := under(clean, r); ok {
				return fileRef{root: i, rel: rel}, nil
			}
		}
		return fileRef{}, fmt.Errorf("path %q: %w %v", p, errOutsideRoots, s.paths)
	}
	if !filepath.IsLocal(p) {
		return fileRef{}, fmt.Errorf("path %q climbs out of its root: %w", p, errOutsideRoots)
	}
	rel := filepath.ToSlash(filepath.Clean(p))
	if len(s.roots) == 1 {
		return fileRef{root: 0, rel: rel}, nil
	}
	for i, r := range s.roots {
		if _, err := r.Lstat(rel); err == nil {
			return fileRef{root: i, rel: rel}, nil
		}
	}
	return fileRef{}, fmt.Errorf("relative path %q: not found under any root %v", p, s.paths)
}

// under reports whether p is dir or below it, and p's path relative to dir.
func under(p, dir string) (string, bool) {
	if p == dir {
		return "", false // the root itself is a directory, not a file
	}
	prefix := dir
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if !strings.HasPrefix(p, prefix) {
		return "", false
	}
	return filepath.ToSlash(strings.TrimPrefix(p, prefix)), true
}

// open opens ref for reading, beneath its root.
func (s *scope) open(ref fileRef) (*os.File, error) {
	f, err := s.roots[ref.root].Open(ref.rel)
	if err != nil {
		return nil, classify(s.display(ref), err)
	}
	return f, nil
}

// stat returns ref's size, following symbolic links that stay beneath the
// root. Anything but a regular file is an error.
func (s *scope) stat(ref fileRef) (int64, error) {
	fi, err := s.roots[ref.root].Stat(ref.rel)
	if err != nil {
		return 0, classify(s.display(ref), err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file (%s)", s.display(ref), fi.Mode().Type())
	}
	return fi.Size(), nil
}

// classify wraps errOutsideRoots around os.Root's refusal to leave the root,
// so callers can tell a rejected path from an I/O error.
func classify(path string, err error) error {
	if strings.Contains(err.Error(), "escapes from parent") {
		return fmt.Errorf("%s resolves outside its root (symbolic link?): %w", path, errOutsideRoots)
	}
	return err
}

// walk lists the regular files under root i in lexical order, with sizes.
// Symbolic links are followed only when they stay beneath the root; others
// are passed to reject.
func (s *scope) walk(ctx context.Context, i int, visit func(ref fileRef, size int64), reject func(ref fileRef, err error)) error {
	return fs.WalkDir(s.roots[i].FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return fs.SkipAll
		}
		if err != nil {
			if p == "." {
				return fmt.Errorf("list %s: %w", s.paths[i], err)
			}
			reject(fileRef{root: i, rel: p}, err)
			return nil
		}
		ref := fileRef{root: i, rel: p}
		switch {
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				reject(ref, err)
				return nil
			}
			visit(ref, info.Size())
		case d.Type()&fs.ModeSymlink != 0:
			size, err := s.stat(ref)
			if err != nil {
				reject(ref, err)
				return nil
			}
			visit(ref, size)
		}
		return nil
	})
}
