// Package slowlink is a TCP proxy that makes a loopback connection look like
// a link to a remote store: every byte is delayed by a fixed one-way latency
// in each direction, and all connections share one bandwidth cap per
// direction. Unlike a per-connection cap, a shared cap gives the link a
// bandwidth-delay product that parallel readers must fill, as a real remote
// does. It exists for the prefetcher's tests and benchmarks and for the
// demo's remote dataset (this kernel has no tc netem); it lives under test/
// rather than prefetch/internal so that both can import it.
package slowlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

const chunkSize = 32 << 10

// Proxy forwards connections from its listen address to a target.
type Proxy struct {
	ln       net.Listener
	target   string
	delay    time.Duration
	up, down *rate.Limiter // nil: no cap
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// bytes forwarded towards the target (up) and back (down)
	upBytes, downBytes atomic.Int64
}

// Start listens on listen (e.g. "127.0.0.1:0") and forwards every
// connection to target, adding delay to each direction and capping each
// direction at bandwidth bytes per second (0: no cap) across all
// connections.
func Start(listen, target string, delay time.Duration, bandwidth int64) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("slowlink: listen on %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, target: target, delay: delay, ctx: ctx, cancel: cancel}
	if bandwidth > 0 {
		p.up = rate.NewLimiter(rate.Limit(bandwidth), chunkSize)
		p.down = rate.NewLimiter(rate.Limit(bandwidth), chunkSize)
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Bytes returns the bytes forwarded towards the target and back.
func (p *Proxy) Bytes() (up, down int64) { return p.upBytes.Load(), p.downBytes.Load() }

// Close stops accepting, cuts every connection and waits for them.
func (p *Proxy) Close() error {
	p.cancel()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c.(*net.TCPConn))
		}()
	}
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer func() { _ = client.Close() }()
	var d net.Dialer
	conn, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		return
	}
	server := conn.(*net.TCPConn)
	defer func() { _ = server.Close() }()
	stop := context.AfterFunc(p.ctx, func() {
		_ = client.Close()
		_ = server.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(client, server, p.up, &p.upBytes) }()
	go func() { defer wg.Done(); p.pipe(server, client, p.down, &p.downBytes) }()
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst: a reader paces chunks through the shared limiter
// and stamps when each may arrive; a writer delivers them at that time. The
// queue between them holds what is "on the wire".
func (p *Proxy) pipe(src, dst *net.TCPConn, lim *rate.Limiter, count *atomic.Int64) {
	wire := make(chan chunk, 4096)
	go func() {
		defer close(wire)
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				if lim != nil && lim.WaitN(p.ctx, n) != nil {
					return
				}
				wire <- chunk{data: buf[:n], due: time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range wire {
		if wait := time.Until(c.due); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := dst.Write(c.data); err != nil {
			_ = src.Close()
			for range wire {
			}
			return
		}
		count.Add(int64(len(c.data)))
	}
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		_ = dst.Close()
	}
}
