// Package ship delivers a collector's AccessWindows to the analyzer exactly
// once across restarts of either side.
//
// Every window gets the next sequence number of this collector and is written
// to the state directory before it is sent; it is deleted only once the
// analyzer has acknowledged a sequence at or above it. The collector id and
// the sequence counters live in the same directory, so a restarted collector
// resends exactly what was not acknowledged, under the same id, and the
// analyzer (which never applies a sequence at or below its acknowledgement
// twice) sees every window once.
//
// No loss is silent. A window is lost when the buffer is full (the oldest is
// dropped), when it cannot be stored (a full or failing state directory) or
// when it alone is larger than a call may carry. Each loss keeps its sequence
// number, so the analyzer sees a gap, is counted by reason in Stats.Lost, and
// is reported in the next window stored after it (Dropped.windows).
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
	"google.golang.org/protobuf/encoding/protowire"
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
	// MaxBatchBytes bounds the encoded size of one Ship call (default
	// accessv1.MaxMessageBytes, what the analyzer accepts). A call carries
	// fewer than BatchSize windows when they would not fit, so a backlog of
	// large windows drains; a window that alone does not fit is lost
	// (LossTooLarge).
	MaxBatchBytes int
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

// LossReason says why a window was lost.
type LossReason string

const (
	// LossBufferFull: the buffer held MaxBuffered unacknowledged windows
	// (the analyzer was unreachable for too long); the oldest was dropped.
	LossBufferFull LossReason = "buffer_full"
	// LossStoreFailed: the window could not be written to the state
	// directory (full disk, I/O error).
	LossStoreFailed LossReason = "store_failed"
	// LossTooLarge: the window alone is larger than MaxBatchBytes.
	LossTooLarge LossReason = "too_large"
)

// LossReasons lists every LossReason, for metrics.
var LossReasons = []LossReason{LossBufferFull, LossStoreFailed, LossTooLarge}

// Stats is what a Shipper has done, for metrics.
type Stats struct {
	Collector string
	// Buffered counts windows written but not yet acknowledged.
	Buffered int
	// Dropped counts windows lost for any reason since the state directory
	// was created (the sum of Lost, as far as the state could be stored).
	Dropped uint64
	// Lost counts windows lost by this process, by reason.
	Lost map[LossReason]uint64
	// Acked is the highest sequence the analyzer acknowledged; Next is the
	// sequence the next window gets.
	Acked, Next uint64
	// Shipped counts windows acknowledged by this process; Failures counts
	// failed Ship calls.
	Shipped, Failures uint64
	// StoreFailures counts failed writes to the state directory (windows
	// and the state file) by this process.
	StoreFailures uint64
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
	// peer is the analyzer instance that last replied, and received the
	// highest sequence it said it took in: windows at or below it are not
	// sent to that instance again while they wait for its acknowledgement.
	peer     string
	received uint64
}

// persisted is the state file's content.
type persisted struct {
	Collector string `json:"collector"`
	// Acked is the highest sequence the analyzer acknowledged.
	Acked uint64 `json:"ackedSequence"`
	// Next is the sequence of the next window.
	Next uint64 `json:"nextSequence"`
	// Dropped counts windows lost, ever.
	Dropped uint64 `json:"droppedWindows"`
	// Unreported counts lost windows that no stored window reports yet:
	// the next window stored carries them in Dropped.windows.
	Unreported uint64 `json:"unreportedWindows,omitempty"`
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
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = accessv1.MaxMessageBytes
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
	s.stats = Stats{Collector: s.state.Collector, Lost: map[LossReason]uint64{}}
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
// oldest windows are dropped. A window that cannot be stored or could never
// be shipped is lost: its sequence stays used (a gap the analyzer sees), the
// loss is counted, and the next window stored reports it. The error says
// what failed; the Shipper stays usable.
func (s *Shipper) Enqueue(w *accessv1.AccessWindow) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("shipper: closed")
	}
	seq := s.state.Next
	s.state.Next++
	w.Sequence = seq
	if n := s.requestBytes(nil) + batchEntryBytes(w); n > s.opts.MaxBatchBytes {
		s.lose(LossTooLarge, 1)
		err := fmt.Errorf("shipper: window %d is %d bytes encoded, more than one call may carry (%d): lost", seq, n, s.opts.MaxBatchBytes)
		return seq, errors.Join(err, s.storeState())
	}
	if s.state.Unreported > 0 {
		if w.Dropped == nil {
			w.Dropped = &accessv1.Dropped{}
		}
		w.Dropped.Windows += s.state.Unreported
	}
	if err := s.writeWindow(w); err != nil {
		if s.state.Unreported > 0 {
			w.Dropped.Windows -= s.state.Unreported
		}
		s.stats.StoreFailures++
		s.lose(LossStoreFailed, 1)
		s.lastErr = err
		return seq, errors.Join(fmt.Errorf("window %d lost: %w", seq, err), s.storeState())
	}
	s.state.Unreported = 0
	s.buffer = append(s.buffer, w)
	if over := len(s.buffer) - s.opts.MaxBuffered; over > 0 {
		for _, old := range s.buffer[:over] {
			os.Remove(s.windowPath(old.Sequence))
			// What the dropped window reported is lost with it: carry it on.
			s.state.Unreported += old.GetDropped().GetWindows()
		}
		s.buffer = s.buffer[over:]
		s.lose(LossBufferFull, uint64(over))
		s.opts.Log.Info("window buffer full: dropped the oldest windows", "dropped", over, "maxBuffered", s.opts.MaxBuffered)
		s.reportUnreported()
	}
	if err := s.storeState(); err != nil {
		return seq, err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return seq, nil
}

