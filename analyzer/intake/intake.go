// Package intake is the analyzer's end of the collector→analyzer stream: a
// gRPC AccessIntake server that applies each collector's windows once, in
// order, and acknowledges only what a completed checkpoint covers, so that
// neither an analyzer nor a collector restart loses or double-counts a window.
package intake

import (
	"context"
	"sort"
	"sync"

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

// MaxWindowsPerRequest bounds one Ship request.
const MaxWindowsPerRequest = 1024

// Server implements accessv1.AccessIntakeServer.
type Server struct {
	accessv1.UnimplementedAccessIntakeServer

	sink Sink

	mu       sync.Mutex
	received map[string]uint64
	durable  map[string]uint64

	windows    *prometheus.CounterVec
	records    prometheus.Counter
	collectors prometheus.Gauge
}

// NewServer returns a Server applying windows to sink. Its metrics are
// registered with reg when reg is not nil.
func NewServer(sink Sink, reg prometheus.Registerer) *Server {
	s := &Server{
		sink:     sink,
		received: map[string]uint64{},
		durable:  map[string]uint64{},
		windows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_analyzer_windows_total",
			Help: "Windows received from collectors, by result: applied, duplicate (already applied, not applied again).",
		}, []string{"result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_analyzer_access_records_total",
			Help: "File access records in applied windows.",
		}),
		collectors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_analyzer_collectors",
			Help: "Collectors that have shipped windows since the analyzer started.",
		}),
	}
	if reg != nil {
		reg.MustRegister(s.windows, s.records, s.collectors)
	}
	return s
}

// Ship applies the request's new windows and acknowledges the highest
// sequence a completed checkpoint covers.
func (s *Server) Ship(_ context.Context, req *accessv1.ShipRequest) (*accessv1.ShipReply, error) {
	c := req.GetCollector()
	if c == "" {
		return nil, status.Error(codes.InvalidArgument, "ship: collector is empty; every collector must send its id")
	}
	if n := len(req.GetWindows()); n > MaxWindowsPerRequest {
		return nil, status.Errorf(codes.InvalidArgument, "ship: %d windows in one request, at most %d", n, MaxWindowsPerRequest)
	}
	ws := req.GetWindows()
	sorted := sort.SliceIsSorted(ws, func(i, j int) bool { return ws[i].GetSequence() < ws[j].GetSequence() })
	if !sorted {
		ws = append([]*accessv1.AccessWindow(nil), ws...)
		sort.Slice(ws, func(i, j int) bool { return ws[i].GetSequence() < ws[j].GetSequence() })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.received[c]; !seen {
		s.collectors.Inc()
		s.received[c] = 0
	}
	for _, w := range ws {
		if w == nil {
			continue
		}
		if w.GetSequence() == 0 {
			return nil, status.Error(codes.InvalidArgument, "ship: window sequence 0; sequences start at 1")
		}
		if w.GetSequence() <= s.received[c] {
			s.windows.WithLabelValues("duplicate").Inc()
			continue
		}
		s.sink.Apply(c, w)
		s.received[c] = w.GetSequence()
		s.windows.WithLabelValues("applied").Inc()
		s.records.Add(float64(len(w.GetFiles())))
	}
	return &accessv1.ShipReply{AckedSequence: s.durable[c]}, nil
}

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
