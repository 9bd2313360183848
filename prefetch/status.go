package prefetch

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	v1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Status is the prefetcher's progress, served as JSON on /status.
type Status struct {
	Strategy v1alpha1.PrefetchStrategy `json:"strategy"`
	// Bytes and Files read ahead so far; Errors are failed reads, Rejected
	// are paths refused for leading outside the roots.
	Bytes    int64 `json:"bytes"`
	Files    int64 `json:"files"`
	Errors   int64 `json:"errors"`
	Rejected int64 `json:"rejected"`
	// SelectionBytes and SelectionFiles are what the warm ratio measures.
	SelectionBytes int64 `json:"selectionBytes"`
	SelectionFiles int   `json:"selectionFiles"`
	// WarmPercent is the share of the selection read (of the budget, when
	// smaller); Warm latches once the threshold is reached.
	WarmPercent float64 `json:"warmPercent"`
	Warm        bool    `json:"warm"`
	// RateBytesPerSecond is the recent read rate (over the last seconds);
	// AverageBytesPerSecond is Bytes over Elapsed.
	RateBytesPerSecond    float64 `json:"rateBytesPerSecond"`
	AverageBytesPerSecond float64 `json:"averageBytesPerSecond"`
	Concurrency           int     `json:"concurrency"`
	Inflight              int     `json:"inflight"`
	BudgetBytes           int64   `json:"budgetBytes,omitempty"`
	BudgetSpent           bool    `json:"budgetSpent,omitempty"`
	// Epoch is the newest SDK hint epoch seen; Hints counts hint messages.
	Epoch int   `json:"epoch"`
	Hints int64 `json:"hints"`
	// Done is true when nothing is left to read (until the next hint).
	Done bool `json:"done"`
	// Error explains a failed plan, or one that goes on without its
	// manifest (the manifest could not be fetched).
	Error   string  `json:"error,omitempty"`
	Elapsed float64 `json:"elapsedSeconds"`
}

// Status returns a snapshot of the progress.
func (p *Prefetcher) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{
		Strategy:           p.opts.Strategy,
		Bytes:              p.bytes,
		Files:              p.filesDone,
		Errors:             p.errs,
		Rejected:           p.rejected,
		SelectionBytes:     p.selBytes,
		SelectionFiles:     p.selFiles,
		WarmPercent:        100 * p.warmRatioLocked(),
		Warm:               p.warm,
		RateBytesPerSecond: p.rate,
		Concurrency:        p.limitLocked(),
		Inflight:           p.inflight,
		BudgetBytes:        p.opts.BudgetBytes,
		BudgetSpent:        p.budgetHit,
		Epoch:              p.epoch,
		Hints:              p.hints,
		Done:               p.planned && p.inflight == 0 && p.idleLocked(),
		Error:              p.failure,
	}
	if s.Error == "" {
		s.Error = p.manifestErr
	}
	if !p.started.IsZero() {
		s.Elapsed = time.Since(p.started).Seconds()
		s.AverageBytesPerSecond = float64(s.Bytes) / s.Elapsed
	}
	return s
}

// Handler serves /status (JSON), /warm (200 once warm, else 503: the
// sidecar's startup probe), /metrics and /healthz.
func (p *Prefetcher) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Status())
	})
	mux.HandleFunc("/warm", func(w http.ResponseWriter, _ *http.Request) {
		s := p.Status()
		body, _ := json.Marshal(map[string]any{"warm": s.Warm, "warmPercent": s.WarmPercent,
			"threshold": p.opts.WarmThresholdPercent})
		w.Header().Set("Content-Type", "application/json")
		if !s.Warm {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write(append(body, '\n'))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(p.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// report keeps the rate current and logs progress every ReportInterval.
func (p *Prefetcher) report(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastBytes, lastLog := time.Now(), int64(0), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			p.mu.Lock()
			inst := float64(p.bytes-lastBytes) / now.Sub(last).Seconds()
			p.rate = 0.5*p.rate + 0.5*inst
			lastBytes, last = p.bytes, now
			p.mu.Unlock()
			if now.Sub(lastLog) >= p.opts.ReportInterval {
				lastLog = now
				p.logProgress("prefetch progress")
			}
		}
	}
}

func (p *Prefetcher) logProgress(msg string) {
	s := p.Status()
	p.log.Info(msg, "bytes", s.Bytes, "files", s.Files, "warmPercent", int(s.WarmPercent), "warm", s.Warm,
		"rateBytesPerSecond", int64(s.RateBytesPerSecond), "averageBytesPerSecond", int64(s.AverageBytesPerSecond), "concurrency", s.Concurrency, "errors", s.Errors,
		"rejected", s.Rejected, "elapsedSeconds", s.Elapsed)
}
