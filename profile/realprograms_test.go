package profile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Programs nobody here wrote (NumPy, SQLite, gzip), each checked for its
// class and for its bytes against a count eddy did not make.

// memmapScript reads a NumPy memmap at random 4 KiB slices or front to back,
// then prints the bytes its mapping of the file has resident
// (/proc/self/smaps Rss): the kernel's own count of what it faulted in.
const memmapScript = `
import sys, random, numpy as np
path, mode = sys.argv[1], sys.argv[2]
m = np.memmap(path, dtype=np.uint8, mode='r')
s = 0
if mode == 'random':
    rng = random.Random(7)
    for _ in range(int(sys.argv[3])):
        p = rng.randrange(len(m) // 4096)
        s += int(m[p*4096:(p+1)*4096].sum())
else:
    for i in range(0, len(m), 1 << 20):
        s += int(m[i:i + (1 << 20)].sum())
rss, cur = 0, False
for line in open('/proc/self/smaps'):
    f = line.split()
    if f and '-' in f[0] and not f[0].endswith(':'):
        cur = len(f) >= 6 and f[-1] == path
    elif cur and line.startswith('Rss:'):
        rss += int(f[1]) * 1024
print(rss)
`

func requireNumPy(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import numpy").CombinedOutput(); err != nil {
		t.Skipf("NumPy is not importable by /usr/bin/python3 (hack/install-deps.sh installs python3-numpy): %v: %s", err, out)
	}
}

// profileMemmap profiles the memmap script and returns the report and the
// mapping's resident bytes as the script counted them.
func profileMemmap(t *testing.T, path string, args ...string) (*Report, int64) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "memmap.py")
	require.NoError(t, os.WriteFile(script, []byte(memmapScript), 0o644))
	var out bytes.Buffer
	rep := profileOf(t, Options{Stdout: &out, Stderr: os.Stderr}, append([]string{"/usr/bin/python3", script, path}, args...)...)
	rss, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	require.NoError(t, err, "script output %q", out.String())
	return rep, rss
}

func TestNumPyMemmapRandomSlices(t *testing.T) {
	requireKernel(t)
	requireNumPy(t)
	path := bigFile(t, 48<<20)
	rep, rss := profileMemmap(t, path, "random", "300")
	assertClass(t, rep, v1.ClassRandomReads, 0.4)
	t.Logf("bytes read %.0f, mapped share %.3f, mapping resident %d", rep.Features.BytesRead, rep.Features.MmapShare, rss)
	assert.InEpsilon(t, float64(rss), rep.Features.BytesRead, 0.05, "bytes read vs the mapping's resident bytes")
	assert.Greater(t, rep.Features.MmapShare, 0.95, "the data is read through the mapping")
	require.NotEmpty(t, rep.TopFiles)
	assert.Equal(t, path, rep.TopFiles[0].Path)
}

func TestNumPyMemmapSequentialPass(t *testing.T) {
	requireKernel(t)
	requireNumPy(t)
	const size = 32 << 20
	path := bigFile(t, size)
	rep, rss := profileMemmap(t, path, "seq")
	assertClass(t, rep, v1.ClassSequentialScan, 0.4)
	t.Logf("bytes read %.0f, mapped share %.3f, mapping resident %d", rep.Features.BytesRead, rep.Features.MmapShare, rss)
	assert.InEpsilon(t, size, rep.Features.BytesRead, 0.05, "bytes read vs the file's size")
	assert.InEpsilon(t, float64(rss), rep.Features.BytesRead, 0.05, "bytes read vs the mapping's resident bytes")
}

func TestGzipDecompressesALargeFile(t *testing.T) {
	requireKernel(t)
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Skip("gzip not installed (hack/install-deps.sh)")
	}
	dir := dataset(t, 1, 24<<20)
	src := filepath.Join(dir, "00000.bin")
	require.NoError(t, exec.Command("gzip", "-1", src).Run())
	gz := src + ".gz"
	dropCache(t, dir)
	st, err := os.Stat(gz)
	require.NoError(t, err)
	rep := profileOf(t, Options{Stdout: io.Discard, Stderr: os.Stderr}, "gzip", "-dc", gz)
	assertClass(t, rep, v1.ClassSequentialScan, 0.4)
	assert.InEpsilon(t, float64(st.Size()), rep.Features.BytesRead, 0.05, "bytes read vs the .gz file's size")
}

