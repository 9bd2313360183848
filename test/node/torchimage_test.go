package node

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/eddy-autotune/eddy/test/node/workload"
)

// TestTorchImage builds the torch image, unpacks its layer and runs the
// training loop in it under chroot, with DataLoader workers (a tmpfs on
// /dev/shm, /proc and the usual devices, as a pod has): the image holds everything `import torch` and
// the loop need, and the loop reads what the Go workload reads. A second
// build with unchanged inputs rewrites nothing.
func TestTorchImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 545 MiB image; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("runs the image under chroot: needs root")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("PyTorch is not importable by /usr/bin/python3 (hack/install-deps.sh installs python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
	ctx := context.Background()
	out := t.TempDir()
	start := time.Now()
	built, err := BuildImages(ctx, out, TorchName)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(built[0].Tarball)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %.0fs: %.0f MiB compressed", built[0].Ref, time.Since(start).Seconds(), float64(fi.Size())/(1<<20))

	rootfs := filepath.Join(out, "rootfs")
	unpackImage(t, built[0].Tarball, built[0].Ref, rootfs)
	shm := filepath.Join(rootfs, "dev", "shm")
	if err := os.MkdirAll(shm, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", shm, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount a tmpfs on the image's /dev/shm: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(shm, 0) })
	proc := filepath.Join(rootfs, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Fatalf("mount /proc in the image: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(proc, syscall.MNT_DETACH) })
	// The character devices a container runtime gives every container.
	for dev, minor := range map[string]int{"null": 3, "zero": 5, "random": 8, "urandom": 9} {
		if err := syscall.Mknod(filepath.Join(rootfs, "dev", dev), syscall.S_IFCHR|0o666, 1<<8|minor); err != nil {
			t.Fatalf("mknod /dev/%s in the image: %v", dev, err)
		}
	}
	data := filepath.Join(rootfs, "data")
	if err := workload.WriteSample(data, 24, 50<<10, 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("chroot", rootfs, "/usr/bin/python3", TrainScript, "--dir", "/data", "--epochs", "2", "--compute", "0")
	cmd.Env = []string{"PATH=/usr/bin"}
	stdout, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("train.py in the image: %v\n%s", err, exit.Stderr)
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	var got workload.Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("last line is not a report: %v: %q", err, stdout)
	}
	want, err := workload.Read(data, workload.SmallFilesShuffled, workload.Options{Epochs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got.Files != want.Files || got.Bytes != want.Bytes || got.Digest != want.Digest || got.Epochs != 2 {
		t.Errorf("the loop in the image read %d files, %d bytes, digest %s over %d epochs; the Go workload %d, %d, %s",
			got.Files, got.Bytes, got.Digest, got.Epochs, want.Files, want.Bytes, want.Digest)
	}

	again, err := BuildImages(ctx, out, TorchName)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Rebuilt {
		t.Errorf("%s rebuilt although nothing changed", again[0].Name)
	}
}

// unpackImage extracts the single layer of the image tarball into dir.
func unpackImage(t *testing.T, path, ref, dir string) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode)&os.ModePerm)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(h.Mode)&os.ModePerm); err == nil {
				_, err = io.Copy(f, tr)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		}
		if err != nil {
			t.Fatalf("unpack %s: %v", h.Name, err)
		}
	}
}
