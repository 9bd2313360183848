// Package profile runs one command under eddy's kernel recorder, with no
// cluster: the command gets a cgroup of its own, its file reads are drained
// into access windows every interval, and at exit the analyzer says what
// access pattern it saw, how sure it is, how much of the run was spent
// waiting on reads, and what eddy would do about it.
//
// Differences from the cluster path: there are no pods, so the whole command
// (every process it starts) is one reader and the read-wait share is time in
// read syscalls over the run's wall time, clamped to 1 when its processes
// read in parallel. There is no dataset either: every file the command reads
// (with read syscalls or through memory mappings) is data except the
// program's own files: system files (DefaultExcludes), files mapped
// executable, files only paged in without an open (its program and loader),
// files under its interpreter's prefix (programPrefixes) and an
// interpreter's script. The data is then grouped by dataset root (see
// RootShare for the rule; Options.Data names the roots instead) and each
// root is classified and advised on its own, beside the whole command's
// data taken as one. Files are identified by device and inode; paths are
// for display and for finding roots, resolved from the open events (a
// relative path whose process has gone stays relative).
package profile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/classify"
	"github.com/eddy-autotune/eddy/analyzer/features"
	"github.com/eddy-autotune/eddy/analyzer/history"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// DefaultInterval is how often the kernel maps are drained into a window.
const DefaultInterval = 100 * time.Millisecond

// profileHalfLife makes decay negligible within a run (a century), so that
// a profile's byte and op counts are the run's totals.
const profileHalfLife = 100 * 365 * 24 * time.Hour

// Options configure Run. The zero value profiles with defaults and passes
// the command no standard streams.
type Options struct {
	// Interval between drains; 0 means DefaultInterval.
	Interval time.Duration
	// Data, when set, names the dataset roots: each directory is a root
	// classified on its own, and files under none of them are left out.
	// Otherwise the program's own files are left out and the roots are
	// found (see RootShare).
	Data []string
	// Stdin, Stdout and Stderr are the command's standard streams.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Bounds for the advice (cache budget, bandwidth cap, ...).
	Bounds advice.Bounds
	// History configures the analyzer state; by default nothing decays
	// within a run and per-file state is exact up to 16384 files.
	History history.Config
}

// Report is what a profile found.
type Report struct {
	Command     []string  `json:"command"`
	ExitCode    int       `json:"exitCode"`
	Started     time.Time `json:"started"`
	WallSeconds float64   `json:"wallSeconds"`

	// Analysis is of the whole command's data (every root's files) taken
	// as one: the same as the root's when there is one root, a blend of
	// different patterns when there are several (see Roots).
	Analysis
	// Roots are the dataset roots, most bytes first, each classified and
	// advised on its own.
	Roots []RootReport `json:"roots"`

	// TopFiles are the files read most, for orientation.
	TopFiles []FileSummary `json:"topFiles,omitempty"`
	// FilesExcluded counts files left out as not data; ExcludedBy counts
	// them by reason (ExcludeSystem, ExcludeExecutable, ExcludeImage, ExcludeNoPath,
	// ExcludeInterpreter, ExcludeScript, ExcludeNotData, ExcludeOutsideRoots).
	FilesExcluded int            `json:"filesExcluded"`
	ExcludedBy    map[string]int `json:"excludedBy,omitempty"`
	// ProgramPrefixes are the installation prefixes of the command's
	// interpreter (a venv, conda environment, pyenv version, a copy under
	// /opt) whose files were left out as the program's own.
	ProgramPrefixes []string `json:"programPrefixes,omitempty"`
	// MissingHooks lists kernel hooks that could not be attached; the
	// counters they feed stay zero.
	MissingHooks []string `json:"missingHooks,omitempty"`
	// Dropped counts what the recorder lost.
	Dropped bpf.Drops `json:"dropped"`
	Windows int       `json:"windows"`
}

// Analysis is what eddy makes of a set of data files: the access pattern,
// how sure it is, the features behind it and the advice.
type Analysis struct {
	Class           v1.AccessClass          `json:"class"`
	Confidence      float64                 `json:"confidence"`
	Features        features.Features       `json:"features"`
	Decision        classify.Decision       `json:"decision"`
	Recommendations []advice.Recommendation `json:"recommendations"`
	Withheld        string                  `json:"withheld,omitempty"`
}

// RootReport is one dataset root: a directory and the data files under it
// (those of a deeper root excepted).
type RootReport struct {
	Path string `json:"path"`
	// Named is true when Options.Data named the root.
	Named bool `json:"named,omitempty"`
	Files int  `json:"files"`
	// BytesRead and BytesWritten are the kernel's counts over the root's
	// files (reads through mappings included).
	BytesRead    uint64 `json:"bytesRead"`
	BytesWritten uint64 `json:"bytesWritten"`
	Analysis
}

