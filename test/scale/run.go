package scale

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/loopbackcert"
)

// Options configure a Run.
type Options struct {
	Size Size
	// EddyBin is the eddy binary (bin/eddy); BinDir the control plane's
	// binaries (empty: controlplane's default).
	EddyBin, BinDir string
	// Dir holds the control plane's logs, the components' logs and state,
	// and the collectors' buffers; it is emptied first.
	Dir string
	// Log receives progress lines.
	Log io.Writer
}

// Result is what one run measured.
type Result struct {
	Size Size
	// Load is /proc/loadavg before and after the measured intervals.
	LoadBefore, LoadAfter string

	// PodsRunningSeconds is how long the opted-in pods took to be Running
	// (through the webhook).
	PodsRunningSeconds float64

	// Measured is the length of the measured intervals.
	Measured time.Duration
	// OfferedPerSecond and AcceptedPerSecond are records/s the collectors
	// enqueued and the analyzer applied, over the measured intervals.
	OfferedPerSecond, AcceptedPerSecond float64
	// WindowsApplied and WindowsDuplicate are windows received, measured.
	WindowsApplied, WindowsDuplicate float64
	// Buffered is windows the collectors held unacknowledged at the end;
	// ShipFailures failed Ship calls over the run; Lost windows the
	// collectors dropped (their buffer full, or anything else).
	Buffered     int
	ShipFailures uint64
	Lost         uint64
	// Flushes, FlushMean and FlushMax: flushes completed while measured
	// (with the analyzer's local checkpoint log, a flush ends once the log
	// holds what it took; profiles are written behind, in rounds).
	Flushes             int
	FlushMean, FlushMax time.Duration
	// Rounds, RoundMean and RoundMax: rounds of profile writes completed
	// while measured; PendingMax the most keys seen waiting for one.
	Rounds              int
	RoundMean, RoundMax time.Duration
	PendingMax          float64
	// LeaseMaxAge is the oldest the heartbeat Lease was seen (each second).
	LeaseMaxAge time.Duration
	// Profiles is how many of the workloads' profiles exist at the end;
	// ProfileMaxLag the longest, over the samples taken each interval while
	// measured, from a profile's status.lastSeen to the sample; StaleSamples
	// how many (profile, sample) pairs were over two intervals (a missing
	// profile counts).
	Profiles      int
	ProfileMaxLag time.Duration
	StaleSamples  int
	Samples       int

	// Analyzer memory: before the first window and at the end.
	AnalyzerStart, AnalyzerEnd memory
	// AnalyzerHeapStart and AnalyzerHeapEnd are the analyzer's heap
	// profile at those times, as `go tool pprof -top` prints it (live
	// bytes by function): where its memory goes.
	AnalyzerHeapStart, AnalyzerHeapEnd string
	// AnalyzerLiveStart and AnalyzerLiveEnd are its live heap bytes then.
	AnalyzerLiveStart, AnalyzerLiveEnd uint64
	// AnalyzerCPU is a CPU profile of the analyzer over the first half of
	// the measured intervals, as `go tool pprof -top -cum` prints it.
	AnalyzerCPU string
	// Webhook memory: caches synced, after the opted-in pods, after the
	// others.
	WebhookBase, WebhookOptedIn, WebhookPlain memory
	PlainPods                                 int

	// Series is sampled each second while measured.
	Series []Point
	// Unanswered is how many of the analyzer's /metrics scrapes while
	// measured took over 10 s or failed; UnansweredMax the longest run of
	// time without an answer. A kubelet probing a process this slow would
	// restart it.
	Unanswered    int
	UnansweredMax time.Duration

	// Operator: from creating a Prefetch per workload to all Applied.
	OperatorConverge                         time.Duration
	OperatorApplied                          int
	Reconciles, OperatorRequests, EddyEvents float64
}

// Point is one second of the measured intervals.
type Point struct {
	// T is the time since measuring started.
	T time.Duration
	// Accepted is records/s applied over the last second; Offered records/s
	// enqueued by the collectors.
	Accepted, Offered float64
	// LeaseAge is the heartbeat Lease's age.
	LeaseAge time.Duration
	// Flush is the mean duration of flushes completed in the last second.
	Flush time.Duration
}

