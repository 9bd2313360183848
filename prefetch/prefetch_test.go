package prefetch

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	v1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// writeTree creates files (relative path → size) under a new temporary
// folder and returns it.
func writeTree(t *testing.T, files map[string]int) string {
	t.Helper()
	dir := t.TempDir()
	for name, size := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		data := []byte(strings.Repeat(name[:1], size))
		require.NoError(t, os.WriteFile(p, data, 0o644))
	}
	return dir
}

// orderRecorder collects the order in which files are started.
type orderRecorder struct {
	mu    sync.Mutex
	paths []string
	root  string
}

func (r *orderRecorder) record(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rel, err := filepath.Rel(r.root, p)
	if err != nil {
		rel = p
	}
	r.paths = append(r.paths, rel)
}

func (r *orderRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

func newTestPrefetcher(t *testing.T, opts Options) (*Prefetcher, *orderRecorder) {
	t.Helper()
	p, err := New(opts, testr.NewWithOptions(t, testr.Options{Verbosity: 0}))
	require.NoError(t, err)
	t.Cleanup(p.Close)
	rec := &orderRecorder{root: opts.Roots[0]}
	p.onFileStart = rec.record
	p.serviceAccountDir = t.TempDir()
	p.manifestRetryDelay = 10 * time.Millisecond
	return p, rec
}

func run(t *testing.T, p *Prefetcher, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	require.NoError(t, p.Run(ctx))
}

func serveManifest(t *testing.T, body any) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestArgsRoundTrip(t *testing.T) {
	want := Options{
		Strategy: "Ordered", Roots: []string{"/eddy/data/a", "/eddy/data/b"},
		BlockSize: 4 << 20, Concurrency: 6, MaxBandwidth: 100 << 20, BudgetBytes: 1 << 30,
		WarmThresholdPercent: 80, ManifestURL: "https://analyzer.eddy-system.svc:8443/manifest?w=a&d=b",
		HintSocket: "/eddy/sdk/prefetch.sock", StatusAddr: ":9471", ReportInterval: 10 * time.Second,
		MaxConcurrency: 32, PathAliases: []string{"/data/a=/eddy/data/a"}, ServiceAccountDir: "/run/eddy/sa",
		ResidentInterval: 3 * time.Second,
	}
	for _, o := range []Options{want, {Strategy: "WholeDataset", Roots: []string{"/x"}}} {
		args := o.Args()
		require.Equal(t, "prefetch", args[0])
		var got Options
		fs := pflag.NewFlagSet("prefetch", pflag.ContinueOnError)
		got.BindFlags(fs)
		require.NoError(t, fs.Parse(args[1:]))
		assert.Equal(t, o, got)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	base := Options{Strategy: "WholeDataset", Roots: []string{"/d"}}
	cases := map[string]Options{
		"--strategy":        {Strategy: "Random", Roots: []string{"/d"}},
		"--root":            {Strategy: "WholeDataset", Roots: []string{"rel"}},
		"--manifest-url":    {Strategy: "HotSet", Roots: []string{"/d"}},
		"--hint-socket":     {Strategy: "Ordered", Roots: []string{"/d"}},
		"--path-alias":      func() Options { o := base; o.PathAliases = []string{"/app=/not-a-root"}; return o }(),
		"--max-concurrency": func() Options { o := base; o.Concurrency, o.MaxConcurrency = 8, 4; return o }(),
		"--budget":          {Strategy: v1alpha1.StrategyResident, Roots: []string{"/d"}},
		"--resident-interval": func() Options {
			o := base
			o.ResidentInterval = -time.Second
			return o
		}(),
	}
	for flag, o := range cases {
		err := o.Validate()
		if assert.Error(t, err, flag) {
			assert.Contains(t, err.Error(), flag)
		}
	}
	assert.NoError(t, base.Validate())
}

func TestStrategiesOrder(t *testing.T) {
	files := map[string]int{"a/1": 10, "a/2": 20, "b/1": 30, "c": 40, "d": 5}
	manifest := []string{"c", "a/2", "d"}
	cases := []struct {
		strategy string
		manifest any
		want     []string
	}{
		{"WholeDataset", nil, []string{"a/1", "a/2", "b/1", "c", "d"}},
		{"WholeDataset", manifest, []string{"c", "a/2", "d"}},
		{"Sequential", nil, []string{"a/1", "a/2", "b/1", "c", "d"}},
		{"Sequential", manifestv1.Document{Files: []string{"d", "c", "b/1", "a/2", "a/1"}}, []string{"d", "c", "b/1", "a/2", "a/1"}},
		{"Ordered", manifest, []string{"c", "a/2", "d"}},
		{"HotSet", []string{"b/1", "a/1"}, []string{"b/1", "a/1"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/manifest=%v", c.strategy, c.manifest != nil), func(t *testing.T) {
			dir := writeTree(t, files)
			opts := Options{Strategy: v1alpha1.PrefetchStrategy(c.strategy), Roots: []string{dir}, Concurrency: 3, BlockSize: 8}
			if c.manifest != nil {
				opts.ManifestURL = serveManifest(t, c.manifest)
			}
			p, rec := newTestPrefetcher(t, opts)
			run(t, p, 10*time.Second)
			assert.Equal(t, c.want, rec.get())
			s := p.Status()
			var wantBytes int64
			for _, f := range c.want {
				wantBytes += int64(files[f])
			}
			assert.Equal(t, wantBytes, s.Bytes)
			assert.Equal(t, int64(len(c.want)), s.Files)
			assert.True(t, s.Warm)
			assert.InDelta(t, 100, s.WarmPercent, 0.001)
		})
	}
}

func TestSequentialWindowGrows(t *testing.T) {
	dir := writeTree(t, map[string]int{"big": 64 << 10})
	p, _ := newTestPrefetcher(t, Options{Strategy: "Sequential", Roots: []string{dir}, BlockSize: 1 << 10, Concurrency: 16})
	var mu sync.Mutex
	inflight, peakEarly, peak, reads := 0, 0, 0, 0
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		mu.Lock()
		inflight++
		reads++
		peak = max(peak, inflight)
		if reads <= 2 {
			peakEarly = max(peakEarly, inflight)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		return real(ctx, f, off, n)
	}
	run(t, p, 10*time.Second)
	assert.Equal(t, 1, peakEarly, "the window starts at one block")
	assert.Greater(t, peak, 4, "the window grows")
	assert.Equal(t, int64(64<<10), p.Status().Bytes)
}

func TestBudgetHonoured(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 3000, "b": 3000, "c": 3000, "d": 3000})
	p, rec := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, BlockSize: 1000,
		Concurrency: 4, BudgetBytes: 7500, WarmThresholdPercent: 100})
	run(t, p, 10*time.Second)
	s := p.Status()
	assert.Equal(t, int64(7500), s.Bytes, "exactly the budget is read")
	assert.Equal(t, int64(2), s.Files)
	assert.True(t, s.BudgetSpent)
	assert.True(t, s.Warm, "the warm target is the budget when it is smaller than the selection")
	assert.Equal(t, []string{"a", "b", "c"}, rec.get())
}

