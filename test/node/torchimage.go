package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// TorchImage runs TrainScript, a PyTorch DataLoader training loop, with
// Debian's /usr/bin/python3 and python3-torch: the ShuffledEpochs job of
// the benchmark.
const TorchImage = "eddy.local/torch:dev"

// TorchName is the short name of TorchImage, built only when asked for: it
// needs python3-torch on this machine, and Debian's PyTorch links some 300
// shared libraries (OpenCV, GDAL, Qt among them), so the image holds about
// 3,500 files, 545 MiB (223 MiB compressed).
const TorchName = "torch"

// TrainScript is where test/node/workload/train.py is in TorchImage.
const TrainScript = "/usr/local/lib/eddy/train.py"

// torchProbe imports what train.py imports and prints the file of every
// module that import loaded: the Debian packages owning those files are
// the image's Python packages.
const torchProbe = `import sys, torch, torch.utils.data
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f:
        print(f)
`

// torchFiles are the files TorchImage holds, by a rule rather than a list:
// every Debian package owning a module that `import torch` loads (PyTorch,
// NumPy, the interpreter's standard library, and the few pure-Python
// packages torch imports), as dpkg -L lists them — less documentation,
// commands and test suites — with the target of every symlink among them
// (torch/lib points into libtorch's package), and the shared libraries
// ldd finds for every ELF file in that set (the interpreter, extension
// modules, torch's shared-memory manager).
func torchFiles(ctx context.Context, root string) ([]imageFile, error) {
	const python = "/usr/bin/python3"
	probe := exec.CommandContext(ctx, python, "-I", "-c", torchProbe)
	var stderr bytes.Buffer
	probe.Stderr = &stderr
	out, err := probe.Output()
	if err != nil {
		return nil, fmt.Errorf("%s cannot import torch (apt-get install python3-torch): %w: %s", python, err, strings.TrimSpace(stderr.String()))
	}
	interp, err := filepath.EvalSymlinks(python)
	if err != nil {
		return nil, err
	}
	modules := append(strings.Fields(string(out)), interp)
	pkgs, err := debianOwners(ctx, modules)
	if err != nil {
		return nil, err
	}
	set := &fileSet{byPath: map[string]imageFile{}}
	for _, top := range []string{"/bin", "/lib", "/lib64", "/sbin"} {
		// usr-merged: absolute symlink targets and ELF interpreters name
		// /lib64/..., which must lead to the files under usr/.
		if target, err := os.Readlink(top); err == nil {
			set.add(imageFile{path: top[1:], link: target})
		}
	}
	for _, pkg := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg", "-L", pkg).Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg -L %s: %w", pkg, err)
		}
		for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if runtimeFile(p) {
				if err := set.addPath(p); err != nil {
					return nil, fmt.Errorf("package %s: %w", pkg, err)
				}
			}
		}
	}
	if err := set.addPath(python); err != nil {
		return nil, err
	}
	// The host's loader cache maps each library name to the path ldd found.
	if err := set.addPath("/etc/ld.so.cache"); err != nil {
		return nil, err
	}
	objects := []string{interp}
	for _, f := range set.byPath {
		if f.src != "" && isELF(f.src) {
			objects = append(objects, f.src)
		}
	}
	sort.Strings(objects)
	for _, obj := range objects {
		libs, err := lddPaths(ctx, obj)
		if err != nil {
			return nil, err
		}
		for _, lib := range libs {
			if err := set.addPath(lib); err != nil {
				return nil, fmt.Errorf("%s, needed by %s: %w", lib, obj, err)
			}
		}
	}
	script := filepath.Join(root, "test/node/workload/train.py")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("the training loop: %w", err)
	}
	set.add(imageFile{path: "tmp", dir: true, mode: 0o1777})
	set.add(imageFile{path: strings.TrimPrefix(TrainScript, "/"), src: script, mode: 0o644})
	files := make([]imageFile, 0, len(set.byPath))
	for _, f := range set.byPath {
		files = append(files, f)
	}
	return files, nil
}

// runtimeFile says whether a path a package installs is needed to run
// Python code: not its documentation and manuals (/usr/share), commands
// (/usr/bin: the interpreter is added on its own), or test suites.
func runtimeFile(p string) bool {
	switch {
	case p == "/." || strings.HasPrefix(p, "/usr/share/") || strings.HasPrefix(p, "/usr/bin/"):
		return false
	case strings.Contains(p, "/tests/") || strings.Contains(p, "/dist-packages/torch/bin/test_"):
		return false
	}
	return true
}

// debianOwners returns the Debian packages owning files, sorted. Every
// file must belong to one: a module installed by hand would be missing
// from the image.
func debianOwners(ctx context.Context, files []string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "dpkg", append([]string{"-S"}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg -S (a module torch imports is not from a Debian package?): %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		owners, _, ok := strings.Cut(sc.Text(), ": ")
		if !ok || strings.HasPrefix(owners, "diversion by") {
			continue
		}
		for _, o := range strings.Split(owners, ", ") {
			seen[o] = true
		}
	}
	pkgs := make([]string, 0, len(seen))
	for p := range seen {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs, nil
}

// isELF says whether the file at p starts with ELF's magic number.
func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	return err == nil && string(magic) == "\x7fELF"
}

// lddPaths returns the paths of the shared libraries ldd says obj loads,
// the dynamic loader among them.
func lddPaths(ctx context.Context, obj string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", obj).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", obj, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("ldd %s: %s is not found", obj, f[0])
		}
	}
	return libs, nil
}

// fileSet collects an image's files by path, each once, keeping symlinks
// as symlinks so that a library is stored once however many names it has.
type fileSet struct {
	byPath map[string]imageFile
}

func (s *fileSet) add(f imageFile) { s.byPath[f.path] = f }

// addPath adds the host file p at the same path: a regular file, or a
// symlink and, followed, its target. Directories are made as needed, not
// added; a dangling symlink is left out. The folder p is in is resolved
// first, so nothing lands beneath a symlinked folder (/lib on usr-merged
// systems).
func (s *fileSet) addPath(p string) error {
	dir, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	p = filepath.Join(dir, filepath.Base(p))
	rel := strings.TrimPrefix(p, "/")
	if _, ok := s.byPath[rel]; ok {
		return nil
	}
	fi, err := os.Lstat(p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		resolved := target
		if !filepath.IsAbs(target) {
			resolved = filepath.Join(dir, target)
		}
		if _, err := os.Stat(resolved); err != nil {
			return nil
		}
		s.add(imageFile{path: rel, link: target})
		return s.addPath(resolved)
	case fi.Mode().IsRegular():
		s.add(imageFile{path: rel, src: p, mode: int64(fi.Mode().Perm())})
	}
	return nil
}
