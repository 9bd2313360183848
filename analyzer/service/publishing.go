package service

import (
	"context"
	"sync"
	"time"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/localstate"
	"github.com/eddy-autotune/eddy/analyzer/publish"
	"github.com/eddy-autotune/eddy/analyzer/store"
)

// DefaultProfileCheckpointEvery: see Options.ProfileCheckpointEvery.
const DefaultProfileCheckpointEvery = 5 * time.Minute

// backlog holds, per key, the latest state a flush made durable in the
// local checkpoint log and the publisher has not written yet: a key taken
// again before it was written replaces what was waiting, so the publisher
// writes each key's latest state once, however far behind it is.
type backlog struct {
	mu      sync.Mutex
	pending map[analyzer.Key]store.Entry
	busy    bool
	ready   chan struct{}
}

func newBacklog() *backlog {
	return &backlog{pending: map[analyzer.Key]store.Entry{}, ready: make(chan struct{}, 1)}
}

// put adds entries, each replacing what waited for its key.
func (b *backlog) put(entries []store.Entry) {
	if len(entries) == 0 {
		return
	}
	b.mu.Lock()
	for _, e := range entries {
		b.pending[e.Key] = e
	}
	b.mu.Unlock()
	b.signal()
}

// retry puts back an entry whose write failed, unless a newer one waits.
func (b *backlog) retry(e store.Entry) {
	b.mu.Lock()
	if _, newer := b.pending[e.Key]; !newer {
		b.pending[e.Key] = e
	}
	b.mu.Unlock()
	b.signal()
}

func (b *backlog) drop(k analyzer.Key) {
	b.mu.Lock()
	delete(b.pending, k)
	b.mu.Unlock()
}

func (b *backlog) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// take returns everything waiting and marks a round in progress.
func (b *backlog) take() []store.Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]store.Entry, 0, len(b.pending))
	for _, e := range b.pending {
		out = append(out, e)
	}
	clear(b.pending)
	b.busy = len(out) > 0
	return out
}

func (b *backlog) done() {
	b.mu.Lock()
	b.busy = false
	b.mu.Unlock()
}

// idle reports whether nothing waits and no round is in progress.
func (b *backlog) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending) == 0 && !b.busy
}

func (b *backlog) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// flushLocal makes entries durable in the local checkpoint log, with the
// keys quarantined since the last flush dropped from it, acknowledges the
// windows they cover, and hands them to the publisher. On error nothing of
// it is durable.
func (s *Service) flushLocal(entries []store.Entry, dropped []analyzer.Key) error {
	recs := make([]localstate.Record, 0, len(dropped)+len(entries))
	for _, k := range dropped {
		recs = append(recs, localstate.Record{Key: k})
	}
	for i := range entries {
		recs = append(recs, localstate.Record{Key: entries[i].Key, Data: entries[i].Checkpoint})
	}
	if err := s.local.Append(recs); err != nil {
		return err
	}
	for i := range entries {
		s.Store.MarkWritten(entries[i].Key, entries[i].Meta.Applied)
	}
	s.Intake.MarkDurable(s.Store.Frontier(s.Intake.Received()))
	s.backlog.put(entries)
	if s.backlog.idle() && s.lastWriteOK.Load() {
		// Nothing waits to be written: the publisher is not stuck.
		s.progress.Store(time.Now().UnixNano())
	}
	return nil
}

// publishLoop writes what flushes made durable locally, a round at a time
// (each round the latest state of every key waiting, PublishWorkers keys at
// once), until ctx ends. A round with failures is followed by a pause of a
// flush interval before the failed keys are tried again.
func (s *Service) publishLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.backlog.ready:
		}
		for {
			batch := s.backlog.take()
			if len(batch) == 0 {
				break
			}
			start := time.Now()
			res, err := s.publisher.Publish(ctx, batch)
			written := s.settle(batch, &res, func(*store.Entry) {}, func(e *store.Entry) { s.backlog.retry(*e) })
			s.backlog.done()
			s.publishTime.Observe(time.Since(start).Seconds())
			s.lastWriteOK.Store(written > 0 || len(res.Failed) == 0)
			if s.lastWriteOK.Load() {
				s.progress.Store(time.Now().UnixNano())
			}
			if err == nil {
				s.opt.Log.V(1).Info("published", "profiles", res.Profiles, "unchanged", res.Unchanged, "proposed", res.Proposed, "held", res.Held, "took", time.Since(start))
				continue
			}
			s.opt.Log.Error(err, "publish", "failed", len(res.Failed), "of", len(batch))
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.opt.FlushInterval):
			}
		}
	}
}

// settle takes in what a Publish of entries did: a key written has its
// failures cleared and wrote(e) called; a key that failed is counted
// (failedWrite) and, unless that quarantined it, retry(e) called; keys to
// be assessed again at the next flush (advice waiting for more agreeing
// assessments, runs not ended yet) are made dirty. It returns how many keys
// were written.
func (s *Service) settle(entries []store.Entry, res *publish.Result, wrote, retry func(*store.Entry)) int {
	written := 0
	for i := range entries {
		e := &entries[i]
		ferr, failed := res.Failed[e.Key]
		if !failed {
			delete(s.failures, e.Key)
			wrote(e)
			written++
			continue
		}
		if !s.failedWrite(e.Key, ferr) {
			retry(e)
		}
	}
	for _, k := range res.HeldKeys {
		s.Store.MarkDirty(k)
	}
	for _, k := range res.OpenKeys {
		s.Store.MarkDirty(k)
	}
	return written
}

// failedWrite counts a failed write of k, and quarantines k when its writes
// keep failing or cannot succeed; it reports whether k was quarantined.
func (s *Service) failedWrite(k analyzer.Key, err error) bool {
	s.failures[k]++
	if !publish.IsPermanent(err) && s.failures[k] < s.opt.QuarantineAfter {
		return false
	}
	s.Store.Quarantine(k, time.Now().Add(s.opt.QuarantineFor))
	delete(s.failures, k)
	s.quarantines.Inc()
	s.opt.Log.Error(err, "quarantined: its records are refused for a while", "key", k.String(), "for", s.opt.QuarantineFor)
	if s.local != nil {
		s.backlog.drop(k)
		s.dropMu.Lock()
		s.dropped = append(s.dropped, k)
		s.dropMu.Unlock()
	}
	return true
}

// WaitPublished waits until the publisher has written everything flushes
// handed it (with a local checkpoint log; without, a flush writes before
// it returns), or ctx ends.
func (s *Service) WaitPublished(ctx context.Context) error {
	if s.local == nil {
		return nil
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !s.backlog.idle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
