// Package intake is the analyzer's end of the collector→analyzer stream: a
// gRPC AccessIntake server that applies each collector's windows once, in
// order, and acknowledges only what a completed checkpoint covers, so that
// neither an analyzer nor a collector restart loses or double-counts a window.
//
// Nothing a collector sends is trusted without a check: the collector
// authenticates with a service-account token of accessv1.Audience bound to
// its pod (Authenticator), its sequence space must be its own node's, and
// each record is admitted only for a pod of that node in an opted-in
// namespace (Admission); calls are bounded in size and rate.
package intake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// Sink receives windows. Apply is called with the Server's lock held, in
// increasing sequence order per collector, at most once per (collector,
// sequence) for the life of the process; after a restart a Sink must itself
// skip what its restored state already contains.
type Sink interface {
	Apply(collector string, w *accessv1.AccessWindow)
}

// Bounds on what collectors send.
const (
	// MaxWindowsPerRequest bounds one Ship request.
	MaxWindowsPerRequest = 1024
	// MaxSequenceGap is the largest jump a collector's sequence may take:
	// windows it lost while the analyzer was away (a day of 10s windows is
	// 8640), not a forged number that would make its later windows look old.
	MaxSequenceGap = 1 << 20
	// MaxCollectorIDBytes bounds a collector's id.
	MaxCollectorIDBytes = 253
	// MaxKeysPerPod bounds the workload × dataset keys one pod's records
	// may name: a pod is one workload, and mounts a few datasets, so more
	// is a collector making keys up.
	MaxKeysPerPod = 32
	// maxTrackedPods bounds the pods whose keys are counted.
	maxTrackedPods = 1 << 16
)

// Options configure a Server. Without Auth the intake is open: for tests and
// one-machine tools only.
type Options struct {
	Auth      Authenticator
	Admission Admission
	// RecordsPerSecond and Burst limit the records one node's collector may
	// send (default 200k/s, burst 2M): beyond, calls fail ResourceExhausted
	// and the collector retries later.
	RecordsPerSecond float64
	Burst            int
}

// Server implements accessv1.AccessIntakeServer.
type Server struct {
	accessv1.UnimplementedAccessIntakeServer

	sink Sink
	opts Options
	// instance is this process's id in replies: collectors resend what it
	// received but did not acknowledge only when it changes.
	instance string

	mu       sync.Mutex
	received map[string]uint64
	durable  map[string]uint64
	seen     map[string]time.Time
	limiters map[string]*rate.Limiter
	podKeys  map[string]map[string]struct{}

	windows    *prometheus.CounterVec
	records    prometheus.Counter
	rejected   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	collectors prometheus.Gauge
	lag        prometheus.Histogram
}

// NewServer returns a Server applying windows to sink. Its metrics are
// registered with reg when reg is not nil.
func NewServer(sink Sink, reg prometheus.Registerer, opts Options) *Server {
	if opts.RecordsPerSecond <= 0 {
		opts.RecordsPerSecond = 200_000
	}
	if opts.Burst <= 0 {
		opts.Burst = 2_000_000
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24)
	s := &Server{
		sink:     sink,
		opts:     opts,
		instance: hex.EncodeToString(id[:]),
		received: map[string]uint64{},
		durable:  map[string]uint64{},
		seen:     map[string]time.Time{},
		limiters: map[string]*rate.Limiter{},
		podKeys:  map[string]map[string]struct{}{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_analyzer_rejected_records_total",
			Help: "Records (and observed pods) not taken from collectors, by reason: a pod of another node, an unknown pod, a namespace not opted in or excluded, malformed, a quarantined key.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_analyzer_refused_calls_total",
			Help: "Ship calls refused, by reason: unauthenticated, forbidden (another node's sequence space), invalid, rate_limited, unavailable (the token could not be reviewed).",
		}, []string{"reason"}),
		windows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_analyzer_windows_total",
			Help: "Windows received from collectors, by result: applied, duplicate (already applied, not applied again), other_instance (sent past what an earlier instance of the analyzer received: not applied, sent again from the collector's oldest unacknowledged).",
		}, []string{"result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_analyzer_access_records_total",
			Help: "File access records in applied windows.",
		}),
		collectors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_analyzer_collectors",
			Help: "Collectors that have shipped windows since the analyzer started.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "eddy_analyzer_window_lag_seconds",
			Help:    "Time from the end of a window on its node to its application here: a growing lag means collectors buffer (analyzer slow or unreachable).",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(s.windows, s.records, s.collectors, s.rejected, s.refused, s.lag)
	}
	return s
}

