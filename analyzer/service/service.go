// Package service runs the analyzer: it restores learned state from its
// local checkpoint log and the AccessProfiles' checkpoints, takes windows
// from collectors over gRPC, and every flush interval assesses what changed,
// makes it durable and acknowledges to collectors what was; profiles and
// recommendations are written behind, and the heartbeat Lease the operator
// checks before acting is renewed while that writing makes progress.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/intake"
	"github.com/eddy-autotune/eddy/analyzer/localstate"
	"github.com/eddy-autotune/eddy/analyzer/manifest"
	"github.com/eddy-autotune/eddy/analyzer/publish"
	"github.com/eddy-autotune/eddy/analyzer/store"
)

// HeartbeatLease is the name of the Lease the analyzer renews.
const HeartbeatLease = v1.AnalyzerHeartbeatLease

// DefaultShutdownFlushTimeout is how long, once Run's context ends, the
// flush in progress, the final flush and (with a local checkpoint log) the
// writing of the profiles waiting may take (keep it under the pod's
// terminationGracePeriodSeconds).
const DefaultShutdownFlushTimeout = 60 * time.Second

// Options configure the analyzer. Zero values are documented defaults.
type Options struct {
	// Client reaches the API server; required.
	Client client.Client
	Log    logr.Logger
	// Registry receives metrics; nil means none.
	Registry prometheus.Registerer
	// GRPCAddr is where collectors ship windows (default ":9470").
	GRPCAddr string
	// FlushInterval is how often state is assessed, written and acknowledged
	// (default 10s). Keep it under a quarter of v1.AnalyzerStaleAfter: an
	// idle analyzer proves its progress once a flush.
	FlushInterval time.Duration
	// LeaseNamespace holds the heartbeat Lease (default "eddy-system").
	LeaseNamespace string
	// Identity is the Lease holder (default: hostname).
	Identity string
	// Analyzer options (history half-life, bounds).
	Analyzer analyzer.Options
	// StableAssessments, see publish.DefaultStableAssessments.
	StableAssessments int
	// RunEndedAfter, see publish.DefaultRunEndedAfter.
	RunEndedAfter time.Duration
	// LongRunAfter, see v1alpha1.DefaultLongRunAfter.
	LongRunAfter time.Duration
	// StateDir persists manifests ("" keeps them in memory only).
	StateDir string
	// CheckpointDir holds the local checkpoint log (package localstate):
	// a flush appends the checkpoints it took there, one fdatasync, and
	// acknowledges the windows they cover at once; profiles and
	// recommendations are written behind it by a publisher at the API
	// server's pace. "" makes the AccessProfiles' checkpoints the only
	// durable state: a flush acknowledges only what it wrote to them.
	CheckpointDir string
	// ProfileCheckpointEvery, with CheckpointDir, is how old the
	// checkpoint in a profile may grow before a write carries a newer one
	// although nothing else in the profile changed materially (default
	// DefaultProfileCheckpointEvery): without the local log (a new volume),
	// a restart goes back that far.
	ProfileCheckpointEvery time.Duration
	// ManifestAddr serves manifests over HTTPS ("" disables the endpoint).
	ManifestAddr string
	// ManifestTLS serves the endpoint; nil means a self-signed certificate.
	ManifestTLS *tls.Config
	// Intake authenticates collectors and admits their records. Without an
	// Authenticator the intake is open and plaintext: tests only.
	Intake intake.Options
	// IntakeTLS serves the gRPC intake; nil means ManifestTLS (or the
	// self-signed certificate). Used whenever Intake.Auth is set.
	IntakeTLS *tls.Config
	// QuarantineAfter is how many flushes in a row a key may fail to be
	// written before it is quarantined (default 10; a failure retrying
	// cannot mend quarantines at once); QuarantineFor is how long its
	// records are then refused (default 10m).
	QuarantineAfter int
	QuarantineFor   time.Duration
	// PublishWorkers is how many keys a flush writes at once (default
	// publish.DefaultWorkers).
	PublishWorkers int
	// ShutdownFlushTimeout: see DefaultShutdownFlushTimeout (0 means default).
	ShutdownFlushTimeout time.Duration
	// VerifySweep is how often a flush looks for resting profiles with an
	// Applied recommendation, to make them learn again (default
	// DefaultVerifySweep).
	VerifySweep time.Duration
}

