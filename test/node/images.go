package node

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// Images built for the real node. Pods use them with imagePullPolicy Never
// or IfNotPresent: there is no registry.
const (
	// EddyImage holds the eddy binary (every component is a subcommand).
	EddyImage = "eddy.local/eddy:dev"
	// PauseImage is the sandbox image containerd starts for every pod.
	PauseImage = "eddy.local/pause:dev"
	// WorkloadImage holds eddy-workload (access patterns, a file server, a
	// service-account probe) and busybox shell tools.
	WorkloadImage = "eddy.local/workload:dev"
	// FluidPrefetcherImage runs Fluid's file prefetcher script (Python,
	// Apache-2.0) with Debian's python3 and busybox: the peer eddy is
	// benchmarked against. The script is read at build time from
	// FluidPrefetcherScript; it is never part of eddy's sources.
	FluidPrefetcherImage = "eddy.local/fluid-file-prefetcher:dev"
)

// imageFormat changes when the way images are assembled changes, so that
// content hashes of older builds no longer match.
const imageFormat = "eddy-image-v1"

// ImageNames are the short names BuildImages builds by default.
var ImageNames = []string{"pause", "workload", "eddy"}

// FluidPrefetcherName is the short name of FluidPrefetcherImage, built only
// when asked for: it needs Fluid's script on this machine.
const FluidPrefetcherName = "fluid-file-prefetcher"

// FluidPrefetcherScript returns the path of Fluid's file-prefetcher
// main.py: $EDDY_FLUID_PREFETCHER, else the shared third-party folder.
func FluidPrefetcherScript() string {
	if p := os.Getenv("EDDY_FLUID_PREFETCHER"); p != "" {
		return p
	}
	return "/work/shared/third_party/fluid/file-prefetcher/main.py"
}

// BuiltImage is one image tarball, ready for `ctr images import`.
type BuiltImage struct {
	// Name is the short name (pause, workload, eddy).
	Name string
	// Ref is the image reference pods use.
	Ref string
	// Tarball is the docker-save formatted file.
	Tarball string
	// Rebuilt is false when the tarball on disk already had this content.
	Rebuilt bool
}

// imageSpec describes an image: its files and its config.
type imageSpec struct {
	name, ref  string
	files      []imageFile
	entrypoint []string
}

// imageFile is one entry of the single layer: a regular file copied from
// src, a directory (dir), or a symlink (link).
type imageFile struct {
	path string
	src  string
	mode int64
	link string
	dir  bool
}

// BuildImages builds the named images (all of ImageNames when none are
// given) into outDir, compiling the Go programs first. An image whose
// inputs hash to what outDir/<name>.tar.sha256 records is not rewritten.
// It returns the images it built even when others failed.
func BuildImages(ctx context.Context, outDir string, names ...string) ([]BuiltImage, error) {
	if len(names) == 0 {
		names = ImageNames
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	buildDir := filepath.Join(outDir, "build")
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return nil, err
	}
	var built []BuiltImage
	var errs []error
	for _, n := range names {
		spec, err := imageFor(ctx, n, root, buildDir)
		if err != nil {
			errs = append(errs, &ImageError{Name: n, Err: err})
			continue
		}
		b, err := writeImage(spec, outDir)
		if err != nil {
			errs = append(errs, &ImageError{Name: n, Err: fmt.Errorf("write %s: %w", spec.ref, err)})
			continue
		}
		built = append(built, b)
	}
	return built, errors.Join(errs...)
}

// ImageError says which image could not be built. BuildImages goes on with
// the others and returns every ImageError joined.
type ImageError struct {
	// Name is the image's short name.
	Name string
	// Err is what went wrong.
	Err error
}

func (e *ImageError) Error() string { return "image " + e.Name + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *ImageError) Unwrap() error { return e.Err }