// lose counts n lost windows that a later stored window must report.
func (s *Shipper) lose(reason LossReason, n uint64) {
	s.stats.Lost[reason] += n
	s.state.Dropped += n
	s.state.Unreported += n
}

// reportUnreported moves the unreported losses into the oldest buffered
// window, rewritten on disk, so the analyzer learns of them first. If that
// write fails they stay unreported for the next window.
func (s *Shipper) reportUnreported() {
	if s.state.Unreported == 0 || len(s.buffer) == 0 {
		return
	}
	head := proto.Clone(s.buffer[0]).(*accessv1.AccessWindow)
	if head.Dropped == nil {
		head.Dropped = &accessv1.Dropped{}
	}
	head.Dropped.Windows += s.state.Unreported
	if err := s.writeWindow(head); err != nil {
		s.stats.StoreFailures++
		s.lastErr = err
		s.opts.Log.Error(err, "record lost windows in the oldest buffered window; the next window will carry them", "lost", s.state.Unreported)
		return
	}
	s.buffer[0] = head
	s.state.Unreported = 0
}

// storeState writes the state file, counting a failure.
func (s *Shipper) storeState() error {
	if err := s.saveState(); err != nil {
		s.stats.StoreFailures++
		s.lastErr = err
		return err
	}
	return nil
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
	st.Lost = make(map[LossReason]uint64, len(s.stats.Lost))
	for r, n := range s.stats.Lost {
		st.Lost[r] = n
	}
	return st
}

// LastError is the error of the latest failed Ship call or state write, nil
// after a call whose acknowledgement was stored.
func (s *Shipper) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Run ships buffered windows in order until ctx ends, retrying failed calls
// with exponential backoff. Windows stay buffered (and on disk) until
// acknowledged. Those the analyzer's running instance received are not sent
// to it again: every ResendAfter a call without windows asks for the
// acknowledgement; when the instance changes (the analyzer restarted),
// every unacknowledged window is sent again.
func (s *Shipper) Run(ctx context.Context, intake accessv1.AccessIntakeClient) error {
	backoff := s.opts.MinBackoff
	for {
		batch, skippedFor := s.nextBatch()
		if len(batch) == 0 && !s.unacked() {
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
				continue
			}
		}
		// With nothing new to send, the call asks for the acknowledgement
		// of what the analyzer received.
		progressed, restarted, err := s.shipOnce(ctx, intake, batch, skippedFor)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			first := uint64(0)
			if len(batch) > 0 {
				first = batch[0].Sequence
			}
			s.opts.Log.Error(err, "ship windows to the analyzer; will retry", "firstSequence", first, "windows", len(batch), "retryIn", backoff)
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
		if restarted {
			// A new instance: send it what it has not received, now.
			continue
		}
		if progressed && len(batch) > 0 && s.hasAfter(batch[len(batch)-1].Sequence) {
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

// nextBatch is the oldest buffered windows the analyzer's instance has not
// received, at most BatchSize of them and at most MaxBatchBytes encoded
// (Enqueue keeps out windows that alone do not fit). When it skips windows
// because that instance received them, skippedFor names the instance: only
// it may apply the batch.
func (s *Shipper) nextBatch() (batch []*accessv1.AccessWindow, skippedFor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := s.requestBytes(nil)
	from := 0
	for from < len(s.buffer) && s.buffer[from].Sequence <= s.received {
		from++
	}
	n := 0
	for from+n < len(s.buffer) && n < s.opts.BatchSize {
		size += batchEntryBytes(s.buffer[from+n])
		if size > s.opts.MaxBatchBytes && n > 0 {
			break
		}
		n++
	}
	if from > 0 {
		skippedFor = s.peer
	}
	return append([]*accessv1.AccessWindow(nil), s.buffer[from:from+n]...), skippedFor
}

// unacked reports whether windows wait for the analyzer's acknowledgement.
func (s *Shipper) unacked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buffer) > 0
}