// Ship authenticates the caller, applies the request's new windows (with
// only the records admitted) and acknowledges the highest sequence a
// completed checkpoint covers, and the highest this instance received (so
// that the collector does not send those again while it waits for the
// checkpoint).
func (s *Server) Ship(ctx context.Context, req *accessv1.ShipRequest) (*accessv1.ShipReply, error) {
	c := req.GetCollector()
	peer, err := s.authenticate(ctx, c)
	if err != nil {
		return nil, err
	}
	if n := len(req.GetWindows()); n > MaxWindowsPerRequest {
		s.refused.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "ship: %d windows in one request, at most %d", n, MaxWindowsPerRequest)
	}
	ws := make([]*accessv1.AccessWindow, 0, len(req.GetWindows()))
	records := 0
	for _, w := range req.GetWindows() {
		if w == nil {
			continue
		}
		if w.GetSequence() == 0 {
			s.refused.WithLabelValues("invalid").Inc()
			return nil, status.Error(codes.InvalidArgument, "ship: window sequence 0; sequences start at 1")
		}
		ws = append(ws, w)
		records += len(w.GetFiles())
	}
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].GetSequence() < ws[j].GetSequence() })
	if in := req.GetInstance(); in != "" && in != s.instance {
		// The collector skipped windows another instance (this analyzer
		// before a restart) said it received: applying the later ones here
		// would lose the skipped. Apply none; the reply names this instance,
		// and the collector sends again from its oldest unacknowledged.
		s.windows.WithLabelValues("other_instance").Add(float64(len(ws)))
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.reply(c), nil
	}
	if s.opts.Auth != nil && !s.limiter(peer.Node).AllowN(time.Now(), min(records, s.opts.Burst)) {
		s.refused.WithLabelValues("rate_limited").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "ship: node %s sends more than %.0f records/s; retry later", peer.Node, s.opts.RecordsPerSecond)
	}
	admitted := s.admit(ctx, peer, ws)

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.received[c]; !seen {
		s.collectors.Inc()
		s.received[c] = 0
	}
	s.seen[c] = time.Now()
	for i, w := range ws {
		if w.GetSequence() <= s.received[c] {
			s.windows.WithLabelValues("duplicate").Inc()
			continue
		}
		if w.GetSequence()-s.received[c] > MaxSequenceGap && s.received[c] > 0 {
			s.refused.WithLabelValues("invalid").Inc()
			return nil, status.Errorf(codes.InvalidArgument, "ship: sequence %d jumps more than %d past %d, the last applied", w.GetSequence(), MaxSequenceGap, s.received[c])
		}
		s.sink.Apply(c, admitted[i])
		s.received[c] = w.GetSequence()
		s.windows.WithLabelValues("applied").Inc()
		if end := w.GetEndUnixNano(); end > 0 {
			s.lag.Observe(max(0, time.Since(time.Unix(0, end)).Seconds()))
		}
		s.records.Add(float64(len(admitted[i].GetFiles())))
	}
	return s.reply(c), nil
}

// reply is the state of collector c for a reply: what is durable, what this
// instance received. Call with s.mu held.
func (s *Server) reply(c string) *accessv1.ShipReply {
	return &accessv1.ShipReply{AckedSequence: s.durable[c], ReceivedSequence: s.received[c], Instance: s.instance}
}

// authenticate checks the caller's token and that the collector id is of
// its node ("<node>-<id>"), so that no collector can write another's
// sequence space.
func (s *Server) authenticate(ctx context.Context, c string) (Peer, error) {
	if c == "" || len(c) > MaxCollectorIDBytes {
		s.refused.WithLabelValues("invalid").Inc()
		return Peer{}, status.Error(codes.InvalidArgument, "ship: the collector id must be 1 to 253 bytes; every collector must send its id")
	}
	if s.opts.Auth == nil {
		return Peer{}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get(accessv1.AuthorizationMetadata) {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = t
		}
	}
	if token == "" {
		s.refused.WithLabelValues("unauthenticated").Inc()
		return Peer{}, status.Errorf(codes.Unauthenticated, "ship: send the collector's service-account token of audience %s as %q: Bearer <token>", accessv1.Audience, accessv1.AuthorizationMetadata)
	}
	peer, err := s.opts.Auth.Authenticate(ctx, token)
	var transient *reviewUnavailable
	switch {
	case errors.As(err, &transient):
		s.refused.WithLabelValues("unavailable").Inc()
		return Peer{}, status.Errorf(codes.Unavailable, "ship: %v", err)
	case err != nil:
		s.refused.WithLabelValues("unauthenticated").Inc()
		return Peer{}, status.Errorf(codes.Unauthenticated, "ship: %v", err)
	}
	if !strings.HasPrefix(c, peer.Node+"-") {
		s.refused.WithLabelValues("forbidden").Inc()
		return Peer{}, status.Errorf(codes.PermissionDenied, "ship: collector %q is not of node %s, the node %s's token is bound to", c, peer.Node, peer.User)
	}
	return peer, nil
}