// stage is a step of the run, printed with its time.
func (r *run) stage(format string, args ...any) {
	fmt.Fprintf(r.o.Log, "[%6.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

type run struct {
	o     Options
	start time.Time
	env   *controlplane.Env
	pids  map[string]int
	urls  map[string]string
}

// Run brings the cluster and eddy up at o.Size, loads it and measures.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	s := o.Size
	if o.Log == nil {
		o.Log = io.Discard
	}
	if _, err := os.Stat(o.EddyBin); err != nil {
		return nil, fmt.Errorf("%s not found: build it with `make build`", o.EddyBin)
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"tls", "analyzer", "collectors"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	r := &run{o: o, start: time.Now(), pids: map[string]int{}, urls: map[string]string{}}
	res = &Result{Size: s}

	r.stage("starting kube-apiserver, etcd, kube-scheduler, kube-controller-manager and kwok with %d nodes", s.Nodes)
	r.env, err = controlplane.Start(ctx, controlplane.Options{Nodes: s.Nodes, Dir: filepath.Join(o.Dir, "controlplane"), BinDir: o.BinDir})
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := r.env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	c := r.env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlplane.EddyNamespace}}); err != nil {
		return nil, err
	}
	if err := createNamespaces(ctx, c, s); err != nil {
		return nil, err
	}
	certFile, keyFile, err := loopbackcert.Write(filepath.Join(o.Dir, "tls"))
	if err != nil {
		return nil, err
	}
	if err := r.startEddy(ctx, certFile, keyFile); err != nil {
		return nil, err
	}
	if res.WebhookBase, err = procMemory(r.pids["webhook"]); err != nil {
		return nil, err
	}

	r.stage("creating %d workloads × %d pods in %d opted-in namespaces (each pod through the webhook)", s.Workloads, s.PodsPerWorkload, s.Namespaces)
	start := time.Now()
	if err := createAll(ctx, c, workloads(s)); err != nil {
		return nil, err
	}
	var opted []string
	for i := range s.Namespaces {
		opted = append(opted, optedIn(i))
	}
	pods, err := waitRunning(ctx, c, opted, s.Pods(), 30*time.Minute)
	if err != nil {
		return nil, err
	}
	res.PodsRunningSeconds = time.Since(start).Seconds()
	if res.WebhookOptedIn, err = procMemory(r.pids["webhook"]); err != nil {
		return nil, err
	}
	r.stage("%d pods Running in %.0fs; webhook RSS %s → %s", len(pods), res.PodsRunningSeconds, mib(res.WebhookBase.RSS), mib(res.WebhookOptedIn.RSS))

	r.stage("creating %d pods in namespaces not opted in", s.PlainPods)
	if err := createAll(ctx, c, plainWorkloads(s)); err != nil {
		return nil, err
	}
	var plains []string
	for i := range s.Namespaces {
		plains = append(plains, plain(i))
	}
	plainPods, err := waitRunning(ctx, c, plains, s.PlainPods, 30*time.Minute)
	if err != nil {
		return nil, err
	}
	res.PlainPods = len(plainPods)
	if res.WebhookPlain, err = procMemory(r.pids["webhook"]); err != nil {
		return nil, err
	}
	r.stage("webhook RSS %s with %d more pods not opted in", mib(res.WebhookPlain.RSS), res.PlainPods)

	r.stage("one collector identity per node: %d pods of eddy-system/eddy-collector and their tokens", s.Nodes)
	tokens, err := collectorTokens(ctx, c, r.env.NodeNames())
	if err != nil {
		return nil, err
	}
	if res.AnalyzerStart, err = procMemory(r.pids["analyzer"]); err != nil {
		return nil, err
	}
	res.AnalyzerHeapStart, res.AnalyzerLiveStart = heapTop(ctx, r.urls["analyzer-pprof"])
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	r.stage("shipping: %d collectors, %d records per pod per %s window (%.0f records/s offered)", s.Nodes, s.FilesPerPod, s.Interval, s.OfferedPerSecond())
	fl, err := startFleet(loadCtx, s, filepath.Join(o.Dir, "collectors"), r.urls["grpc"], certFile, tokens, pods)
	if err != nil {
		return nil, err
	}
	defer fl.wait()
	defer stopLoad()

	if err := r.measure(ctx, fl, res); err != nil {
		return nil, err
	}
	res.Buffered, res.ShipFailures, res.Lost = fl.stats()
	if res.AnalyzerEnd, err = procMemory(r.pids["analyzer"]); err != nil {
		return nil, err
	}
	res.AnalyzerHeapEnd, res.AnalyzerLiveEnd = heapTop(ctx, r.urls["analyzer-pprof"])
	var profiles v1.AccessProfileList
	if err := c.List(ctx, &profiles); err != nil {
		return nil, err
	}
	res.Profiles = len(profiles.Items)
	r.stage("done: %d profiles; analyzer RSS %s → %s (peak %s)", res.Profiles, mib(res.AnalyzerStart.RSS), mib(res.AnalyzerEnd.RSS), mib(res.AnalyzerEnd.HWM))
	return res, nil
}

