// Package workload reads a dataset folder with a known access pattern and
// reports what it read. It is the library behind eddy-workload, the program
// in the workload image that real-node tests run as pods; tests also call it
// on the host to know what a pod should report.
package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Pattern is an access pattern.
type Pattern string

// The access patterns eddy's classifier tells apart.
const (
	// Sequential reads every file front to back in path order, 1 MiB at a time.
	Sequential Pattern = "sequential"
	// Random4K reads 4 KiB blocks at random offsets of every file.
	Random4K Pattern = "random4k"
	// SmallFilesShuffled reads whole files in a new random order each epoch.
	SmallFilesShuffled Pattern = "smallfiles"
	// HotSet reads, each epoch, the hot tenth of the files (the first in
	// path order) whole, then its share of the other files: over the run
	// every other file is read once, in a random order. So the hot tenth is
	// a tenth of the bytes the job reads distinctly, and takes most of its
	// reads once there are more than about 15 epochs (eddy's analyzer sees
	// only what was read: a hot set is hot against that).
	HotSet Pattern = "hotset"
)

// Options tune a read.
type Options struct {
	// Epochs is the number of passes; zero means one.
	Epochs int
	// Seed makes random orders and offsets reproducible.
	Seed uint64
	// RandomOpsPerFile is the number of 4 KiB reads per file for Random4K;
	// zero means one per 4 KiB of the file.
	RandomOpsPerFile int
	// Compute is a pause after each whole file (or each 4 KiB random
	// read), standing in for the work a trainer does on a sample.
	Compute time.Duration
}

// Report says what a read did.
type Report struct {
	Pattern Pattern `json:"pattern"`
	Dir     string  `json:"dir"`
	Files   int     `json:"files"`
	Bytes   int64   `json:"bytes"`
	Reads   int64   `json:"reads"`
	Epochs  int     `json:"epochs"`
	Seconds float64 `json:"seconds"`
	// End is when the read finished, in Unix seconds: benchmarks on the
	// same host measure warm-up and start-up from it.
	End float64 `json:"end"`
	// Began is when the program started, in Unix seconds (0: not known):
	// End − Seconds − Began is its own start-up before the loop (Python
	// importing torch, listing the dataset), and Began minus when the pod
	// was asked for is what the cluster took to run it.
	Began float64 `json:"began,omitempty"`
	// Digest covers every file's path and content when whole files were read
	// (Sequential, SmallFilesShuffled), independent of order; empty for
	// Random4K and HotSet, which read only some of them.
	Digest string `json:"digest,omitempty"`
}