func TestBandwidthCapHonoured(t *testing.T) {
	const size, capBps = 6 << 20, 4 << 20
	dir := writeTree(t, map[string]int{"a": size / 2, "b": size / 2})
	p, _ := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, BlockSize: 1 << 20,
		Concurrency: 8, MaxBandwidth: capBps})
	start := time.Now()
	run(t, p, 30*time.Second)
	elapsed := time.Since(start)
	measured := float64(p.Status().Bytes) / elapsed.Seconds()
	t.Logf("read %d bytes in %s: %.2f MiB/s against a cap of %.2f MiB/s", p.Status().Bytes, elapsed, measured/(1<<20), float64(capBps)/(1<<20))
	assert.Equal(t, int64(size), p.Status().Bytes)
	// The token bucket starts full with one read's worth (p.chunk); after
	// that, bytes flow at the cap.
	minElapsed := time.Duration(float64(size-p.chunk) / capBps * float64(time.Second))
	assert.GreaterOrEqual(t, elapsed, minElapsed*95/100, "the cap is not exceeded")
	assert.Greater(t, measured, capBps*0.6, "the cap is not far undershot")
}

func TestEscapesRejected(t *testing.T) {
	outside := writeTree(t, map[string]int{"secret": 1000})
	dir := writeTree(t, map[string]int{"in/a": 10, "in/b": 20})
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "in", "abs-link")))
	require.NoError(t, os.Symlink("../../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "in", "rel-link")))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "dirlink")))
	require.NoError(t, os.Symlink("b", filepath.Join(dir, "in", "good-link")))
	manifest := []string{
		"in/a",
		"../" + filepath.Base(outside) + "/secret",
		"in/../../" + filepath.Base(outside) + "/secret",
		filepath.Join(outside, "secret"),
		filepath.Join(dir, "in", "..", "..", filepath.Base(outside), "secret"),
		"in/abs-link",
		"in/rel-link",
		"dirlink/secret",
		"in/good-link",
		filepath.Join(dir, "in", "b"),
	}
	for _, strategy := range []string{"Ordered", "WholeDataset"} {
		t.Run(strategy, func(t *testing.T) {
			opts := Options{Strategy: v1alpha1.PrefetchStrategy(strategy), Roots: []string{dir}, Concurrency: 2}
			if strategy == "Ordered" {
				opts.ManifestURL = serveManifest(t, manifest)
			}
			p, rec := newTestPrefetcher(t, opts)
			run(t, p, 10*time.Second)
			s := p.Status()
			for _, got := range rec.get() {
				assert.NotContains(t, got, "secret", "no path outside the root is ever opened")
			}
			if strategy == "Ordered" {
				assert.Equal(t, []string{"in/a", "in/good-link", "in/b"}, rec.get())
				assert.Equal(t, int64(10+20+20), s.Bytes, "only files inside the root are read")
				assert.Equal(t, int64(7), s.Rejected)
			} else {
				assert.Equal(t, []string{"in/a", "in/b", "in/good-link"}, rec.get())
				assert.Equal(t, int64(3), s.Rejected, "abs-link, rel-link and dirlink lead out")
			}
		})
	}
}

func TestHintEscapesRejected(t *testing.T) {
	outside := writeTree(t, map[string]int{"secret": 1000})
	dir := writeTree(t, map[string]int{"a": 10})
	require.NoError(t, os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "link")))
	sock := filepath.Join(t.TempDir(), "hint.sock")
	p, rec := newTestPrefetcher(t, Options{Strategy: "Ordered", Roots: []string{dir}, HintSocket: sock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	sendHint(t, sock, Hint{Epoch: 0, Files: []string{filepath.Join(outside, "secret"), filepath.Join(dir, "link"), "../x", filepath.Join(dir, "a")}})
	require.Eventually(t, func() bool { return p.Status().Files == 1 && p.Status().Rejected == 3 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	assert.Equal(t, []string{"link", "a"}, rec.get(), "the link is refused when opened, before any byte is read")
	assert.Equal(t, int64(10), p.Status().Bytes)
}

func sendHint(t *testing.T, sock string, h Hint) {
	t.Helper()
	var c net.Conn
	require.Eventually(t, func() bool {
		var err error
		c, err = net.Dial("unix", sock)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	defer c.Close()
	b, err := json.Marshal(h)
	require.NoError(t, err)
	_, err = c.Write(append(b, '\n'))
	require.NoError(t, err)
}

func TestHintsReorderQueue(t *testing.T) {
	files := map[string]int{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		files[n] = 100
	}
	dir := writeTree(t, files)
	sock := filepath.Join(t.TempDir(), "hint.sock")
	p, rec := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, HintSocket: sock,
		Concurrency: 1, MaxConcurrency: 1})
	gate, started := make(chan struct{}), make(chan struct{})
	real := p.read
	var once sync.Once
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		once.Do(func() { close(started); <-gate }) // hold the first read until the hint is in
		return real(ctx, f, off, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	<-started
	sendHint(t, sock, Hint{Epoch: 1, Files: []string{filepath.Join(dir, "e"), filepath.Join(dir, "a"), "c"}})
	require.Eventually(t, func() bool { return p.Status().Hints == 1 }, 5*time.Second, 10*time.Millisecond)
	close(gate)
	require.Eventually(t, func() bool { return p.Status().Files == 6 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"a", "e", "c", "b", "d", "f"}, rec.get(), "a was in flight; e and c jump the queue")

	// A stale epoch is ignored; a new epoch drops what was already read.
	sendHint(t, sock, Hint{Epoch: 0, Files: []string{"zzz"}})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "g"), []byte("gg"), 0o644))
	sendHint(t, sock, Hint{Epoch: 2, Files: []string{"f", "g", "a"}})
	require.Eventually(t, func() bool { return p.Status().Files == 7 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	assert.Equal(t, []string{"a", "e", "c", "b", "d", "f", "g"}, rec.get())
	assert.Equal(t, 2, p.Status().Epoch)
	assert.Equal(t, int64(602), p.Status().Bytes)
}

func TestWarmFlips(t *testing.T) {
	files := map[string]int{}
	for i := range 10 {
		files[fmt.Sprintf("f%d", i)] = 1000
	}
	dir := writeTree(t, files)
	p, _ := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, Concurrency: 1,
		MaxConcurrency: 1, WarmThresholdPercent: 50})
	step := make(chan struct{})
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		select {
		case <-step:
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
		return real(ctx, f, off, n)
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	warm := func() int {
		resp, err := http.Get(srv.URL + "/warm")
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	for i := range 10 {
		require.Eventually(t, func() bool { return p.Status().SelectionFiles == 10 }, 5*time.Second, time.Millisecond)
		want := http.StatusServiceUnavailable
		if i >= 5 {
			want = http.StatusOK
		}
		assert.Equal(t, want, warm(), "after %d of 10 files", i)
		step <- struct{}{}
		require.Eventually(t, func() bool { return p.Status().Files == int64(i+1) }, 5*time.Second, time.Millisecond)
	}
	<-done
	assert.Equal(t, http.StatusOK, warm())
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body strings.Builder
	_, _ = fmt.Fprint(&body, "")
	buf := make([]byte, 1<<20)
	n, _ := resp.Body.Read(buf)
	for _, m := range []string{"eddy_prefetch_bytes_total 10000", "eddy_prefetch_files_total 10", "eddy_prefetch_warm_ratio 1",
		"eddy_prefetch_errors_total 0", "eddy_prefetch_inflight 0", "eddy_prefetch_read_duration_seconds_count 10"} {
		assert.Contains(t, string(buf[:n]), m)
	}
}

func TestManifestFetchedWithServiceAccount(t *testing.T) {
	dir := writeTree(t, map[string]int{"x": 7, "y": 9})
	var gotAuth string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		_, _ = w.Write([]byte(`{"files": ["y", "x"]}`))
	}))
	defer srv.Close()
	sa := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(sa, "token"), []byte("tok-123\n"), 0o600))
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	require.NoError(t, os.WriteFile(filepath.Join(sa, "ca.crt"), ca, 0o644))
	_, err := x509.ParseCertificate(srv.Certificate().Raw)
	require.NoError(t, err)

	p, rec := newTestPrefetcher(t, Options{Strategy: "Ordered", Roots: []string{dir}, ManifestURL: srv.URL + "/m"})
	p.serviceAccountDir = sa
	run(t, p, 10*time.Second)
	assert.Equal(t, "Bearer tok-123", gotAuth)
	assert.Equal(t, []string{"y", "x"}, rec.get())
}

