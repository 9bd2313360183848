// Command readgen generates file access patterns for eddy's profile tests.
//
//	readgen scan DIR                      read every file whole, in name order
//	readgen epochs DIR N SLEEP shuffle|fixed   N epochs over every file whole
//	readgen random FILE N BS              N reads of BS bytes at random offsets
//	readgen hot DIR N HOT                 N whole-file reads, 90% of them of the first HOT files
//	readgen write DIR N SIZE              write N files of SIZE bytes
package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: readgen MODE ARGS..."))
	}
	mode, arg := os.Args[1], os.Args[2]
	num := func(i int) int64 {
		v, err := strconv.ParseInt(os.Args[i], 10, 64)
		if err != nil {
			fail(err)
		}
		return v
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	buf := make([]byte, 1<<20)
	switch mode {
	case "scan":
		for _, f := range files(arg) {
			readWhole(f, buf)
		}
	case "epochs":
		fs := files(arg)
		sleep, err := time.ParseDuration(os.Args[4])
		if err != nil {
			fail(err)
		}
		for range num(3) {
			if os.Args[5] == "shuffle" {
				rng.Shuffle(len(fs), func(a, b int) { fs[a], fs[b] = fs[b], fs[a] })
			}
			for _, f := range fs {
				readWhole(f, buf)
				time.Sleep(sleep)
			}
		}
	case "random":
		f, err := os.Open(arg)
		if err != nil {
			fail(err)
		}
		st, _ := f.Stat()
		bs := num(4)
		blocks := st.Size() / bs
		for range num(3) {
			if _, err := f.ReadAt(buf[:bs], (1+rng.Int64N(blocks-1))*bs); err != nil && err != io.EOF {
				fail(err)
			}
		}
	case "hot":
		fs := files(arg)
		hot := int(num(4))
		for range num(3) {
			if rng.Float64() < 0.9 {
				readWhole(fs[rng.IntN(hot)], buf)
			} else {
				readWhole(fs[hot+rng.IntN(len(fs)-hot)], buf)
			}
		}
	case "write":
		size := num(4)
		for i := range num(3) {
			data := make([]byte, size)
			if err := os.WriteFile(filepath.Join(arg, fmt.Sprintf("out-%04d", i)), data, 0o644); err != nil {
				fail(err)
			}
		}
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
}

func files(dir string) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		fail(err)
	}
	var fs []string
	for _, e := range es {
		if e.Type().IsRegular() {
			fs = append(fs, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(fs)
	return fs
}

func readWhole(path string, buf []byte) {
	f, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return
		}
		if err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "readgen:", err)
	os.Exit(2)
}