// FileSummary is one file's totals over the run.
type FileSummary struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	ReadBytes uint64 `json:"readBytes"`
	ReadOps   uint64 `json:"readOps"`
	Passes    uint64 `json:"passes"`

	writeBytes, seqSteps, randSteps uint64
}

// ExitError reports that the command ran and exited with a non-zero status;
// Run still returns the Report.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("command exited with status %d", e.Code) }

// ExitCode is the command's exit status (128+signal when it was killed).
func (e *ExitError) ExitCode() int { return e.Code }

// ErrNoCommand is returned when argv is empty.
var ErrNoCommand = errors.New("no command to profile: use eddy profile -- CMD [ARGS...]")

// Run profiles argv[0] with argv[1:]. It needs root (BPF and cgroup
// creation). The returned error is an *ExitError when only the command's
// exit status was non-zero; the Report is then complete.
func Run(ctx context.Context, argv []string, opt Options) (*Report, error) {
	if len(argv) == 0 {
		return nil, ErrNoCommand
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.History.HalfLife <= 0 {
		opt.History.HalfLife = profileHalfLife
	}
	// One command, one history: afford exact per-file state for typical
	// datasets rather than sampling.
	if opt.History.MaxFiles <= 0 {
		opt.History.MaxFiles = 1 << 14
	}
	if opt.History.MaxSampledChunks <= 0 {
		opt.History.MaxSampledChunks = 1 << 12
	}
	opt.Data = slices.Clone(opt.Data)
	for i, d := range opt.Data {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("data directory %q: %w", d, err)
		}
		opt.Data[i] = abs
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("cannot start %q: %w", argv[0], err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("eddy profile needs root: it loads eBPF programs and creates a cgroup (run it with sudo)")
	}
	rec, err := bpf.Load(bpf.Options{})
	if err != nil {
		return nil, fmt.Errorf("this machine cannot record file access with eBPF: %w", err)
	}
	defer func() { _ = rec.Close() }()

	group, err := cgroupv2.Create("eddy-profile", "run-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err != nil {
		return nil, fmt.Errorf("create a cgroup for the command: %w", err)
	}
	defer func() {
		rmCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = group.RemoveContext(rmCtx)
	}()
	cgid, err := group.ID()
	if err != nil {
		return nil, err
	}
	if err := rec.Allow(cgid); err != nil {
		return nil, err
	}
	// Closing the recorder drops the allow-list anyway; this just stops
	// counting before the group is removed.
	defer func() { _ = rec.Disallow(cgid) }()

	p := &profiler{
		rec:       rec,
		opt:       opt,
		workload:  &accessv1.WorkloadRef{Kind: "Command", Name: filepath.Base(argv[0])},
		hist:      history.New(opt.History),
		paths:     map[bpf.FileKey]string{},
		files:     map[bpf.FileKey]*FileSummary{},
		excluded:  map[bpf.FileKey]string{},
		rootIdx:   map[bpf.FileKey]int{},
		maxLogged: maxLoggedRecords,
		offset:    monoToUnix(),
		prefixes:  programPrefixes(path),
		script:    scriptOf(argv),
	}
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		p.consumeEvents()
	}()

	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opt.Stdin, opt.Stdout, opt.Stderr
	started := time.Now()
	if err := group.Start(cmd); err != nil {
		return nil, fmt.Errorf("cannot start %q: %w", argv[0], err)
	}

	// The command owns the terminal's signals: pass them on and report when
	// it ends.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	tick := time.NewTicker(opt.Interval)
	defer tick.Stop()
	last := started
	var waitErr error
loop:
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case now := <-tick.C:
			if err := p.window(last, now, false); err != nil {
				_ = cmd.Process.Kill()
				return nil, fmt.Errorf("%w; the command was stopped (%v)", err, <-waited)
			}
			last = now
		case waitErr = <-waited:
			break loop
		}
	}
	end := time.Now()
	// Every read of the command has completed: let the paths of its last
	// files arrive, then one last drain takes the rest.
	p.settleEvents()
	if err := p.window(last, end, true); err != nil {
		return nil, err
	}

	rep := &Report{
		Command:      argv,
		Started:      started,
		WallSeconds:  end.Sub(started).Seconds(),
		MissingHooks: rec.MissingHooks(),
		Windows:      p.windows,
	}
	if st, err := rec.Stats(); err == nil {
		rep.Dropped = st.Drops
	}
	p.assess(rep, end)

	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return rep, nil
	case errors.As(waitErr, &exitErr):
		rep.ExitCode = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			rep.ExitCode = 128 + int(ws.Signal())
		}
		return rep, &ExitError{Code: rep.ExitCode}
	default:
		return rep, fmt.Errorf("wait for %q: %w", argv[0], waitErr)
	}
}