// DefaultVerifySweep: see Options.VerifySweep.
const DefaultVerifySweep = time.Minute

// sinks fans a window out to the learned state and the manifests.
type sinks struct {
	store     *store.Store
	manifests *manifest.Store
	intake    *intake.Server
}

func (s sinks) Apply(collector string, w *accessv1.AccessWindow) {
	if n := s.store.Apply(collector, w); n > 0 && s.intake != nil {
		s.intake.Reject(intake.RejectQuarantined, n)
	}
	s.manifests.Observe(w.GetFiles())
}

// Service is a running analyzer.
type Service struct {
	opt       Options
	Store     *store.Store
	Intake    *intake.Server
	Manifests *manifest.Store
	httpLis   net.Listener
	http      *http.Server
	publisher *publish.Publisher
	lis       net.Listener
	grpc      *grpc.Server
	stopped   chan struct{}
	flushes   *prometheus.CounterVec
	flushTime prometheus.Histogram
	// failures counts, per key, the flushes (publishing rounds, with a
	// local log) in a row that failed to write it.
	failures    map[analyzer.Key]int
	quarantines prometheus.Counter
	quarantined prometheus.Gauge
	renewed     prometheus.Gauge
	// progress is when writing profiles last made progress (unix ns): a
	// key was written, or there was nothing to write and the last round
	// that had wrote something (lastWriteOK).
	progress    atomic.Int64
	lastWriteOK atomic.Bool
	// lastSweep is when wakeVerifying last ran.
	lastSweep time.Time

	// With Options.CheckpointDir: the log, what waits to be published,
	// and the keys quarantined since the last flush (to drop from the log).
	local       *localstate.Log
	backlog     *backlog
	publishTime prometheus.Histogram
	dropMu      sync.Mutex
	dropped     []analyzer.Key
}