// startEddy installs eddy's identities and webhooks and starts the
// webhook, analyzer and operator binaries, each as its service account.
func (r *run) startEddy(ctx context.Context, certFile, keyFile string) error {
	kubeconfigs, err := r.env.InstallIdentities(ctx, "analyzer", "webhook", "operator")
	if err != nil {
		return err
	}
	ports, err := controlplane.FreePorts(8)
	if err != nil {
		return err
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	r.urls["grpc"] = addr(0)
	r.urls["analyzer"] = "http://" + addr(2) + "/metrics"
	r.urls["webhook"] = "http://" + addr(4) + "/metrics"
	r.urls["operator"] = "http://" + addr(5) + "/metrics"
	r.urls["analyzer-pprof"] = "http://" + addr(7) + "/debug/pprof"
	if err := r.env.InstallWebhooks(ctx, addr(3)); err != nil {
		return err
	}
	s := r.o.Size
	components := []struct {
		name string
		args []string
	}{
		{"webhook", []string{"webhook", "--kubeconfig=" + kubeconfigs["webhook"], "--namespace=" + controlplane.EddyNamespace, "--service-name=", "--ip=127.0.0.1",
			"--addr=" + addr(3), "--metrics-addr=" + addr(4), "--image=eddy.local/eddy:dev", "--analyzer-url=https://" + addr(1)}},
		{"analyzer", []string{"analyzer", "--kubeconfig=" + kubeconfigs["analyzer"], "--grpc-addr=" + addr(0), "--manifest-addr=" + addr(1), "--metrics-addr=" + addr(2), "--pprof-addr=" + addr(7),
			"--state-dir=" + filepath.Join(r.o.Dir, "analyzer"), "--tls-cert=" + certFile, "--tls-key=" + keyFile,
			"--flush-interval=" + s.Interval.String(), "--lease-namespace=" + controlplane.EddyNamespace}},
		{"operator", []string{"operator", "--kubeconfig=" + kubeconfigs["operator"], "--namespace=" + controlplane.EddyNamespace, "--leader-elect=false",
			"--metrics-addr=" + addr(5), "--health-addr=" + addr(6)}},
	}
	r.stage("starting eddy's webhook, analyzer and operator (%s); logs in %s", r.o.EddyBin, r.env.Dir)
	for _, comp := range components {
		pid, err := r.env.StartProcess(ctx, r.o.EddyBin, comp.name, comp.args...)
		if err != nil {
			return err
		}
		r.pids[comp.name] = pid
	}
	return r.waitReady(ctx, "http://"+addr(4)+"/readyz", 2*time.Minute)
}

func (r *run) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url) //nolint:noctx // loopback, bounded by the deadline
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (logs in %s)", url, timeout, r.env.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// measure lets Warmup intervals pass, then, over Windows intervals, samples
// the analyzer's metrics and the Lease each second and the profiles each
// interval, and has the operator converge on a Prefetch per workload.
func (r *run) measure(ctx context.Context, fl *fleet, res *Result) error {
	s := r.o.Size
	c := r.env.Client
	var leaseAge time.Duration
	lease := func() time.Duration {
		var l coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKey{Namespace: controlplane.EddyNamespace, Name: v1.AnalyzerHeartbeatLease}, &l); err != nil || l.Spec.RenewTime == nil {
			return 0
		}
		age := time.Since(l.Spec.RenewTime.Time)
		leaseAge = max(leaseAge, age)
		return age
	}
	r.stage("warming up for %d intervals (the first flush creates every profile)", s.Warmup)
	warm := time.Now().Add(time.Duration(s.Warmup) * s.Interval)
	for time.Now().Before(warm) {
		lease()
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	res.LeaseMaxAge, leaseAge = leaseAge, 0

	before, err := r.scrapePatiently(ctx, "analyzer", res)
	if err != nil {
		return err
	}
	opBefore, err := r.scrapePatiently(ctx, "operator", res)
	if err != nil {
		return err
	}
	offeredBefore := fl.offered.Load()
	res.LoadBefore = loadAverage()
	start := time.Now()
	r.stage("measuring %d intervals; creating a Prefetch recommendation per workload (Auto policy)", s.Windows)
	converged := make(chan error, 1)
	go func() { converged <- r.converge(ctx, res, start) }()
	cpu := make(chan string, 1)
	go func() {
		cpu <- cpuTop(ctx, r.urls["analyzer-pprof"], int((time.Duration(s.Windows) * s.Interval / 2).Seconds()))
	}()

	prev, prevAt, prevOffered := before, start, offeredBefore
	nextSample := start.Add(s.Interval)
	end := start.Add(time.Duration(s.Windows) * s.Interval)
	for time.Now().Before(end) {
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
		age := lease()
		now, err := scrape(ctx, r.urls["analyzer"])
		if err != nil {
			// Counted, and the next answer covers the time since the
			// last one.
			res.Unanswered++
			res.UnansweredMax = max(res.UnansweredMax, time.Since(prevAt))
			r.stage("the analyzer's /metrics did not answer: %v", err)
			continue
		}
		at, offered := time.Now(), fl.offered.Load()
		pt := Point{T: at.Sub(start), LeaseAge: age,
			Accepted: (now.sum("eddy_analyzer_access_records_total") - prev.sum("eddy_analyzer_access_records_total")) / at.Sub(prevAt).Seconds(),
			Offered:  float64(offered-prevOffered) / at.Sub(prevAt).Seconds()}
		if n := now.sum("eddy_analyzer_flush_duration_seconds_count") - prev.sum("eddy_analyzer_flush_duration_seconds_count"); n > 0 {
			took := (now.sum("eddy_analyzer_flush_duration_seconds_sum") - prev.sum("eddy_analyzer_flush_duration_seconds_sum")) / n
			pt.Flush = time.Duration(took * float64(time.Second))
			res.FlushMax = max(res.FlushMax, pt.Flush)
		}
		res.PendingMax = max(res.PendingMax, now.sum("eddy_analyzer_publish_pending_keys"))
		if n := now.sum("eddy_analyzer_publish_round_duration_seconds_count") - prev.sum("eddy_analyzer_publish_round_duration_seconds_count"); n > 0 {
			took := (now.sum("eddy_analyzer_publish_round_duration_seconds_sum") - prev.sum("eddy_analyzer_publish_round_duration_seconds_sum")) / n
			res.RoundMax = max(res.RoundMax, time.Duration(took*float64(time.Second)))
		}
		res.Series = append(res.Series, pt)
		prev, prevAt, prevOffered = now, at, offered
		if time.Now().After(nextSample) {
			nextSample = nextSample.Add(s.Interval)
			if err := r.sampleProfiles(ctx, res); err != nil {
				return err
			}
		}
	}
	res.Measured = time.Since(start)
	res.AnalyzerCPU = <-cpu
	res.LoadAfter = loadAverage()
	after := prev
	res.LeaseMaxAge = max(res.LeaseMaxAge, leaseAge)
	secs := res.Measured.Seconds()
	res.OfferedPerSecond = float64(fl.offered.Load()-offeredBefore) / secs
	res.AcceptedPerSecond = (after.sum("eddy_analyzer_access_records_total") - before.sum("eddy_analyzer_access_records_total")) / secs
	res.WindowsApplied = after.sum("eddy_analyzer_windows_total", `result="applied"`) - before.sum("eddy_analyzer_windows_total", `result="applied"`)
	res.WindowsDuplicate = after.sum("eddy_analyzer_windows_total", `result="duplicate"`) - before.sum("eddy_analyzer_windows_total", `result="duplicate"`)
	flushes := after.sum("eddy_analyzer_flush_duration_seconds_count") - before.sum("eddy_analyzer_flush_duration_seconds_count")
	res.Flushes = int(flushes)
	if flushes > 0 {
		res.FlushMean = time.Duration((after.sum("eddy_analyzer_flush_duration_seconds_sum") - before.sum("eddy_analyzer_flush_duration_seconds_sum")) / flushes * float64(time.Second))
	}
	rounds := after.sum("eddy_analyzer_publish_round_duration_seconds_count") - before.sum("eddy_analyzer_publish_round_duration_seconds_count")
	res.Rounds = int(rounds)
	if rounds > 0 {
		res.RoundMean = time.Duration((after.sum("eddy_analyzer_publish_round_duration_seconds_sum") - before.sum("eddy_analyzer_publish_round_duration_seconds_sum")) / rounds * float64(time.Second))
	}
	r.stage("measured %s: %.0f of %.0f records/s accepted; %.0f windows applied, %.0f duplicate; %d flushes, mean %s, max %s; Lease at most %s old",
		res.Measured.Round(time.Second), res.AcceptedPerSecond, res.OfferedPerSecond, res.WindowsApplied, res.WindowsDuplicate,
		res.Flushes, res.FlushMean.Round(time.Millisecond), res.FlushMax.Round(time.Millisecond), res.LeaseMaxAge.Round(time.Second))

	r.stage("waiting for the operator (at most 10 minutes more)")
	if err := <-converged; err != nil {
		return err
	}
	opAfter, err := r.scrapePatiently(ctx, "operator", res)
	if err != nil {
		return err
	}
	res.Reconciles = opAfter.sum("controller_runtime_reconcile_total") - opBefore.sum("controller_runtime_reconcile_total")
	res.OperatorRequests = opAfter.sum("rest_client_requests_total") - opBefore.sum("rest_client_requests_total")
	return nil
}