// monoToUnix is what to add to CLOCK_MONOTONIC times to get unix times.
func monoToUnix() int64 {
	var ts unix.Timespec
	before := time.Now().UnixNano()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return before - ts.Nano()
}

type profiler struct {
	rec      *bpf.Recorder
	opt      Options
	workload *accessv1.WorkloadRef
	hist     *history.History
	offset   int64
	buf      []bpf.Record
	windows  int

	consumed atomic.Int64

	mu       sync.Mutex
	paths    map[bpf.FileKey]string
	files    map[bpf.FileKey]*FileSummary
	excluded map[bpf.FileKey]string
	held     []bpf.Record
	// prefixes are the command's interpreter installations (see
	// programPrefixes), left out like system files.
	prefixes []string
	// script is the script an interpreter command runs: program, not data.
	script string

	// Until the roots are decided (at the end of the run, or once
	// maxLogged data records wait), windows wait in log; then they
	// are replayed, and later ones fed as they come, into hist (every
	// root's files) and rootHist (each root's).
	log       []loggedWindow
	logged    int
	maxLogged int
	decided   bool
	roots     []root
	rootHist  []*history.History
	// rootIdx is the index in roots of each data file's root, or -1 for a
	// file under none (then excluded).
	rootIdx map[bpf.FileKey]int
}

// maxLoggedRecords bounds the data records kept in memory until the roots
// are decided: about 50 MiB. A longer run decides its roots from what it
// read so far; files first read later and under no root are left out.
const maxLoggedRecords = 1 << 16

type loggedWindow struct {
	from, to int64
	recs     []keyedAccess
}

type keyedAccess struct {
	key bpf.FileKey
	fa  *accessv1.FileAccess
}

func (p *profiler) consumeEvents() {
	for ev := range p.rec.Events() {
		path := resolvePath(ev)
		p.mu.Lock()
		if _, ok := p.paths[ev.Key]; !ok || path != "" {
			p.paths[ev.Key] = path
		}
		p.mu.Unlock()
		p.consumed.Add(1)
	}
}

// settleEvents waits, briefly, until the event consumer has caught up with
// what the kernel emitted, so that the files of a short command have paths.
func (p *profiler) settleEvents() {
	deadline := time.Now().Add(500 * time.Millisecond)
	prev := int64(-1)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n := p.consumed.Load()
		if n == prev && len(p.rec.Events()) == 0 {
			return
		}
		prev = n
	}
}

// window drains the recorder into one window over [from, to]. A record whose
// file has no path yet (its open event not consumed) waits one window for it,
// so that system files are not taken for data; final takes everything.
func (p *profiler) window(from, to time.Time, final bool) error {
	var err error
	p.buf, err = p.rec.Drain(p.buf[:0])
	if err != nil {
		return fmt.Errorf("drain the recorder: %w", err)
	}
	var recs []keyedAccess
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.held
	p.held = nil
	for i := range p.buf {
		r := &p.buf[i]
		if _, known := p.paths[r.Key]; !known && !final {
			p.held = append(p.held, *r)
			continue
		}
		recs = p.take(recs, r)
	}
	for i := range held {
		recs = p.take(recs, &held[i])
	}
	p.observe(from.UnixNano(), to.UnixNano(), recs)
	p.windows++
	return nil
}

// observe logs one window's data records until the roots are decided, then
// feeds them to the histories. p.mu is held.
func (p *profiler) observe(from, to int64, recs []keyedAccess) {
	if p.decided {
		p.feed(from, to, recs)
		return
	}
	p.log = append(p.log, loggedWindow{from: from, to: to, recs: recs})
	p.logged += len(recs)
	if p.logged > p.maxLogged {
		p.decideRoots()
	}
}

// decideRoots finds the dataset roots from the files' totals so far and
// replays the logged windows. p.mu is held.
func (p *profiler) decideRoots() {
	files := make([]dataFile, 0, len(p.files))
	for k, fs := range p.files {
		files = append(files, dataFile{key: k, path: fs.Path, weight: fs.ReadBytes + fs.writeBytes, random: fs.randSteps > fs.seqSteps})
	}
	p.roots = findRoots(files, p.opt.Data)
	for range p.roots {
		p.rootHist = append(p.rootHist, history.New(p.opt.History))
	}
	p.decided = true
	for _, w := range p.log {
		p.feed(w.from, w.to, w.recs)
	}
	p.log, p.logged = nil, 0
}

