// Package ship delivers a collector's AccessWindows to the analyzer exactly
// once across restarts of either side.
//
// Every window gets the next sequence number of this collector and is written
// to the state directory before it is sent; it is deleted only once the
// analyzer has acknowledged a sequence at or above it. The collector id and
// the sequence counters live in the same directory, so a restarted collector
// resends exactly what was not acknowledged, under the same id, and the
// analyzer (which never applies a sequence at or below its acknowledgement
// twice) sees every window once. The buffer is bounded: when it is full the
// oldest window is dropped and the loss is reported in the next window the
// analyzer receives (Dropped.windows).
package ship

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// Options configure a Shipper. Zero values pick the documented defaults.
type Options struct {
	// Dir is the state directory (created if missing). Required. Two
	// collectors must not share one: Open takes an exclusive lock on it.
	Dir string
	// Node names the node; the collector id is "<node>-<random>", created
	// once and kept in Dir.
	Node string
	// MaxBuffered bounds the unacknowledged windows kept (default 720: two
	// hours at a 10s interval).
	MaxBuffered int
	// BatchSize is the most windows sent in one Ship call (default 64).
	// Every call sends the oldest unacknowledged windows: the analyzer
	// acknowledges only what it stored durably, and windows it applied but
	// lost in a restart must come again.
	BatchSize int
	// ResendAfter is how long to wait, after a call that left windows
	// unacknowledged, before sending them again when no new window comes
	// (default 5s).
	ResendAfter time.Duration
	// CallTimeout bounds one Ship call (default 30s).
	CallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between failed
	// calls (defaults 500ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	Log                    logr.Logger
}

// Stats is what a Shipper has done, for metrics.
type Stats struct {
	Collector string
	// Buffered counts windows written but not yet acknowledged.
	Buffered int
	// Dropped counts windows dropped because the buffer was full, since the
	// state directory was created.
	Dropped uint64
	// Acked is the highest sequence the analyzer acknowledged; Next is the
	// sequence the next window gets.
	Acked, Next uint64
	// Shipped counts windows acknowledged by this process; Failures counts
	// failed Ship calls.
	Shipped, Failures uint64
}

// Shipper buffers windows durably and ships them in order. It is safe for
// concurrent use: Enqueue from the drain loop, Run in its own goroutine.
type Shipper struct {
	opts Options
	lock *os.File

	mu      sync.Mutex
	state   persisted
	buffer  []*accessv1.AccessWindow
	stats   Stats
	wake    chan struct{}
	closed  bool
	lastErr error
}

// persisted is the state file's content.
type persisted struct {
	Collector string `json:"collector"`
	// Acked is the highest sequence the analyzer acknowledged.
	Acked uint64 `json:"ackedSequence"`
	// Next is the sequence of the next window.
	Next uint64 `json:"nextSequence"`
	// Dropped counts windows dropped for a full buffer, ever.
	Dropped uint64 `json:"droppedWindows"`
}

const (
	stateFile  = "state.json"
	lockFile   = "lock"
	windowsDir = "windows"
	windowExt  = ".pb"
)

// Open loads (or creates) the state in opts.Dir and returns a Shipper with
// every unacknowledged window from a previous run buffered for resending.
func Open(opts Options) (*Shipper, error) {
	if opts.Dir == "" {
		return nil, errors.New("shipper: state directory is empty")
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = 720
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 64
	}
	if opts.ResendAfter <= 0 {
		opts.ResendAfter = 5 * time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, windowsDir), 0o700); err != nil {
		return nil, fmt.Errorf("shipper: create state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shipper: open lock file: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("shipper: state directory %s is in use by another collector (lock: %w)", opts.Dir, err)
	}
	s := &Shipper{opts: opts, lock: lock, wake: make(chan struct{}, 1)}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shipper) load() error {
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, stateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		id, err := newCollectorID(s.opts.Node)
		if err != nil {
			return err
		}
		s.state = persisted{Collector: id, Next: 1}
		if err := s.saveState(); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("shipper: read state: %w", err)
	default:
		if err := json.Unmarshal(b, &s.state); err != nil {
			return fmt.Errorf("shipper: state file %s is corrupt (%v): move it away to start a new sequence space", filepath.Join(s.opts.Dir, stateFile), err)
		}
		if s.state.Collector == "" {
			return fmt.Errorf("shipper: state file %s has no collector id", filepath.Join(s.opts.Dir, stateFile))
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.opts.Dir, windowsDir))
	if err != nil {
		return fmt.Errorf("shipper: list buffered windows: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(s.opts.Dir, windowsDir, name)
		if !strings.HasSuffix(name, windowExt) {
			// A temporary file left by a crash mid-write.
			os.Remove(p)
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, windowExt), 10, 64)
		if err != nil {
			continue
		}
		if seq <= s.state.Acked {
			os.Remove(p)
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("shipper: read buffered window %s: %w", p, err)
		}
		w := &accessv1.AccessWindow{}
		if err := proto.Unmarshal(b, w); err != nil || w.Sequence != seq {
			s.opts.Log.Error(err, "discarding unreadable buffered window", "file", p)
			os.Remove(p)
			continue
		}
		s.buffer = append(s.buffer, w)
		if seq >= s.state.Next {
			s.state.Next = seq + 1
		}
	}
	sort.Slice(s.buffer, func(i, j int) bool { return s.buffer[i].Sequence < s.buffer[j].Sequence })
	if s.state.Next <= s.state.Acked {
		s.state.Next = s.state.Acked + 1
	}
	s.stats = Stats{Collector: s.state.Collector}
	return nil
}

func newCollectorID(node string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("shipper: collector id: %w", err)
	}
	if node == "" {
		node = "node"
	}
	return node + "-" + hex.EncodeToString(b[:]), nil
}