// requestBytes is the encoded size of a ShipRequest of this collector
// carrying windows.
func (s *Shipper) requestBytes(windows []*accessv1.AccessWindow) int {
	return proto.Size(&accessv1.ShipRequest{Collector: s.state.Collector, Windows: windows})
}

// batchEntryBytes is what one window adds to a ShipRequest's encoded size.
func batchEntryBytes(w *accessv1.AccessWindow) int {
	return protowire.SizeTag(2) + protowire.SizeBytes(proto.Size(w))
}

// shipOnce sends batch (naming skippedFor, the instance whose received
// sequence it continues from, if any) and takes in the reply: progressed
// when something was acknowledged or newly received, restarted when the
// reply came from another analyzer instance than the last.
func (s *Shipper) shipOnce(ctx context.Context, intake accessv1.AccessIntakeClient, batch []*accessv1.AccessWindow, skippedFor string) (progressed, restarted bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	reply, err := intake.Ship(cctx, &accessv1.ShipRequest{Collector: s.state.Collector, Windows: batch, Instance: skippedFor})
	if err != nil {
		s.mu.Lock()
		s.stats.Failures++
		s.lastErr = err
		s.mu.Unlock()
		return false, false, err
	}
	received, restarted := s.noteReceived(reply.GetInstance(), reply.GetReceivedSequence())
	acked, err := s.ack(reply.GetAckedSequence())
	return acked || received, restarted, err
}

// noteReceived records what the replying analyzer instance has received,
// and reports whether that moved and whether the instance is another than
// the last one's (a restarted analyzer, which lost whatever it had not
// acknowledged: from it, only what it says it received counts, and it
// applies nothing sent past another instance's). An analyzer that does not
// say (an older one, instance "") gets every unacknowledged window on each
// call, as before.
func (s *Shipper) noteReceived(instance string, received uint64) (moved, restarted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if received >= s.state.Next {
		// Sequences this collector never assigned: not ours to trust.
		received = 0
	}
	if instance != s.peer {
		restarted = s.peer != ""
		if restarted && len(s.buffer) > 0 {
			s.opts.Log.Info("the analyzer restarted: sending again what it had not acknowledged", "from", s.buffer[0].Sequence, "windows", len(s.buffer))
		}
		s.peer, s.received = instance, received
		return true, restarted
	}
	if instance == "" || received <= s.received {
		return false, false
	}
	s.received = received
	return true, false
}

// ack forgets every window at or below acked, once the acknowledgement is
// stored: an acknowledgement only in memory would be forgotten by a restart
// while its windows were already deleted.
func (s *Shipper) ack(acked uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if acked <= s.state.Acked {
		s.lastErr = nil
		return false, nil
	}
	if acked >= s.state.Next {
		// The analyzer acknowledges sequences this collector never sent:
		// its state belongs to another sequence space. Trust our own.
		err := fmt.Errorf("analyzer acknowledged sequence %d but collector %s has only assigned up to %d", acked, s.state.Collector, s.state.Next-1)
		s.lastErr = err
		return false, err
	}
	prev := s.state.Acked
	s.state.Acked = acked
	if err := s.storeState(); err != nil {
		s.state.Acked = prev
		return false, fmt.Errorf("store acknowledgement of sequence %d: %w", acked, err)
	}
	s.lastErr = nil
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
