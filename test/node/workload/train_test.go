package workload

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestTrainLoop runs train.py, the PyTorch loop of the ShuffledEpochs
// benchmark, with Debian's python3 on a sample folder: its report matches
// the Go workload's for the same files (count, bytes, digest), every epoch
// reads every file once in a new order, and a second run reads the same
// orders (the seeded generator: eddy's observed run and its measured run see
// the same job).
func TestTrainLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PyTorch three times; skipped with -short")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("PyTorch is not importable by /usr/bin/python3 (hack/install-deps.sh installs python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
	dir := t.TempDir()
	if err := WriteSample(dir, 30, 20<<10, 100<<10); err != nil {
		t.Fatal(err)
	}
	want, err := Read(dir, SmallFilesShuffled, Options{Epochs: 3})
	if err != nil {
		t.Fatal(err)
	}
	run := func() (Report, [][]string) {
		cmd := exec.Command("/usr/bin/python3", "train.py", "--dir", dir, "--epochs", "3", "--batch-size", "4", "--compute", "0", "--log-order")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("train.py: %v\n%s", err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var r Report
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			t.Fatalf("last line is not a report: %v: %q", err, out)
		}
		var orders [][]string
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			var e struct{ Files []string }
			if json.Unmarshal([]byte(l), &e) == nil && e.Files != nil {
				orders = append(orders, e.Files)
			}
		}
		return r, orders
	}
	got, orders := run()
	if got.Files != want.Files || got.Bytes != want.Bytes || got.Digest != want.Digest || got.Epochs != 3 || got.Reads != 3*int64(want.Files) {
		t.Errorf("train.py reported %+v; the Go workload, for the same files: %+v", got, want)
	}
	if len(orders) != 3 {
		t.Fatalf("want 3 epoch orders on stderr, got %d", len(orders))
	}
	for e, o := range orders {
		sorted := slices.Sorted(slices.Values(o))
		if len(sorted) != want.Files || len(slices.Compact(sorted)) != want.Files {
			t.Errorf("epoch %d read %d files (%d distinct), want each of %d once", e, len(o), len(slices.Compact(sorted)), want.Files)
		}
	}
	if slices.Equal(orders[0], orders[1]) || slices.Equal(orders[1], orders[2]) {
		t.Error("two epochs read the files in the same order: the loader does not shuffle")
	}
	if _, again := run(); !slices.Equal(slices.Concat(again...), slices.Concat(orders...)) {
		t.Error("a second run read other orders: the DataLoader's generator is not seeded")
	}
}