func TestManifestUnreachableFailsOpen(t *testing.T) {
	dir := writeTree(t, map[string]int{"x": 7})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no manifest for this workload", http.StatusNotFound)
	}))
	defer srv.Close()
	p, _ := newTestPrefetcher(t, Options{Strategy: "HotSet", Roots: []string{dir}, ManifestURL: srv.URL, WarmThresholdPercent: 90})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Run(ctx))
	s := p.Status()
	assert.True(t, s.Warm, "a failed plan must not hold the pod")
	assert.Contains(t, s.Error, "404")
	assert.Contains(t, s.Error, "no manifest for this workload")
}

// A whole-dataset prefetch whose manifest is gone (the analyzer lost its
// state, or is down) still reads the whole dataset: the manifest only
// ordered it, and a run without the recommended prefetch would be judged as
// if it had one.
func TestWholeDatasetWithoutItsManifestReadsTheDataset(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 5, "b": 6, "c/d": 7})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no manifest for this workload", http.StatusNotFound)
	}))
	defer srv.Close()
	p, rec := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, ManifestURL: srv.URL, WarmThresholdPercent: 100})
	run(t, p, 30*time.Second)
	assert.ElementsMatch(t, []string{"a", "b", "c/d"}, rec.get())
	s := p.Status()
	assert.True(t, s.Warm)
	assert.Equal(t, 100.0, s.WarmPercent, "warm because it read everything, not because the plan failed")
	assert.EqualValues(t, 18, s.Bytes)
	assert.Contains(t, s.Error, "no manifest for this workload", "the status says the plan went without its manifest")
}

