package node

import (
	"archive/tar"
	"context"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuildImages builds every image, checks that each tarball is an image
// whose entrypoint is in its layer, and that a second build with unchanged
// inputs rewrites nothing.
func TestBuildImages(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles eddy statically; skipped with -short")
	}
	out := t.TempDir()
	ctx := context.Background()
	built, err := BuildImages(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != len(ImageNames) {
		t.Fatalf("built %d images, want %d", len(built), len(ImageNames))
	}
	for _, b := range built {
		if !b.Rebuilt {
			t.Errorf("%s: first build into an empty folder reported unchanged", b.Name)
		}
		tag, err := name.NewTag(b.Ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(b.Tarball, &tag)
		if err != nil {
			t.Fatalf("%s: %s is not an image tarball with tag %s: %v", b.Name, b.Tarball, b.Ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if len(cf.Config.Entrypoint) == 0 || cf.OS != "linux" {
			t.Fatalf("%s: config %+v lacks an entrypoint or OS", b.Name, cf.Config)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: want one layer, got %d (%v)", b.Name, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if "/"+h.Name == cf.Config.Entrypoint[0] && h.Typeflag == tar.TypeReg && h.Mode&0o111 != 0 {
				found = true
			}
		}
		rc.Close()
		if !found {
			t.Errorf("%s: entrypoint %s is not an executable file in the layer", b.Name, cf.Config.Entrypoint[0])
		}
	}
	again, err := BuildImages(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range again {
		if b.Rebuilt {
			t.Errorf("%s: rebuilt although nothing changed", b.Name)
		}
	}
}