// sqliteDB makes a database of rows 1000-byte blobs (about 1.3 KiB a row on
// disk) with the sqlite3 shell, and drops it from the page cache.
func sqliteDB(t *testing.T, rows int) string {
	t.Helper()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 not installed (hack/install-deps.sh)")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "data.db")
	sql := "create table t(id integer primary key, v blob);" +
		"with recursive n(i) as (select 1 union all select i+1 from n where i < " + strconv.Itoa(rows) + ") " +
		"insert into t select i, randomblob(1000) from n;"
	out, err := exec.Command("sqlite3", db, sql).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dropCache(t, dir)
	return db
}

func TestSQLitePointLookups(t *testing.T) {
	requireKernel(t)
	db := sqliteDB(t, 30000)
	var sql strings.Builder
	x := uint64(12345)
	for range 1500 {
		x = x*6364136223846793005 + 1442695040888963407
		sql.WriteString("select length(v) from t where id = " + strconv.FormatUint(x>>33%30000+1, 10) + ";\n")
	}
	script := filepath.Join(t.TempDir(), "lookups.sql")
	require.NoError(t, os.WriteFile(script, []byte(sql.String()), 0o644))
	rep := profileOf(t, Options{Stdout: io.Discard, Stderr: os.Stderr}, "sqlite3", db, ".read "+script)
	// Few bytes (about 6 MiB) make little evidence, hence a low confidence.
	assertClass(t, rep, v1.ClassRandomReads, 0.2)
}

func TestSQLiteFullTableScan(t *testing.T) {
	requireKernel(t)
	db := sqliteDB(t, 30000)
	st, err := os.Stat(db)
	require.NoError(t, err)
	rep := profileOf(t, Options{Stdout: io.Discard, Stderr: os.Stderr}, "sqlite3", db, "select sum(length(v)) from t;")
	assertClass(t, rep, v1.ClassSequentialScan, 0.4)
	assert.InEpsilon(t, float64(st.Size()), rep.Features.BytesRead, 0.05, "bytes read vs the database's size")
}

// shuffledScript reads every file of a folder whole, in a new random order
// each of three epochs, after importing a good part of the standard library
// (whose sources and caches live under the interpreter's prefix).
const shuffledScript = `
import os, sys, random, json, decimal, argparse, email.parser, http.client, logging, csv, xml.dom.minidom
root = sys.argv[1]
names = sorted(os.listdir(root))
for epoch in range(3):
    random.shuffle(names)
    for n in names:
        with open(os.path.join(root, n), 'rb') as f:
            f.read()
`

// interpreterCopy installs a copy of Debian's Python under a prefix of its
// own, the way pyenv, conda or a copy under /opt lay it out: bin/python3 and
// lib/python3.X with the standard library's sources (no compiled caches, so
// the first run compiles them as a fresh install does).
func interpreterCopy(t *testing.T) string {
	t.Helper()
	real, err := filepath.EvalSymlinks("/usr/bin/python3")
	require.NoError(t, err)
	ver := filepath.Base(real) // python3.11
	stdlib := filepath.Join("/usr/lib", ver)
	if _, err := os.Stat(filepath.Join(stdlib, "os.py")); err != nil {
		t.Skipf("no standard library at %s", stdlib)
	}
	prefix := filepath.Join(t.TempDir(), "opt-python")
	require.NoError(t, os.MkdirAll(filepath.Join(prefix, "bin"), 0o755))
	out, err := exec.Command("cp", real, filepath.Join(prefix, "bin", "python3")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lib := filepath.Join(prefix, "lib", ver)
	out, err = exec.Command("sh", "-c", `mkdir -p "$2" && cd "$1" && tar --exclude=./test --exclude=./site-packages --exclude=./dist-packages --exclude=__pycache__ --exclude=./idlelib --exclude=./tkinter --exclude=./ensurepip --exclude=./lib2to3 --exclude=./pydoc_data -cf - . | tar -C "$2" -xf -`, "sh", stdlib, lib).CombinedOutput()
	require.NoError(t, err, "%s", out)
	py := filepath.Join(prefix, "bin", "python3")
	out, err = exec.Command(py, "-c", "import sys; print(sys.prefix)").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, prefix, strings.TrimSpace(string(out)), "the copy runs from its own prefix")
	return py
}