func TestParseManifest(t *testing.T) {
	got, err := parseManifest([]byte(` ["a", "b"] `))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got.Files)
	got, err = parseManifest([]byte(`{"files": ["c"]}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"c"}, got.Files)
	_, err = parseManifest([]byte(`{"files": "c"}`))
	assert.ErrorContains(t, err, "want a JSON array")
}

func TestReadErrorSkipsTheFile(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 100, "bad": 1000, "c": 100})
	p, rec := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, BlockSize: 100,
		Concurrency: 1, MaxConcurrency: 1})
	var badReads int
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		if f.ref.rel == "bad" {
			badReads++
			return 0, 1000, 0, fmt.Errorf("injected I/O error")
		}
		return real(ctx, f, off, n)
	}
	run(t, p, 10*time.Second)
	s := p.Status()
	assert.Equal(t, []string{"a", "bad", "c"}, rec.get())
	assert.Equal(t, 1, badReads, "a failed file is not read further")
	assert.Equal(t, int64(1), s.Errors)
	assert.Equal(t, int64(2), s.Files)
	assert.Equal(t, int64(200), s.Bytes)
	assert.True(t, s.Warm, "nothing more can be read: the pod is not held")
}

func TestRunEndsWithSDKConnected(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 100, "b": 100})
	sock := filepath.Join(t.TempDir(), "hint.sock")
	p, _ := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, HintSocket: sock, BudgetBytes: 100})
	connected := make(chan struct{})
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		<-connected
		return real(ctx, f, off, n)
	}
	done := make(chan error)
	go func() { done <- p.Run(context.Background()) }()
	var c net.Conn
	require.Eventually(t, func() bool {
		var err error
		c, err = net.Dial("unix", sock)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	defer c.Close()
	close(connected)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the budget was spent while an SDK connection was open")
	}
	assert.Equal(t, int64(100), p.Status().Bytes)
	_, err := os.Stat(sock)
	assert.True(t, os.IsNotExist(err), "the socket is removed")
}

func TestPathAliasesMapApplicationPaths(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	sc, err := newScope([]string{a, b}, []string{"/data=" + a, "/data/b=" + b})
	require.NoError(t, err)
	defer sc.close()
	for in, want := range map[string]fileRef{
		"/data/x/y":    {root: 0, rel: "x/y"},
		"/data/b/z":    {root: 1, rel: "z"},
		"/data/bz":     {root: 0, rel: "bz"},
		b + "/direct":  {root: 1, rel: "direct"},
		"/data/x/../y": {root: 0, rel: "y"},
	} {
		got, err := sc.resolve(in)
		if assert.NoError(t, err, in) {
			assert.Equal(t, want, got, in)
		}
	}
	for _, bad := range []string{"/data/../etc/passwd", "/data", "/elsewhere/x", "../x", ""} {
		_, err := sc.resolve(bad)
		assert.ErrorIs(t, err, errOutsideRoots, bad)
	}
}

func TestHotSetFirstThenRestWithinBudget(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 100, "b": 100, "c": 100, "d": 100, "hot1": 100, "hot2": 100})
	p, rec := newTestPrefetcher(t, Options{Strategy: "HotSet", Roots: []string{dir}, BudgetBytes: 450,
		ManifestURL: serveManifest(t, []string{"hot2", "hot1"}), WarmThresholdPercent: 100, Concurrency: 1})
	run(t, p, 10*time.Second)
	s := p.Status()
	assert.Equal(t, []string{"hot2", "hot1", "a", "b", "c"}, rec.get(), "hot files first, then the rest in listing order")
	assert.Equal(t, int64(450), s.Bytes)
	assert.Equal(t, int64(200), s.SelectionBytes, "the warm ratio measures the hot set")
	assert.True(t, s.Warm)
}

// Ranges reads exactly the manifest's ranges (split into blocks, clipped to
// the file), many at once, and nothing of files listed without ranges.
func TestRangesReadOnlyTheRangesInParallel(t *testing.T) {
	dir := writeTree(t, map[string]int{"big": 1 << 20, "other": 4096})
	doc := manifestv1.Document{Files: []string{"big", "other"}, Ranges: []manifestv1.FileRanges{
		{Path: "big", Ranges: []manifestv1.Range{{0, 4096}, {65536, 65536 + 12288}, {200 << 10, 204 << 10}, {1<<20 - 4096, 1<<20 + 8192}}},
	}}
	p, _ := newTestPrefetcher(t, Options{Strategy: v1alpha1.StrategyRanges, Roots: []string{dir}, BlockSize: 8192, Concurrency: 4,
		ManifestURL: serveManifest(t, doc), WarmThresholdPercent: 100})
	var mu sync.Mutex
	type span struct {
		path   string
		off, n int64
	}
	var got []span
	inflight, peak := 0, 0
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		got = append(got, span{p.scope.display(f.ref), off, n})
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		return real(ctx, f, off, n)
	}
	run(t, p, 10*time.Second)
	big := filepath.Join(dir, "big")
	assert.ElementsMatch(t, []span{
		{big, 0, 4096},
		{big, 65536, 8192}, {big, 65536 + 8192, 4096},
		{big, 200 << 10, 4096},
		{big, 1<<20 - 4096, 4096},
	}, got, "the ranges in blocks of at most 8 KiB, the last clipped at the end of the file; nothing of other")
	assert.Equal(t, 4, peak, "ranges of one file are read in parallel")
	s := p.Status()
	assert.Equal(t, int64(4096+12288+4096+4096), s.Bytes)
	assert.Equal(t, s.Bytes, s.SelectionBytes, "the warm ratio measures the ranges")
	assert.True(t, s.Warm)
}

// Ranges hands out a file's ranges from the highest offset down, so that no
// read lands just past an earlier one, where a FUSE client streaming from
// the earlier read's position would read the gap through.
func TestRangesReadHighestFirst(t *testing.T) {
	dir := writeTree(t, map[string]int{"big": 1 << 20})
	doc := manifestv1.Document{Files: []string{"big"}, Ranges: []manifestv1.FileRanges{
		{Path: "big", Ranges: []manifestv1.Range{{0, 4096}, {65536, 65536 + 12288}, {200 << 10, 204 << 10}, {900 << 10, 904 << 10}}},
	}}
	p, _ := newTestPrefetcher(t, Options{Strategy: v1alpha1.StrategyRanges, Roots: []string{dir}, BlockSize: 8192, Concurrency: 1,
		MaxConcurrency: 1, ManifestURL: serveManifest(t, doc)})
	var mu sync.Mutex
	var offsets []int64
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		mu.Lock()
		offsets = append(offsets, off)
		mu.Unlock()
		return real(ctx, f, off, n)
	}
	run(t, p, 10*time.Second)
	assert.Equal(t, []int64{900 << 10, 200 << 10, 65536, 65536 + 8192, 0}, offsets,
		"highest range first; a range longer than a block still front to back")
}

// Ranges closer together than a block are read as one block, gap included:
// one request to the remote instead of several.
func TestRangesCloserThanABlockAreOneRead(t *testing.T) {
	dir := writeTree(t, map[string]int{"big": 1 << 20})
	doc := manifestv1.Document{Files: []string{"big"}, Ranges: []manifestv1.FileRanges{
		{Path: "big", Ranges: []manifestv1.Range{{8192, 12288}, {40960, 45056}, {65536, 69632}, {512 << 10, 516 << 10}}},
	}}
	p, _ := newTestPrefetcher(t, Options{Strategy: v1alpha1.StrategyRanges, Roots: []string{dir}, BlockSize: 64 << 10, Concurrency: 1,
		MaxConcurrency: 1, ManifestURL: serveManifest(t, doc), WarmThresholdPercent: 100})
	type span struct{ off, n int64 }
	var mu sync.Mutex
	var got []span
	real := p.read
	p.read = func(ctx context.Context, f *file, off, n int64) (int64, int64, time.Duration, error) {
		mu.Lock()
		got = append(got, span{off, n})
		mu.Unlock()
		return real(ctx, f, off, n)
	}
	run(t, p, 10*time.Second)
	assert.Equal(t, []span{{512 << 10, 4096}, {8192, 69632 - 8192}}, got,
		"the three ranges within 64 KiB of the first are one read; the far one alone")
	assert.True(t, p.Status().Warm)
}

func TestRangesNeedAManifest(t *testing.T) {
	err := Options{Strategy: v1alpha1.StrategyRanges, Roots: []string{"/data"}}.Validate()
	assert.ErrorContains(t, err, "--strategy Ranges needs --manifest-url")
}

// Resident reads whole files, in the manifest's order, while they fit the
// budget (a file that does not fit is skipped, not cut), then opens each of
// them again every interval, and nothing else, until stopped.
func TestResidentKeepsWholeFilesWithinBudgetAndTouchesThem(t *testing.T) {
	dir := writeTree(t, map[string]int{"a": 100, "b": 150, "c": 100, "d": 100, "e": 100})
	p, rec := newTestPrefetcher(t, Options{Strategy: v1alpha1.StrategyResident, Roots: []string{dir}, BudgetBytes: 350,
		ManifestURL: serveManifest(t, []string{"c", "b", "a", "e", "d"}), Concurrency: 2, ResidentInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, func() bool { return testutil.ToFloat64(p.metrics.touches) >= 9 }, 5*time.Second, 5*time.Millisecond,
		"the kept files are opened again every interval")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once stopped")
	}
	assert.ElementsMatch(t, []string{"c", "b", "a"}, rec.get()[:3], "whole files in manifest order while they fit")
	assert.Len(t, rec.get(), 3, "e and d do not fit the 350-byte budget after c, b and a")
	s := p.Status()
	assert.Equal(t, int64(350), s.Bytes)
	assert.Zero(t, int(testutil.ToFloat64(p.metrics.touches))%3, "every round touches the three kept files, and only them")
}
