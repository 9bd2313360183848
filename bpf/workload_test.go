package bpf

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel tests need real processes in their own cgroups. They re-execute
// the test binary with workloadEnv naming one of these access patterns, so
// the numbers each pattern produces are exact and no external tool is needed.
const (
	workloadEnv = "EDDY_BPF_TEST_WORKLOAD"
	argsEnv     = "EDDY_BPF_TEST_ARGS"
)

var workloads = map[string]func(args []string) error{
	// seqread FILE BUFSIZE: read(2) front to back until EOF.
	"seqread": func(a []string) error {
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, atoi(a[1]))
		for {
			n, err := f.Read(buf)
			if n == 0 || err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	},
	// interleave FILE_A FILE_B BUFSIZE: read(2) the two files front to back
	// in turns, one buffer from each, until both reach EOF.
	"interleave": func(a []string) error {
		var files []*os.File
		for _, p := range a[:2] {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			files = append(files, f)
		}
		buf := make([]byte, atoi(a[2]))
		done := make([]bool, len(files))
		for !done[0] || !done[1] {
			for i, f := range files {
				if done[i] {
					continue
				}
				n, err := f.Read(buf)
				if n == 0 || err == io.EOF {
					done[i] = true
				} else if err != nil {
					return err
				}
			}
		}
		return nil
	},
	// hopread FILE BUFSIZE: read(2) front to back from two OS threads in
	// turns, through one open file, as a thread pool serves one reader.
	"hopread": func(a []string) error {
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer f.Close()
		turns := []chan bool{make(chan bool, 1), make(chan bool, 1)}
		errs := make(chan error, 2)
		for i := range turns {
			go func(mine, next chan bool) {
				runtime.LockOSThread()
				buf := make([]byte, atoi(a[1]))
				for more := range mine {
					if more {
						n, err := f.Read(buf)
						if err != nil && err != io.EOF {
							errs <- err
							return
						}
						more = n > 0
					}
					next <- more
					if !more {
						break
					}
				}
				errs <- nil
			}(turns[i], turns[1-i])
		}
		turns[0] <- true
		for range turns {
			if err := <-errs; err != nil {
				return err
			}
		}
		return nil
	},
	// randpread FILE COUNT SEED: 4 KiB pread64 at random 4 KiB-aligned offsets.
	"randpread": func(a []string) error {
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		pages := st.Size() / 4096
		rng := rand.New(rand.NewSource(int64(atoi(a[2]))))
		buf := make([]byte, 4096)
		for i := 0; i < atoi(a[1]); i++ {
			off := rng.Int63n(pages) * 4096
			if _, err := unix.Pread(int(f.Fd()), buf, off); err != nil {
				return err
			}
		}
		return nil
	},
	// preads FILE OFF:LEN...: pread64 of LEN bytes at OFF, in the order given.
	"preads": func(a []string) error {
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer f.Close()
		for _, r := range a[1:] {
			off, n, ok := strings.Cut(r, ":")
			if !ok {
				return fmt.Errorf("read %q: want OFF:LEN", r)
			}
			buf := make([]byte, atoi(n))
			if _, err := unix.Pread(int(f.Fd()), buf, int64(atoi(off))); err != nil {
				return err
			}
		}
		return nil
	},
	// smallfiles DIR SEED: every file of DIR in shuffled order, each read
	// whole with one read(2) plus the read that returns EOF.
	"smallfiles": func(a []string) error {
		entries, err := os.ReadDir(a[0])
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewSource(int64(atoi(a[1]))))
		rng.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
		buf := make([]byte, 1<<20)
		for _, e := range entries {
			fd, err := unix.Open(filepath.Join(a[0], e.Name()), unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			for {
				n, err := unix.Read(fd, buf)
				if err != nil {
					unix.Close(fd)
					return err
				}
				if n == 0 {
					break
				}
			}
			unix.Close(fd)
		}
		return nil
	},
	// mmap FILE: map the file and touch every page.
	"mmap": func(a []string) error {
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		defer unix.Munmap(m)
		var sum byte
		for i := 0; i < len(m); i += 4096 {
			sum += m[i]
		}
		// Use the sum so the loads cannot be optimised away.
		_, err = fmt.Fprint(io.Discard, sum)
		return err
	},
	// direct FILE CHUNK: O_DIRECT read(2) of the whole file in CHUNK-byte
	// reads into a page-aligned buffer.
	"direct": func(a []string) error {
		fd, err := unix.Open(a[0], unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		chunk := atoi(a[1])
		buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		defer unix.Munmap(buf)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
		}
	},
	// write FILE BYTES CHUNK: create FILE and write BYTES in CHUNK-byte writes.
	"write": func(a []string) error {
		f, err := os.Create(a[0])
		if err != nil {
			return err
		}
		buf := make([]byte, atoi(a[2]))
		for left := atoi(a[1]); left > 0; left -= len(buf) {
			if left < len(buf) {
				buf = buf[:left]
			}
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
		}
		return f.Close()
	},
	// load: Load and print its error (the test runs it without capabilities).
	"load": func([]string) error {
		r, err := Load(Options{})
		if err == nil {
			r.Close()
			return fmt.Errorf("Load succeeded")
		}
		fmt.Println(err)
		return nil
	},
	// sendfile FILE: copy FILE to /dev/null with sendfile(2), which reads the
	// page cache without a read syscall.
	"sendfile": func(a []string) error {
		in, err := os.Open(a[0])
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer out.Close()
		for {
			n, err := unix.Sendfile(int(out.Fd()), int(in.Fd()), nil, 1<<20)
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
		}
	},
	// open PATH...: open and close each path (relative paths against the cwd).
	"open": func(a []string) error {
		for _, p := range a {
			fd, err := unix.Open(p, unix.O_RDONLY, 0)
			if err != nil {
				return fmt.Errorf("open %s: %w", p, err)
			}
			unix.Close(fd)
		}
		return nil
	},
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("bad workload argument %q", s))
	}
	return n
}

func TestMain(m *testing.M) {
	if name := os.Getenv(workloadEnv); name != "" {
		w, ok := workloads[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown workload %q\n", name)
			os.Exit(2)
		}
		var args []string
		if a := os.Getenv(argsEnv); a != "" {
			args = strings.Split(a, "\x1f")
		}
		if err := w(args); err != nil {
			fmt.Fprintf(os.Stderr, "workload %s: %v\n", name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