// scrapePatiently scrapes a component's metrics, trying again for up to two
// minutes; each failure counts as unanswered.
func (r *run) scrapePatiently(ctx context.Context, component string, res *Result) (metrics, error) {
	since := time.Now()
	for {
		m, err := scrape(ctx, r.urls[component])
		if err == nil {
			return m, nil
		}
		res.Unanswered++
		res.UnansweredMax = max(res.UnansweredMax, time.Since(since))
		if time.Since(since) > 2*time.Minute {
			return nil, fmt.Errorf("the %s's metrics: %w", component, err)
		}
		r.stage("the %s's /metrics did not answer: %v", component, err)
		if err := sleep(ctx, time.Second); err != nil {
			return nil, err
		}
	}
}

// sampleProfiles records how far behind each workload's profile is.
func (r *run) sampleProfiles(ctx context.Context, res *Result) error {
	s := r.o.Size
	var list v1.AccessProfileList
	if err := r.env.Client.List(ctx, &list); err != nil {
		return err
	}
	now := time.Now()
	seen := map[string]bool{}
	for _, p := range list.Items {
		seen[p.Namespace+"/"+p.Spec.WorkloadRef.Name] = true
		if p.Status.LastSeen == nil {
			res.StaleSamples++
			continue
		}
		lag := now.Sub(p.Status.LastSeen.Time)
		res.ProfileMaxLag = max(res.ProfileMaxLag, lag)
		if lag > 2*s.Interval {
			res.StaleSamples++
		}
	}
	for i := range s.Workloads {
		if !seen[optedIn(i%s.Namespaces)+"/"+workloadName(i)] {
			res.StaleSamples++
		}
	}
	res.Samples += s.Workloads
	return nil
}

