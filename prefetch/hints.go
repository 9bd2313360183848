package prefetch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/go-logr/logr"
)

// maxHintLine bounds one hint message (an epoch of about a million paths).
const maxHintLine = 128 << 20

// Hint is one message of the SDK hint protocol: a unix stream socket
// carrying newline-delimited JSON objects, SDK to prefetcher only (the
// prefetcher never answers). Each object gives an epoch's upcoming read
// order; a later epoch replaces the order of an earlier one, and a message
// for an epoch older than the newest seen is ignored. Files are absolute
// paths as the application sees them (mapped to the roots through
// --path-alias) or paths relative to a root. The prefetcher reads the listed
// files in that order, dropping those already read, ahead of whatever else it
// had queued. Paths outside the roots are rejected and logged.
type Hint struct {
	Epoch int      `json:"epoch"`
	Files []string `json:"files"`
}

// hintServer accepts SDK connections on a unix socket.
type hintServer struct {
	ln     net.Listener
	path   string
	log    logr.Logger
	apply  func(Hint)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func listenHints(path string, log logr.Logger, apply func(Hint)) (*hintServer, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path) // a socket left by an earlier run of this sidecar
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for SDK hints on --hint-socket=%s: %w", path, err)
	}
	// The application may run as another user than the sidecar.
	if err := os.Chmod(path, 0o777); err != nil {
		log.Info("could not open the hint socket to other users", "path", path, "error", err.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &hintServer{ln: ln, path: path, log: log.WithName("hints"), apply: apply, ctx: ctx, cancel: cancel}, nil
}

// serve accepts connections until Close.
func (h *hintServer) serve() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				h.log.Error(err, "accept on hint socket")
			}
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.handle(c)
		}()
	}
}

func (h *hintServer) handle(c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(h.ctx, func() { c.Close() })
	defer stop()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), maxHintLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var hint Hint
		if err := json.Unmarshal(line, &hint); err != nil {
			h.log.Info("ignoring a malformed hint", "error", err.Error(), "bytes", len(line))
			continue
		}
		h.apply(hint)
	}
	if err := sc.Err(); err != nil && h.ctx.Err() == nil {
		h.log.Info("hint connection closed", "error", err.Error())
	}
}

// Close stops accepting hints, cuts open connections, waits for their
// handlers and removes the socket.
func (h *hintServer) Close() {
	h.cancel()
	h.ln.Close()
	h.wg.Wait()
	_ = os.Remove(h.path)
}

// applyHint puts the hinted files at the head of the queue in the hinted
// order, skipping files already read (or being read), and keeps the rest of
// the queue behind them.
func (p *Prefetcher) applyHint(h Hint) {
	refs := make([]fileRef, 0, len(h.Files))
	for _, f := range h.Files {
		ref, err := p.scope.resolve(f)
		if err != nil {
			p.rejectPath(f, err)
			continue
		}
		refs = append(refs, ref)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.cond.Broadcast()
	if h.Epoch < p.epoch {
		p.log.Info("ignoring a hint for an old epoch", "epoch", h.Epoch, "current", p.epoch)
		return
	}
	p.epoch = h.Epoch
	p.hints++
	p.metrics.hints.Inc()
	queue := make([]*file, 0, len(refs)+len(p.queue)-p.qhead)
	inHint := make(map[*file]bool, len(refs))
	for _, ref := range refs {
		k := ref.key()
		f := p.files[k]
		if f == nil {
			f = &file{ref: ref, size: -1}
			p.files[k] = f
		}
		if f.state != fileQueued || inHint[f] {
			continue
		}
		inHint[f] = true
		queue = append(queue, f)
	}
	for _, f := range p.queue[p.qhead:] {
		if f != nil && f.state == fileQueued && !inHint[f] {
			queue = append(queue, f)
		}
	}
	p.queue, p.qhead = queue, 0
	p.log.Info("hint applied", "epoch", h.Epoch, "files", len(h.Files), "queued", len(inHint), "rejected", len(h.Files)-len(refs))
}