func (s *Server) limiter(node string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[node]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.opts.RecordsPerSecond), s.opts.Burst)
		s.limiters[node] = l
	}
	return l
}

// admit returns each window with only its admitted records (the window
// itself when all are), the node set to the caller's, and counts the rest.
func (s *Server) admit(ctx context.Context, peer Peer, ws []*accessv1.AccessWindow) []*accessv1.AccessWindow {
	out := make([]*accessv1.AccessWindow, len(ws))
	if s.opts.Admission == nil {
		copy(out, ws)
		return out
	}
	// One decision per pod and call: a window holds many files of a pod.
	decided := map[string]string{}
	for i, w := range ws {
		kept := make([]*accessv1.FileAccess, 0, len(w.GetFiles()))
		for _, r := range w.GetFiles() {
			if r == nil {
				continue
			}
			key := r.GetWorkload().GetNamespace() + "/" + r.GetPod() + "/" + r.GetPodUid()
			why, ok := decided[key]
			if !ok || why == RejectMalformed {
				why = s.opts.Admission.Admit(ctx, peer, r)
				decided[key] = why
			}
			if why == "" && !s.keyAllowed(r) {
				why = RejectTooManyKeys
			}
			if why != "" {
				s.rejected.WithLabelValues(why).Inc()
				continue
			}
			kept = append(kept, r)
		}
		// Observed pods pass the same checks as records: a collector may
		// only say it watched pods of its node in opted-in namespaces.
		var observed []*accessv1.ObservedPod
		for _, o := range w.GetObserved() {
			if o == nil {
				continue
			}
			key := o.GetWorkload().GetNamespace() + "/" + o.GetPod() + "/" + o.GetPodUid()
			why, ok := decided[key]
			if !ok || why == RejectMalformed {
				why = s.opts.Admission.Admit(ctx, peer, &accessv1.FileAccess{Workload: o.GetWorkload(), Pod: o.GetPod(), PodUid: o.GetPodUid()})
				decided[key] = why
			}
			if why != "" {
				s.rejected.WithLabelValues(why).Inc()
				continue
			}
			observed = append(observed, o)
		}
		cp := &accessv1.AccessWindow{Sequence: w.GetSequence(), Node: peer.Node, StartUnixNano: w.GetStartUnixNano(), EndUnixNano: w.GetEndUnixNano(),
			Files: kept, Dropped: w.GetDropped(), Observed: observed}
		out[i] = cp
	}
	return out
}

// keyAllowed counts the keys the record's pod names and refuses one past
// MaxKeysPerPod.
func (s *Server) keyAllowed(r *accessv1.FileAccess) bool {
	w, d := r.GetWorkload(), r.GetDataset()
	key := w.GetKind() + "/" + w.GetName() + "@" + d.GetName()
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.podKeys[r.GetPodUid()]
	if keys == nil {
		if len(s.podKeys) >= maxTrackedPods {
			clear(s.podKeys)
		}
		keys = map[string]struct{}{}
		s.podKeys[r.GetPodUid()] = keys
	}
	if _, ok := keys[key]; ok {
		return true
	}
	if len(keys) >= MaxKeysPerPod {
		return false
	}
	keys[key] = struct{}{}
	return true
}

// Reject counts records the sink refused (a quarantined key).
func (s *Server) Reject(reason string, n int) { s.rejected.WithLabelValues(reason).Add(float64(n)) }

// Received returns, per collector, the highest sequence applied so far. A
// checkpointer takes it before writing state and passes it to MarkDurable
// once the write succeeded.
func (s *Server) Received() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.received))
	for k, v := range s.received {
		out[k] = v
	}
	return out
}

// MarkDurable records that state covering snapshot has been persisted:
// later replies acknowledge up to it.
func (s *Server) MarkDurable(snapshot map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, seq := range snapshot {
		if seq > s.durable[c] {
			s.durable[c] = seq
		}
	}
}

// Lock runs fn with the server's lock held, so a checkpointer can read the
// sink's state consistently with Received.
func (s *Server) Lock(fn func(received map[string]uint64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.received)
}