// converge creates a Prefetch recommendation per workload and waits until
// the operator applied every one, then counts the events eddy's operator
// wrote since start.
func (r *run) converge(ctx context.Context, res *Result, start time.Time) error {
	s := r.o.Size
	c := r.env.Client
	var recs []client.Object
	for i := range s.Workloads {
		recs = append(recs, prefetchRecommendation(s, i))
	}
	if err := createAll(ctx, c, recs); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(s.Windows)*s.Interval + 10*time.Minute)
	for {
		var list v1.RecommendationList
		if err := c.List(ctx, &list); err != nil {
			// An API server this loaded times out now and then: the
			// measurements are taken, so try again until the deadline.
			r.stage("listing recommendations: %v", err)
			if time.Now().After(deadline) {
				res.OperatorConverge = -1
				break
			}
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
			continue
		}
		applied := 0
		for _, rec := range list.Items {
			if strings.HasSuffix(rec.Name, "-bench-prefetch") && rec.Status.Phase == v1.PhaseApplied {
				applied++
			}
		}
		res.OperatorApplied = applied
		if applied == s.Workloads {
			res.OperatorConverge = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			res.OperatorConverge = -1
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	var events eventsv1.EventList
	if err := c.List(ctx, &events); err != nil {
		r.stage("listing events (eddy events per reconcile not counted): %v", err)
		return nil
	}
	for _, e := range events.Items {
		if strings.HasPrefix(e.ReportingController, "eddy") && !e.CreationTimestamp.Time.Before(start.Truncate(time.Second)) {
			res.EddyEvents++
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
