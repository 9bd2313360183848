package integration

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	analyzerintake "github.com/eddy-autotune/eddy/analyzer/intake"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/collector/ship"
)

type recordingSink struct {
	mu   sync.Mutex
	seqs map[string][]uint64
}

func (s *recordingSink) Apply(c string, w *accessv1.AccessWindow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs[c] = append(s.seqs[c], w.Sequence)
}

// TestShipperAgainstAnalyzerIntake ships to the analyzer's real intake
// server, which acknowledges only what a checkpoint made durable (here every
// 150ms), and restarts the collector's shipper half-way: every window is
// applied exactly once, in order.
func TestShipperAgainstAnalyzerIntake(t *testing.T) {
	sink := &recordingSink{seqs: map[string][]uint64{}}
	srv := analyzerintake.NewServer(sink, nil, analyzerintake.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	accessv1.RegisterAccessIntakeServer(gs, srv)
	go gs.Serve(lis)
	defer gs.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			time.Sleep(150 * time.Millisecond)
			srv.MarkDurable(srv.Received())
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := accessv1.NewAccessIntakeClient(conn)

	dir := t.TempDir()
	opts := ship.Options{Dir: dir, Node: "n1", ResendAfter: 50 * time.Millisecond, MinBackoff: time.Millisecond, Log: testLogger(t)}
	const total = 40
	var id string
	for half := range 2 {
		s, err := ship.Open(opts)
		require.NoError(t, err)
		id = s.Collector()
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(rctx, client)
		}()
		for range total / 2 {
			_, err := s.Enqueue(&accessv1.AccessWindow{Node: "n1"})
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond)
		}
		if half == 1 {
			require.Eventually(t, func() bool { return s.Stats().Acked == total }, 10*time.Second, 10*time.Millisecond)
		} else {
			assert.NotZero(t, s.Stats().Buffered, "the restart must happen with windows unacknowledged")
		}
		stop()
		<-done
		require.NoError(t, s.Close())
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	want := make([]uint64, total)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	assert.Equal(t, want, sink.seqs[id])
}