// Read reads the regular files under dir with the pattern.
func Read(dir string, p Pattern, opts Options) (Report, error) {
	r := Report{Pattern: p, Dir: dir, Epochs: max(opts.Epochs, 1)}
	files, err := listFiles(dir)
	if err != nil {
		return r, err
	}
	if len(files) == 0 {
		return r, fmt.Errorf("no files under %s: is the dataset volume mounted and populated?", dir)
	}
	r.Files = len(files)
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	start := time.Now()
	hashes := map[string]string{}
	buf := make([]byte, 1<<20)
	hot := max(len(files)/10, 1)
	var cold []string
	if p == HotSet {
		cold = append(cold, files[hot:]...)
		rng.Shuffle(len(cold), func(i, j int) { cold[i], cold[j] = cold[j], cold[i] })
	}
	for e := 0; e < r.Epochs; e++ {
		order := append([]string(nil), files...)
		switch p {
		case Sequential:
		case SmallFilesShuffled:
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		case HotSet:
			// Epoch e reads cold[e·n/E : (e+1)·n/E].
			n := len(cold)
			order = append(order[:hot:hot], cold[e*n/r.Epochs:(e+1)*n/r.Epochs]...)
		case Random4K:
			if err := readRandom(dir, order, rng, opts, &r); err != nil {
				return r, err
			}
			continue
		default:
			return r, fmt.Errorf("unknown pattern %q: use %s, %s, %s or %s", p, Sequential, Random4K, SmallFilesShuffled, HotSet)
		}
		for _, f := range order {
			sum, n, reads, err := readWhole(filepath.Join(dir, f), buf)
			if err != nil {
				return r, err
			}
			hashes[f] = sum
			r.Bytes += n
			r.Reads += reads
			if opts.Compute > 0 {
				time.Sleep(opts.Compute)
			}
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.End = float64(time.Now().UnixNano()) / 1e9
	if p == Sequential || p == SmallFilesShuffled {
		r.Digest = digest(hashes)
	}
	return r, nil
}

// DigestDir computes, on the host, the Digest a whole-file read of dir reports.
func DigestDir(dir string) (string, error) {
	r, err := Read(dir, Sequential, Options{})
	return r.Digest, err
}

func listFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	sort.Strings(files)
	return files, nil
}

func readWhole(path string, buf []byte) (sum string, n, reads int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, 0, err
	}
	defer f.Close()
	h := sha256.New()
	for {
		m, err := f.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			reads++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", n, reads, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, reads, nil
}

func readRandom(dir string, files []string, rng *rand.Rand, opts Options, r *Report) error {
	buf := make([]byte, 4096)
	for _, name := range files {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() < int64(len(buf)) {
			f.Close()
			continue
		}
		blocks := fi.Size() / int64(len(buf))
		ops := opts.RandomOpsPerFile
		if ops == 0 {
			ops = int(blocks)
		}
		for i := 0; i < ops; i++ {
			n, err := f.ReadAt(buf, rng.Int64N(blocks)*int64(len(buf)))
			if err != nil && err != io.EOF {
				f.Close()
				return fmt.Errorf("read %s: %w", name, err)
			}
			r.Bytes += int64(n)
			r.Reads++
			if opts.Compute > 0 {
				time.Sleep(opts.Compute)
			}
		}
		f.Close()
	}
	return nil
}

func digest(hashes map[string]string) string {
	names := make([]string, 0, len(hashes))
	for n := range hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", n, hashes[n])
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// WriteSample fills dir with a reproducible dataset: files small files of
// smallSize bytes under small/ and one large file of largeSize bytes.
func WriteSample(dir string, files int, smallSize, largeSize int64) error {
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(path string, size int64) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		for size > 0 {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			n := min(size, int64(len(buf)))
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return err
			}
			size -= n
		}
		return f.Close()
	}
	for i := 0; i < files; i++ {
		if err := write(filepath.Join(dir, "small", fmt.Sprintf("part-%05d.bin", i)), smallSize); err != nil {
			return err
		}
	}
	if largeSize > 0 {
		return write(filepath.Join(dir, "large.bin"), largeSize)
	}
	return nil
}

// Warm reads every file under dir whole, parallel files at a time: the
// warm-up script a user writes by hand to fill a cache before a job.
func Warm(dir string, parallel int) (Report, error) {
	r := Report{Pattern: "warm", Dir: dir, Epochs: 1}
	files, err := listFiles(dir)
	if err != nil {
		return r, err
	}
	r.Files = len(files)
	start := time.Now()
	work := make(chan string)
	type result struct {
		n, reads int64
		err      error
	}
	results := make(chan result)
	for i := 0; i < max(parallel, 1); i++ {
		go func() {
			buf := make([]byte, 1<<20)
			for f := range work {
				_, n, reads, err := readWhole(filepath.Join(dir, f), buf)
				results <- result{n, reads, err}
			}
		}()
	}
	go func() {
		for _, f := range files {
			work <- f
		}
		close(work)
	}()
	var firstErr error
	for range files {
		res := <-results
		r.Bytes += res.n
		r.Reads += res.reads
		if res.err != nil && firstErr == nil {
			firstErr = res.err
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return r, firstErr
}