// New restores state from the API server and listens on GRPCAddr; Run serves.
func New(ctx context.Context, opt Options) (*Service, error) {
	if opt.Client == nil {
		return nil, errors.New("analyzer: no API client")
	}
	if opt.GRPCAddr == "" {
		opt.GRPCAddr = ":9470"
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = 10 * time.Second
	}
	if opt.LeaseNamespace == "" {
		opt.LeaseNamespace = "eddy-system"
	}
	if opt.QuarantineAfter <= 0 {
		opt.QuarantineAfter = 10
	}
	if opt.QuarantineFor <= 0 {
		opt.QuarantineFor = 10 * time.Minute
	}
	if opt.ShutdownFlushTimeout <= 0 {
		opt.ShutdownFlushTimeout = DefaultShutdownFlushTimeout
	}
	if opt.VerifySweep <= 0 {
		opt.VerifySweep = DefaultVerifySweep
	}
	if opt.ProfileCheckpointEvery <= 0 {
		opt.ProfileCheckpointEvery = DefaultProfileCheckpointEvery
	}
	s := &Service{
		opt:     opt,
		stopped: make(chan struct{}),
		Store:   store.New(opt.Analyzer),
		publisher: &publish.Publisher{Client: opt.Client, Log: opt.Log.WithName("publish"), StableAssessments: opt.StableAssessments, Bounds: opt.Analyzer.Bounds,
			RunEndedAfter: opt.RunEndedAfter, LongRunAfter: opt.LongRunAfter, Workers: opt.PublishWorkers},
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_analyzer_flushes_total", Help: "Checkpoint flushes, by result.",
		}, []string{"result"}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "eddy_analyzer_flush_duration_seconds", Help: "Time to assess and write what changed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		failures: map[analyzer.Key]int{},
		backlog:  newBacklog(),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "eddy_analyzer_publish_round_duration_seconds", Help: "With a local checkpoint log: time to write the profiles and recommendations of every key waiting (a round).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		quarantines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_analyzer_quarantines_total", Help: "Workload × dataset keys quarantined because they could not be written (their records are refused for a while).",
		}),
		quarantined: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_analyzer_quarantined_keys", Help: "Workload × dataset keys quarantined now.",
		}),
		renewed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_analyzer_heartbeat_timestamp_seconds", Help: "When the heartbeat Lease was last renewed; the operator stops acting once it is older than its stale-after.",
		}),
	}
	// Every key written is progress, so that a long flush that keeps
	// writing keeps the heartbeat renewed.
	s.publisher.Written = func(analyzer.Key) { s.progress.Store(time.Now().UnixNano()) }
	s.lastWriteOK.Store(true)
	progressed := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eddy_analyzer_last_progress_timestamp_seconds", Help: "When writing profiles last made progress (wrote a key, or found nothing to write after a round that wrote).",
	}, func() float64 { return float64(s.progress.Load()) / 1e9 })
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eddy_analyzer_publish_pending_keys", Help: "With a local checkpoint log: keys whose durable state waits to be written to their profiles.",
	}, func() float64 { return float64(s.backlog.len()) })
	if opt.Registry != nil {
		opt.Registry.MustRegister(s.flushes, s.flushTime, s.quarantines, s.quarantined, s.renewed, progressed, s.publishTime, pending)
	}
	if opt.ProfileCheckpointEvery > 0 && opt.CheckpointDir != "" {
		s.publisher.CheckpointEvery = opt.ProfileCheckpointEvery
	}
	var err error
	if s.Manifests, err = manifest.NewStore(opt.StateDir, 0); err != nil {
		return nil, err
	}
	sk := &sinks{store: s.Store, manifests: s.Manifests}
	s.Intake = intake.NewServer(sk, opt.Registry, opt.Intake)
	sk.intake = s.Intake
	if opt.CheckpointDir != "" {
		if s.local, err = localstate.Open(opt.CheckpointDir); err != nil {
			return nil, err
		}
		switch d := s.local.Damage(); {
		case d == nil:
		case localstate.IsTorn(d):
			opt.Log.Info("the local checkpoint log ended in a torn write, dropped (it was never acknowledged)", "detail", d.Error())
		default:
			opt.Log.Error(d, "the local checkpoint log is damaged: what it no longer holds comes from the AccessProfiles' checkpoints, which may be older (windows acknowledged since are lost for those keys)")
		}
	}
	fail := func(err error) (*Service, error) {
		if s.local != nil {
			s.local.Close()
		}
		return nil, err
	}
	if err := s.restore(ctx); err != nil {
		return fail(err)
	}
	if s.lis, err = net.Listen("tcp", opt.GRPCAddr); err != nil {
		return fail(fmt.Errorf("listen for collectors on %s: %w", opt.GRPCAddr, err))
	}
	grpcOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(accessv1.MaxMessageBytes)}
	manifestTLS := opt.ManifestTLS
	if manifestTLS == nil && (opt.ManifestAddr != "" || (opt.Intake.Auth != nil && opt.IntakeTLS == nil)) {
		if manifestTLS, err = selfSignedTLS(opt.Identity); err != nil {
			s.lis.Close()
			return fail(err)
		}
	}
	if opt.Intake.Auth != nil {
		cfg := opt.IntakeTLS
		if cfg == nil {
			cfg = manifestTLS
		}
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	accessv1.RegisterAccessIntakeServer(s.grpc, s.Intake)
	if opt.ManifestAddr != "" {
		if s.httpLis, err = tls.Listen("tcp", opt.ManifestAddr, manifestTLS); err != nil {
			s.lis.Close()
			return fail(fmt.Errorf("listen for manifest requests on %s: %w", opt.ManifestAddr, err))
		}
		mux := http.NewServeMux()
		mux.Handle("/v1/manifests/", &manifest.Handler{Store: s.Manifests, Client: opt.Client, Log: opt.Log.WithName("manifest"), ProfileName: publish.ProfileName,
			Limiter: rate.NewLimiter(manifest.DefaultRate, manifest.DefaultBurst)})
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return s, nil
}

// ManifestAddr is where manifests are served ("" when disabled).
func (s *Service) ManifestAddr() string {
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// Addr is the address collectors ship to.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// restore loads each key's state: from the local checkpoint log, unless
// the key's AccessProfile holds a checkpoint that covers windows the log's
// does not and not the other way round (the log is from an older volume, or
// lost records to damage); else from the AccessProfile. It tells the
// publisher of every profile, so that it writes them without reading them
// first, and makes keys whose profile lags behind the log dirty, so that
// they are published.
func (s *Service) restore(ctx context.Context) error {
	var list v1.AccessProfileList
	if err := s.opt.Client.List(ctx, &list); err != nil {
		return fmt.Errorf("list AccessProfiles to restore checkpoints: %w", err)
	}
	profiles := make(map[analyzer.Key]*v1.AccessProfile, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		s.publisher.Know(p)
		profiles[profileKey(p)] = p
	}
	var fromLog, fromProfile, behind int
	if s.local != nil {
		err := s.local.Each(func(k analyzer.Key, data []byte) error {
			var theirs []byte
			if p := profiles[k]; p != nil && p.Status.Checkpoint != nil {
				theirs = p.Status.Checkpoint.Data
			}
			ours, current := s.newer(k, data, theirs)
			if !ours {
				return nil // restored from the profile below
			}
			if err := s.Store.Restore(k, data); err != nil {
				s.opt.Log.Error(err, "skipping an unreadable checkpoint in the local log; the profile's is used", "key", k.String())
				return nil
			}
			delete(profiles, k)
			fromLog++
			if !current {
				s.Store.MarkDirty(k)
				behind++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("restore from the local checkpoint log: %w", err)
		}
	}
	for k, p := range profiles {
		cp := p.Status.Checkpoint
		if cp == nil || len(cp.Data) == 0 {
			continue
		}
		if err := s.Store.Restore(k, cp.Data); err != nil {
			// A bad checkpoint costs that profile its history, not the analyzer its start.
			s.opt.Log.Error(err, "skipping unreadable checkpoint", "profile", client.ObjectKeyFromObject(p))
			continue
		}
		fromProfile++
	}
	s.opt.Log.Info("restored state", "fromLocalLog", fromLog, "fromAccessProfiles", fromProfile, "profilesBehindTheLog", behind)
	return nil
}

// newer decides between k's checkpoint in the local log (ours) and in its
// profile (theirs, nil if none): ours unless theirs covers windows ours
// does not and ours covers none theirs does not; current is whether the
// profile holds the same windows (nothing to publish).
func (s *Service) newer(k analyzer.Key, ours, theirs []byte) (useOurs, current bool) {
	if len(theirs) == 0 {
		return true, false
	}
	oursCovers, err := store.Covers(ours, theirs)
	if err != nil {
		s.opt.Log.Error(err, "the local log's checkpoint is unreadable; the profile's is used", "key", k.String())
		return false, true
	}
	theirsCovers, err := store.Covers(theirs, ours)
	if err != nil {
		return true, false
	}
	if theirsCovers && !oursCovers {
		return false, true
	}
	return true, oursCovers && theirsCovers
}

// profileKey is the key whose state a profile holds.
func profileKey(p *v1.AccessProfile) analyzer.Key {
	return analyzer.Key{
		WorkloadNamespace: p.Namespace, WorkloadKind: p.Spec.WorkloadRef.Kind, WorkloadName: p.Spec.WorkloadRef.Name,
		DatasetNamespace: p.Namespace, DatasetName: p.Spec.Dataset.Name,
	}
}

// wakeVerifying makes the next flush assess every resting profile with an
// Applied recommendation: its workload must learn again (Verifying) for the
// recommendation to be verified, and a resting workload sends no window that
// would make its profile assessed (a pod-level recommendation's pods are
// observed anyway, by their annotation; a ScaleCache one's are not).
func (s *Service) wakeVerifying(ctx context.Context) error {
	var list v1.RecommendationList
	if err := s.opt.Client.List(ctx, &list, client.HasLabels{v1.ProfileLabel}); err != nil {
		return fmt.Errorf("list Recommendations to find those awaiting verification: %w", err)
	}
	for i := range list.Items {
		r := &list.Items[i]
		if r.Status.Phase != v1.PhaseApplied || r.Spec.Evidence.Profile == "" {
			continue
		}
		if p, ok := s.publisher.Resting(client.ObjectKey{Namespace: r.Namespace, Name: r.Spec.Evidence.Profile}); ok {
			s.Store.MarkDirty(profileKey(p))
		}
	}
	return nil
}

// Run serves collectors and flushes until ctx ends, then flushes once more.
// Once ctx ends, the flush in progress, the final flush and (with a local
// checkpoint log) the publishing of what they made durable together have
// ShutdownFlushTimeout before their writes are cancelled: what the log
// holds and the profiles do not yet is published by the next start. The
// heartbeat Lease is renewed on its own timer (see heartbeatLoop) as long as
// writing profiles makes progress: a long flush or round that keeps writing
// does not make the analyzer look dead, and an analyzer that cannot write
// anything does.
func (s *Service) Run(ctx context.Context) error {
	if s.local != nil {
		defer s.local.Close()
	}
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	if s.http != nil {
		go func() { errc <- s.http.Serve(s.httpLis) }()
		defer s.http.Close()
	}
	// Writes outlive ctx by the shutdown grace, and the heartbeat with them.
	flushCtx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	go func() {
		select {
		case <-flushCtx.Done():
			return
		case <-ctx.Done():
		}
		grace := time.NewTimer(s.opt.ShutdownFlushTimeout)
		defer grace.Stop()
		select {
		case <-flushCtx.Done():
		case <-grace.C:
			s.opt.Log.Info("shutdown flush timeout reached: cancelling writes; collectors resend what was not acknowledged", "timeout", s.opt.ShutdownFlushTimeout)
			cancelFlush()
		}
	}()
	s.progress.Store(time.Now().UnixNano())
	go s.heartbeatLoop(flushCtx)
	if s.local != nil {
		published := make(chan struct{})
		go func() {
			defer close(published)
			s.publishLoop(flushCtx)
		}()
		// The log is closed (deferred above) only once nothing publishes.
		defer func() { cancelFlush(); <-published }()
	}
	t := time.NewTicker(s.opt.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.grpc.GracefulStop()
			err := s.Flush(flushCtx)
			if s.WaitPublished(flushCtx) != nil {
				// Nothing is lost: the log holds it, and the next start
				// publishes the profiles that lag behind it.
				s.opt.Log.Info("shutdown flush timeout reached before every profile was written; the next start writes the rest from the local checkpoint log", "waiting", s.backlog.len())
			}
			return err
		case <-s.stopped:
			return nil
		case err := <-errc:
			return fmt.Errorf("gRPC server: %w", err)
		case <-t.C:
			if ctx.Err() != nil {
				continue // the final flush comes next
			}
			if err := s.Flush(flushCtx); err != nil {
				s.opt.Log.Error(err, "flush")
			}
		}
	}
}

// Stop ends serving at once, without the final flush Run does when its
// context ends, as a crash would: collectors resend what was not acknowledged.
func (s *Service) Stop() {
	close(s.stopped)
	s.grpc.Stop()
}

// Flush assesses every key changed since the last flush and makes it
// durable, then acknowledges to collectors what is.
//
// With a local checkpoint log, durable is appended to the log (one write,
// one fdatasync); the keys are then handed to the publisher, which writes
// their profiles behind (publishLoop), and Flush does not wait for it.
//
// Without, durable is written to the AccessProfiles, and Flush writes them.
// Keys that fail stay dirty and hold back acknowledgement of only the
// windows that touched them (store.Frontier); a key that keeps failing, or
// fails in a way retrying cannot mend, is quarantined and counted. A flush
// makes progress when it wrote something, or had nothing to write after a
// flush that did; only while flushes make progress is the heartbeat renewed.
func (s *Service) Flush(ctx context.Context) error {
	start := time.Now()
	defer func() { s.flushTime.Observe(time.Since(start).Seconds()) }()
	if now := time.Now(); now.Sub(s.lastSweep) >= s.opt.VerifySweep {
		s.lastSweep = now
		if err := s.wakeVerifying(ctx); err != nil {
			s.opt.Log.Error(err, "looking for resting profiles to verify")
		}
	}
	var entries []store.Entry
	var err error
	// Keys quarantined before the state is taken: none of them is taken
	// again, and the log drops them before anything later of theirs.
	s.dropMu.Lock()
	dropped := s.dropped
	s.dropped = nil
	s.dropMu.Unlock()
	// Taken under the intake's lock: no window is half-applied.
	s.Intake.Lock(func(map[string]uint64) {
		entries, err = s.Store.TakeDirty(time.Now().UnixNano())
	})
	if err == nil {
		// Outside the intake's lock: windows keep coming meanwhile.
		err = store.EncodeCheckpoints(entries)
	}
	if err == nil {
		err = s.Manifests.Flush()
	}
	if err == nil && s.local != nil {
		err = s.flushLocal(entries, dropped)
	}
	if err != nil {
		for _, e := range entries {
			s.Store.MarkDirty(e.Key)
		}
		if len(dropped) > 0 {
			s.dropMu.Lock()
			s.dropped = append(s.dropped, dropped...)
			s.dropMu.Unlock()
		}
		s.flushes.WithLabelValues("error").Inc()
		return err
	}
	s.quarantined.Set(float64(s.Store.Quarantined()))
	if s.local != nil {
		s.flushes.WithLabelValues("ok").Inc()
		return nil
	}
	res, err := s.publisher.Publish(ctx, entries)
	written := s.settle(entries, &res,
		func(e *store.Entry) { s.Store.MarkWritten(e.Key, e.Meta.Applied) },
		func(e *store.Entry) { s.Store.MarkDirty(e.Key) })
	s.Intake.MarkDurable(s.Store.Frontier(s.Intake.Received()))
	s.quarantined.Set(float64(s.Store.Quarantined()))
	if len(entries) > 0 {
		s.lastWriteOK.Store(written > 0 || len(res.Failed) == 0)
	}
	if s.lastWriteOK.Load() {
		s.progress.Store(time.Now().UnixNano())
	}
	if err != nil {
		s.flushes.WithLabelValues("error").Inc()
		return err
	}
	s.flushes.WithLabelValues("ok").Inc()
	if len(entries) > 0 {
		s.opt.Log.V(1).Info("flushed", "profiles", res.Profiles, "unchanged", res.Unchanged, "proposed", res.Proposed, "held", res.Held, "awaitingRun", res.AwaitingRun, "took", time.Since(start))
	}
	return nil
}

// heartbeatPeriod is how often the heartbeat Lease is renewed: every flush
// interval, and at least four times within v1.AnalyzerStaleAfter.
func (s *Service) heartbeatPeriod() time.Duration {
	return min(s.opt.FlushInterval, v1.AnalyzerStaleAfter/4)
}

// progressWindow is how recent the last progress must be for the heartbeat
// to be renewed: three flush intervals, and at most half of
// v1.AnalyzerStaleAfter, so that the operator sees a stuck analyzer stale.
func (s *Service) progressWindow() time.Duration {
	return min(3*s.opt.FlushInterval, v1.AnalyzerStaleAfter/2)
}

// heartbeatLoop renews the Lease every heartbeatPeriod while the last
// progress (a key written, even in the middle of a long flush) is within
// progressWindow.
func (s *Service) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.heartbeatPeriod())
	defer t.Stop()
	for {
		if since := time.Since(time.Unix(0, s.progress.Load())); since <= s.progressWindow() {
			s.heartbeat(ctx)
		} else {
			s.opt.Log.Info("not renewing the heartbeat: no flush has made progress", "since", since.Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heartbeat creates or renews the Lease; failures are logged, not fatal:
// the operator stops acting on a stale Lease, which is the safe direction.
func (s *Service) heartbeat(ctx context.Context) {
	if err := RenewLease(ctx, s.opt.Client, s.opt.LeaseNamespace, s.opt.Identity, s.opt.FlushInterval); err != nil {
		s.opt.Log.Error(err, "renew heartbeat Lease")
		return
	}
	s.renewed.SetToCurrentTime()
}

// RenewLease creates or renews the analyzer heartbeat Lease in ns.
func RenewLease(ctx context.Context, c client.Client, ns, holder string, interval time.Duration) error {
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: HeartbeatLease, Namespace: ns}}
	err := c.Get(ctx, client.ObjectKeyFromObject(l), l)
	if apierrors.IsNotFound(err) {
		l.Spec = coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To(int32(3 * interval.Seconds())),
			AcquireTime:          &now,
			RenewTime:            &now,
		}
		return c.Create(ctx, l)
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity = ptr.To(holder)
	l.Spec.RenewTime = &now
	l.Spec.LeaseDurationSeconds = ptr.To(int32(3 * interval.Seconds()))
	return c.Update(ctx, l)
}