func imageFor(ctx context.Context, short, root, buildDir string) (*imageSpec, error) {
	tmp := imageFile{path: "tmp", dir: true, mode: 0o1777}
	switch short {
	case "pause":
		bin, err := goBuild(ctx, root, buildDir, "./test/node/cmd/pause", "pause")
		if err != nil {
			return nil, err
		}
		return &imageSpec{name: short, ref: PauseImage, entrypoint: []string{"/pause"},
			files: []imageFile{{path: "pause", src: bin, mode: 0o755}}}, nil
	case "workload":
		bin, err := goBuild(ctx, root, buildDir, "./test/node/cmd/workload", "eddy-workload")
		if err != nil {
			return nil, err
		}
		files := []imageFile{tmp, {path: "bin", dir: true, mode: 0o755},
			{path: "usr/local/bin/eddy-workload", src: bin, mode: 0o755}}
		bb, err := busyboxFiles()
		if err != nil {
			return nil, err
		}
		return &imageSpec{name: short, ref: WorkloadImage, entrypoint: []string{"/usr/local/bin/eddy-workload"},
			files: append(files, bb...)}, nil
	case "eddy":
		bin, err := goBuild(ctx, root, buildDir, "./cmd/eddy", "eddy")
		if err != nil {
			return nil, err
		}
		// The webhook's injected containers run the small eddy-sidecar.
		side, err := goBuild(ctx, root, buildDir, "./cmd/eddy-sidecar", "eddy-sidecar")
		if err != nil {
			return nil, err
		}
		return &imageSpec{name: short, ref: EddyImage, entrypoint: []string{"/usr/local/bin/eddy"},
			files: []imageFile{tmp, {path: "usr/local/bin/eddy", src: bin, mode: 0o755},
				{path: "usr/local/bin/eddy-sidecar", src: side, mode: 0o755}}}, nil
	case FluidPrefetcherName:
		script := FluidPrefetcherScript()
		if _, err := os.Stat(script); err != nil {
			return nil, fmt.Errorf("the Fluid file prefetcher's script: %w (set EDDY_FLUID_PREFETCHER to its main.py)", err)
		}
		py, err := pythonFiles()
		if err != nil {
			return nil, err
		}
		bb, err := busyboxFiles()
		if err != nil {
			return nil, err
		}
		files := append([]imageFile{tmp, {path: "root/main.py", src: script, mode: 0o644}}, py...)
		return &imageSpec{name: short, ref: FluidPrefetcherImage, entrypoint: []string{"/usr/bin/python3", "/root/main.py"},
			files: append(files, bb...)}, nil
	case TorchName:
		files, err := torchFiles(ctx, root)
		if err != nil {
			return nil, err
		}
		return &imageSpec{name: short, ref: TorchImage, entrypoint: []string{"/usr/bin/python3", TrainScript}, files: files}, nil
	}
	return nil, fmt.Errorf("unknown image %q: choose from %s", short, strings.Join(append(ImageNames, FluidPrefetcherName, TorchName), ", "))
}

// pythonFiles are Debian's python3 interpreter, the shared libraries it
// links, and the part of its standard library a small script needs (the
// top-level modules, encodings, collections, re, importlib, lib-dynload).
func pythonFiles() ([]imageFile, error) {
	const bin = "/usr/bin/python3"
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, fmt.Errorf("python3 not found: apt-get install python3: %w", err)
	}
	files := []imageFile{{path: "usr/bin/python3", src: real, mode: 0o755}}
	out, err := exec.Command("ldd", real).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", real, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>":
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		}
		if lib == "" {
			continue
		}
		src, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return nil, err
		}
		files = append(files, imageFile{path: strings.TrimPrefix(lib, "/"), src: src, mode: 0o755})
	}
	stdlib := "/usr/lib/" + filepath.Base(real)
	entries, err := os.ReadDir(stdlib)
	if err != nil {
		return nil, fmt.Errorf("python's standard library: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".py") {
			files = append(files, imageFile{path: strings.TrimPrefix(filepath.Join(stdlib, e.Name()), "/"), src: filepath.Join(stdlib, e.Name()), mode: 0o644})
		}
	}
	for _, sub := range []string{"encodings", "collections", "re", "importlib", "lib-dynload"} {
		err := filepath.WalkDir(filepath.Join(stdlib, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.Contains(p, "__pycache__") {
				return err
			}
			files = append(files, imageFile{path: strings.TrimPrefix(p, "/"), src: p, mode: 0o644})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("python's standard library: %w", err)
		}
	}
	return files, nil
}