func TestShuffledReaderUnderItsOwnInterpreterPrefix(t *testing.T) {
	requireKernel(t)
	py := interpreterCopy(t)
	dir := dataset(t, 300, 32<<10)
	script := filepath.Join(t.TempDir(), "reader.py")
	require.NoError(t, os.WriteFile(script, []byte(shuffledScript), 0o644))
	rep := profileOf(t, Options{Stdout: io.Discard, Stderr: os.Stderr}, py, script, dir)
	assertClass(t, rep, v1.ClassShuffledEpochs, 0.5)
	assert.Equal(t, []string{filepath.Dir(filepath.Dir(py)) + "/"}, rep.ProgramPrefixes)
	assert.Positive(t, rep.ExcludedBy[ExcludeInterpreter], "the standard library's files are the program's")
	assert.Equal(t, 1, rep.ExcludedBy[ExcludeScript], "the script is the program's")
	assert.Equal(t, 300.0, rep.Features.Files)
	assert.InEpsilon(t, 3*300*(32<<10), rep.Features.BytesRead, 0.05, "three epochs of the dataset")
}

func TestPyTorchDataLoaderWithoutNamingTheData(t *testing.T) {
	requireKernel(t)
	if out, err := exec.Command("/usr/bin/python3", "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("PyTorch is not importable by /usr/bin/python3 (hack/install-deps.sh installs python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
	dir := dataset(t, 300, 32<<10)
	script := filepath.Join(t.TempDir(), "train.py")
	require.NoError(t, os.WriteFile(script, []byte(dataLoaderScript), 0o644))
	rep := profileOf(t, Options{Stdout: io.Discard, Stderr: os.Stderr}, "/usr/bin/python3", script, dir)
	assertClass(t, rep, v1.ClassShuffledEpochs, 0.5)
	assert.Equal(t, 300.0, rep.Features.Files, "only the dataset's files are data")
	assert.InEpsilon(t, 3*300*(32<<10), rep.Features.BytesRead, 0.05, "three epochs of the dataset")
}

// mixedScript reads two datasets in one run, in different ways: a small
// settings file once at start; then, in each of the epochs, every file of
// a folder whole in a new random order, and after each file one random
// 4 KiB slice of a NumPy memmap. It prints the bytes its mapping of the
// memmap has resident, as memmapScript does.
const mixedScript = `
import os, sys, random, numpy as np
settings, images, features, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(settings) as f:
    f.read()
m = np.memmap(features, dtype=np.uint8, mode='r')
pages = len(m) // 4096
rng = random.Random(11)
names = sorted(os.listdir(images))
s = 0
for epoch in range(epochs):
    rng.shuffle(names)
    for n in names:
        with open(os.path.join(images, n), 'rb') as f:
            s += len(f.read())
        p = rng.randrange(pages)
        s += int(m[p*4096:(p+1)*4096].sum())
rss, cur = 0, False
for line in open('/proc/self/smaps'):
    f = line.split()
    if f and '-' in f[0] and not f[0].endswith(':'):
        cur = len(f) >= 6 and f[-1] == features
    elif cur and line.startswith('Rss:'):
        rss += int(f[1]) * 1024
print(rss)
`

// mixedRun lays out base/X/images (300 files of 32 KiB), base/Y/features
// (one 64 MiB memmap) and base/settings.json under one directory, profiles
// mixedScript over three epochs, and returns the report, the two dataset
// directories and the memmap's resident bytes as the script counted them.
func mixedRun(t *testing.T, opt func(images, features string) Options) (rep *Report, images, features string, rss int64) {
	t.Helper()
	base := t.TempDir()
	images, features = filepath.Join(base, "X", "images"), filepath.Join(base, "Y", "features")
	require.NoError(t, os.MkdirAll(filepath.Dir(images), 0o755))
	require.NoError(t, os.MkdirAll(features, 0o755))
	require.NoError(t, os.Rename(dataset(t, 300, 32<<10), images))
	big := bigFile(t, 64<<20)
	require.NoError(t, os.Rename(big, filepath.Join(features, "big.npy")))
	settings := filepath.Join(base, "settings.json")
	require.NoError(t, os.WriteFile(settings, []byte(`{"lr": 0.1, "batch": 32}`), 0o644))
	script := filepath.Join(t.TempDir(), "mixed.py")
	require.NoError(t, os.WriteFile(script, []byte(mixedScript), 0o644))
	dropCache(t, base)

	var out bytes.Buffer
	o := opt(images, features)
	o.Stdout, o.Stderr = &out, os.Stderr
	rep = profileOf(t, o, "/usr/bin/python3", script, settings, images, filepath.Join(features, "big.npy"), "3")
	rss, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	require.NoError(t, err, "script output %q", out.String())
	return rep, images, features, rss
}

// TestTwoDatasetsReadDifferentlyAreTwoRoots: one command reads a folder in
// shuffled epochs and a memmap at random; the whole command's data taken as
// one is a blend no class fits well, each root on its own is clear. The
// settings file read once at start lies under neither root and stays out.
func TestTwoDatasetsReadDifferentlyAreTwoRoots(t *testing.T) {
	requireKernel(t)
	requireNumPy(t)
	rep, images, features, rss := mixedRun(t, func(string, string) Options { return Options{} })
	t.Logf("the whole command taken as one: %s (%.2f): %s", rep.Class, rep.Confidence, rep.Decision.Reason)
	require.Equal(t, 2, len(rep.Roots), "roots: %s", rootPaths(rep))
	byPath := map[string]RootReport{}
	for _, r := range rep.Roots {
		byPath[r.Path] = r
		assert.False(t, r.Named)
	}
	img, ok := byPath[images]
	require.True(t, ok, "no root at %s: %s", images, rootPaths(rep))
	feat, ok := byPath[features]
	require.True(t, ok, "no root at %s: %s", features, rootPaths(rep))

	t.Logf("images: %d bytes read, %d by the files' sizes; features: %d bytes read, %d resident in the mapping",
		img.BytesRead, 3*300*(32<<10), feat.BytesRead, rss)
	assert.Equal(t, v1.ClassShuffledEpochs, img.Class, img.Decision.Reason)
	assert.GreaterOrEqual(t, img.Confidence, 0.5, img.Decision.Reason)
	assert.Equal(t, 300, img.Files, "the images, and not the settings file")
	assert.InEpsilon(t, 3*300*(32<<10), img.BytesRead, 0.05, "three epochs of the images")
	assert.InEpsilon(t, float64(img.BytesRead), img.Features.BytesRead, 0.01, "the root's features count its bytes")

	assert.Equal(t, v1.ClassRandomReads, feat.Class, feat.Decision.Reason)
	assert.GreaterOrEqual(t, feat.Confidence, 0.5, feat.Decision.Reason)
	assert.Equal(t, 1, feat.Files)
	assert.InEpsilon(t, float64(rss), feat.BytesRead, 0.05, "bytes read vs the mapping's resident bytes")
	assert.Equal(t, v1.StrategyWholeDataset, recommendation(t, &Report{Analysis: img.Analysis}, v1.ActionPrefetch).Prefetch.Strategy)
	for _, r := range feat.Recommendations {
		if r.Action == v1.ActionPrefetch {
			assert.Equal(t, v1.StrategyRanges, r.Prefetch.Strategy, "no whole-file prefetch for random reads: only the ranges read")
		}
	}
	// With the two roots above holding 300 and 1 files, the settings file
	// is under neither.
	assert.GreaterOrEqual(t, rep.ExcludedBy[ExcludeOutsideRoots], 1, "the settings file: %v", rep.ExcludedBy)
	assert.InEpsilon(t, float64(img.BytesRead+feat.BytesRead), rep.Features.BytesRead, 0.01, "the whole command's data is its roots'")
}

// TestDataNamesTheOnlyRoot: --data naming the images folder gives that
// root alone; the memmap is left out as outside --data.
func TestDataNamesTheOnlyRoot(t *testing.T) {
	requireKernel(t)
	requireNumPy(t)
	rep, images, _, _ := mixedRun(t, func(images, _ string) Options { return Options{Data: []string{images}} })
	require.Equal(t, 1, len(rep.Roots), "roots: %s", rootPaths(rep))
	r := rep.Roots[0]
	assert.Equal(t, images, r.Path)
	assert.True(t, r.Named)
	assert.Equal(t, 300, r.Files)
	assert.Equal(t, v1.ClassShuffledEpochs, r.Class, r.Decision.Reason)
	assert.Equal(t, r.Class, rep.Class, "one root: the whole command's view is the root's")
	assert.Positive(t, rep.ExcludedBy[ExcludeNotData], "the memmap and the settings file are outside --data")
	assert.Zero(t, rep.ExcludedBy[ExcludeOutsideRoots])
}

// rootPaths lists the report's roots with their files and classes.
func rootPaths(rep *Report) string {
	var b strings.Builder
	for _, r := range rep.Roots {
		fmt.Fprintf(&b, "%s (%d files, %s); ", r.Path, r.Files, r.Class)
	}
	return b.String()
}