// Collector is this collector's id (the analyzer's key for its sequences).
func (s *Shipper) Collector() string { return s.state.Collector }

// Enqueue assigns w the next sequence number, stores it durably and queues
// it for shipping. It returns the sequence. When the buffer is full the
// oldest windows are dropped and counted in the oldest window kept.
func (s *Shipper) Enqueue(w *accessv1.AccessWindow) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("shipper: closed")
	}
	w.Sequence = s.state.Next
	if err := s.writeWindow(w); err != nil {
		return 0, err
	}
	s.state.Next++
	s.buffer = append(s.buffer, w)
	dropped := uint64(0)
	for len(s.buffer) > s.opts.MaxBuffered {
		old := s.buffer[0]
		s.buffer = s.buffer[1:]
		os.Remove(s.windowPath(old.Sequence))
		dropped += 1 + old.GetDropped().GetWindows()
		s.state.Dropped++
	}
	if dropped > 0 {
		head := s.buffer[0]
		if head.Dropped == nil {
			head.Dropped = &accessv1.Dropped{}
		}
		head.Dropped.Windows += dropped
		if err := s.writeWindow(head); err != nil {
			return 0, err
		}
		s.opts.Log.Info("window buffer full: dropped the oldest windows", "dropped", dropped, "maxBuffered", s.opts.MaxBuffered)
	}
	if err := s.saveState(); err != nil {
		return 0, err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return w.Sequence, nil
}

// Stats reports the shipper's counters.
func (s *Shipper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Buffered = len(s.buffer)
	st.Dropped = s.state.Dropped
	st.Acked = s.state.Acked
	st.Next = s.state.Next
	return st
}

// LastError is the error of the latest failed Ship call, nil after a
// successful one.
func (s *Shipper) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Run ships buffered windows in order until ctx ends, retrying failed calls
// with exponential backoff. Windows stay buffered (and on disk) until
// acknowledged; unacknowledged ones are sent again with the next new window,
// or after ResendAfter.
func (s *Shipper) Run(ctx context.Context, intake accessv1.AccessIntakeClient) error {
	backoff := s.opts.MinBackoff
	for {
		batch := s.nextBatch()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
				continue
			}
		}
		progressed, err := s.shipOnce(ctx, intake, batch)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.opts.Log.Error(err, "ship windows to the analyzer; will retry", "firstSequence", batch[0].Sequence, "windows", len(batch), "retryIn", backoff)
			// Full jitter keeps many collectors from retrying in lockstep.
			wait := backoff/2 + time.Duration(mrand.Int64N(int64(backoff/2)+1))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			backoff = time.Duration(math.Min(float64(backoff*2), float64(s.opts.MaxBackoff)))
			continue
		}
		backoff = s.opts.MinBackoff
		if progressed && s.hasAfter(batch[len(batch)-1].Sequence) {
			// A backlog: keep going while the analyzer keeps up.
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-time.After(s.opts.ResendAfter):
		}
	}
}

// hasAfter reports whether a buffered window has a sequence above seq.
func (s *Shipper) hasAfter(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buffer) > 0 && s.buffer[len(s.buffer)-1].Sequence > seq
}

func (s *Shipper) nextBatch() []*accessv1.AccessWindow {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.buffer), s.opts.BatchSize)
	return append([]*accessv1.AccessWindow(nil), s.buffer[:n]...)
}

func (s *Shipper) shipOnce(ctx context.Context, intake accessv1.AccessIntakeClient, batch []*accessv1.AccessWindow) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	reply, err := intake.Ship(cctx, &accessv1.ShipRequest{Collector: s.state.Collector, Windows: batch})
	if err != nil {
		s.mu.Lock()
		s.stats.Failures++
		s.lastErr = err
		s.mu.Unlock()
		return false, err
	}
	return s.ack(reply.GetAckedSequence())
}

// ack forgets every window at or below acked.
func (s *Shipper) ack(acked uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = nil
	if acked <= s.state.Acked {
		return false, nil
	}
	if acked >= s.state.Next {
		// The analyzer acknowledges sequences this collector never sent:
		// its state belongs to another sequence space. Trust our own.
		return false, fmt.Errorf("analyzer acknowledged sequence %d but collector %s has only assigned up to %d", acked, s.state.Collector, s.state.Next-1)
	}
	s.state.Acked = acked
	if err := s.saveState(); err != nil {
		return false, err
	}
	n := 0
	for n < len(s.buffer) && s.buffer[n].Sequence <= acked {
		os.Remove(s.windowPath(s.buffer[n].Sequence))
		n++
	}
	s.buffer = s.buffer[n:]
	s.stats.Shipped += uint64(n)
	return true, nil
}

// Close releases the state directory. Buffered windows stay on disk.
func (s *Shipper) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Close()
}

func (s *Shipper) windowPath(seq uint64) string {
	return filepath.Join(s.opts.Dir, windowsDir, fmt.Sprintf("%020d%s", seq, windowExt))
}

func (s *Shipper) writeWindow(w *accessv1.AccessWindow) error {
	b, err := proto.Marshal(w)
	if err != nil {
		return fmt.Errorf("shipper: encode window %d: %w", w.Sequence, err)
	}
	if err := writeFileAtomic(s.windowPath(w.Sequence), b); err != nil {
		return fmt.Errorf("shipper: store window %d: %w", w.Sequence, err)
	}
	return nil
}

func (s *Shipper) saveState() error {
	b, err := json.Marshal(s.state)
	if err != nil {
		return fmt.Errorf("shipper: encode state: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.opts.Dir, stateFile), b); err != nil {
		return fmt.Errorf("shipper: store state: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