// goBuild compiles a static binary of pkg into dir.
func goBuild(ctx context.Context, root, dir, pkg, out string) (string, error) {
	path := filepath.Join(dir, out)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", path, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (static, for an image): %w\n%s", pkg, err, out)
	}
	return path, nil
}

// busyboxFiles are Debian's static busybox and a symlink for each applet.
func busyboxFiles() ([]imageFile, error) {
	src := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isExecutable(p) {
			src = p
			break
		}
	}
	if src == "" {
		return nil, fmt.Errorf("busybox not found: apt-get install busybox-static")
	}
	out, err := exec.Command(src, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full (is it busybox-static?): %w", src, err)
	}
	files := []imageFile{{path: "bin/busybox", src: src, mode: 0o755}}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		files = append(files, imageFile{path: applet, link: "/bin/busybox"})
	}
	return files, nil
}

// writeImage writes spec as a tarball unless one with the same content hash exists.
func writeImage(spec *imageSpec, outDir string) (BuiltImage, error) {
	b := BuiltImage{Name: spec.name, Ref: spec.ref, Tarball: filepath.Join(outDir, spec.name+".tar")}
	sort.Slice(spec.files, func(i, j int) bool { return spec.files[i].path < spec.files[j].path })
	hash, err := spec.contentHash()
	if err != nil {
		return b, err
	}
	hashFile := b.Tarball + ".sha256"
	if old, err := os.ReadFile(hashFile); err == nil && strings.TrimSpace(string(old)) == hash {
		if _, err := os.Stat(b.Tarball); err == nil {
			return b, nil
		}
	}
	// The layer goes through a file: the torch image's is 545 MiB.
	layerPath := b.Tarball + ".layer"
	defer os.Remove(layerPath)
	if err := spec.writeLayer(layerPath); err != nil {
		return b, err
	}
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return b, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return b, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return b, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = v1.Config{
		Entrypoint: spec.entrypoint,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
		Labels:     map[string]string{"eddy.io/content-hash": hash},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return b, err
	}
	ref, err := name.ParseReference(spec.ref)
	if err != nil {
		return b, err
	}
	tmp := b.Tarball + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return b, err
	}
	if err := os.Rename(tmp, b.Tarball); err != nil {
		return b, err
	}
	b.Rebuilt = true
	return b, os.WriteFile(hashFile, []byte(hash+"\n"), 0o644)
}

// contentHash hashes everything that ends up in the image.
func (s *imageSpec) contentHash() (string, error) {
	h := sha256.New()
	meta, _ := json.Marshal(struct {
		Format, Ref string
		Entrypoint  []string
	}{imageFormat, s.ref, s.entrypoint})
	h.Write(meta)
	for _, f := range s.files {
		fmt.Fprintf(h, "\n%s %o %s %t ", f.path, f.mode, f.link, f.dir)
		if f.src != "" {
			fh, err := os.Open(f.src)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeLayer writes the files to path as one reproducible tar (fixed times
// and owners), with parent directories created as needed.
func (s *imageSpec) writeLayer(path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	if err := s.layer(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return out.Close()
}

// layer writes the files to w as a tar.
func (s *imageSpec) layer(w io.Writer) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	var mkdirs func(string) error
	mkdirs = func(d string) error {
		if d == "." || d == "" || dirs[d] {
			return nil
		}
		if err := mkdirs(filepath.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch})
	}
	for _, f := range s.files {
		if err := mkdirs(filepath.Dir(f.path)); err != nil {
			return err
		}
		switch {
		case f.dir:
			if dirs[f.path] {
				continue
			}
			dirs[f.path] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: f.path + "/", Mode: f.mode, ModTime: epoch}); err != nil {
				return err
			}
		case f.link != "":
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: f.path, Linkname: f.link, Mode: 0o777, ModTime: epoch}); err != nil {
				return err
			}
		default:
			if err := copyInto(tw, f, epoch); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// copyInto writes the regular file f into tw.
func copyInto(tw *tar.Writer, f imageFile, mtime time.Time) error {
	in, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: fi.Size(), ModTime: mtime}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, in); err != nil {
		return fmt.Errorf("%s: %w", f.src, err)
	}
	return nil
}