// feed observes one window in the whole command's history and in each
// root's; a record of a file under no root is left out. A record with no
// ops stands for the command itself in each, so that windows in which it
// computes without reading count as wall time. p.mu is held.
func (p *profiler) feed(from, to int64, recs []keyedAccess) {
	all := []*accessv1.FileAccess{{Workload: p.workload}}
	per := make([][]*accessv1.FileAccess, len(p.roots))
	for i := range per {
		per[i] = []*accessv1.FileAccess{{Workload: p.workload}}
	}
	for _, r := range recs {
		i, ok := p.rootIdx[r.key]
		if !ok {
			i = -1
			if fs := p.files[r.key]; fs != nil {
				i = rootOf(p.roots, r.key.Dev, fs.Path)
			}
			p.rootIdx[r.key] = i
			if i < 0 {
				p.excluded[r.key] = ExcludeOutsideRoots
				delete(p.files, r.key)
			}
		}
		if i < 0 {
			continue
		}
		all = append(all, r.fa)
		per[i] = append(per[i], r.fa)
	}
	p.hist.Observe(from, to, all)
	for i, h := range p.rootHist {
		h.Observe(from, to, per[i])
	}
}

// take appends r to recs unless it is not data. p.mu is held.
func (p *profiler) take(recs []keyedAccess, r *bpf.Record) []keyedAccess {
	path := p.paths[r.Key]
	if why := p.notData(path, r); why != "" {
		p.excluded[r.Key] = why
		return recs
	}
	fs := p.files[r.Key]
	if fs == nil {
		fs = &FileSummary{Path: path}
		p.files[r.Key] = fs
	}
	fs.Path = path
	fs.Size = max(fs.Size, int64(r.FileSize))
	fs.ReadBytes += r.ReadBytes
	fs.ReadOps += r.ReadOps
	fs.Passes += r.Passes
	fs.writeBytes += r.WriteBytes
	fs.seqSteps += r.SeqSteps
	fs.randSteps += r.RandSteps
	return append(recs, keyedAccess{key: r.Key, fa: FileAccess(r, p.workload, p.offset)})
}

func (p *profiler) assess(rep *Report, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.decided {
		p.decideRoots()
	}
	rep.Analysis = p.analyze(p.hist, rep.WallSeconds, end)
	rep.Roots = []RootReport{}
	for i, r := range p.roots {
		rr := RootReport{Path: r.dir, Named: r.named, Analysis: p.analyze(p.rootHist[i], rep.WallSeconds, end)}
		for k, fs := range p.files {
			if j, ok := p.rootIdx[k]; ok && j == i {
				rr.Files++
				rr.BytesRead += fs.ReadBytes
				rr.BytesWritten += fs.writeBytes
			}
		}
		if rr.Files == 0 && !r.named {
			// Its files all lie in a deeper root found in another group.
			continue
		}
		rep.Roots = append(rep.Roots, rr)
	}
	slices.SortStableFunc(rep.Roots, func(a, b RootReport) int {
		return cmp.Compare(b.BytesRead+b.BytesWritten, a.BytesRead+a.BytesWritten)
	})
	rep.FilesExcluded = len(p.excluded)
	rep.ProgramPrefixes = p.prefixes
	for _, why := range p.excluded {
		if rep.ExcludedBy == nil {
			rep.ExcludedBy = map[string]int{}
		}
		rep.ExcludedBy[why]++
	}
	for _, fs := range p.files {
		rep.TopFiles = append(rep.TopFiles, *fs)
	}
	sortTop(rep.TopFiles)
	if len(rep.TopFiles) > 5 {
		rep.TopFiles = rep.TopFiles[:5]
	}
}

// analyze classifies and advises on the data observed in h over a run of
// wall seconds that ended at end.
func (p *profiler) analyze(h *history.History, wall float64, end time.Time) Analysis {
	f := features.Extract(h, end.UnixNano())
	// Nothing decays noticeably within a run, but weights from windows at
	// different times leave counts a hair off whole numbers.
	for _, v := range []*float64{&f.BytesRead, &f.ReadOps, &f.BytesWritten, &f.WriteOps, &f.Files, &f.DatasetBytes} {
		*v = math.Round(*v)
	}
	copt := classify.Options{IdleAfter: wall}
	if f.BytesRead == 0 && f.BytesWritten == 0 {
		// Nothing was read or written during the whole run: idle for all of
		// it, clearly past half of it.
		f.IdleSeconds = wall
		copt.IdleAfter = wall / 2
	} else {
		copt.IdleAfter = max(wall, 1) * 2
	}
	d := classify.Classify(&f, copt)
	a := advice.Advise(&f, &d, p.opt.Bounds)
	if a.Recommendations == nil {
		a.Recommendations = []advice.Recommendation{}
	}
	return Analysis{Class: d.Class, Confidence: d.Confidence, Features: f, Decision: d, Recommendations: a.Recommendations, Withheld: a.Withheld}
}
